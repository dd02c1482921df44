"""The registry facade: listing, globbing, resolving, building, and errors that suggest a fix."""

from __future__ import annotations

import subprocess
import sys

import pytest

from imgbench.errors import UsageError
from imgbench.registry import Registry, UnknownNameError, get_registry, input_size

BUILTIN_STYLES = {"cnn", "resnet", "densenet", "inception"}


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry()


@pytest.mark.parametrize("family", ["keras", "timm"])
def test_each_family_lists_at_least_eight_architectures_covering_the_styles(registry, family):
    specs = registry.models([f"{family}/*"])
    assert len(specs) >= 8
    assert all(s.name.startswith(f"{family}/") and s.family == family for s in specs)
    assert BUILTIN_STYLES <= {s.style for s in specs}


def test_globs_select_by_name(registry):
    names = [s.name for s in registry.models(["timm/resnet*"])]
    assert names == ["timm/resnet18", "timm/resnet50"]
    assert [s.name for s in registry.models(["keras/mnist_convnet", "timm/resnet18"])] == [
        "keras/mnist_convnet", "timm/resnet18"]


def test_unknown_model_suggests_close_names(registry):
    with pytest.raises(UnknownNameError) as err:
        registry.model("timm/resnet81")
    assert "timm/resnet18" in err.value.suggestions
    assert "did you mean" in str(err.value)
    with pytest.raises(UnknownNameError) as err:  # a bare arch name finds its namespaced form
        registry.model("mnist_convnet")
    assert err.value.suggestions[0] == "keras/mnist_convnet"


def test_any_timm_architecture_resolves_by_its_timm_name(registry):
    spec = registry.model("timm/regnetx_002")
    assert spec.family == "timm" and spec.name == "timm/regnetx_002"
    assert registry.model_plugin("timm/regnetx_002")[0] == "timm"  # the plugin that answered, for provenance
    assert "timm/regnetx_002" not in {s.name for s in registry.models()}  # asked for, never listed
    with pytest.raises(UnknownNameError):
        registry.model("timm/not_a_real_architecture")


def test_listing_imports_no_framework():
    code = ("import sys; from imgbench.registry import Registry; r = Registry(); "
            "assert len(r.models()) > 16; r.model('keras/resnet50'); "
            "print(sorted(m for m in ('torch', 'keras', 'timm', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_small_inputs_are_resized_up_to_the_architecture_minimum(registry):
    import torch

    spec = registry.model("keras/inception_v3")
    assert input_size(spec, 32) == 75
    model = registry.build_model("timm/inception_v3", num_classes=3, in_chans=3, image_size=32)
    assert model.size == 75  # wrapped in ResizeInput
    model.eval()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_keras_models_are_torch_modules_with_trainable_parameters(registry):
    import torch

    model = registry.build_model("keras/mnist_convnet", num_classes=10, in_chans=1, image_size=28)
    assert isinstance(model, torch.nn.Module)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == 34_826  # the keras-io example's documented parameter count


def test_build_refuses_impossible_requests(registry):
    with pytest.raises(UsageError, match="no pretrained weights"):
        registry.build_model("keras/mnist_convnet", num_classes=2, in_chans=3, image_size=32, pretrained=True)


def test_get_registry_is_cached_per_settings():
    assert get_registry([], []) is get_registry([], [])
    assert get_registry([], []) is not get_registry([], ["timm"])
    assert not get_registry([], ["timm"]).models(["timm/*"])
