"""Tampered, truncated and hostile files are refused with a clear error, and never used."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from dataclasses import replace

import numpy as np
import pytest

from imgbench.datasets import ChecksumError, DatasetError, UnsafeArchiveError, UnsafePickleError
from imgbench.datasets.archives import safe_extract, safe_unpickle
from imgbench.datasets.checksums import FileCheck
from imgbench.datasets.cifar import CIFAR10
from imgbench.datasets.fixtures import cifar_batch, checks_for, tar_bytes, tiny_cifar, tiny_flowers, tiny_mnist

PAYLOAD_MARK = "imgbench-payload-ran"


class _Exploit:
    """Unpickling this calls os.system: what a tampered batch could carry."""

    def __init__(self, mark_file):
        self.mark_file = mark_file

    def __reduce__(self):
        return os.system, (f"touch {self.mark_file}",)


def test_restricted_unpickler_loads_a_real_batch_layout():
    images = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    batch = safe_unpickle(cifar_batch(images, [0, 1, 2, 3]), "batch")
    assert batch[b"labels"] == [0, 1, 2, 3] and batch[b"data"].shape == (4, 3072)


def test_pickle_with_code_payload_is_refused_and_never_runs(tmp_path):
    mark = tmp_path / PAYLOAD_MARK
    hostile = pickle.dumps({b"data": _Exploit(mark), b"labels": [0]}, protocol=2)
    with pytest.raises(UnsafePickleError, match="posix.system|os.system"):
        safe_unpickle(hostile, "data_batch_1")
    assert not mark.exists()


@pytest.mark.parametrize("payload", [
    pickle.dumps(print, protocol=2),  # a builtin
    pickle.dumps({b"data": np.zeros(3, dtype=object)}, protocol=2),  # object array
    pickle.dumps(np.zeros(3, dtype=np.float64), protocol=2),  # allowed global, disallowed dtype
])
def test_unpickler_refuses_anything_but_plain_batches(payload):
    with pytest.raises(UnsafePickleError):
        safe_unpickle(payload, "batch")


def test_hostile_batch_is_refused_by_checksum_before_unpickling(tmp_path):
    variant = tiny_cifar(tmp_path, layout="batches")
    mark = tmp_path / PAYLOAD_MARK
    (tmp_path / "cifar10" / CIFAR10.folder / "data_batch_1").write_bytes(
        pickle.dumps({b"data": _Exploit(mark), b"labels": [0]}, protocol=2))
    with pytest.raises(ChecksumError, match="not unpickled"):
        variant.load(image_size=0, val_size=0.1, data_dir=tmp_path, cache_dir=tmp_path / "c")
    # even with a checksum pinned to the hostile file, the restricted unpickler stops it
    hostile = checks_for(tmp_path / "cifar10" / CIFAR10.folder / "data_batch_1")
    pinned = replace(variant, train_batches=(FileCheck("data_batch_1", md5=hostile.md5),) + variant.train_batches[1:])
    with pytest.raises(UnsafePickleError):
        pinned.load(image_size=0, val_size=0.1, data_dir=tmp_path, cache_dir=tmp_path / "c")
    assert not mark.exists()


def _tar_with(tmp_path, add):
    path = tmp_path / "evil.tgz"
    with tarfile.open(path, "w:gz") as tar:
        add(tar)
    return path


def _file(tar, name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _link(tar, name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    tar.addfile(info)


@pytest.mark.parametrize("add, what", [
    (lambda tar: _file(tar, "flower_photos/../../escaped.txt"), "outside"),
    (lambda tar: _file(tar, "/tmp/imgbench-absolute.txt"), "outside"),
    (lambda tar: _link(tar, "flower_photos/link", "/etc/passwd"), "link"),
    (lambda tar: _link(tar, "flower_photos/hard", "../../etc/passwd", tarfile.LNKTYPE), "link"),
])
def test_escaping_tar_members_are_refused(tmp_path, add, what):
    archive = _tar_with(tmp_path, lambda tar: (_file(tar, "flower_photos/ok.txt"), add(tar)))
    dest = tmp_path / "out" / "target"
    with pytest.raises(UnsafeArchiveError, match=what):
        safe_extract(archive, dest)
    assert not dest.exists() and not (tmp_path / "escaped.txt").exists()
    assert not list((tmp_path / "out").iterdir())  # the staging folder is gone too


def test_truncated_archive_is_reported_and_leaves_nothing(tmp_path):
    variant = tiny_flowers(tmp_path, layout="archive")
    archive = tmp_path / "flowers" / "flower_photos.tgz"
    data = archive.read_bytes()
    cut = tmp_path / "cut.tgz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="truncated or damaged"):
        safe_extract(cut, tmp_path / "out" / "x")
    assert not (tmp_path / "out" / "x").exists()
    # through the loader the pinned size/checksum catches it before extraction is even tried
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(ChecksumError, match="truncated"):
        variant.load(image_size=8, val_size=0.1, data_dir=tmp_path, cache_dir=tmp_path / "c")


def test_corrupted_local_mnist_file_is_refused(tmp_path):
    variant = tiny_mnist(tmp_path)
    path = tmp_path / "mnist" / "train-labels-idx1-ubyte.gz"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # same size, one byte flipped
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="train-labels-idx1-ubyte.gz"):
        variant.load(image_size=0, val_size=0.1, data_dir=tmp_path, cache_dir=tmp_path / "c")


def test_local_file_damaged_after_a_warm_load_is_detected(tmp_path):
    variant = tiny_mnist(tmp_path)
    cache = tmp_path / "c"
    variant.load(image_size=0, val_size=0.1, data_dir=tmp_path, cache_dir=cache)
    path = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])  # truncated: size and mtime change
    with pytest.raises(ChecksumError, match="t10k-images"):
        variant.load(image_size=0, val_size=0.1, data_dir=tmp_path, cache_dir=cache)


def test_cifar_archive_with_wrong_checksum_is_refused(tmp_path):
    variant = tiny_cifar(tmp_path, layout="archive")
    (tmp_path / "cifar10" / CIFAR10.archive.name).write_bytes(tar_bytes({"cifar-10-batches-py/other": b"x"}))
    with pytest.raises(ChecksumError, match="cifar-10-python.tar.gz"):
        variant.load(image_size=0, val_size=0.1, data_dir=tmp_path, cache_dir=tmp_path / "c")


def test_damaged_decoded_cache_is_rebuilt_not_used(tmp_path, capsys):
    variant = tiny_mnist(tmp_path)
    cache = tmp_path / "c"
    first = variant.load(image_size=0, val_size=0.1, data_dir=tmp_path, cache_dir=cache)
    (x_file,) = (cache / "mnist" / "decoded").glob("*/x.npy")
    x_file.write_bytes(x_file.read_bytes()[:1000])
    second = variant.load(image_size=0, val_size=0.1, data_dir=tmp_path, cache_dir=cache)
    assert "damaged" in capsys.readouterr().err
    assert np.array_equal(first.train.x, second.train.x)
