"""Tiny files in each official format, and dataset variants pinned to them, for tests (ours and plugins').

Every writer produces real, parseable files (gzipped IDX, pickled CIFAR batches and their tarball, a flowers
tarball, class folders of PNG/JPEG), so tests exercise the same code paths as the official data, in
milliseconds. The ``tiny_*`` functions return a copy of the built-in dataset whose pinned checksums are those
of the tiny files; point ``data_dir`` at ``folder`` to load it as a local copy.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import shutil
import struct
import tarfile
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from imgbench.datasets.checksums import FileCheck
from imgbench.datasets.cifar import CIFAR10, CifarDataset
from imgbench.datasets.flowers import FLOWERS, FlowersDataset
from imgbench.datasets.idx import MNIST, IdxDataset


def checks_for(path: Path, name: str | None = None) -> FileCheck:
    data = Path(path).read_bytes()
    return FileCheck(name or Path(path).name, hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest(), len(data))


def write_idx(path: Path, array: np.ndarray) -> Path:
    """``array`` (uint8) as a gzipped IDX file."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = b"\0\0\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(gzip.compress(header + array.tobytes(), mtime=0))
    return Path(path)


def tiny_mnist(folder: Path, n_train: int = 60, n_test: int = 20, seed: int = 0, name: str = "mnist") -> IdxDataset:
    """Write ``folder/<name>/`` with the four IDX files of a random 10-class set; return its variant."""
    rng = np.random.default_rng(seed)
    target = Path(folder) / name
    arrays = [rng.integers(0, 256, (n_train, 28, 28)), np.arange(n_train) % 10,
              rng.integers(0, 256, (n_test, 28, 28)), np.arange(n_test) % 10]
    train_x, train_y, test_x, test_y = (checks_for(write_idx(target / f.name, a)) for f, a in zip(MNIST.files, arrays))
    return replace(MNIST, name=name, files=(train_x, train_y, test_x, test_y), mirrors=("https://example.invalid/mnist/",),
                   train_counts=tuple(np.bincount(arrays[1], minlength=10)),
                   test_counts=tuple(np.bincount(arrays[3], minlength=10)))


def cifar_batch(images: np.ndarray, labels: Sequence[int] | np.ndarray, label_key: bytes = b"labels") -> bytes:
    """A pickled batch laid out like the official ones: channel-planar uint8 rows, protocol 2, byte keys."""
    rows = np.ascontiguousarray(np.asarray(images, dtype=np.uint8).transpose(0, 3, 1, 2)).reshape(len(images), -1)
    batch = {b"batch_label": b"tiny batch", label_key: [int(v) for v in labels], b"data": rows,
             b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))]}
    return pickle.dumps(batch, protocol=2)


def tar_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for member_name, data in members.items():
            info = tarfile.TarInfo(member_name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def tiny_cifar(folder: Path, layout: str = "archive", per_batch: int = 20, seed: int = 0) -> CifarDataset:
    """Write a random CIFAR-10 look-alike into ``folder/cifar10/`` as ``archive`` (the tarball),
    ``batches`` (the extracted folder) or ``png`` (train/test class folders); return its variant."""
    rng = np.random.default_rng(seed)
    target = Path(folder) / "cifar10"
    target.mkdir(parents=True, exist_ok=True)
    names = [b.name for b in CIFAR10.train_batches + CIFAR10.test_batches]
    data = {}
    for index, batch_name in enumerate(names):
        labels = (np.arange(per_batch) + index) % 10
        data[batch_name] = (rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8), labels)
    blobs = {n: cifar_batch(*data[n]) for n in names}
    batch_checks = {n: FileCheck(n, md5=hashlib.md5(blob).hexdigest()) for n, blob in blobs.items()}
    variant = replace(CIFAR10, url="https://example.invalid/cifar-10-python.tar.gz",
                      train_batches=tuple(batch_checks[n] for n in names[:-1]),
                      test_batches=(batch_checks[names[-1]],),
                      train_counts=(per_batch * 5 // 10,) * 10, test_counts=(per_batch // 10,) * 10)
    if layout == "archive":
        archive = target / CIFAR10.archive.name
        archive.write_bytes(tar_bytes({f"{CIFAR10.folder}/{n}": blob for n, blob in blobs.items()}))
        return replace(variant, archive=checks_for(archive))
    if layout == "batches":
        for batch_name, blob in blobs.items():
            (target / CIFAR10.folder).mkdir(exist_ok=True)
            (target / CIFAR10.folder / batch_name).write_bytes(blob)
        return variant
    if layout == "png":
        for batch_name in names:
            part = "test" if batch_name == names[-1] else "train"
            images, labels = data[batch_name]
            for index, (image, label) in enumerate(zip(images, labels)):
                path = target / part / CIFAR10.classes[label] / f"{batch_name}_{index}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(path)
        return variant
    raise ValueError(f"layout {layout!r}: use archive, batches or png")


def write_image_tree(root: Path, classes: Sequence[str], per_class: int, *, seed: int = 0, suffix: str = ".jpg",
                     size: tuple[int, int] = (24, 16)) -> list[Path]:
    """``root/<class>/<n>.jpg`` random photos (``size`` is width, height); returns the paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for class_name in classes:
        for index in range(per_class):
            path = Path(root) / class_name / f"{class_name}_{index:03d}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
            paths.append(path)
    return paths


def tiny_flowers(folder: Path, layout: str = "archive", per_class: int = 12, seed: int = 0) -> FlowersDataset:
    """Write a flowers look-alike into ``folder/flowers/`` as ``archive`` (flower_photos.tgz) or ``folders``
    (flower_photos/<class>/), with one photo duplicated byte for byte under a second class, like the real one."""
    target = Path(folder) / "flowers"
    tree = target / FLOWERS.folder
    paths = write_image_tree(tree, FLOWERS.classes, per_class, seed=seed)
    duplicate = tree / "tulips" / paths[2 * per_class].name  # a rose, also filed under tulips
    duplicate.write_bytes(paths[2 * per_class].read_bytes())
    (tree / "LICENSE.txt").write_text("tiny test photos\n")
    counts = tuple(per_class + (1 if c == "tulips" else 0) for c in FLOWERS.classes)
    variant = replace(FLOWERS, url="https://example.invalid/flower_photos.tgz", train_counts=counts)
    if layout == "folders":
        return variant
    if layout == "archive":
        archive = target / FLOWERS.archive.name
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(tree, arcname=FLOWERS.folder)
        shutil.rmtree(tree)
        return replace(variant, archive=checks_for(archive))
    raise ValueError(f"layout {layout!r}: use archive or folders")
