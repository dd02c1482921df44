"""Images from uint8 arrays to normalised model inputs: stratified subsets, device placement, batching and
on-device augmentation.

Splits stay uint8 (a quarter of the memory of floats) and are held on the accelerator when they fit, so a
batch is one index, one cast and one fused normalisation on the device, with augmentation done there too.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from imgbench.engine.recipe import subset_problem
from imgbench.errors import UsageError
from imgbench.specs import DataConfig, Split

SUBSET_SEED = 0  # the same subset for every model and seed, so their results compare
STATS_VALUES = 1 << 28  # channel mean/std are exact over the training images up to this many pixel values
# (all of MNIST, CIFAR-10, flowers at 64 px; about 0.5 s on one core), over a seeded random sample of them beyond
PAD_FRACTION = 1 / 8  # random-crop padding as a share of the image side (4 px at 32 px)
DEVICE_DATA_SHARE = 0.5  # hold the data on the GPU when it needs at most this share of free memory
# ``flip_rotate_zoom``, the TensorFlow flowers tutorial's augmentation: Keras RandomFlip("horizontal"),
# RandomRotation(0.1) (a fraction of a full turn: up to +-36 degrees) and RandomZoom(0.1) (scale 0.9 to 1.1,
# aspect kept), both resampled bilinearly with reflected borders as Keras does.
ROTATE_FRACTION = 0.1
ZOOM_FRACTION = 0.1


def stratified_subset(split: Split, n: int, parameter: str) -> tuple[Split, np.ndarray]:
    """A class-stratified subset of ``n`` images (all when ``n`` is 0 or too large) and their indices."""
    indices = np.arange(len(split))
    if n == 0 or n >= len(split):
        return split, indices
    from sklearn.model_selection import train_test_split

    problem = subset_problem(parameter, n, np.bincount(split.y).tolist())
    if problem:
        raise UsageError(problem)
    try:
        chosen, _ = train_test_split(indices, train_size=n, stratify=split.y, random_state=SUBSET_SEED)
    except ValueError as exc:
        raise UsageError(f"{parameter}={n} cannot be a stratified subset of {len(split)} images ({exc}); "
                         f"use 0 for all or a number of at least one image per class") from exc
    chosen = np.sort(chosen)
    return Split(split.x[chosen], split.y[chosen]), chosen


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) std, 0-255 scale, of uint8 NHWC images: exact, from each channel's
    histogram of integer counts, over all the images or a seeded random sample of ``STATS_VALUES`` values.

    Counting is exact where summing floats is not: float32 sums over tens of millions of pixels drift by about
    1%, and an evenly spaced sample can follow an ordering of the split (every 12th MNIST training image has a
    mean 6% below the set's).
    """
    per_image = int(np.prod(x.shape[1:]))
    if len(x) * per_image > STATS_VALUES:
        sample = max(1, STATS_VALUES // per_image)
        x = x[np.sort(np.random.default_rng(SUBSET_SEED).choice(len(x), sample, replace=False))]
    pixels = torch.from_numpy(np.ascontiguousarray(x)).reshape(-1, x.shape[-1])
    counts = np.stack([torch.bincount(pixels[:, channel].contiguous(), minlength=256).numpy()
                       for channel in range(x.shape[-1])]).astype(np.float64)
    values = np.arange(256, dtype=np.float64)
    pixels_per_channel = counts.sum(1)
    mean = counts @ values / pixels_per_channel
    variance = counts @ values**2 / pixels_per_channel - mean**2
    return mean.astype(np.float32), np.maximum(np.sqrt(np.maximum(variance, 0.0)), 1.0).astype(np.float32)


def normalisation(config: DataConfig | None, train_x: np.ndarray) -> tuple[np.ndarray, np.ndarray, DataConfig]:
    """Mean and std on the 0-255 scale, and the configuration in use: the weights' own (``config``), or,
    for models trained here from scratch, the training split's statistics, shared by every model."""
    if config is None:
        mean, std = channel_stats(train_x)
        config = DataConfig(tuple(float(m) / 255 for m in mean), tuple(float(s) / 255 for s in std),
                            source="dataset statistics")
        return mean, std, config
    if len(config.mean) != train_x.shape[-1]:
        raise UsageError(f"the weights expect {len(config.mean)}-channel images ({config.source}); "
                         f"the data has {train_x.shape[-1]}")
    # in float64, so statistics saved on the 0-1 scale come back to the very float32 values they were
    mean, std = (np.asarray(v, np.float64) * 255 for v in (config.mean, config.std))
    return mean.astype(np.float32), std.astype(np.float32), config


def fits_on_device(nbytes: int, device: torch.device) -> bool:
    if device.type != "cuda":
        return True  # CPU: already in memory; MPS: unified memory
    free, _total = torch.cuda.mem_get_info(device)
    return nbytes <= DEVICE_DATA_SHARE * free


class ImageBatches:
    """One split as uint8 NCHW on (or pinned for) a device, served as normalised float batches."""

    def __init__(self, split: Split, device: torch.device, mean: np.ndarray, std: np.ndarray,
                 memory_format: torch.memory_format, on_device: bool, reverse_channels: bool = False) -> None:
        x = torch.from_numpy(np.ascontiguousarray(split.x)).permute(0, 3, 1, 2)  # NCHW view of NHWC memory
        # a real copy in the wanted layout: .contiguous() would keep NHWC strides when there is one channel
        x = torch.empty_like(x, memory_format=memory_format).copy_(x)
        y = torch.from_numpy(np.asarray(split.y, dtype=np.int64))
        home = device if on_device else torch.device("cpu")
        self.x, self.y = x.to(home), y.to(home)
        if device.type == "cuda" and not on_device:
            self.x, self.y = self.x.pin_memory(), self.y.pin_memory()
        self.device = device
        self.memory_format = memory_format
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.inv_std = (1.0 / torch.tensor(std, dtype=torch.float32, device=device)).view(1, -1, 1, 1)
        self.reverse_channels = reverse_channels  # RGB -> BGR for weights trained on BGR (Keras caffe mode)

    def __len__(self) -> int:
        return len(self.y)

    def steps(self, batch_size: int, drop_last: bool) -> int:
        if drop_last and len(self) >= batch_size:
            return len(self) // batch_size
        return math.ceil(len(self) / batch_size)

    def batch_sizes(self, batch_size: int, drop_last: bool = False) -> set[int]:
        """The sizes of the batches ``batches`` yields (the full size and any remainder)."""
        n = len(self)
        if not n:
            return set()
        size = min(batch_size, n)
        steps = self.steps(size, drop_last)
        return {size, n - (steps - 1) * size} if not drop_last else {size}

    def batches(self, batch_size: int, generator: torch.Generator | None = None,
                drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised ``(x, y)`` batches, shuffled when a generator is given."""
        n = len(self)
        order = torch.randperm(n, generator=generator).to(self.x.device) if generator is not None else None
        size = min(batch_size, n)
        for step in range(self.steps(size, drop_last)):
            index = slice(step * size, (step + 1) * size)
            picked = order[index] if order is not None else index
            yield self.inputs(self.x[picked]), self.y[picked].to(self.device, non_blocking=True)

    def inputs(self, x_uint8: torch.Tensor) -> torch.Tensor:
        x = x_uint8.to(self.device, non_blocking=True).float()
        if self.reverse_channels:
            x = x.flip(1)
        return ((x - self.mean) * self.inv_std).contiguous(memory_format=self.memory_format)


class Augmenter:
    """Per-image random augmentation on the batch's device: shifts (zero padding = the mean colour after
    normalisation) and horizontal flips, or the flowers tutorial's flip, rotation and zoom."""

    def __init__(self, kind: str, image_size: int, device: torch.device, seed: int,
                 memory_format: torch.memory_format) -> None:
        self.memory_format = memory_format
        self.pad = round(image_size * PAD_FRACTION) if kind in ("crop", "flip_crop") else 0
        self.flip = kind in ("flip_crop", "flip_rotate_zoom")
        self.rotate_zoom = kind == "flip_rotate_zoom"
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad:
            x = self._shift(x)
        if self.flip:
            flipped = torch.rand(len(x), device=x.device, generator=self.generator) < 0.5
            x = torch.where(flipped.view(-1, 1, 1, 1), x.flip(3), x)
        if self.rotate_zoom:
            uniform = torch.rand(2, len(x), device=x.device, generator=self.generator) * 2 - 1  # in [-1, 1)
            x = rotate_and_zoom(x, uniform[0] * ROTATE_FRACTION * 2 * math.pi, 1 + uniform[1] * ZOOM_FRACTION)
            x = x.contiguous(memory_format=self.memory_format)
        return x

    def _shift(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        pad, device = self.pad, x.device
        padded = F.pad(x, (pad, pad, pad, pad))
        dy, dx = torch.randint(0, 2 * pad + 1, (2, n, 1), device=device, generator=self.generator)
        rows = (dy + torch.arange(h, device=device)).view(n, 1, h, 1)
        cols = (dx + torch.arange(w, device=device)).view(n, 1, 1, w)
        batch = torch.arange(n, device=device).view(n, 1, 1, 1)
        channel = torch.arange(c, device=device).view(1, c, 1, 1)
        return padded[batch, channel, rows, cols].contiguous(memory_format=self.memory_format)


def rotate_and_zoom(x: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Square NCHW images rotated by ``angle`` radians (counter-clockwise as displayed) about their centre and
    zoomed out by ``scale`` (> 1 shows more of the scene, smaller), one bilinear resample, borders reflected."""
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    # affine_grid maps output to input coordinates (x right, y down, so this matrix turns the content
    # counter-clockwise on screen) and scale > 1 samples a larger area
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
