"""Datasets: MNIST, Fashion-MNIST, CIFAR-10/100, flowers and folder-per-class trees, verified and cached.

Each loads from a local copy (``IMGBENCH_DATA_DIR``), the cache, or a verified https download, decodes once
to uint8 NHWC arrays cached on disk, and splits train/val/test by content (see :mod:`.splits`). Plugin
authors wrap their own folder trees with :func:`imagefolder_dataset`.
"""

from __future__ import annotations

from imgbench.datasets.errors import (
    ChecksumError,
    DatasetError,
    DownloadError,
    UnsafeArchiveError,
    UnsafePickleError,
)
from imgbench.datasets.imagefolder import imagefolder_dataset

__all__ = [
    "ChecksumError",
    "DatasetError",
    "DownloadError",
    "UnsafeArchiveError",
    "UnsafePickleError",
    "imagefolder_dataset",
]
