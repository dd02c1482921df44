"""TensorFlow's flower_photos: 3,670 photos of 5 classes, no official split.

A local copy (``<data dir>/flowers/``) may hold ``flower_photos.tgz`` or the extracted ``flower_photos/<class>/``
(or the class folders directly). The archive, local or downloaded, is verified and then extracted safely into
the cache once. Photos are decoded on every core to :data:`~imgbench.datasets.tree.DEFAULT_SIZE` px squares
unless ``image_size`` says otherwise. The split is frozen by content: 10% test, then ``val_size`` of the rest
(its default 1/9 gives 80/10/10), byte-identical photos always on one side (the archive holds some, one under
two classes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from imgbench.datasets.archives import safe_extract
from imgbench.datasets.checksums import FileCheck
from imgbench.datasets.file_dataset import FileDataset
from imgbench.datasets.sources import files_problems, find_files, local_folder, obtain
from imgbench.datasets.tree import DEFAULT_SIZE, TEST_FRACTION, class_folders, load_tree, scan_tree, tree_problems
from imgbench.specs import CanDownload, LoadedDataset, RecipeDefaults, Where

EXTRACTED = "extracted"
LOCK_TIMEOUT_S = 3600

# 3,670 photos: 128 px squares keep their detail while a CPU epoch stays affordable; small batches and more
# epochs for the few images, shifts and flips. val_size=1/9 with the 10% test gives 80/10/10.
FLOWERS_RECIPE = RecipeDefaults(
    from_scratch=dict(image_size=DEFAULT_SIZE, epochs=40, batch_size=32, lr=1e-3, weight_decay=0.05,
                      warmup_epochs=2.0, label_smoothing=0.1, augment="flip_crop", val_size=1 / 9),
)  # from trained weights: the engine's generic fine-tuning defaults (engine.recipe.FROM_WEIGHTS_DEFAULTS)


@dataclass(frozen=True)
class FlowersDataset(FileDataset):
    name: str
    description: str
    classes: tuple[str, ...]
    archive: FileCheck
    url: str
    folder: str  # the archive's top folder
    train_counts: tuple[int, ...]  # every photo: there is no official test set
    recipe: RecipeDefaults
    test_counts = None

    image_shape = (0, 0, 3)  # photos vary in size; loads default to DEFAULT_SIZE
    default_size = DEFAULT_SIZE
    test_fraction = TEST_FRACTION

    def _extracted(self, cache_dir: Path) -> Path:
        return Path(cache_dir) / self.name / EXTRACTED / self.archive.digest.replace(":", "-")[:23]

    def _tree_root(self, folder: Path) -> Path | None:
        """``folder/flower_photos`` or ``folder`` itself when it holds every class folder."""
        for candidate in (folder / self.folder, folder):
            if candidate.is_dir() and set(self.classes) <= set(class_folders(candidate)):
                return candidate
        return None

    def locate(self, *, data_dir: Path | None, cache_dir: Path, arg: str = "") -> tuple[Where, str]:
        local = local_folder(data_dir, self.name)
        if local is not None and local.is_dir():
            root = self._tree_root(local)
            if root is not None:
                return "local", str(root)
            if (local / self.archive.name).is_file():
                return "local", str(local / self.archive.name)
        extracted = self._extracted(cache_dir) / self.folder
        if extracted.is_dir():
            return "cache", str(extracted)
        found = find_files(self.name, [self.archive], None, cache_dir)
        if found is not None:
            return "cache", str(found[1] / self.archive.name)
        return "download", self.url

    def check(self, *, data_dir: Path | None, cache_dir: Path, arg: str = "",
              can_download: CanDownload) -> list[str]:
        """What would stop a load, found without loading: a bad local copy, or a download that cannot happen."""
        where, detail = self.locate(data_dir=data_dir, cache_dir=cache_dir)
        if where != "download" and Path(detail).is_dir():
            return tree_problems(Path(detail), expected_classes=self.classes)
        return files_problems(self.name, [self.archive], {self.archive.name: [self.url]}, data_dir, cache_dir,
                              can_download)

    def load_at(self, *, size: int, val_size: float, data_dir: Path | None, cache_dir: Path) -> LoadedDataset:
        where, detail = self.locate(data_dir=data_dir, cache_dir=cache_dir)
        if where != "download" and Path(detail).is_dir():
            root, source = Path(detail), f"{where}: {detail}"
        else:  # an archive (local, cached or to download): verified, then extracted into the cache once
            root = self._extract(data_dir, cache_dir)
            source = f"{where if where != 'download' else 'downloaded'}: {self.archive.name}, extracted to {root}"
        tree = scan_tree(root, expected_classes=self.classes)
        return load_tree(tree, name=self.name, image_size=size, val_size=val_size, cache_dir=cache_dir,
                         source=source, default_size=DEFAULT_SIZE)

    def _extract(self, data_dir: Path | None, cache_dir: Path) -> Path:
        target = self._extracted(cache_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{target}.lock", timeout=LOCK_TIMEOUT_S):
            if not (target / self.folder).is_dir():
                _, paths = obtain(self.name, [self.archive], {self.archive.name: [self.url]}, data_dir, cache_dir)
                safe_extract(paths[self.archive.name], target)
        return target / self.folder


FLOWERS = FlowersDataset(
    name="flowers",
    description=f"TensorFlow flower_photos, 3,670 photos, 5 classes, frozen content-hash split 80/10/10 "
                f"(val_size=1/9); {DEFAULT_SIZE}px squares unless image_size is set (CC-BY 2.0)",
    classes=("daisy", "dandelion", "roses", "sunflowers", "tulips"),
    # size from TensorFlow's own download page, sha256 as pinned by TensorFlow Datasets (which agree)
    archive=FileCheck("flower_photos.tgz", "4c54ace7911aaffe13a365c34f650e71dd5bf1be0a58b464e5a7183e3e595d9c",
                      size=228_813_984),
    url="https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz",
    folder="flower_photos",
    train_counts=(633, 898, 641, 699, 799),
    recipe=FLOWERS_RECIPE,
)
