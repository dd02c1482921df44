"""CIFAR-10 and CIFAR-100: the official pickled batches, or the common PNG class-folder layout.

A local copy (``<data dir>/cifar10/``) may hold the official ``cifar-10-python.tar.gz``, its extracted
``cifar-10-batches-py/``, or ``train/<class>/*.png`` + ``test/<class>/*.png``. Pickled batches are read only
after their pinned md5 matches, and then only through the restricted unpickler. The tarball's batches are
read straight from the verified archive, so nothing is extracted to disk.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from imgbench.datasets.archives import open_tar, safe_unpickle
from imgbench.datasets.checksums import FileCheck, verify_file
from imgbench.datasets.errors import ChecksumError, DatasetError
from imgbench.datasets.file_dataset import FileDataset, files_fingerprint
from imgbench.datasets.images import resize_array
from imgbench.datasets.sources import checksum_problems, files_problems, find_files, local_folder, obtain
from imgbench.datasets.store import Decoded, decoded_in_cache, row_digests
from imgbench.datasets.tree import is_split_layout, load_tree, scan_tree, tree_problems
from imgbench.specs import CanDownload, LoadedDataset, RecipeDefaults, Where

NATIVE_SIZE = 32
PIXELS = NATIVE_SIZE * NATIVE_SIZE * 3

# AdamW + cosine with a short warm-up trains CNNs and small ViTs alike from scratch; shifts and horizontal
# flips (the standard CIFAR augmentation) and label smoothing, since small photos overfit within 30 epochs.
CIFAR10_RECIPE = RecipeDefaults(
    from_scratch=dict(epochs=30, batch_size=128, lr=2e-3, weight_decay=0.05, warmup_epochs=1.0,
                      label_smoothing=0.1, augment="flip_crop", val_size=0.1),
    from_weights=dict(image_size=0, epochs=8, lr=2e-4, warmup_epochs=0.5),
)
# CIFAR-100: photos of the same size and kind, as many, in 100 classes: CIFAR-10's recipe, as the standard
# CIFAR recipes (He et al.'s ResNets among them) train both alike. With 500 images a class its shifts, flips
# and label smoothing matter more, not less.
CIFAR100_RECIPE = CIFAR10_RECIPE


@dataclass(frozen=True)
class CifarDataset(FileDataset):
    name: str
    description: str
    classes: tuple[str, ...]
    archive: FileCheck
    url: str
    folder: str  # the archive's top folder of batches
    train_batches: tuple[FileCheck, ...]
    test_batches: tuple[FileCheck, ...]
    label_key: bytes
    train_counts: tuple[int, ...]
    test_counts: tuple[int, ...]
    recipe: RecipeDefaults

    image_shape = (NATIVE_SIZE, NATIVE_SIZE, 3)
    default_size = NATIVE_SIZE

    @property
    def source_fingerprint(self) -> str:
        return files_fingerprint(self.train_batches + self.test_batches)

    def _local_layout(self, data_dir: Path | None) -> tuple[str, Path] | None:
        local = local_folder(data_dir, self.name)
        if local is None or not local.is_dir():
            return None
        if (local / self.archive.name).is_file():
            return "archive", local / self.archive.name
        if all((local / self.folder / b.name).is_file() for b in self.train_batches + self.test_batches):
            return "batches", local / self.folder
        if is_split_layout(local):
            return "png", local
        return None

    def locate(self, *, data_dir: Path | None, cache_dir: Path, arg: str = "") -> tuple[Where, str]:
        layout = self._local_layout(data_dir)
        if layout is not None:
            return "local", str(layout[1])
        found = find_files(self.name, [self.archive], None, cache_dir)
        if found is not None:
            return "cache", str(found[1] / self.archive.name)
        decoded = decoded_in_cache(cache_dir, self.name, self.source_fingerprint)
        return ("cache", str(decoded)) if decoded else ("download", self.url)

    def check(self, *, data_dir: Path | None, cache_dir: Path, arg: str = "",
              can_download: CanDownload) -> list[str]:
        """What would stop a load, found without loading: a bad local copy, or a download that cannot happen."""
        layout = self._local_layout(data_dir)
        if layout is not None and layout[0] == "png":
            return tree_problems(layout[1], expected_classes=self.classes)
        if layout is not None and layout[0] == "archive":
            return checksum_problems(layout[1].parent, [self.archive], cache_dir)
        if layout is not None:
            return checksum_problems(layout[1], self.train_batches + self.test_batches, cache_dir)
        cached = find_files(self.name, [self.archive], None, cache_dir)
        if cached is None and decoded_in_cache(cache_dir, self.name, self.source_fingerprint):
            return []
        return files_problems(self.name, [self.archive], {self.archive.name: [self.url]}, data_dir, cache_dir,
                              can_download)

    def load_at(self, *, size: int, val_size: float, data_dir: Path | None, cache_dir: Path) -> LoadedDataset:
        layout = self._local_layout(data_dir)
        if layout is not None and layout[0] == "png":
            tree = scan_tree(layout[1], expected_classes=self.classes)
            return load_tree(tree, name=self.name, image_size=size, val_size=val_size, cache_dir=cache_dir,
                             source=f"local: {tree.root} (PNG class folders)", default_size=NATIVE_SIZE)
        if layout is not None and layout[0] == "archive":
            verify_file(layout[1], self.archive, cache_dir)  # cheap when unchanged; in full before reading
        where, detail = self.locate(data_dir=data_dir, cache_dir=cache_dir)

        def decode() -> Decoded:
            if layout is not None and layout[0] == "batches":
                batches, source = self._read_batch_files(layout[1]), f"local: {layout[1]}"
            else:
                source, paths = obtain(self.name, [self.archive], {self.archive.name: [self.url]}, data_dir, cache_dir)
                batches = self._read_archive(paths[self.archive.name])
            return replace(self._decoded(batches, size), source=source)

        return self.load_native_arrays(size=size, val_size=val_size, cache_dir=cache_dir,
                                       source_fingerprint=self.source_fingerprint, decode=decode,
                                       source="" if where == "download" else f"{where}: {detail}")

    def _read_batch_files(self, folder: Path) -> dict[str, bytes]:
        batches = {}
        for check in self.train_batches + self.test_batches:
            data = (folder / check.name).read_bytes()
            _verify_bytes(data, check, folder / check.name)
            batches[check.name] = data
        return batches

    def _read_archive(self, archive: Path) -> dict[str, bytes]:
        batches = {}
        with open_tar(archive) as tar:
            for check in self.train_batches + self.test_batches:
                member_name = f"{self.folder}/{check.name}"
                try:
                    member = tar.getmember(member_name)
                    handle = tar.extractfile(member) if member.isfile() else None
                    data = handle.read() if handle is not None else b""
                except (KeyError, EOFError, OSError) as exc:
                    raise DatasetError(f"{archive} lacks a readable {member_name} ({exc}); it is not the "
                                       f"official archive or is damaged: delete it and fetch it again") from exc
                _verify_bytes(data, check, Path(f"{archive}:{member_name}"))
                batches[check.name] = data
        return batches

    def _decoded(self, batches: dict[str, bytes], size: int) -> Decoded:
        parts = [self._parse_batch(batches[c.name], c.name) for c in self.train_batches + self.test_batches]
        n_train = sum(len(y) for _, y in parts[:len(self.train_batches)])
        x = np.concatenate([x for x, _ in parts])
        return Decoded(x=resize_array(x, size, desc=f"resizing {self.name}"),
                       y=np.concatenate([y for _, y in parts]), digests=row_digests(x), n_official_train=n_train)

    def _parse_batch(self, data: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
        batch = safe_unpickle(data, what)
        if not isinstance(batch, dict) or b"data" not in batch or self.label_key not in batch:
            raise DatasetError(f"{what} is not a CIFAR batch: it lacks b'data' or {self.label_key!r}")
        pixels, labels = batch[b"data"], np.asarray(batch[self.label_key], dtype=np.int64)
        if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 2 \
                or pixels.shape[1] != PIXELS or len(pixels) != len(labels):
            raise DatasetError(f"{what}: data must be uint8 (N, {PIXELS}) with one label per row")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.classes)):
            raise DatasetError(f"{what}: labels outside 0..{len(self.classes) - 1}")
        # rows are channel-planar (R plane, G plane, B plane); the engine wants NHWC
        images = pixels.reshape(-1, 3, NATIVE_SIZE, NATIVE_SIZE).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(images), labels


def _verify_bytes(data: bytes, check: FileCheck, where: Path) -> None:
    actual = hashlib.md5(data).hexdigest() if check.md5 else hashlib.sha256(data).hexdigest()
    expected = check.md5 or check.sha256
    if actual != expected:
        raise ChecksumError(f"{where} has checksum {actual}, but the official {check.name} has {expected}: it is "
                            f"damaged or not the official file, so it is not unpickled. Replace it with the "
                            f"official file.")


CIFAR10 = CifarDataset(
    name="cifar10",
    description="CIFAR-10, 32x32 colour, 10 classes, official 50k train / 10k test (Krizhevsky 2009)",
    classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    # sha256 as pinned by Keras, md5 from the CIFAR page and torchvision, size as the server sends it
    archive=FileCheck("cifar-10-python.tar.gz", "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
                      "c58f30108f718f92721af3b95e74349a", 170_498_071),
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    folder="cifar-10-batches-py",
    train_batches=(  # per-file md5s as pinned by torchvision
        FileCheck("data_batch_1", md5="c99cafc152244af753f735de768cd75f"),
        FileCheck("data_batch_2", md5="d4bba439e000b95fd0a9bffe97cbabec"),
        FileCheck("data_batch_3", md5="54ebc095f3ab1f0389bbae665268c751"),
        FileCheck("data_batch_4", md5="634d18415352ddfa80567beed471001a"),
        FileCheck("data_batch_5", md5="482c414d41f54cd18b22e5b47cb7c3cb"),
    ),
    test_batches=(FileCheck("test_batch", md5="40351d587109b95175f43aff81a1287e"),),
    label_key=b"labels",
    train_counts=(5000,) * 10,
    test_counts=(1000,) * 10,
    recipe=CIFAR10_RECIPE,
)

CIFAR100 = CifarDataset(
    name="cifar100",
    description="CIFAR-100, 32x32 colour, 100 fine classes, official 50k train / 10k test (Krizhevsky 2009)",
    classes=tuple((
        "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can "
        "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin "
        "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster "
        "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck "
        "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk "
        "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television "
        "tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm").split()),
    archive=FileCheck("cifar-100-python.tar.gz", "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
                      "eb9058c3a382ffc7106e4002c42a8d85", 169_001_437),
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    folder="cifar-100-python",
    train_batches=(FileCheck("train", md5="16019d7e3df5f24257cddd939b257f8d"),),
    test_batches=(FileCheck("test", md5="f0ef6b0ae62326f3e7ffdfab6717acfc"),),
    label_key=b"fine_labels",
    train_counts=(500,) * 100,
    test_counts=(100,) * 100,
    recipe=CIFAR100_RECIPE,
)
