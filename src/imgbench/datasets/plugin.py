"""The built-in datasets, registered through the ``imgbench_datasets`` hook exactly like a plugin's."""

from __future__ import annotations

from imgbench import DatasetSpec, hookimpl
from imgbench.datasets.cifar import CIFAR10, CIFAR100
from imgbench.datasets.digits import DIGITS
from imgbench.datasets.flowers import FLOWERS
from imgbench.datasets.idx import FASHION_MNIST, MNIST
from imgbench.datasets.imagefolder import IMAGEFOLDER


@hookimpl
def imgbench_datasets() -> list[DatasetSpec]:
    return [MNIST.spec(), FASHION_MNIST.spec(), CIFAR10.spec(), CIFAR100.spec(), FLOWERS.spec(), DIGITS.spec(),
            IMAGEFOLDER]
