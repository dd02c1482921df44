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

from imgbench.datasets import splits
from imgbench.datasets.errors import DatasetError
from imgbench.datasets.images import resize_array
from imgbench.datasets.store import Decoded, check_image_size, load_dataset, row_digests
from imgbench.specs import DatasetSpec, LoadedDataset

NATIVE_SIZE = 8
MAX_COUNT = 16  # the pixel values are counts of set pixels in 4x4 blocks of a 32x32 bitmap
TEST_FRACTION = 0.2
DEFAULT_VAL_SIZE = 0.1
BUNDLED_FILE = "sklearn/datasets/data/digits.csv.gz"  # what load_digits reads, for `imgbench datasets`
CLASS_COUNTS = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)
# sha256 of the 1,797x64 counts as uint8, row-major, followed by the 1,797 labels as uint8.
CONTENT_SHA256 = "87ff0c9e40dc7e2c0e34e7257799c2e3f3aec1a016363bb11cad869ec428a826"


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
class DigitsDataset:
    name: str = "digits"
    description: str = ("scikit-learn's handwritten digits (UCI optdigits test set), 1,797 8x8 grayscale, "
                        "bundled: no download")
    classes: tuple[str, ...] = tuple(str(d) for d in range(10))

    def locate(self, *, data_dir: Path | None, cache_dir: Path, arg: str = "") -> tuple[str, str]:
        return "local", f"bundled with scikit-learn ({BUNDLED_FILE})"

    def load(self, *, image_size: int, val_size: float, data_dir: Path | None, cache_dir: Path,
             arg: str = "") -> LoadedDataset:
        size = check_image_size(image_size, NATIVE_SIZE)
        val_size = splits.check_val_size(val_size)

        def decode() -> Decoded:
            counts, labels = read_bundled()
            x = to_uint8(counts)[..., None]
            return Decoded(x=resize_array(x, size, desc="resizing digits"), y=labels, digests=row_digests(x),
                           n_official_train=None)

        return load_dataset(
            name=self.name, classes=self.classes, cache_dir=cache_dir, val_size=val_size,
            test_fraction=TEST_FRACTION, source_fingerprint=f"sha256:{CONTENT_SHA256}",
            preprocessing={"size": size, "resize": "none" if size == NATIVE_SIZE else "bilinear", "channels": 1,
                           "scale": "floor(v*255/16+0.5)"},
            decode=decode, source=f"local: bundled with scikit-learn ({BUNDLED_FILE})",
        )

    def spec(self) -> DatasetSpec:
        return DatasetSpec(
            name=self.name, load=self.load, locate=self.locate, description=self.description, classes=self.classes,
            image_shape=(NATIVE_SIZE, NATIVE_SIZE, 1),
            split_sizes=splits.split_sizes(list(CLASS_COUNTS), test_counts=None, val_size=DEFAULT_VAL_SIZE,
                                           test_fraction=TEST_FRACTION),
        )


DIGITS = DigitsDataset()
