"""Every pinned checksum against the values that independent libraries publish (installed, so offline).

Fixtures compute their own checksums, so a wrong pin would pass every other test and refuse the official
file on a user's machine. torchvision's dataset classes carry md5s of the MNIST, Fashion-MNIST and CIFAR
archives and batches; Keras' dataset loaders carry the sha256 of the CIFAR tarballs.
"""

from __future__ import annotations

import inspect
import re

import pytest

from imgbench.datasets.cifar import CIFAR10, CIFAR100
from imgbench.datasets.idx import FASHION_MNIST, MNIST

# Sizes of the official tarballs, as the CIFAR servers send them (Content-Length) and every mirror reports.
CIFAR_TARBALL_BYTES = {"cifar10": 170_498_071, "cifar100": 169_001_437}


def _keras_file_hash(module_name: str) -> str:
    module = pytest.importorskip(module_name)
    hashes = re.findall(r'file_hash=\(?\s*(?:#[^\n]*)?\s*"([0-9a-f]{64})"', inspect.getsource(module.load_data))
    assert len(hashes) == 1, f"{module_name}.load_data no longer pins one sha256"
    return hashes[0]


@pytest.mark.parametrize("ours, theirs", [(MNIST, "MNIST"), (FASHION_MNIST, "FashionMNIST")])
def test_idx_md5s_match_torchvision(ours, theirs):
    datasets = pytest.importorskip("torchvision.datasets")
    published = dict(getattr(datasets, theirs).resources)
    assert {check.name: check.md5 for check in ours.files} == published


@pytest.mark.parametrize("ours, theirs", [(CIFAR10, "CIFAR10"), (CIFAR100, "CIFAR100")])
def test_cifar_md5s_match_torchvision(ours, theirs):
    datasets = pytest.importorskip("torchvision.datasets")
    published = getattr(datasets, theirs)
    assert ours.archive.md5 == published.tgz_md5
    assert ours.folder == published.base_folder
    assert [(c.name, c.md5) for c in ours.train_batches] == [tuple(pair) for pair in published.train_list]
    assert [(c.name, c.md5) for c in ours.test_batches] == [tuple(pair) for pair in published.test_list]


@pytest.mark.parametrize("ours, module", [(CIFAR10, "keras.src.datasets.cifar10"),
                                          (CIFAR100, "keras.src.datasets.cifar100")])
def test_cifar_tarball_sha256_matches_keras(ours, module):
    assert ours.archive.sha256 == _keras_file_hash(module)


@pytest.mark.parametrize("ours", [CIFAR10, CIFAR100])
def test_cifar_tarball_sizes_are_pinned(ours):
    assert ours.archive.size == CIFAR_TARBALL_BYTES[ours.name]
