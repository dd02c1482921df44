"""Every supported layout, written tiny in its official format, loads into the right uint8 NHWC splits."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pytest

from imgbench.datasets import DatasetError, imagefolder_dataset, splits
from imgbench.datasets.checksums import FileCheck
from imgbench.datasets.cifar import CIFAR10, CIFAR100
from imgbench.datasets.digits import DIGITS
from imgbench.datasets.idx import FASHION_MNIST, MNIST, read_idx
from imgbench.datasets.imagefolder import IMAGEFOLDER
from imgbench.datasets.fixtures import (
    checks_for,
    cifar_batch,
    tar_bytes,
    tiny_cifar,
    tiny_flowers,
    tiny_mnist,
    write_idx,
    write_image_tree,
)
from imgbench.errors import UsageError


def _check_splits(data, n_classes, shape):
    for part in (data.train, data.val, data.test):
        assert part.x.dtype == np.uint8 and part.y.dtype == np.int64
        assert part.x.shape[1:] == shape and len(part.x) == len(part.y)
        assert part.x.flags.writeable and part.x.flags.c_contiguous
        assert part.y.min() >= 0 and part.y.max() < n_classes
    assert len(data.classes) == n_classes


def test_idx_roundtrip(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a.gz", array)), array)


def test_mnist_local_copy_keeps_official_test_and_stratifies_val(tmp_path):
    variant = tiny_mnist(tmp_path, n_train=100, n_test=30)
    data = variant.load(image_size=0, val_size=0.2, data_dir=tmp_path, cache_dir=tmp_path / "cache")
    _check_splits(data, 10, (28, 28, 1))
    assert (len(data.train), len(data.val), len(data.test)) == (80, 20, 30)
    assert np.bincount(data.val.y).tolist() == [2] * 10  # 20% of each class's 10
    raw_test = read_idx(tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz")
    assert np.array_equal(data.test.x[..., 0], raw_test)  # official test set, in order, untouched
    assert data.source.startswith("local:")
    assert dict(variant.spec().split_sizes) == {"train": 90, "val": 10, "test": 30}  # at the default 0.1


def test_resize_and_fingerprint_depend_on_size_and_val_size(tmp_path):
    variant = tiny_mnist(tmp_path)
    load = lambda **kw: variant.load(data_dir=tmp_path, cache_dir=tmp_path / "c", **{"image_size": 0, "val_size": 0.1, **kw})
    native, again, bigger, other_val = load(), load(), load(image_size=32), load(val_size=0.3)
    assert bigger.image_shape == (32, 32, 1)
    assert native.fingerprint == again.fingerprint
    assert len({native.fingerprint, bigger.fingerprint, other_val.fingerprint}) == 3
    assert load(image_size=28).fingerprint == native.fingerprint  # 28 is MNIST's native size


def test_warm_load_maps_the_cache_instead_of_decoding(tmp_path, monkeypatch):
    variant = tiny_mnist(tmp_path)
    first = variant.load(image_size=0, val_size=0.1, data_dir=tmp_path, cache_dir=tmp_path / "c")
    import imgbench.datasets.idx as idx

    monkeypatch.setattr(idx, "read_idx", lambda path: pytest.fail("warm load parsed the IDX files again"))
    second = variant.load(image_size=0, val_size=0.1, data_dir=tmp_path, cache_dir=tmp_path / "c")
    assert np.array_equal(first.train.x, second.train.x) and np.array_equal(first.val.y, second.val.y)
    assert list((tmp_path / "c" / "mnist" / "decoded").glob("*/x.npy"))


@pytest.mark.parametrize("layout", ["archive", "batches", "png"])
def test_cifar_layouts_load_the_same_images(tmp_path, layout):
    variant = tiny_cifar(tmp_path, layout=layout)
    data = variant.load(image_size=0, val_size=0.1, data_dir=tmp_path, cache_dir=tmp_path / "cache")
    _check_splits(data, 10, (32, 32, 3))
    assert (len(data.train), len(data.val), len(data.test)) == (90, 10, 20)
    assert sorted(np.bincount(data.test.y).tolist()) == [2] * 10
    assert data.classes[0] == "airplane" and data.classes[-1] == "truck"
    # the pickled batches and the PNGs hold the same pixels
    reference = tiny_cifar(tmp_path / "ref", layout="batches")
    ref = reference.load(image_size=0, val_size=0.1, data_dir=tmp_path / "ref", cache_dir=tmp_path / "refcache")
    as_set = lambda split: {row.tobytes() for row in split.x.reshape(len(split.x), -1)}
    assert as_set(data.test) == as_set(ref.test)


def test_cifar_upscaled(tmp_path):
    variant = tiny_cifar(tmp_path, layout="batches")
    data = variant.load(image_size=40, val_size=0.1, data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert data.image_shape == (40, 40, 3)


@pytest.mark.parametrize("layout", ["archive", "folders"])
def test_flowers_layouts_split_80_10_10_without_leaks(tmp_path, layout):
    variant = tiny_flowers(tmp_path, layout=layout, per_class=20)
    data = variant.load(image_size=16, val_size=1 / 9, data_dir=tmp_path, cache_dir=tmp_path / "cache")
    _check_splits(data, 5, (16, 16, 3))
    total = len(data.train) + len(data.val) + len(data.test)
    assert total == 101 and len(data.test) == 10 and len(data.val) == 10
    train_rows = {row.tobytes() for row in data.train.x.reshape(len(data.train.x), -1)}
    assert not any(row.tobytes() in train_rows for row in data.test.x.reshape(len(data.test.x), -1))
    assert dict(variant.spec().split_sizes) == {"train": len(data.train), "val": 10, "test": 10}


def test_flowers_archive_is_extracted_once_into_the_cache(tmp_path):
    variant = tiny_flowers(tmp_path, layout="archive")
    cache = tmp_path / "cache"
    variant.load(image_size=8, val_size=0.1, data_dir=tmp_path, cache_dir=cache)
    extracted = list((cache / "flowers" / "extracted").glob("*/flower_photos/roses/*.jpg"))
    assert len(extracted) == 12
    assert variant.locate(data_dir=None, cache_dir=cache)[0] == "cache"


def test_split_is_independent_of_file_order_and_keeps_duplicates_together():
    rng = np.random.default_rng(1)
    digests = rng.integers(0, 256, (300, 16), dtype=np.uint8)
    digests[10] = digests[11] = digests[200]  # three identical images, two labels
    labels = np.repeat(np.arange(3), 100)
    first = splits.split(labels, digests, n_official_train=None, val_size=0.2, test_fraction=0.1)
    order = rng.permutation(300)
    second = splits.split(labels[order], digests[order], n_official_train=None, val_size=0.2, test_fraction=0.1)
    as_keys = lambda idx, d: sorted(map(bytes, d[idx]))
    for part in ("train", "val", "test"):
        assert as_keys(getattr(first, part), digests) == as_keys(getattr(second, part), digests[order])
    side = {p: {bytes(digests[i]) for i in getattr(first, p)} for p in ("train", "val", "test")}
    assert sum(bytes(digests[10]) in keys for keys in side.values()) == 1
    assert len(first.test) == 30 and len(first.val) == 54


def test_imagefolder_with_and_without_official_split(tmp_path):
    write_image_tree(tmp_path / "plain", ["cats", "dogs"], 10, suffix=".png")
    data = IMAGEFOLDER.load(image_size=12, val_size=0.25, data_dir=None, cache_dir=tmp_path / "c",
                            arg=str(tmp_path / "plain"))
    assert data.classes == ("cats", "dogs") and data.image_shape == (12, 12, 3)
    assert (len(data.train), len(data.val), len(data.test)) == (14, 4, 2)
    write_image_tree(tmp_path / "split" / "train", ["a", "b", "c"], 8)
    write_image_tree(tmp_path / "split" / "test", ["a", "b", "c"], 2, seed=5)
    data = IMAGEFOLDER.load(image_size=0, val_size=0.25, data_dir=None, cache_dir=tmp_path / "c",
                            arg=str(tmp_path / "split"))
    assert (len(data.train), len(data.val), len(data.test)) == (18, 6, 6) and data.image_shape == (128, 128, 3)
    assert IMAGEFOLDER.locate(data_dir=None, cache_dir=tmp_path, arg=str(tmp_path / "nope"))[0] == "missing"


def test_imagefolder_helper_for_plugins(tmp_path):
    write_image_tree(tmp_path / "pets", ["cat", "dog"], 6)
    spec = imagefolder_dataset("pets", tmp_path / "pets", default_size=20)
    assert spec.name == "pets" and spec.classes == ("cat", "dog") and not spec.takes_arg
    assert spec.locate(data_dir=None, cache_dir=tmp_path) == ("local", str((tmp_path / "pets").resolve()))
    data = spec.load(image_size=0, val_size=0.2, data_dir=None, cache_dir=tmp_path / "c")
    assert data.name == "pets" and data.image_shape == (20, 20, 3)


def test_edited_folder_changes_the_fingerprint(tmp_path):
    paths = write_image_tree(tmp_path / "t", ["x", "y"], 5, suffix=".png")
    load = lambda: IMAGEFOLDER.load(image_size=8, val_size=0.2, data_dir=None, cache_dir=tmp_path / "c", arg=str(tmp_path / "t"))
    before = load().fingerprint
    paths[0].write_bytes(paths[1].read_bytes())
    assert load().fingerprint != before


def test_bad_arguments_are_usage_errors(tmp_path):
    variant = tiny_mnist(tmp_path)
    for kwargs in ({"image_size": -1, "val_size": 0.1}, {"image_size": 0, "val_size": 1.0},
                   {"image_size": 2.5, "val_size": 0.1}):
        with pytest.raises(UsageError):
            variant.load(data_dir=tmp_path, cache_dir=tmp_path / "c", **kwargs)
    with pytest.raises(UsageError, match="does not exist"):
        IMAGEFOLDER.load(image_size=0, val_size=0.1, data_dir=None, cache_dir=tmp_path, arg=str(tmp_path / "missing"))
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DatasetError, match="holds 1 class folder .a.; a classifier needs at least 2"):
        IMAGEFOLDER.load(image_size=0, val_size=0.1, data_dir=None, cache_dir=tmp_path, arg=str(tmp_path / "empty"))
    (tmp_path / "empty" / "b").mkdir()
    (tmp_path / "empty" / "c").mkdir()
    (tmp_path / "empty" / "c" / "1.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"empty/a, .*empty/b hold no images"):
        IMAGEFOLDER.load(image_size=0, val_size=0.1, data_dir=None, cache_dir=tmp_path, arg=str(tmp_path / "empty"))


def test_incomplete_local_copy_names_the_missing_files(tmp_path):
    variant = tiny_mnist(tmp_path)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    assert variant.locate(data_dir=tmp_path, cache_dir=tmp_path / "c")[0] == "missing"
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.gz"):
        variant.load(image_size=0, val_size=0.1, data_dir=tmp_path, cache_dir=tmp_path / "c")


def test_cifar100_batches_use_fine_labels(tmp_path):
    rng = np.random.default_rng(3)
    blobs = {name: cifar_batch(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), np.arange(n) % 100,
                               label_key=b"fine_labels") for name, n in (("train", 300), ("test", 100))}
    archive = tmp_path / "cifar100" / CIFAR100.archive.name
    archive.parent.mkdir()
    archive.write_bytes(tar_bytes({f"{CIFAR100.folder}/{name}": blob for name, blob in blobs.items()}))
    variant = replace(CIFAR100, archive=checks_for(archive),
                      train_batches=(FileCheck("train", md5=hashlib.md5(blobs["train"]).hexdigest()),),
                      test_batches=(FileCheck("test", md5=hashlib.md5(blobs["test"]).hexdigest()),))
    data = variant.load(image_size=0, val_size=1 / 3, data_dir=tmp_path, cache_dir=tmp_path / "c")
    assert len(data.classes) == 100 and (len(data.train), len(data.val), len(data.test)) == (200, 100, 100)
    assert np.bincount(data.val.y, minlength=100).tolist() == [1] * 100


def test_imagefolder_refuses_a_val_folder_it_would_ignore(tmp_path):
    for part in ("train", "test", "val"):
        write_image_tree(tmp_path / "tree" / part, ["a", "b"], 2)
    with pytest.raises(DatasetError, match="val_size"):
        IMAGEFOLDER.load(image_size=8, val_size=0.1, data_dir=None, cache_dir=tmp_path, arg=str(tmp_path / "tree"))
    with pytest.raises(UsageError, match="imagefolder:/path"):
        IMAGEFOLDER.load(image_size=8, val_size=0.1, data_dir=None, cache_dir=tmp_path)


def test_fingerprints_and_cache_keys_are_those_of_before_the_shared_file_dataset_base(tmp_path):
    """Pinned from the code before the file-backed datasets shared one base: existing decoded caches, the
    fingerprints results record, and with them the results' config hashes all stay valid."""
    sources = {d.name: hashlib.sha256(d.source_fingerprint.encode()).hexdigest()[:16]
               for d in (MNIST, FASHION_MNIST, CIFAR10, CIFAR100)}
    assert sources == {"mnist": "98a1e3a4fbaf050c", "fashion_mnist": "78aaf199850548fa",
                       "cifar10": "acf9dce93c05ea49", "cifar100": "1017273c8ed1e77f"}
    loads = [DIGITS.load(image_size=size, val_size=0.1, data_dir=None, cache_dir=tmp_path) for size in (0, 16)]
    assert [data.fingerprint for data in loads] == ["401fc0ca42177482", "acbc758c62cfdcdf"]
    decoded = sorted(p.name for p in (tmp_path / "digits" / "decoded").iterdir() if p.is_dir())
    assert decoded == ["4b4d68fe79285ac8", "c8f7af57f70b80f1"]
