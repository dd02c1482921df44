"""Plugin discovery: drop-in files, entry-point packages, blocking, and isolation of broken plugins."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from imgbench.cli import main
from imgbench.errors import UsageError
from imgbench.registry import PluginsFailedError, Registry

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_PACKAGE = REPO / "plugins" / "example-package"

GOOD_PLUGIN = '''
from imgbench import DatasetSpec, ModelSpec, hookimpl

def build(*, num_classes, in_chans, image_size, pretrained=False):
    import torch.nn as nn
    return nn.Sequential(nn.Flatten(), nn.Linear(in_chans * image_size * image_size, num_classes))

def locate(*, data_dir, cache_dir, arg=""):
    return ("local", arg or "nowhere")

def load(**kwargs):
    raise NotImplementedError

@hookimpl
def imgbench_models():
    return [ModelSpec("dropin/linear", build, "a linear probe")]

@hookimpl
def imgbench_datasets():
    return [DatasetSpec("toyfolder", load, locate, "a toy dataset taking a path", takes_arg=True)]
'''


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def test_drop_in_file_registers_models_that_build(tmp_path):
    import torch

    write(tmp_path, "dropin.py", GOOD_PLUGIN)
    registry = Registry(plugin_dirs=[tmp_path])
    assert [s.name for s in registry.models(["dropin/*"])] == ["dropin/linear"]
    model = registry.build_model("dropin/linear", num_classes=4, in_chans=1, image_size=8)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 4)
    info = next(p for p in registry.plugins if p.name == "dropin")
    assert info.source.kind == "file" and info.source.location == str(tmp_path / "dropin.py")
    assert info.models == ("dropin/linear",) and info.datasets == ("toyfolder",)


def test_dataset_arguments_are_checked(tmp_path):
    write(tmp_path, "dropin.py", GOOD_PLUGIN)
    registry = Registry(plugin_dirs=[tmp_path])
    spec, arg = registry.dataset("toyfolder:/data/pets")
    assert spec.name == "toyfolder" and arg == "/data/pets"
    with pytest.raises(UsageError, match="needs an argument"):
        registry.dataset("toyfolder")


def test_plugins_dir_from_environment(tmp_path, monkeypatch, capsys):
    write(tmp_path / "a", "dropin.py", GOOD_PLUGIN)
    monkeypatch.setenv("IMGBENCH_PLUGINS_DIR", str(tmp_path / "a"))
    assert main(["models", "dropin/*", "--json"]) == 0
    assert [row["name"] for row in json.loads(capsys.readouterr().out)] == ["dropin/linear"]


def test_entry_point_package_is_discovered(tmp_path, monkeypatch):
    """Simulates `pip install plugins/example-package` with the metadata pip would write."""
    dist_info = tmp_path / "imgbench_example-0.1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: imgbench-example\nVersion: 0.1.0\n")
    (dist_info / "entry_points.txt").write_text("[imgbench]\nexample = imgbench_example.plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(EXAMPLE_PACKAGE / "src"))
    registry = Registry()
    info = next(p for p in registry.plugins if p.name == "example")
    assert (info.source.kind, info.source.distribution, info.source.version) == ("entry point", "imgbench-example", "0.1.0")
    assert info.models == ("example/mlp",)
    from imgbench.conformance import CIFAR, check_model

    assert check_model("example/mlp", shapes=[CIFAR], registry=registry)[0].params > 0


def test_builtin_families_come_through_the_entry_point_group():
    registry = Registry()
    builtin = {p.name: p.source for p in registry.plugins if p.source.kind == "built-in"}
    assert {"keras", "timm"} <= set(builtin)
    assert all(s.distribution == "imgbench" for s in builtin.values())


BROKEN = {
    "import_error.py": "import no_such_module_anywhere\n",
    "raising_hook.py": '''
        from imgbench import hookimpl
        @hookimpl
        def imgbench_models():
            raise RuntimeError("boom in hook")
    ''',
    "wrong_type.py": '''
        from imgbench import hookimpl
        @hookimpl
        def imgbench_models():
            return ["not a spec"]
    ''',
    "duplicate.py": '''
        from imgbench import ModelSpec, hookimpl
        @hookimpl
        def imgbench_models():
            return [ModelSpec("timm/resnet18", lambda **kw: None, "a clash with the built-in")]
    ''',
}


def test_broken_plugins_are_isolated_and_reported(tmp_path, capsys):
    for name, text in BROKEN.items():
        write(tmp_path, name, text)
    write(tmp_path, "dropin.py", GOOD_PLUGIN)
    registry = Registry(plugin_dirs=[tmp_path])
    assert "dropin/linear" in {s.name for s in registry.models()}
    assert registry.model("timm/resnet18").family == "timm"  # the built-in keeps its name
    errors = {e.plugin: e.message for e in registry.errors}
    assert "ModuleNotFoundError" in errors["import_error"] and "no_such_module_anywhere" in errors["import_error"]
    assert "boom in hook" in errors["raising_hook"]
    assert "must return a list of ModelSpec" in errors["wrong_type"]
    assert "already registered by plugin 'timm'" in errors["duplicate"]

    assert main(["plugins", "--plugins-dir", str(tmp_path)]) == 1  # any plugin error: scripts must notice
    out = capsys.readouterr().out
    assert "import_error  [failed]" in out and str(tmp_path / "import_error.py") in out
    assert "error: " in out and f"dropin  [file] {tmp_path / 'dropin.py'}  ok" in out
    assert f"duplicate  [file] {tmp_path / 'duplicate.py'}  FAILED" in out

    with pytest.raises(PluginsFailedError, match="import_error"):
        Registry(plugin_dirs=[tmp_path], strict=True)
    assert main(["models", "--strict", "--plugins-dir", str(tmp_path)]) == 2
    assert "strict mode" in capsys.readouterr().err


CLASHING_PLUGIN = '''
    from imgbench import ModelSpec, hookimpl
    @hookimpl
    def imgbench_models():
        return [ModelSpec("timm/resnet18", lambda **kw: None, "clashes with the built-in"),
                ModelSpec("clash/own", lambda **kw: None, "its own model")]
'''


def test_a_clash_leaves_out_only_the_clashing_model_and_the_plugin_is_not_ok(tmp_path, capsys):
    write(tmp_path, "clash.py", CLASHING_PLUGIN)
    write(tmp_path, "dropin.py", GOOD_PLUGIN)
    registry = Registry(plugin_dirs=[tmp_path])
    assert registry.model("timm/resnet18").family == "timm" and registry.model_plugin("clash/own")[0] == "clash"
    assert main(["plugins", "--json", "--plugins-dir", str(tmp_path)]) == 1
    listed = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    assert listed["clash"]["status"] == "PARTIAL" and listed["clash"]["models"] == ["clash/own"]
    assert "model 'timm/resnet18' is already registered by plugin 'timm'" in listed["clash"]["errors"][0]
    assert listed["dropin"]["status"] == "ok" and listed["timm"]["status"] == "ok"
    assert main(["plugins", "--plugins-dir", str(tmp_path)]) == 1
    assert f"clash  [file] {tmp_path / 'clash.py'}  PARTIAL" in capsys.readouterr().out


def test_plugins_exits_0_when_every_plugin_loaded(tmp_path, capsys):
    write(tmp_path, "dropin.py", GOOD_PLUGIN)
    assert main(["plugins", "--plugins-dir", str(tmp_path)]) == 0
    assert "FAILED" not in capsys.readouterr().out


def test_blocking_a_plugin(tmp_path, monkeypatch, capsys):
    write(tmp_path, "dropin.py", GOOD_PLUGIN)
    assert not Registry(plugin_dirs=[tmp_path], blocked=["dropin"]).models(["dropin/*"])
    monkeypatch.setenv("IMGBENCH_BLOCK_PLUGINS", "keras,dropin")
    assert main(["models", "--json", "--plugins-dir", str(tmp_path)]) == 0
    families = {row["family"] for row in json.loads(capsys.readouterr().out)}
    assert "keras" not in families and "dropin" not in families and "timm" in families


def test_repo_plugins_folder_is_loaded_from_a_checkout(monkeypatch, capsys):
    monkeypatch.chdir(REPO / "tests")
    assert main(["models", "tinycnn/*", "--json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["tinycnn/small", "tinycnn/wide"]


def test_unknown_model_exits_2_with_suggestions(capsys):
    assert main(["models", "timm/resnet81"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'timm/resnet81'" in err and "timm/resnet18" in err


MISSPELT_HOOK = '''
    from imgbench import ModelSpec, hookimpl
    @hookimpl
    def imgbench_model():  # the hook is imgbench_models
        return [ModelSpec("typo/linear", lambda **kw: None, "never listed")]
'''


def test_a_misspelt_hook_is_an_error_of_its_plugin_that_names_the_real_hook(tmp_path):
    write(tmp_path, "typo.py", MISSPELT_HOOK)
    write(tmp_path, "dropin.py", GOOD_PLUGIN)
    registry = Registry(plugin_dirs=[tmp_path])
    errors = {e.plugin: e.message for e in registry.errors}
    assert "imgbench_model" in errors["typo"] and "did you mean imgbench_models?" in errors["typo"]
    assert "typo" not in registry.sources and "dropin/linear" in {s.name for s in registry.models()}
    assert next(p for p in registry.plugins if p.name == "typo").status == "FAILED"


def test_a_registry_without_imgbench_s_own_entry_points_refuses_to_list_nothing(monkeypatch):
    from imgbench import plugins

    monkeypatch.setattr(plugins.importlib.metadata, "entry_points", lambda group: [])
    with pytest.raises(plugins.MissingBuiltinsError, match="pip install"):
        Registry()
