"""A plugin author's type checker holds a plugin to imgbench's contracts (the protocols of imgbench.specs and
the typed hooks). Runs where mypy is installed: `tox -e type`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

REPO = Path(__file__).resolve().parents[1]

# Each line marked `# wrong:` breaks one contract; everything else is a correct plugin.
PLUGIN = '''
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from imgbench import DatasetSpec, ExecutorSpec, LoadedDataset, ModelSpec, hookimpl


def build(*, num_classes: int, in_chans: int, image_size: int, pretrained: bool = False) -> torch.nn.Module:
    return torch.nn.Linear(in_chans * image_size * image_size, num_classes)


def build_without_keywords(num_classes: int) -> torch.nn.Module:
    return torch.nn.Linear(1, num_classes)


def load(*, image_size: int, val_size: float, data_dir: Path | None, cache_dir: Path, arg: str) -> LoadedDataset:
    raise NotImplementedError


def locate(*, data_dir: Path | None, cache_dir: Path, arg: str) -> tuple[str, str]:
    return "somewhere", ""


class RunOnly:
    def __init__(self, slots: int = 1) -> None:
        self.slots = slots

    def run(self, tasks: Sequence[Any], on_result: Any, on_start: Any = None) -> None:
        pass


@hookimpl
def imgbench_models() -> list[ModelSpec]:
    return [ModelSpec("typed/linear", build, "fits the contract"),
            ModelSpec("typed/positional", build_without_keywords, "takes positional arguments")]  # wrong: builder


@hookimpl
def imgbench_datasets() -> list[DatasetSpec]:
    return [DatasetSpec("typed", load, locate, "says where it is in a word of its own")]  # wrong: locate


@hookimpl
def imgbench_executors() -> list[ExecutorSpec]:
    return [ExecutorSpec("runonly", RunOnly, "has no check")]  # wrong: executor
'''


def test_a_type_checker_holds_a_plugin_to_the_contracts(tmp_path, monkeypatch):
    monkeypatch.setenv("MYPYPATH", str(REPO / "src"))  # this checkout's imgbench, however it is installed
    path = tmp_path / "typed_plugin.py"
    path.write_text(PLUGIN)
    stdout, stderr, _ = mypy_api.run([str(path), "--config-file", str(REPO / "pyproject.toml"),
                                      "--cache-dir", str(REPO / ".mypy_cache"), "--no-error-summary"])
    # by the file's name: mypy's cache may replay a previous run's findings under that run's folder
    flagged = {int(line) for line in re.findall(r"^\S*typed_plugin\.py:(\d+): error", stdout, re.M)}
    wrong = {number for number, line in enumerate(PLUGIN.splitlines(), start=1) if "# wrong:" in line}
    assert flagged == wrong, stdout + stderr
    assert '"ModelBuilder"' in stdout and '"DatasetLocator"' in stdout and '"ExecutorFactory"' in stdout
