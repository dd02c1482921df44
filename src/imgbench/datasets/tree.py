"""The folder-tree library: scan, check, split and load folder-per-class image trees. The ``imagefolder:``
dataset and plugins' folder datasets (:mod:`.imagefolder`), the CIFAR PNG layout and the extracted flowers
all load through it.

Two layouts are recognised: ``root/<class>/...`` (no official split: a test set is held out by content) and
``root/train/<class>/...`` with ``root/test/<class>/...`` (the official split is kept). Class names are the
sorted folder names; images in nested folders count for their top class folder. Every image is decoded to
8-bit RGB by the rules of :mod:`imgbench.datasets.images` (so a folder may mix grayscale, palette, 16-bit and
colour files: grayscale ones get three equal channels), resized on its shorter side and center-cropped to a
square (:data:`DEFAULT_SIZE` px unless asked).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from imgbench.datasets import splits
from imgbench.datasets.errors import DatasetError
from imgbench.datasets.images import DECODE_RULES, RESIZE_METHOD, decode_files, is_image
from imgbench.datasets.manifest import folder_content
from imgbench.datasets.store import Decoded, check_image_size, hex_digests, load_through_cache
from imgbench.errors import UsageError
from imgbench.specs import LoadedDataset

DEFAULT_SIZE = 128  # px, for image_size=0: keeps detail in photos while a CPU epoch stays affordable
TEST_FRACTION = 0.1  # held out as test when a tree has no train/test folders
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
SPLIT_FOLDERS = ("train", "test")
IMAGE_SUFFIXES = tuple(sorted(IMAGE_EXTENSIONS))
MIN_CLASSES = 2


@dataclass(frozen=True)
class FolderTree:
    """The images of a tree, official train first then official test, each part in sorted path order."""

    root: Path
    relpaths: tuple[str, ...]
    labels: np.ndarray
    classes: tuple[str, ...]
    n_official_train: int | None


def is_split_layout(root: Path) -> bool:
    return all((root / part).is_dir() for part in SPLIT_FOLDERS)


def class_folders(folder: Path) -> list[str]:
    try:
        return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith("."))
    except OSError as exc:
        raise UsageError(f"cannot read image folder {folder}: {exc.strerror}; pass a folder that holds one "
                         f"subfolder of images per class") from exc


def scan_tree(root: Path, expected_classes: Sequence[str] | None = None) -> FolderTree:
    """List a tree's images and labels; ``expected_classes`` fixes the names and their label order."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise UsageError(f"image folder {root} does not exist; pass a folder with one subfolder per class")
    parts = [root / p for p in SPLIT_FOLDERS] if is_split_layout(root) else [root]
    if len(parts) == 2 and (root / "val").is_dir():
        raise DatasetError(f"{root / 'val'} would be ignored: validation is carved from train/ by val_size. "
                           f"Move its images into {root / 'train'} (same class folders).")
    found = class_folders(parts[0])
    classes = tuple(expected_classes) if expected_classes is not None else tuple(found)
    if 0 < len(classes) < MIN_CLASSES:
        raise DatasetError(f"{parts[0]} holds {len(classes)} class folder ({classes[0]}); a classifier needs at "
                           f"least {MIN_CLASSES}: one subfolder of images per class")
    relpaths: list[str] = []
    labels: list[int] = []
    n_train = None
    for part in parts:
        present = class_folders(part)
        unknown = sorted(set(present) - set(classes))
        missing = sorted(set(classes) - set(present))
        if unknown or missing or not classes:
            raise DatasetError(f"{part} should hold one folder per class {list(classes) or '(none found)'}"
                               + (f"; missing {missing}" if missing else "")
                               + (f"; unexpected {unknown}" if unknown else ""))
        prefix = "" if part == root else f"{part.name}/"
        empty = []
        for label, name in enumerate(classes):
            files = _images_under(str(part / name), f"{prefix}{name}/")
            if not files:
                empty.append(str(part / name))
            relpaths += files
            labels += [label] * len(files)
        if empty:
            raise DatasetError(f"class folder(s) {', '.join(empty)} hold no images "
                               f"({', '.join(sorted(IMAGE_EXTENSIONS))}); add images or remove the folder(s)")
        if part.name == "train" and len(parts) == 2:
            n_train = len(relpaths)
    return FolderTree(root, tuple(relpaths), np.asarray(labels, dtype=np.int64), classes, n_train)


def _images_under(folder: str, prefix: str) -> list[str]:
    """Sorted relative paths (``prefix`` + path below ``folder``) of the images in ``folder``, at any depth.

    Plain strings, not Path objects: a tree of 20,000 files is scanned on every warm load.
    """
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        below = dirpath[len(folder) + 1:]
        base = f"{prefix}{below}/" if below else prefix
        found += [base + f for f in filenames
                  if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES)]
    return sorted(found)


def unreadable_classes(tree: FolderTree) -> list[str]:
    """A problem for each class none of whose files is a readable image. Opening reads only a header, and stops
    at a class's first readable file, so a good tree costs one open per class."""
    readable: set[int] = set()
    for rel, label in zip(tree.relpaths, tree.labels.tolist()):
        if label not in readable and is_image(tree.root / rel):
            readable.add(label)
    return [f"class folder {name} of {tree.root} holds no readable image (every file fails to open as one); "
            f"replace them with real images" for label, name in enumerate(tree.classes) if label not in readable]


def tree_problems(root: Path, expected_classes: Sequence[str] | None = None) -> list[str]:
    """Everything that would stop a load of the tree at ``root``, without decoding it."""
    try:
        return unreadable_classes(scan_tree(root, expected_classes))
    except UsageError as exc:
        return [str(exc)]


def load_tree(tree: FolderTree, *, name: str, image_size: int, val_size: float, cache_dir: Path,
              source: str, default_size: int = DEFAULT_SIZE) -> LoadedDataset:
    """Decode (once, cached) and split a scanned tree."""
    size = check_image_size(image_size, default_size)
    val_size = splits.check_val_size(val_size)
    unreadable = unreadable_classes(tree)
    if unreadable:
        raise DatasetError("; ".join(unreadable))
    hashes, content_fingerprint = folder_content(tree.root, tree.relpaths, cache_dir)

    def decode() -> Decoded:
        x = decode_files([tree.root / rel for rel in tree.relpaths], size, desc=f"decoding {name}")
        return Decoded(x=x, y=tree.labels, digests=hex_digests(hashes), n_official_train=tree.n_official_train)

    return load_through_cache(
        name=name, classes=tree.classes, cache_dir=cache_dir, val_size=val_size, test_fraction=TEST_FRACTION,
        source_fingerprint=f"{content_fingerprint}|classes={','.join(tree.classes)}",
        preprocessing={"size": size, "resize": RESIZE_METHOD, "decode": DECODE_RULES, "channels": 3},
        decode=decode, source=source,
    )


def split_plan(tree: FolderTree, val_size: float, cache_dir: Path) -> dict[str, list[str]]:
    """Which files each split gets (relative paths), without decoding: for audits and leak tests."""
    hashes, _ = folder_content(tree.root, tree.relpaths, cache_dir)
    index = splits.split(tree.labels, hex_digests(hashes), n_official_train=tree.n_official_train,
                         val_size=splits.check_val_size(val_size), test_fraction=TEST_FRACTION)
    return {part: [tree.relpaths[i] for i in getattr(index, part)] for part in ("train", "val", "test")}
