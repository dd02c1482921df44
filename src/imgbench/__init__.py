"""imgbench: benchmark image classifiers from Keras 3, timm and plugins on MNIST, CIFAR-10 and flowers.

Plugin authors need only ``hookimpl`` and the spec types from here. Heavy entry points (``run_job``,
``run_grid``, ``build_report``) are imported on first use so that ``import imgbench`` stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from imgbench.hookspecs import hookimpl
from imgbench.specs import DataConfig, DatasetSpec, ExecutorSpec, LoadedDataset, ModelSpec, RecipeDefaults, Split
from imgbench.specs import GridInfo, GridOutcome, JobInfo, JobOutcome, RunLink, TrackerSpec

__version__ = "0.1.0"

_LAZY = {
    "get_registry": "imgbench.registry",
    "run_job": "imgbench.engine",
    "run_grid": "imgbench.runner",
    "build_report": "imgbench.report",
}

__all__ = [
    "DataConfig",
    "DatasetSpec",
    "ExecutorSpec",
    "GridInfo",
    "GridOutcome",
    "JobInfo",
    "JobOutcome",
    "LoadedDataset",
    "ModelSpec",
    "RecipeDefaults",
    "RunLink",
    "Split",
    "TrackerSpec",
    "hookimpl",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'imgbench' has no attribute {name!r}")
