"""scikit-learn's digits: 1,797 8x8 grayscale handwritten digits that ship inside scikit-learn.

It needs no download and no data folder, so a first run (``imgbench run demo``) works offline. The pixels
are counts 0..16 (the UCI "optdigits" 4x4-block counts); they are scaled to uint8 by
``floor(v * 255 / 16 + 0.5)``, so 0 -> 0, 8 -> 128 and 16 -> 255, and the original counts come back exactly
as ``round(x * 16 / 255)``. There is no official test set: 20% of each class is held out by content
(:mod:`.splits`), then ``val_size`` of the rest. The arrays are checked against a pinned sha256 of their
contents before use, so a changed copy in some scikit-learn release is refused instead of silently used.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgbench.datasets.errors import DatasetError
from imgbench.datasets.file_dataset import FileDataset
from imgbench.datasets.images import resize_array
from imgbench.datasets.store import Decoded, row_digests
from imgbench.specs import CanDownload, LoadedDataset, RecipeDefaults, Where

NATIVE_SIZE = 8
MAX_COUNT = 16  # the pixel values are counts of set pixels in 4x4 blocks of a 32x32 bitmap
TEST_FRACTION = 0.2
BUNDLED_FILE = "sklearn/datasets/data/digits.csv.gz"  # what load_digits reads, for `imgbench datasets`
CLASS_COUNTS = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)
# sha256 of the 1,797x64 counts as uint8, row-major, followed by the 1,797 labels as uint8.
CONTENT_SHA256 = "87ff0c9e40dc7e2c0e34e7257799c2e3f3aec1a016363bb11cad869ec428a826"
# 1,797 8x8 images: small batches and more epochs; models with a larger min_size get them resized up.
# Starting from trained weights takes the engine's generic fine-tuning defaults.
DIGITS_RECIPE = RecipeDefaults(from_scratch=dict(epochs=10, batch_size=32, lr=3e-3, weight_decay=0.01,
                                                 warmup_epochs=0.5, label_smoothing=0.0, augment="none",
                                                 val_size=0.1))


def to_uint8(counts: np.ndarray) -> np.ndarray:
    """Counts 0..16 -> uint8 0..255, rounding half up (documented in the module docstring)."""
    return np.floor(np.asarray(counts, dtype=np.float64) * 255 / MAX_COUNT + 0.5).astype(np.uint8)


def content_sha256(counts: np.ndarray, labels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(counts, dtype=np.uint8).tobytes()
                          + np.ascontiguousarray(labels, dtype=np.uint8).tobytes()).hexdigest()


def read_bundled() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's copy as (counts uint8 (1797, 8, 8), labels int64), verified against the pin."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    counts, labels = bunch.images, bunch.target
    if counts.shape != (sum(CLASS_COUNTS), NATIVE_SIZE, NATIVE_SIZE) or counts.min() < 0 or counts.max() > MAX_COUNT \
            or not np.array_equal(counts, np.round(counts)):
        raise DatasetError(f"scikit-learn's digits are {counts.shape} with values {counts.min()}..{counts.max()}; "
                           f"expected {sum(CLASS_COUNTS)} 8x8 images of integer counts 0..{MAX_COUNT}")
    found = content_sha256(counts, labels)
    if found != CONTENT_SHA256:
        raise DatasetError(f"scikit-learn's digits differ from the copy imgbench pins (content sha256 {found}, "
                           f"expected {CONTENT_SHA256}); install a scikit-learn whose load_digits() returns "
                           f"the UCI optdigits test set")
    return counts.astype(np.uint8), labels.astype(np.int64)


@dataclass(frozen=True)
class DigitsDataset(FileDataset):
    name: str = "digits"
    description: str = ("scikit-learn's handwritten digits (UCI optdigits test set), 1,797 8x8 grayscale, "
                        "bundled: no download")
    classes: tuple[str, ...] = tuple(str(d) for d in range(10))
    recipe: RecipeDefaults = DIGITS_RECIPE
    train_counts: tuple[int, ...] = CLASS_COUNTS  # every image: there is no official test set
    test_counts = None

    image_shape = (NATIVE_SIZE, NATIVE_SIZE, 1)
    default_size = NATIVE_SIZE
    test_fraction = TEST_FRACTION

    def locate(self, *, data_dir: Path | None, cache_dir: Path, arg: str = "") -> tuple[Where, str]:
        return "local", f"bundled with scikit-learn ({BUNDLED_FILE})"

    def check(self, *, data_dir: Path | None, cache_dir: Path, arg: str = "",
              can_download: CanDownload) -> list[str]:
        return []  # bundled: nothing to find or download

    def load_at(self, *, size: int, val_size: float, data_dir: Path | None, cache_dir: Path) -> LoadedDataset:
        def decode() -> Decoded:
            counts, labels = read_bundled()
            x = to_uint8(counts)[..., None]
            return Decoded(x=resize_array(x, size, desc="resizing digits"), y=labels, digests=row_digests(x),
                           n_official_train=None)

        return self.load_native_arrays(size=size, val_size=val_size, cache_dir=cache_dir,
                                       source_fingerprint=f"sha256:{CONTENT_SHA256}", decode=decode,
                                       source=f"local: bundled with scikit-learn ({BUNDLED_FILE})",
                                       preprocessing={"scale": "floor(v*255/16+0.5)"})


DIGITS = DigitsDataset()
