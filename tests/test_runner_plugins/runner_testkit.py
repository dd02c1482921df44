"""Test plugin for the runner: two tiny synthetic datasets and models that succeed, crash, hang or raise.

Loaded from this folder with IMGBENCH_PLUGINS_DIR / --plugins-dir, in the runner and in every job's kernel.
"""

from __future__ import annotations

import hashlib
import os
import time

import numpy as np

from imgbench import DatasetSpec, LoadedDataset, ModelSpec, Split, hookimpl

NATIVE_SIZE = 12
IMAGES_PER_CLASS = {"train": 60, "test": 20}
HANG_SECONDS = 3600
EXIT_CODE = 7


def _images(classes: int, channels: int, split: str, seed: int) -> Split:
    """Class k is a bright band at row-block k (and colour k % channels) over noise: easy to learn."""
    rng = np.random.default_rng(seed)
    n = IMAGES_PER_CLASS[split]
    y = np.repeat(np.arange(classes), n)
    x = rng.integers(0, 60, size=(len(y), NATIVE_SIZE, NATIVE_SIZE, channels))
    band = NATIVE_SIZE // classes
    for k in range(classes):
        x[y == k, k * band:(k + 1) * band, :, k % channels] += 180
    order = rng.permutation(len(y))
    return Split(x[order].clip(0, 255).astype(np.uint8), y[order].astype(np.int64))


def _resize(split: Split, size: int) -> Split:
    if size in (0, NATIVE_SIZE):
        return split
    pick = np.arange(size) * NATIVE_SIZE // size  # nearest neighbour
    return Split(split.x[:, pick][:, :, pick], split.y)


def _loader(name: str, classes: int, channels: int):
    def load(*, image_size: int, val_size: float, data_dir=None, cache_dir=None, arg: str = "") -> LoadedDataset:
        train = _resize(_images(classes, channels, "train", 1), image_size)
        test = _resize(_images(classes, channels, "test", 2), image_size)
        n_val = int(round(len(train) * val_size))
        val, train = Split(train.x[:n_val], train.y[:n_val]), Split(train.x[n_val:], train.y[n_val:])
        fingerprint = hashlib.sha256(f"{name}:{image_size}:{val_size}".encode()).hexdigest()[:16]
        return LoadedDataset(name, tuple(f"class{k}" for k in range(classes)), train, val, test, fingerprint,
                             "synthetic (runner test kit)")

    return load


def _locate(*, data_dir=None, cache_dir=None, arg: str = "") -> tuple[str, str]:
    return "local", "generated in memory"


def build_linear(*, num_classes: int, in_chans: int, image_size: int, pretrained: bool = False):
    import torch.nn as nn

    return nn.Sequential(nn.Flatten(), nn.Linear(in_chans * image_size * image_size, num_classes))


def _faulty(fault: str):
    def build(*, num_classes: int, in_chans: int, image_size: int, pretrained: bool = False):
        import torch.nn as nn

        if fault == "raise":
            raise RuntimeError("testkit/raise always fails to build")

        class Faulty(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = build_linear(num_classes=num_classes, in_chans=in_chans, image_size=image_size)

            def forward(self, x):
                if fault == "exit":
                    os._exit(EXIT_CODE)  # the kernel dies without a word, like a segfault
                time.sleep(HANG_SECONDS)
                return self.inner(x)

        return Faulty()

    return build


@hookimpl
def imgbench_datasets() -> list[DatasetSpec]:
    return [
        DatasetSpec("tinygray", _loader("tinygray", 3, 1), _locate, "synthetic 12x12 grey, 3 classes",
                    classes=("class0", "class1", "class2"), image_shape=(NATIVE_SIZE, NATIVE_SIZE, 1)),
        DatasetSpec("tinyrgb", _loader("tinyrgb", 4, 3), _locate, "synthetic 12x12 RGB, 4 classes",
                    classes=("class0", "class1", "class2", "class3"), image_shape=(NATIVE_SIZE, NATIVE_SIZE, 3)),
    ]


@hookimpl
def imgbench_models() -> list[ModelSpec]:
    return [
        ModelSpec("testkit/linear", build_linear, "flatten + linear"),
        ModelSpec("testkit/exit", _faulty("exit"), "os._exit in forward: kills its kernel"),
        ModelSpec("testkit/hang", _faulty("hang"), "sleeps an hour in forward: outlives any timeout"),
        ModelSpec("testkit/raise", _faulty("raise"), "raises while building"),
    ]
