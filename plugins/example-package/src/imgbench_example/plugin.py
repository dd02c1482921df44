"""The hook module named by this package's `imgbench` entry point.

It registers `example/mlp`, a two-layer perceptron over the flattened image: a useful floor for any
benchmark (a convnet that cannot beat it on a dataset is not learning spatial structure), and the `jsonl`
experiment tracker (tracker.py), switched on by `imgbench run --track jsonl`. The builder and the hooks are
annotated, so a type checker holds them to imgbench's contracts (`imgbench.specs.ModelBuilder`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from imgbench import ModelSpec, TrackerSpec, hookimpl

if TYPE_CHECKING:
    import torch

HIDDEN = 256


def build_mlp(*, num_classes: int, in_chans: int, image_size: int, pretrained: bool = False) -> torch.nn.Module:
    import torch.nn as nn

    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_chans * image_size * image_size, HIDDEN),
        nn.ReLU(inplace=True),
        nn.Linear(HIDDEN, num_classes),
    )


@hookimpl
def imgbench_models() -> list[ModelSpec]:
    return [ModelSpec("example/mlp", build_mlp, f"two-layer perceptron, {HIDDEN} hidden units (example package)", style="mlp")]


@hookimpl
def imgbench_trackers() -> list[TrackerSpec]:
    from imgbench_example.tracker import JsonLinesTracker

    return [TrackerSpec("jsonl", JsonLinesTracker, "one JSON line per grid and job event in OUT/runs.jsonl (example package)")]
