"""The one shape of the file-backed datasets (IDX, CIFAR, flowers, digits), and the spec built from it.

Each such dataset is a frozen record of what it is (name, classes, class counts, recipe defaults) with the
methods only it can know: ``locate`` (where a load would read from), ``check`` (what would stop a load, found
without loading) and ``load_at`` (the load at a checked size and validation share). :meth:`FileDataset.spec`
builds the :class:`DatasetSpec` the registry lists, with split sizes computed from the class counts at the
dataset's own default ``val_size``, so the listing states what a default job loads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, ClassVar, Mapping, Sequence

from imgbench.datasets import splits
from imgbench.datasets.checksums import FileCheck
from imgbench.datasets.store import Decoded, check_image_size, load_through_cache
from imgbench.specs import CanDownload, DatasetSpec, LoadedDataset, RecipeDefaults, Where


class FileDataset(ABC):
    """What a file-backed dataset declares (as dataclass fields) and implements; see the module docstring."""

    name: str
    description: str
    classes: tuple[str, ...]
    recipe: RecipeDefaults  # from_scratch must state val_size: the listed split sizes are computed from it
    train_counts: tuple[int, ...]  # images per class: the official train set, or all when there is no test set
    test_counts: tuple[int, ...] | None  # the official test set per class; None: test_fraction held out
    image_shape: ClassVar[tuple[int, int, int]]  # native (H, W, C); 0 where photos vary
    default_size: ClassVar[int]  # the square side image_size=0 loads at
    test_fraction: ClassVar[float] = 0.0  # share held out as test by content when there is no official test set

    @abstractmethod
    def locate(self, *, data_dir: Path | None, cache_dir: Path, arg: str = "") -> tuple[Where, str]:
        """``("local" | "cache" | "download" | "missing", detail)``, without loading."""

    @abstractmethod
    def check(self, *, data_dir: Path | None, cache_dir: Path, arg: str = "",
              can_download: CanDownload) -> list[str]:
        """What would stop a load, found without loading."""

    @abstractmethod
    def load_at(self, *, size: int, val_size: float, data_dir: Path | None, cache_dir: Path) -> LoadedDataset:
        """The dataset at ``size`` px (checked, never 0) with ``val_size`` (checked) of train held out."""

    def load(self, *, image_size: int, val_size: float, data_dir: Path | None, cache_dir: Path,
             arg: str = "") -> LoadedDataset:
        size = check_image_size(image_size, self.default_size)
        return self.load_at(size=size, val_size=splits.check_val_size(val_size), data_dir=data_dir,
                            cache_dir=cache_dir)

    def spec(self) -> DatasetSpec:
        counts = list(self.test_counts) if self.test_counts is not None else None
        return DatasetSpec(
            name=self.name, load=self.load, locate=self.locate, check=self.check, description=self.description,
            classes=self.classes, image_shape=self.image_shape, recipe=self.recipe,
            split_sizes=splits.split_sizes(list(self.train_counts), test_counts=counts,
                                           val_size=float(self.recipe.from_scratch["val_size"]),
                                           test_fraction=self.test_fraction),
        )

    def load_native_arrays(self, *, size: int, val_size: float, cache_dir: Path, source_fingerprint: str,
                           decode: Callable[[], Decoded], source: str,
                           preprocessing: Mapping[str, str] | None = None) -> LoadedDataset:
        """The dataset's arrays at ``size`` (its native size, or resized bilinearly from it), through the cache.

        ``decode`` runs only on a cache miss; ``preprocessing`` adds to what the cache key records.
        """
        native, _, channels = self.image_shape
        return load_through_cache(
            name=self.name, classes=self.classes, cache_dir=cache_dir, val_size=val_size,
            test_fraction=self.test_fraction, source_fingerprint=source_fingerprint,
            preprocessing={"size": size, "resize": "none" if size == native else "bilinear", "channels": channels,
                           **(preprocessing or {})},
            decode=decode, source=source,
        )


def files_fingerprint(files: Sequence[FileCheck]) -> str:
    """The pinned digests of a dataset's source files, as its cache key and fingerprint record them."""
    return ",".join(f"{f.name}={f.digest}" for f in files)
