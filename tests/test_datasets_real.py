"""The real MNIST, CIFAR-10 and flowers copies (skipped cleanly when they are absent), and the listing."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from imgbench.cli import main
from imgbench.datasets.cifar import CIFAR10
from imgbench.datasets.flowers import FLOWERS
from imgbench.datasets.idx import MNIST
from imgbench.datasets.tree import scan_tree, split_plan

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.slow
@pytest.mark.data
def test_real_mnist(real_data, session_cache):
    data = MNIST.load(image_size=0, val_size=0.1, data_dir=real_data, cache_dir=session_cache)
    assert len(data.train) + len(data.val) == 60_000 and len(data.test) == 10_000
    assert np.bincount(data.test.y).tolist() == MNIST_TEST_COUNTS
    assert data.image_shape == (28, 28, 1) and data.source.startswith("local:")
    assert {"train": len(data.train), "val": len(data.val), "test": len(data.test)} == dict(MNIST.spec().split_sizes)
    # stratified: every class keeps its share of the validation set
    full = np.bincount(np.concatenate([data.train.y, data.val.y]))
    assert np.all(np.abs(np.bincount(data.val.y) - full * 0.1) <= 1)


@pytest.mark.slow
@pytest.mark.data
def test_real_cifar10_png_copy(real_data, session_cache):
    data = CIFAR10.load(image_size=0, val_size=0.1, data_dir=real_data, cache_dir=session_cache)
    assert np.bincount(data.test.y).tolist() == [1000] * 10
    assert len(data.train) + len(data.val) == 10_000  # the local copy's train subset, 1,000 per class
    assert data.image_shape == (32, 32, 3)
    mean = np.concatenate([data.train.x, data.val.x]).reshape(-1, 3).mean(0) / 255
    assert np.allclose(mean, [0.4914, 0.4822, 0.4465], atol=0.02)  # channels in RGB order, as documented


@pytest.mark.slow
@pytest.mark.data
def test_real_flowers_split_is_leak_free(real_data, session_cache):
    val_size = FLOWERS.recipe.from_scratch["val_size"]
    data = FLOWERS.load(image_size=64, val_size=val_size, data_dir=real_data, cache_dir=session_cache)
    assert len(data.train) + len(data.val) + len(data.test) == 3_670
    counts = np.bincount(np.concatenate([data.train.y, data.val.y, data.test.y])).tolist()
    assert counts == [633, 898, 641, 699, 799]
    assert {"train": len(data.train), "val": len(data.val), "test": len(data.test)} == dict(FLOWERS.spec().split_sizes)
    tree = scan_tree(real_data / "flowers" / "flower_photos", FLOWERS.classes)
    plan = split_plan(tree, val_size, session_cache)
    digest = lambda rel: hashlib.sha256((tree.root / rel).read_bytes()).hexdigest()
    side = {part: {digest(rel) for rel in rels} for part, rels in plan.items()}
    assert not side["test"] & side["train"] and not side["test"] & side["val"] and not side["val"] & side["train"]
    # the known cross-class duplicate is on one side only, both copies together
    pair = {"roses/15922772266_1167a06620.jpg", "tulips/15922772266_1167a06620.jpg"}
    assert sum(pair <= set(rels) for rels in plan.values()) == 1


@pytest.mark.data
def test_cli_lists_all_three_as_local(monkeypatch, capsys, real_data):
    monkeypatch.setenv("IMGBENCH_DATA_DIR", str(real_data))
    assert main(["datasets", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    for name, classes in (("mnist", 10), ("cifar10", 10), ("flowers", 5)):
        assert rows[name]["source"] == "local", rows[name]
        assert rows[name]["classes"] == classes and rows[name]["from"].startswith(str(real_data / name))
    assert rows["mnist"]["splits"] == "54000/6000/10000" and rows["mnist"]["shape"] == "28x28x1"
    assert rows["cifar10"]["shape"] == "32x32x3" and rows["imagefolder"]["source"] == "needs an argument"


def test_cli_without_data_dir_says_download(capsys):
    assert main(["datasets", "mnist", "flowers", "cifar10"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.split()[:1] in (["mnist"], ["flowers"], ["cifar10"])]
    assert len(lines) == 3 and all("download" in line and "https://" in line for line in lines)


@pytest.mark.data
def test_the_preflight_passes_the_real_copies_without_probing(real_data, monkeypatch):
    """No false refusal: the real local copies pass every check (checksums, class folders, readable images),
    and nothing is probed since nothing has to be downloaded."""
    from imgbench.registry import get_registry
    from imgbench.runner.preflight import data_problems

    def no_probe(url):
        raise AssertionError(f"probed {url} although the data is local")

    assert data_problems(["mnist", "cifar10", "flowers"], get_registry([], ()), real_data, no_probe) == []
