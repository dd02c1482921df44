"""Every built-in model (and the example plugins) passes the plugin authors' conformance check."""

from __future__ import annotations

import pytest

from imgbench.registry import Registry
from imgbench import conformance
from imgbench.conformance import ALL_SHAPES, CIFAR, ConformanceError, check_model, dataset_shape

REGISTRY = Registry()
BUILTIN = [s.name for s in REGISTRY.models(["keras/*", "timm/*"])]


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_model_conforms_at_cifar_size(name):
    (result,) = check_model(name, shapes=[CIFAR], registry=REGISTRY)
    assert result.params > 0 and result.input_size >= CIFAR.image_size


@pytest.mark.slow
@pytest.mark.parametrize("name", ["keras/mnist_convnet", "keras/flowers_cnn", "keras/resnet50", "timm/resnet18", "timm/vit_tiny"])
def test_model_conforms_at_every_dataset_shape(name):
    assert [r.shape for r in check_model(name, shapes=ALL_SHAPES, registry=REGISTRY)] == ["mnist", "cifar10", "flowers"]


def test_check_catches_a_model_with_the_wrong_output(tmp_path):
    (tmp_path / "bad.py").write_text(
        "from imgbench import ModelSpec, hookimpl\n"
        "def build(*, num_classes, in_chans, image_size, pretrained=False):\n"
        "    import torch.nn as nn\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(in_chans * image_size * image_size, num_classes + 1))\n"
        "@hookimpl\n"
        "def imgbench_models():\n"
        "    return [ModelSpec('bad/offbyone', build, 'one logit too many')]\n"
    )
    with pytest.raises(ConformanceError, match=r"expected logits \(2, 10\)"):
        check_model("bad/offbyone", shapes=[CIFAR], registry=Registry(plugin_dirs=[tmp_path]))


def test_check_catches_parameters_without_gradient(tmp_path):
    (tmp_path / "unused.py").write_text(
        "from imgbench import ModelSpec, hookimpl\n"
        "def build(*, num_classes, in_chans, image_size, pretrained=False):\n"
        "    import torch.nn as nn\n"
        "    class M(nn.Module):\n"
        "        def __init__(self):\n"
        "            super().__init__()\n"
        "            self.used = nn.Linear(in_chans * image_size * image_size, num_classes)\n"
        "            self.unused = nn.Linear(3, 3)\n"
        "        def forward(self, x):\n"
        "            return self.used(x.flatten(1))\n"
        "    return M()\n"
        "@hookimpl\n"
        "def imgbench_models():\n"
        "    return [ModelSpec('bad/unused', build, 'a dangling layer')]\n"
    )
    with pytest.raises(ConformanceError, match="got no gradient"):
        check_model("bad/unused", shapes=[CIFAR], registry=Registry(plugin_dirs=[tmp_path]))


def test_shapes_come_from_the_datasets_default_recipes():
    # independent of the dataset code: MNIST 28x28 grey, CIFAR-10 32x32 colour, flowers' 5 classes at 128 px
    assert [(s.name, s.image_size, s.channels, s.num_classes) for s in ALL_SHAPES] == [
        ("mnist", 28, 1, 10), ("cifar10", 32, 3, 10), ("flowers", 128, 3, 5)]
    fashion = dataset_shape(REGISTRY.dataset("fashion_mnist")[0])
    assert (fashion.image_size, fashion.channels, fashion.num_classes) == (28, 1, 10)
    with pytest.raises(ValueError, match="imagefolder.*no fixed image shape"):
        dataset_shape(REGISTRY.dataset("imagefolder:/x")[0])


def test_the_command_checks_at_a_named_dataset(capsys):
    assert conformance.main(["keras/mnist_convnet", "--dataset", "fashion_mnist"]) == 0
    assert "fashion_mnist" in capsys.readouterr().out
