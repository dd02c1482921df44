"""Transfer learning: pretrained data configs, weights from files, saved checkpoints, linear probes.

Hub downloads fail here, so every checkpoint is written by the test itself (timm with pretrained=False,
Keras with save_weights); the preprocessing they must get is checked against published numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from imgbench import LoadedDataset
from imgbench.engine import config_hash, resolve_recipe, run_job
from imgbench.engine.weights import check_weights_file, checkpoint_metadata, load_weights
from imgbench.errors import UsageError
from imgbench.schema import MODEL_CHECKPOINT
from imgbench.registry import Registry
from test_engine import synthetic as engine_synthetic

REPO = Path(__file__).resolve().parents[1]

# Published ImageNet normalisation (torchvision/timm docs) and Keras' caffe-mode BGR means (0-255).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
FAST = dict(bench_seconds=0.02, batch_size=16, progress=False)

DATASET_PLUGIN = textwrap.dedent('''
    import numpy as np
    from imgbench import DatasetSpec, LoadedDataset, Split, hookimpl

    def load(*, image_size, val_size, data_dir, cache_dir, arg=""):
        size = image_size or 12
        rng = np.random.default_rng(0)
        def split(n):
            return Split(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), np.arange(n) % 3)
        return LoadedDataset("sized", ("a", "b", "c"), split(12), split(6), split(9), "sizedfp", f"{size}px")

    @hookimpl
    def imgbench_datasets():
        return [DatasetSpec("sized", load, lambda **_: ("local", "memory"), "random RGB at the asked size")]
''')


def synthetic(size=16, classes=3, per_class=(8, 3, 6), channels=3, seed=0) -> LoadedDataset:
    """The engine tests' learnable images, in colour and at a size the models here accept."""
    return engine_synthetic(per_class=per_class, classes=classes, size=size, channels=channels, seed=seed)


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Registry:
    folder = tmp_path_factory.mktemp("transfer-plugins")
    (folder / "sizedds.py").write_text(DATASET_PLUGIN)
    registry = Registry(plugin_dirs=[REPO / "plugins", folder])
    assert not registry.errors, registry.errors
    return registry


@pytest.fixture(scope="module")
def data() -> LoadedDataset:
    return synthetic()


def by_hand(x_uint8: np.ndarray, mean, std) -> torch.Tensor:
    """NHWC uint8 -> normalised NCHW float32, written out independently of the engine."""
    x = torch.from_numpy(x_uint8).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def probabilities(logits: torch.Tensor) -> np.ndarray:
    return torch.softmax(logits.double(), dim=1).numpy()


def assert_same_predictions(result, expected_probs: np.ndarray) -> None:
    probs = result.predictions.filter(like="p_").to_numpy()
    np.testing.assert_array_equal(result.predictions["y_pred"].to_numpy(), expected_probs.argmax(1))
    np.testing.assert_allclose(probs, expected_probs, rtol=0, atol=1e-6)


def timm_checkpoint(path, num_classes=3, seed=1):
    """A timm resnet18 with non-trivial BatchNorm statistics, saved as a state_dict."""
    import timm

    torch.manual_seed(seed)
    model = timm.create_model("resnet18", num_classes=num_classes)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(model.state_dict(), path)
    else:
        torch.save(model.state_dict(), path)
    return model.eval()


# -- data configs --------------------------------------------------------------------------------------
def test_timm_pretrained_data_config_is_timms_published_imagenet_config():
    from imgbench.families.timm_models import timm_data_config

    config = timm_data_config("resnet18.a1_in1k")
    assert config.mean == pytest.approx(IMAGENET_MEAN) and config.std == pytest.approx(IMAGENET_STD)
    assert (config.input_size, config.interpolation, config.crop_pct) == (224, "bicubic", 0.95)
    assert timm_data_config("inception_v3").input_size == 299  # a model trained at another size
    assert timm_data_config("inception_v3").mean == pytest.approx((0.5, 0.5, 0.5))


def test_keras_data_configs_are_what_each_applications_weights_expect():
    from imgbench.families.keras_models import keras_data_config

    caffe = keras_data_config("ResNet50")  # BGR, ImageNet means subtracted, no scaling
    assert caffe.channel_order == "BGR"
    assert np.asarray(caffe.mean) * 255 == pytest.approx(CAFFE_BGR_MEAN, abs=1e-3)
    assert np.asarray(caffe.std) * 255 == pytest.approx((1, 1, 1))
    tf_mode = keras_data_config("MobileNetV2")  # [-1, 1]
    assert (tf_mode.mean, tf_mode.std, tf_mode.channel_order) == ((0.5,) * 3, (0.5,) * 3, "RGB")
    assert keras_data_config("DenseNet121").mean == pytest.approx(IMAGENET_MEAN)
    assert keras_data_config("EfficientNetB0").std == pytest.approx((1 / 255,) * 3)  # raw pixels: it rescales itself
    assert keras_data_config("InceptionV3").input_size == 299


def test_keras_mobilenet_v3_config_matches_the_preprocessing_layer_it_switches_off():
    """Independent reference: the Rescaling layer Keras builds with include_preprocessing=True."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    from imgbench.families.keras_models import keras_data_config

    net = keras.applications.MobileNetV3Small(weights=None, input_shape=(32, 32, 3), include_preprocessing=True)
    rescale = next(layer for layer in net.layers if isinstance(layer, keras.layers.Rescaling))
    pixels = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(rescale(pixels))
    config = keras_data_config("MobileNetV3Small")
    ours = (pixels / 255 - np.asarray(config.mean)) / np.asarray(config.std)
    np.testing.assert_allclose(ours, expected, atol=1e-6)


# -- save_weights and weights= ------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["tinycnn/small", "timm/resnet18", "keras/mnist_convnet"])
def test_saved_checkpoint_reloaded_with_epochs_0_reproduces_the_predictions_exactly(model, registry, data, tmp_path):
    saved = run_job(model, data, seed=3, out_dir=tmp_path / "a", registry=registry, epochs=1, lr=1e-2,
                    save_weights=True, **FAST)
    checkpoint = tmp_path / "a" / MODEL_CHECKPOINT
    written = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert saved.status == "ok" and written["saved_weights"] == MODEL_CHECKPOINT and checkpoint.is_file()
    meta = checkpoint_metadata(checkpoint)
    assert meta["model"] == model and meta["classes"] == list(data.classes)
    assert meta["preprocessing"]["mean"] == saved.metrics["preprocessing"]["mean"]
    assert meta["preprocessing"]["input_size"] == 16
    assert not list((tmp_path / "a").glob(".*.tmp"))  # written through a temporary file, renamed

    again = run_job(model, data, seed=4, out_dir=tmp_path / "b", registry=registry, epochs=0,
                    weights=str(checkpoint), **FAST)
    assert again.metrics["weights"]["new_keys"] == [] and again.metrics["weights"]["imgbench_checkpoint"]
    assert again.metrics["preprocessing"]["mean"] == saved.metrics["preprocessing"]["mean"]
    assert again.predictions.equals(saved.predictions)  # bit for bit


def test_foreign_timm_checkpoint_gives_the_models_own_predictions_on_its_pretrained_preprocessing(
        registry, data, tmp_path):
    path = tmp_path / "resnet18.pt"
    reference = timm_checkpoint(path)
    result = run_job("timm/resnet18", data, out_dir=tmp_path / "job", registry=registry, epochs=0,
                     weights=str(path), **FAST)
    used = result.metrics["preprocessing"]
    assert used["mean"] == pytest.approx(IMAGENET_MEAN) and used["source"].startswith("timm pretrained_cfg")
    assert result.metrics["weights"]["new_keys"] == []
    with torch.no_grad():
        expected = probabilities(reference(by_hand(data.test.x, IMAGENET_MEAN, IMAGENET_STD)))
    assert_same_predictions(result, expected)
    assert result.metrics["provenance"]["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_pretrained_weights_default_to_the_models_input_size(registry, tmp_path):
    path = tmp_path / "resnet18.safetensors"
    timm_checkpoint(path)
    result = run_job("timm/resnet18", "sized", registry=registry, epochs=0, weights=str(path), **FAST)
    assert result.metrics["image_size"] == 224 and result.metrics["dataset_source"] == "224px"
    sized = run_job("timm/resnet18", "sized", registry=registry, epochs=0, weights=str(path), image_size=20, **FAST)
    assert sized.metrics["image_size"] == 20  # image_size still overrides it
    scratch = run_job("timm/resnet18", "sized", registry=registry, epochs=0, **FAST)
    assert scratch.metrics["preprocessing"]["source"] == "dataset statistics"  # from scratch: shared stats


def test_a_checkpoint_with_another_head_loads_the_backbone_and_says_so(registry, data, tmp_path):
    path = tmp_path / "resnet18-10.pt"
    reference = timm_checkpoint(path, num_classes=10)
    result = run_job("timm/resnet18", data, registry=registry, epochs=0, weights=str(path), **FAST)
    record = result.metrics["weights"]
    assert record["new_keys"] == ["fc.weight", "fc.bias"]
    assert "conv1.weight" in record["loaded_keys"] and len(record["loaded_keys"]) == len(reference.state_dict()) - 2
    net = registry.build_model("timm/resnet18", num_classes=3, in_chans=3, image_size=16)
    load_weights(net, str(path), net.get_classifier(), "timm/resnet18")
    torch.testing.assert_close(net.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var, rtol=0, atol=0)
    assert net.fc.weight.shape == (3, 512)


def test_truncated_and_foreign_files_give_one_clear_error(registry, data, tmp_path):
    good = tmp_path / "good.safetensors"
    timm_checkpoint(good)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for bad, words in [(truncated, "not a whole safetensors"), (tmp_path / "none.pt", "no such file"),
                       (tmp_path / "x.onnx", "unknown checkpoint format")]:
        with pytest.raises(UsageError, match=words):
            resolve_recipe("flowers", {"weights": str(bad)})  # the grid's check, before any kernel starts
    cut_pt = tmp_path / "cut.pt"
    torch.save({"w": torch.zeros(1000)}, cut_pt)
    cut_pt.write_bytes(cut_pt.read_bytes()[:-200])
    with pytest.raises(UsageError, match="not a torch.save checkpoint"):
        check_weights_file(cut_pt)

    foreign = tmp_path / "mlp.pt"
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(768, 3)).state_dict(), foreign)
    with pytest.raises(UsageError) as caught:
        run_job("timm/resnet18", data, registry=registry, epochs=0, weights=str(foreign), **FAST)
    message = str(caught.value)
    assert "do not fit timm/resnet18" in message and "conv1.weight (missing from the file)" in message
    assert "1.weight (in the file, not in the model)" in message and "\n" not in message


def test_provenance_and_config_hash_follow_the_weights_files_content(registry, data, tmp_path):
    path = tmp_path / "w.pt"
    torch.save(registry.build_model("tinycnn/small", num_classes=3, in_chans=3, image_size=16).state_dict(), path)
    recipe = resolve_recipe("flowers", {"weights": str(path)}).to_dict()
    first = config_hash("tinycnn/small", "flowers", 0, recipe)
    os.utime(path)  # touched, same content: same hash
    assert config_hash("tinycnn/small", "flowers", 0, recipe) == first
    torch.save(registry.build_model("tinycnn/small", num_classes=3, in_chans=3, image_size=16).state_dict(), path)
    assert config_hash("tinycnn/small", "flowers", 0, recipe) != first  # new weights: resume reruns the job
    result = run_job("tinycnn/small", data, registry=registry, epochs=0, weights=str(path), **FAST)
    assert result.metrics["provenance"]["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert result.metrics["provenance"]["weights_path"] == str(path.resolve())


def test_linear_probe_trains_only_the_head_and_keeps_the_backbone_and_its_statistics(registry, data, tmp_path):
    path = tmp_path / "start.pt"
    torch.manual_seed(0)
    start = registry.build_model("tinycnn/small", num_classes=3, in_chans=3, image_size=16).state_dict()
    torch.save(start, path)
    result = run_job("tinycnn/small", data, out_dir=tmp_path / "job", registry=registry, epochs=2, lr=1e-2,
                     weights=str(path), finetune="head", save_weights=True, **FAST)
    from safetensors.torch import load_file

    after = load_file(tmp_path / "job" / MODEL_CHECKPOINT)
    head = {"7.weight", "7.bias"}  # the final Linear of the Sequential
    for key, tensor in start.items():
        if key not in head:
            torch.testing.assert_close(after[key], tensor, rtol=0, atol=0)  # BN running stats included
    assert not torch.equal(after["7.weight"], start["7.weight"])
    assert result.metrics["trained_params"] == 64 * 3 + 3 < result.metrics["params"]


def test_pretrained_jobs_get_the_fine_tuning_recipe_unless_set(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"w": torch.zeros(1)}, path)
    tuned = resolve_recipe("flowers", {"weights": str(path)})
    assert (tuned.lr, tuned.epochs, tuned.warmup_epochs, tuned.image_size) == (1e-4, 10, 0.5, 0)
    assert resolve_recipe("flowers", {"weights": str(path), "lr": 3e-3}).lr == 3e-3
    assert resolve_recipe("flowers", {"pretrained": True, "finetune": "head"}).lr == 1e-3
    assert resolve_recipe("flowers", {}).lr == 1e-3 and resolve_recipe("flowers", {}).epochs == 40
    with pytest.raises(UsageError, match="finetune"):
        resolve_recipe("flowers", {"finetune": "backbone"})
    with pytest.raises(UsageError, match="set one"):
        resolve_recipe("flowers", {"weights": str(path), "pretrained": True})


def test_named_timm_tag_offline_names_the_cache_folder_to_fill(registry, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(UsageError) as caught:
        registry.build_model("timm/resnet18.a1_in1k", num_classes=3, in_chans=3, image_size=32, pretrained=True)
    assert str(tmp_path / "hf") in str(caught.value) and "timm/resnet18.a1_in1k" in str(caught.value)


# -- a Keras application ------------------------------------------------------------------------------
@pytest.mark.slow
def test_keras_application_from_a_weights_h5_file_and_with_another_head(registry, tmp_path):
    """A foreign Keras-native checkpoint gives the Keras model's own predictions on its preprocessing."""
    import keras

    data = synthetic(size=32, per_class=(2, 1, 3))
    keras.utils.set_random_seed(5)
    reference = keras.applications.MobileNetV3Small(weights=None, input_shape=(32, 32, 3), classes=3,
                                                    classifier_activation=None, include_preprocessing=False)
    path = tmp_path / "mobilenet.weights.h5"
    reference.save_weights(str(path))
    result = run_job("keras/mobilenet_v3_small", data, registry=registry, epochs=0, weights=str(path), **FAST)
    assert result.metrics["weights"]["new_keys"] == [] and result.metrics["preprocessing"]["mean"] == [0.5] * 3
    inputs = data.test.x.astype("float32") / 127.5 - 1.0  # Keras' "tf" mode, by hand
    expected = probabilities(torch.as_tensor(keras.ops.convert_to_numpy(reference(inputs, training=False))))
    assert_same_predictions(result, expected)

    ten = keras.applications.MobileNetV3Small(weights=None, input_shape=(32, 32, 3), classes=10,
                                              classifier_activation=None, include_preprocessing=False)
    ten.save_weights(str(tmp_path / "ten.weights.h5"))
    other = run_job("keras/mobilenet_v3_small", data, registry=registry, epochs=0,
                    weights=str(tmp_path / "ten.weights.h5"), **FAST)
    new = other.metrics["weights"]["new_keys"]
    assert len(new) == 2 and all(".Conv2D." in key for key in new)  # the Logits 1x1 convolution only


def test_the_shipped_transfer_suite_fine_tunes_pretrained_models_on_flowers():
    from imgbench.registry import get_registry
    from imgbench.resources import suite_path
    from imgbench.runner.suite import expand, load_suite

    jobs = expand(load_suite(suite_path("transfer")), get_registry())
    assert {j.dataset for j in jobs} == {"flowers"} and {j.family for j in jobs} == {"keras", "timm"}
    assert all(j.recipe.pretrained and j.recipe.image_size == 0 and j.recipe.lr == 1e-4 for j in jobs)
    assert all(get_registry().model(j.model).data_config is not None for j in jobs)


# -- the offline proof on real data ---------------------------------------------------------------------
# A CIFAR-10-trained tinycnn/wide against the same net at random initialisation, both as linear probes on
# flowers at 32 px. The 367 flowers test images put one accuracy's binomial standard error near 2.6
# points, so a 10-point lead is well beyond noise; the documented full-size run (README) leads by far more.
PROOF_MARGIN = 0.10


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.timeout(2400)  # four short trainings: about 3 minutes on a quiet 2-core CPU, far more on a busy one
def test_a_cifar10_checkpoint_is_a_clearly_better_start_for_a_flowers_linear_probe(real_data, session_cache,
                                                                                    monkeypatch, tmp_path):
    monkeypatch.setenv("IMGBENCH_CACHE_DIR", str(session_cache))
    common = dict(data_dir=real_data, image_size=32, progress=False, bench_seconds=0.05)
    source = run_job("tinycnn/wide", "cifar10", out_dir=tmp_path / "cifar10", epochs=3, train_samples=4000,
                     test_samples=1000, save_weights=True, **common)
    assert source.status == "ok" and source.metrics["accuracy"] > 0.35  # it learned something (chance 0.10)
    probe = dict(finetune="head", epochs=4, lr=1e-3, warmup_epochs=0.5, **common)
    pretrained = run_job("tinycnn/wide", "flowers", weights=str(tmp_path / "cifar10" / MODEL_CHECKPOINT), **probe)
    scratch = run_job("tinycnn/wide", "flowers", **probe)
    assert pretrained.metrics["preprocessing"]["source"] == "imgbench checkpoint (dataset statistics)"
    assert pretrained.metrics["weights"]["new_keys"] == ["7.weight", "7.bias"]  # 10 CIFAR classes -> 5 flowers
    print(f"flowers linear probe: pretrained start {pretrained.metrics['accuracy']:.3f}, "
          f"random start {scratch.metrics['accuracy']:.3f}")
    assert pretrained.metrics["accuracy"] >= scratch.metrics["accuracy"] + PROOF_MARGIN


def test_the_notebook_loads_pretrained_jobs_at_the_weights_size_too(tmp_path):
    """The benchmark notebook loads its data with run_job's own loader (engine.load_dataset), by this rule."""
    from imgbench.engine.loading import start_image_size
    from imgbench.registry import get_registry

    registry = get_registry()
    pretrained = resolve_recipe("flowers", {"pretrained": True})
    assert start_image_size(registry.model("timm/resnet18"), pretrained) == 224
    assert start_image_size(registry.model("keras/inception_v3"), pretrained) == 299
    assert start_image_size(registry.model("timm/resnet18"), resolve_recipe("flowers", {})) == 128
    assert start_image_size(registry.model("tinycnn/small"), pretrained) == 0  # no data config: the loader's


def test_one_load_dataset_serves_run_job_and_the_notebook(registry):
    """The engine's load_dataset is the loader run_job calls and the one the benchmark notebook's cells call."""
    import imgbench.engine
    import imgbench.engine.job
    from imgbench.jobrecord import display

    assert imgbench.engine.job.load_dataset is imgbench.engine.load_dataset
    assert not hasattr(display, "load_dataset")
    cells = [c.source for c in notebook_cells(REPO / "notebooks" / "benchmark.ipynb")]
    assert any("from imgbench.engine import load_dataset" in c for c in cells)
    assert any(c.startswith("data = load_dataset(dataset, recipe, model=model, data_dir=data_dir)") for c in cells)
    pretrained = resolve_recipe("sized", {"pretrained": True}, registry=registry)
    loaded = imgbench.engine.load_dataset("sized", pretrained, model="timm/resnet18", registry=registry)
    assert loaded.source == "224px"  # the weights' own size, as run_job loads it
    assert imgbench.engine.load_dataset("sized", pretrained, registry=registry).source == "12px"  # no model: 0
    scratch = resolve_recipe("sized", {"image_size": 20}, registry=registry)
    assert imgbench.engine.load_dataset("sized", scratch, model="timm/resnet18", registry=registry).source == "20px"


def test_run_job_loads_through_the_one_load_dataset(registry, monkeypatch):
    import imgbench.engine.job

    calls = []

    class Loaded(Exception):
        """Stops the job once it asked for its data."""

    def spy(dataset, recipe, **kwargs):
        calls.append((dataset, recipe.image_size, kwargs["model"].name))
        raise Loaded

    monkeypatch.setattr(imgbench.engine.job, "load_dataset", spy)
    with pytest.raises(Loaded):
        run_job("timm/resnet18", "sized", registry=registry, epochs=0, image_size=20, **FAST)
    assert calls == [("sized", 20, "timm/resnet18")]


def notebook_cells(path: Path) -> list:
    import nbformat

    return nbformat.read(path, as_version=4).cells
