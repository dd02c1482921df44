"""Every built-in model (and the example plugins) passes the plugin authors' conformance checks; each check
reports every failure, alone or with the others, and a plugin package's tests get one item per check."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from imgbench.registry import Registry
from imgbench import conformance
from imgbench.conformance import (
    ALL_SHAPES,
    CHECKS,
    CIFAR,
    ConformanceError,
    check_model,
    dataset_shape,
    model_checks,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_PACKAGE = REPO / "plugins" / "example-package"
# A colour-only model with one logit too many.
OFF_BY_ONE = (
    "from imgbench import ModelSpec, hookimpl\n"
    "def build(*, num_classes, in_chans, image_size, pretrained=False):\n"
    "    import torch.nn as nn\n"
    "    return nn.Sequential(nn.Flatten(), nn.Linear(in_chans * image_size * image_size, num_classes + 1))\n"
    "@hookimpl\n"
    "def imgbench_models():\n"
    "    return [ModelSpec('bad/offbyone', build, 'one logit too many', channels=(3,))]\n"
)
# A model with two faults: a layer its forward never uses, and noise in eval mode.
TWO_FAULTS = (
    "from imgbench import ModelSpec, hookimpl\n"
    "def build(*, num_classes, in_chans, image_size, pretrained=False):\n"
    "    import torch, torch.nn as nn\n"
    "    class M(nn.Module):\n"
    "        def __init__(self):\n"
    "            super().__init__()\n"
    "            self.used = nn.Linear(in_chans * image_size * image_size, num_classes)\n"
    "            self.unused = nn.Linear(3, 3)\n"
    "        def forward(self, x):\n"
    "            return self.used(x.flatten(1)) + torch.randn(len(x), num_classes)\n"
    "    return M()\n"
    "@hookimpl\n"
    "def imgbench_models():\n"
    "    return [ModelSpec('bad/twofaults', build, 'an unused layer and noise in eval mode')]\n"
)


def failed_check(line: str) -> str:
    """The check a failure line names: '<model> at <shape> shape (CxSxS), <check>: <problems>'."""
    return re.search(r" shape \([^)]*\), (\w+): ", line).group(1)

REGISTRY = Registry()
BUILTIN = [s.name for s in REGISTRY.models(["keras/*", "timm/*"])]


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_model_conforms_at_cifar_size(name):
    (result,) = check_model(name, shapes=[CIFAR], registry=REGISTRY)
    assert result.params > 0 and result.input_size >= CIFAR.image_size


@pytest.mark.slow
@pytest.mark.parametrize("name", ["keras/mnist_convnet", "keras/flowers_cnn", "keras/resnet50", "timm/resnet18", "timm/vit_tiny"])
def test_model_conforms_at_every_dataset_shape(name):
    assert [r.shape for r in check_model(name, shapes=ALL_SHAPES, registry=REGISTRY)] == ["mnist", "cifar10", "flowers"]


def test_check_catches_a_model_with_the_wrong_output(tmp_path):
    (tmp_path / "bad.py").write_text(OFF_BY_ONE)
    with pytest.raises(ConformanceError, match=r"expected logits \(2, 10\)"):
        check_model("bad/offbyone", shapes=[CIFAR], registry=Registry(plugin_dirs=[tmp_path]))


def test_check_catches_parameters_without_gradient(tmp_path):
    (tmp_path / "twofaults.py").write_text(TWO_FAULTS)
    with pytest.raises(ConformanceError, match="got no gradient"):
        check_model("bad/twofaults", shapes=[CIFAR], registry=Registry(plugin_dirs=[tmp_path]))


def test_shapes_come_from_the_datasets_default_recipes():
    # independent of the dataset code: MNIST 28x28 grey, CIFAR-10 32x32 colour, flowers' 5 classes at 128 px
    assert [(s.name, s.image_size, s.channels, s.num_classes) for s in ALL_SHAPES] == [
        ("mnist", 28, 1, 10), ("cifar10", 32, 3, 10), ("flowers", 128, 3, 5)]
    fashion = dataset_shape(REGISTRY.dataset("fashion_mnist")[0])
    assert (fashion.image_size, fashion.channels, fashion.num_classes) == (28, 1, 10)
    with pytest.raises(ValueError, match="imagefolder.*no fixed image shape"):
        dataset_shape(REGISTRY.dataset("imagefolder:/x")[0])


def test_the_command_checks_at_a_named_dataset(capsys):
    assert conformance.main(["keras/mnist_convnet", "--dataset", "fashion_mnist"]) == 0
    assert "fashion_mnist" in capsys.readouterr().out


def test_every_failing_check_is_reported_not_only_the_first(tmp_path):
    (tmp_path / "twofaults.py").write_text(TWO_FAULTS)
    with pytest.raises(ConformanceError) as caught:
        check_model("bad/twofaults", shapes=[CIFAR], registry=Registry(plugin_dirs=[tmp_path]))
    failures = str(caught.value).splitlines()
    assert [failed_check(line) for line in failures] == ["gradients", "deterministic_eval"]
    assert "2 trainable parameters got no gradient (unused.weight, unused.bias)" in failures[0]
    assert "eval-mode outputs differ" in failures[1]


def test_each_check_runs_alone_as_an_item_of_its_own(tmp_path):
    (tmp_path / "bad.py").write_text(OFF_BY_ONE)
    items = model_checks(["bad/offbyone"], registry=Registry(plugin_dirs=[tmp_path]))
    assert [item.id for item in items] == [f"bad/offbyone-{shape}-{check.name}" for shape in ("cifar10", "flowers")
                                           for check in CHECKS]  # mnist's one channel is not taken
    failed = {}
    for item in items[:len(CHECKS)]:
        try:
            item()
        except ConformanceError as exc:
            failed[item.check.name] = str(exc)
    assert set(failed) == {"output_shape", "finite_logits", "gradients"}  # the last two cannot look: no logits
    assert failed["output_shape"].endswith("output_shape: output is (2, 11), expected logits (2, 10)")
    assert "no logits to check" in failed["gradients"]


def test_the_command_lists_every_failing_check(tmp_path, monkeypatch, capsys):
    (tmp_path / "twofaults.py").write_text(TWO_FAULTS)
    monkeypatch.setenv("IMGBENCH_PLUGINS_DIR", str(tmp_path))
    assert conformance.main(["bad/*", "--dataset", "cifar10"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [failed_check(line) for line in lines] == ["gradients", "deterministic_eval"]
    assert all(line.startswith("FAIL  bad/twofaults at cifar10 shape") for line in lines)


def test_the_example_package_s_own_tests_run_each_check_as_a_pytest_item(tmp_path):
    """As a plugin author runs them: the package installed (its entry point, as pip would write it), then
    pytest in the package's folder."""
    dist_info = tmp_path / "imgbench_example-0.1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: imgbench-example\nVersion: 0.1.0\n")
    (dist_info / "entry_points.txt").write_text("[imgbench]\nexample = imgbench_example.plugin\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(EXAMPLE_PACKAGE / "src")])}
    done = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider"], cwd=EXAMPLE_PACKAGE,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    items = re.findall(r"::test_example_models_conform\[(\S+)\] PASSED", done.stdout)
    assert sorted(items) == sorted(f"example/mlp-{shape.name}-{check.name}" for shape in ALL_SHAPES
                                   for check in CHECKS)
    assert len(items) == 15
