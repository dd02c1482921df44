"""Stratified splits decided by content, the same on every machine and for every file order.

Each example carries a digest of its content (the file's or the raw image's bytes). Identical contents form
one group, so byte-identical images always land on the same side, even when they carry different labels (the
group counts for its smallest label). Within each class, groups are ranked by a salted hash of their digest and
taken in that order until the class's share is reached; a group that would overshoot is passed over. No
random generator is involved, so neither numpy's nor any library's version can change a split.
"""

from __future__ import annotations

import hashlib
import numbers
from dataclasses import dataclass

import numpy as np

from imgbench.errors import UsageError
from imgbench.recipe_fields import RECIPE_FIELDS

SPLIT_SEED = 0  # fixed, and independent of a job's seed: every job of a grid sees the same validation set
METHOD = "content-hash-stratified-v1"  # recorded in fingerprints; bump when the algorithm changes


@dataclass(frozen=True)
class SplitIndices:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def check_val_size(val_size: float) -> float:
    if not isinstance(val_size, numbers.Real) or isinstance(val_size, bool) \
            or RECIPE_FIELDS["val_size"].problem(float(val_size)):
        raise UsageError(f"val_size={val_size!r} must be a fraction of the training set in [0, 1), e.g. 0.1")
    return float(val_size)


def class_shares(counts: np.ndarray, fraction: float) -> np.ndarray:
    """How many images of each class a ``fraction`` takes (round half up, per class)."""
    return np.floor(np.asarray(counts, dtype=np.float64) * fraction + 0.5).astype(np.int64)


def stratified_pick(labels: np.ndarray, digests: np.ndarray, fraction: float, salt: str) -> np.ndarray:
    """A boolean mask choosing ``fraction`` of each class, whole content groups at a time.

    ``digests`` is ``(N, D)`` uint8 (or ``(N,)`` of fixed-size bytes); ``salt`` names the purpose so that
    the test and validation draws are independent.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0 or fraction <= 0:
        return np.zeros(len(labels), dtype=bool)
    keys: np.ndarray = np.ascontiguousarray(digests).reshape(len(labels), -1)
    keys = keys.view(np.dtype((np.void, keys.shape[1]))).ravel()
    unique, inverse = np.unique(keys, return_inverse=True)
    group_label = np.full(len(unique), np.iinfo(np.int64).max)
    np.minimum.at(group_label, inverse, labels)
    group_size = np.bincount(inverse, minlength=len(unique))
    salt_bytes = salt.encode()
    rank = np.array([int.from_bytes(hashlib.blake2b(salt_bytes + bytes(key), digest_size=8).digest(), "big")
                     for key in unique], dtype=np.uint64)
    order = np.lexsort((rank, group_label))
    n_classes = int(group_label.max()) + 1
    targets = class_shares(np.bincount(group_label, weights=group_size, minlength=n_classes), fraction)
    taken = np.zeros(n_classes, dtype=np.int64)
    picked = np.zeros(len(unique), dtype=bool)
    for group in order.tolist():
        label, size = group_label[group], group_size[group]
        if taken[label] + size <= targets[label]:
            picked[group] = True
            taken[label] += size
    return picked[inverse]


def split(labels: np.ndarray, digests: np.ndarray, *, n_official_train: int | None, val_size: float,
          test_fraction: float) -> SplitIndices:
    """Train/val/test indices. With ``n_official_train`` the examples after it are the official test set;
    without, ``test_fraction`` of all is held out as test first. Validation comes from what remains."""
    labels = np.asarray(labels)
    everything = np.arange(len(labels))
    if n_official_train is not None:
        pool, test = everything[:n_official_train], everything[n_official_train:]
    else:
        is_test = stratified_pick(labels, digests, test_fraction, f"{METHOD}:test")
        pool, test = everything[~is_test], everything[is_test]
    is_val = stratified_pick(labels[pool], digests[pool], val_size, f"{METHOD}:val:{SPLIT_SEED}")
    return SplitIndices(train=pool[~is_val], val=pool[is_val], test=test)


def split_sizes(class_counts: list[int], *, test_counts: list[int] | None, val_size: float,
                test_fraction: float) -> dict[str, int]:
    """The train/val/test sizes a split of these class counts produces (for listings, before any load)."""
    counts = np.asarray(class_counts)
    if test_counts is None:
        test = class_shares(counts, test_fraction)
        counts, test_total = counts - test, int(test.sum())
    else:
        test_total = int(sum(test_counts))
    val = int(class_shares(counts, val_size).sum())
    return {"train": int(counts.sum()) - val, "val": val, "test": test_total}
