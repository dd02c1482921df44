"""The engine end to end on tiny synthetic datasets: files, metrics, determinism, failure statuses, families."""

from __future__ import annotations

import json
import math
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from imgbench import LoadedDataset, Split
from imgbench.engine import config_hash, run_job
from imgbench.engine import data as engine_data
from imgbench.engine.data import Augmenter, channel_stats, rotate_and_zoom, stratified_subset
from imgbench.engine.evaluate import expected_calibration_error
from imgbench.schema import HISTORY_COLUMNS, METRICS_KEYS
from imgbench.engine.train import build_schedule
from imgbench.errors import UsageError
from imgbench.registry import Registry

FAST = dict(bench_seconds=0.05, lr=1e-2, batch_size=32, progress=False)
CLASSES = 5
SIZE = 8

PLUGIN = textwrap.dedent('''
    import numpy as np
    import torch
    from imgbench import DatasetSpec, LoadedDataset, ModelSpec, Split, hookimpl

    def mlp(*, num_classes, in_chans, image_size, pretrained=False):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(in_chans * image_size ** 2, 16),
                                   torch.nn.ReLU(), torch.nn.Linear(16, num_classes))

    class NanNet(torch.nn.Module):  # a broken plugin model: finite weights, NaN logits
        def __init__(self, num_classes):
            super().__init__()
            self.head = torch.nn.Linear(1, num_classes)
        def forward(self, x):
            return self.head(x.mean((1, 2, 3))[:, None] * float("nan"))

    class OomNet(NanNet):  # stands in for a model too big for the GPU
        def forward(self, x):
            if self.training:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
            return super().forward(x)

    def load(*, image_size, val_size, data_dir, cache_dir, arg=""):
        rng = np.random.default_rng(0)
        def split(n):
            return Split(rng.integers(0, 256, (n, 6, 6, 3), dtype=np.uint8), np.arange(n) % 2)
        return LoadedDataset("tinyds", ("a", "b"), split(40), split(10), split(20), "tinyfp",
                             f"image_size={image_size} val_size={val_size}")

    @hookimpl
    def imgbench_models():
        return [ModelSpec("tiny/mlp", mlp, "tiny MLP"),
                ModelSpec("tiny/nan", lambda num_classes, **_: NanNet(num_classes), "NaN logits"),
                ModelSpec("tiny/oom", lambda num_classes, **_: OomNet(num_classes), "raises OOM")]

    @hookimpl
    def imgbench_datasets():
        return [DatasetSpec("tinyds", load, lambda **_: ("local", "memory"), "tiny random RGB")]
''')


def synthetic(per_class=(60, 15, 40), classes=CLASSES, size=SIZE, channels=1, seed=0) -> LoadedDataset:
    """Learnable images: a fixed random pattern per class plus noise; balanced splits."""
    rng = np.random.default_rng(seed)
    patterns = rng.uniform(40, 215, (classes, size, size, channels))

    def split(n):
        y = np.repeat(np.arange(classes), n)
        x = np.clip(patterns[y] + rng.normal(0, 40, (len(y), size, size, channels)), 0, 255)
        return Split(x.astype(np.uint8), y.astype(np.int64))

    train, val, test = (split(n) for n in per_class)
    return LoadedDataset("synthetic", tuple(f"class{k}" for k in range(classes)), train, val, test,
                         f"synthetic-{seed}", "generated in tests")


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Registry:
    folder = tmp_path_factory.mktemp("engine-plugins")
    (folder / "tinyplug.py").write_text(PLUGIN)
    registry = Registry(plugin_dirs=[folder])
    assert not registry.errors, registry.errors
    return registry


@pytest.fixture(scope="module")
def data() -> LoadedDataset:
    return synthetic()


@pytest.fixture(scope="module")
def trained(registry, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("job")
    return run_job("tiny/mlp", data, seed=1, out_dir=out, registry=registry, epochs=4, target_accuracy=0.3, **FAST)


def test_job_folder_holds_metrics_predictions_and_history(trained, data):
    metrics = json.loads((trained.out_dir / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(trained.metrics, default=str))
    assert set(METRICS_KEYS) <= set(metrics) and metrics["status"] == "ok" and metrics["error"] is None
    assert metrics["model"] == "tiny/mlp" and metrics["family"] == "tiny" and metrics["plugin"] == "tinyplug"
    assert metrics["classes"] == list(data.classes) and metrics["dataset_fingerprint"] == data.fingerprint
    assert metrics["config_hash"] == config_hash("tiny/mlp", "synthetic", 1, metrics["recipe"])
    assert metrics["top5_accuracy"] is None  # only 5 classes
    provenance = metrics["provenance"]
    for key in ("python", "torch", "keras", "timm", "imgbench", "plugin", "device_name", "seed", "deterministic"):
        assert key in provenance
    assert provenance["plugin_location"].endswith("tinyplug.py")

    predictions = pd.read_csv(trained.out_dir / "predictions.csv")
    assert list(predictions.columns[:3]) == ["index", "y_true", "y_pred"]
    assert list(predictions.columns[3:]) == [f"p_{k}" for k in range(CLASSES)]
    assert len(predictions) == len(data.test) and (predictions["y_true"] == data.test.y).all()
    assert np.allclose(predictions.filter(like="p_").sum(axis=1), 1, atol=1e-4)

    history = pd.read_csv(trained.out_dir / "history.csv")
    assert list(history.columns) == list(HISTORY_COLUMNS) and list(history["epoch"]) == [1, 2, 3, 4]
    assert metrics["best_val_accuracy"] == history["val_accuracy"].max()


def test_metrics_equal_scikit_learn_recomputed_from_predictions_csv(trained):
    metrics = json.loads((trained.out_dir / "metrics.json").read_text())
    predictions = pd.read_csv(trained.out_dir / "predictions.csv")
    y_true, y_pred = predictions["y_true"], predictions["y_pred"]
    assert metrics["f1_macro"] == pytest.approx(f1_score(y_true, y_pred, average="macro"), abs=1e-12)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)
    assert metrics["confusion_matrix"] == confusion_matrix(y_true, y_pred).tolist()
    assert metrics["per_class"]["f1"] == pytest.approx(list(f1_score(y_true, y_pred, average=None)))


def test_a_trained_model_learns_and_an_untrained_one_scores_near_chance(trained, registry):
    balanced = synthetic(per_class=(20, 5, 100), classes=10, seed=3)
    untrained = run_job("tiny/mlp", balanced, registry=registry, epochs=0, **FAST)
    assert untrained.history == [] and untrained.status == "ok"
    assert abs(untrained.metrics["accuracy"] - 0.1) < 0.08
    assert untrained.metrics["balanced_accuracy"] < 0.2
    assert trained.metrics["accuracy"] > 0.8  # the same engine and data do learn when trained


def test_cost_and_speed_figures_are_positive_and_finite(trained):
    m = trained.metrics
    for key in ("train_throughput", "infer_throughput", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
                "flops", "peak_memory_mb", "train_time_s", "time_to_target_s"):
        assert m[key] is not None and math.isfinite(m[key]) and m[key] > 0, key
    assert m["latency_p50_ms"] <= m["latency_p95_ms"] <= m["latency_p99_ms"]
    assert m["params"] == (SIZE * SIZE * 16 + 16) + (16 * CLASSES + CLASSES)
    assert m["flops"] == 2 * (SIZE * SIZE * 16 + 16 * CLASSES)  # two linear layers, one image
    assert {"load_data", "build_model", "train", "evaluate", "flops", "benchmark"} <= set(m["phases"])
    assert m["time_to_target_s"] <= m["train_time_s"]


def count_compiled_graphs(monkeypatch) -> dict[str, int]:
    """Dynamo's graphs, counted from now: ``["warm"]`` is the count when ``warm_compile`` has returned."""
    import torch._dynamo

    import imgbench.engine.train as train

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    seen: dict[str, int] = {}
    original = train.warm_compile

    def warm_and_count(*args, **kwargs):
        seconds = original(*args, **kwargs)
        seen["warm"] = compiled_graphs()
        return seconds

    monkeypatch.setattr(train, "warm_compile", warm_and_count)
    return seen


def compiled_graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def test_compile_compiles_every_graph_before_anything_is_timed(registry, monkeypatch):
    """Dynamo's graphs counted on the CPU (its eager backend: no compiler needed, so CI runs it too)."""
    import functools

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    seen = count_compiled_graphs(monkeypatch)
    # 200 training images in batches of 64 (the last partial one dropped), 30 validation images, 170 test
    # images in batches of 64 (a remainder of 42); then the benchmark's batch of 64 and batch-1 latency
    result = run_job("tiny/mlp", synthetic(per_class=(40, 6, 34)), registry=registry, epochs=2, batch_size=64,
                     compile=True, bench_seconds=0.05, progress=False)
    assert result.status == "ok" and result.metrics["compile_time_s"] > 0
    assert result.metrics["phases"]["compile"] >= result.metrics["compile_time_s"]
    # one graph per mode and shape: training at 64; evaluation (no_grad) at 30, 42 and 64; the benchmarks
    # (inference_mode) at 64 and 1. All of them before training; none after.
    assert seen["warm"] == 6 and compiled_graphs() == seen["warm"]


def test_every_timed_window_is_over_before_the_test_and_the_engine_says_so(registry, data, tmp_path, monkeypatch):
    import imgbench.engine.job as job
    from imgbench.engine import handoff

    mark = tmp_path / "untimed"
    monkeypatch.setenv(handoff.UNTIMED_ENV, str(mark))
    seen = {}
    timed, tested = job.time_inference, job.evaluate_model

    def timing(*args, **kwargs):
        seen["benchmark"] = mark.exists()
        return timed(*args, **kwargs)

    def testing(*args, **kwargs):
        seen["evaluate"] = mark.exists()
        return tested(*args, **kwargs)

    monkeypatch.setattr(job, "time_inference", timing)
    monkeypatch.setattr(job, "evaluate_model", testing)
    result = run_job("tiny/mlp", data, registry=registry, epochs=1, **FAST)
    assert result.status == "ok" and seen == {"benchmark": False, "evaluate": True}


def test_same_seed_in_deterministic_mode_gives_identical_predictions(registry, data):
    def predictions(seed):
        result = run_job("tiny/mlp", data, seed=seed, registry=registry, epochs=2, deterministic=True,
                         augment="flip_crop", **FAST)
        assert result.metrics["provenance"]["deterministic"] is True
        return result.predictions

    first = predictions(7)
    pd.testing.assert_frame_equal(first, predictions(7))
    assert not first.filter(like="p_").equals(predictions(8).filter(like="p_"))
    assert not torch.are_deterministic_algorithms_enabled()  # the global flag is restored afterwards


@pytest.mark.parametrize("model, params", [("tiny/mlp", {"lr": 1e30}), ("tiny/nan", {})])
def test_nan_loss_stops_the_job_as_diverged_and_still_writes_metrics(registry, data, tmp_path, model, params):
    result = run_job(model, data, registry=registry, out_dir=tmp_path, epochs=3, **(FAST | params))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert result.status == metrics["status"] == "diverged"
    assert "nan" in metrics["error"] or "inf" in metrics["error"]
    assert metrics["accuracy"] is None and result.predictions.empty
    assert len(result.history) < 3


def test_out_of_memory_gives_status_oom_and_still_writes_metrics(registry, data, tmp_path):
    result = run_job("tiny/oom", data, registry=registry, out_dir=tmp_path, epochs=1, **FAST)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert result.status == metrics["status"] == "oom"
    assert "out of memory" in metrics["error"]


def test_subsets_are_stratified_and_recorded(registry, data):
    result = run_job("tiny/mlp", data, registry=registry, epochs=1, train_samples=50, test_samples=25, **FAST)
    assert (result.metrics["train_samples"], result.metrics["test_samples"]) == (50, 25)
    assert result.metrics["recipe"]["train_samples"] == 50
    # the whole splits they came from, for the report's "tested on 25 of M images"
    assert (result.metrics["train_split_samples"], result.metrics["test_split_samples"]) == (len(data.train), len(data.test))
    assert len(data.train) > 50 and len(data.test) > 25
    assert result.predictions["y_true"].value_counts().tolist() == [5] * CLASSES
    assert set(result.predictions["index"]) <= set(range(len(data.test)))


def test_a_dataset_by_name_is_loaded_through_its_spec_with_the_recipe(registry):
    result = run_job("tiny/mlp", "tinyds", registry=registry, epochs=1, image_size=6, val_size=0.2, **FAST)
    assert result.metrics["dataset"] == "tinyds" and result.metrics["dataset_fingerprint"] == "tinyfp"
    assert result.metrics["dataset_source"] == "image_size=6 val_size=0.2"
    assert result.metrics["recipe"]["augment"] == "flip_crop"  # the generic default for plugin datasets


@pytest.mark.parametrize("params, words", [
    ({"epoch": 1}, ["epoch", "did you mean epochs"]),
    ({"epochs": -1}, ["epochs"]),
    ({"batch_size": 0}, ["batch_size"]),
    ({"lr": "fast"}, ["lr", "float"]),
    ({"seed": -2}, ["seed"]),
])
def test_bad_parameters_raise_usage_error_before_any_work(registry, data, params, words):
    with pytest.raises(UsageError) as caught:
        run_job("tiny/mlp", data, registry=registry, **params)
    assert all(word in str(caught.value) for word in words)


def test_unknown_model_is_a_usage_error_with_suggestions(registry, data):
    with pytest.raises(UsageError, match="tiny/mlp"):
        run_job("tiny/mpl", data, registry=registry)


@pytest.mark.parametrize("model", ["keras/mnist_convnet", "timm/mobilenetv3_small_100"])
def test_every_builtin_family_trains_through_the_same_engine(model, registry):
    data = synthetic(per_class=(16, 4, 8), size=12)
    before = run_job(model, data, seed=5, registry=registry, epochs=0, **FAST)
    after = run_job(model, data, seed=5, registry=registry, epochs=1, batch_size=16, bench_seconds=0.05,
                    progress=False)
    assert after.status == "ok" and after.metrics["family"] == model.split("/")[0]
    assert len(after.history) == 1 and math.isfinite(after.history[0]["train_loss"])
    assert after.metrics["params"] > 1000 and after.metrics["flops"] > 0
    # same seed, same initial weights: only the training steps can have changed the predictions
    assert not np.allclose(before.predictions.filter(like="p_"), after.predictions.filter(like="p_"))


def test_keras_models_are_reproducible_with_the_same_seed(registry):
    data = synthetic(per_class=(8, 2, 4), size=12)
    runs = [run_job("keras/mnist_convnet", data, seed=2, registry=registry, epochs=1, deterministic=True,
                    batch_size=16, bench_seconds=0.05, progress=False).predictions for _ in range(2)]
    pd.testing.assert_frame_equal(*runs)


def test_augmentation_shifts_within_the_padding_and_flips():
    x = torch.arange(2 * 8 * 8, dtype=torch.float32).view(2, 1, 8, 8) + 1
    out = Augmenter("flip_crop", 8, torch.device("cpu"), 0, torch.contiguous_format)(x)
    assert out.shape == x.shape
    for image, original in zip(out, x):
        padded = torch.nn.functional.pad(original, (1, 1, 1, 1))
        windows = [w for dy in range(3) for dx in range(3) for w in (padded[:, dy:dy + 8, dx:dx + 8],)]
        assert any(torch.equal(image, w) or torch.equal(image, w.flip(2)) for w in windows)
    assert Augmenter("none", 8, torch.device("cpu"), 0, torch.contiguous_format)(x) is x


def test_stratified_subset_keeps_class_shares_and_rejects_too_few():
    split = Split(np.zeros((100, 2, 2, 1), np.uint8), np.array([0] * 80 + [1] * 20))
    subset, index = stratified_subset(split, 10, "train_samples")
    assert np.bincount(subset.y).tolist() == [8, 2] and (np.diff(index) > 0).all()
    with pytest.raises(UsageError, match="train_samples=1"):
        stratified_subset(split, 1, "train_samples")


def test_channel_stats_are_exact_population_statistics_of_the_pixel_values():
    x = np.empty((256, 1, 1, 3), np.uint8)
    x[:, 0, 0, 0] = np.repeat([0, 255], 128)  # mean 127.5, std 127.5
    x[:, 0, 0, 1] = np.arange(256)  # mean 127.5, std sqrt((256**2 - 1) / 12), by hand
    x[:, 0, 0, 2] = 9  # constant: its std of 0 is floored at 1, so normalising never divides by zero
    mean, std = channel_stats(x)
    assert mean.tolist() == pytest.approx([127.5, 127.5, 9.0], abs=1e-5)
    assert std.tolist() == pytest.approx([127.5, math.sqrt((256 ** 2 - 1) / 12), 1.0], abs=1e-5)


def test_channel_stats_sample_large_splits_at_random_not_evenly(monkeypatch):
    # every 4th image bright: an evenly spaced sample of a quarter of them sees only bright or only dark ones
    x = np.zeros((4000, 2, 2, 1), np.uint8)
    x[::4] = 200
    monkeypatch.setattr(engine_data, "STATS_VALUES", 1000 * 4)  # room for 1,000 of the 4,000 images
    mean, _ = channel_stats(x)
    assert mean[0] == pytest.approx(50.0, abs=5.0)  # the split's 50.0, within the sample's spread
    assert channel_stats(x)[0][0] == mean[0]  # the same sample every time: every model gets the same inputs


@pytest.mark.data
def test_channel_stats_of_real_mnist_are_the_published_ones(real_data, session_cache, monkeypatch):
    # the MNIST training set's widely published normalisation: mean 0.1307, std 0.3081 (torchvision's examples)
    from imgbench.engine import load_dataset, resolve_recipe

    monkeypatch.setenv("IMGBENCH_CACHE_DIR", str(session_cache))
    train = load_dataset("mnist", resolve_recipe("mnist", {"val_size": 0.0}), data_dir=real_data).train.x
    assert len(train) == 60_000
    mean, std = channel_stats(train)
    assert (round(float(mean[0]) / 255, 4), round(float(std[0]) / 255, 4)) == (0.1307, 0.3081)


def test_ece_is_the_gap_between_confidence_and_accuracy():
    probs = np.array([[0.9, 0.1]] * 10)
    assert expected_calibration_error(np.zeros(10, int), probs) == pytest.approx(0.1)
    assert expected_calibration_error(np.array([0] * 9 + [1]), probs) == pytest.approx(0.0)


def test_cosine_schedule_warms_up_then_decays_to_zero():
    from imgbench.engine import resolve_recipe

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = build_schedule(optimizer, resolve_recipe(None, {"epochs": 4, "lr": 1.0, "warmup_epochs": 1}), 10)
    rates = []
    for _ in range(40):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert rates[10] == pytest.approx(1.0) and rates[-1] < 0.01
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))


def test_notebook_views_show_the_job(trained):
    import matplotlib

    matplotlib.use("Agg")
    from imgbench.jobrecord import display

    table = display.metrics_table(trained.metrics)["value"]
    assert table["accuracy"] == trained.metrics["accuracy"] and table["status"] == "ok"
    curves = display.training_curves(trained.history)
    assert len(curves.axes[0].lines) >= 2  # train and val
    curves.canvas.draw()
    for ax in curves.axes:  # epochs are whole numbers: no tick at 1.5
        assert all(float(tick).is_integer() for tick in ax.get_xticks())
    heatmap = display.confusion_matrix(trained.metrics)
    assert heatmap.axes[0].get_xlabel() == "predicted"
    accuracy = heatmap.axes[0].get_title().rsplit("accuracy ", 1)[1]
    assert accuracy == f"{trained.metrics['accuracy']:.4g}" and len(accuracy) <= 6  # rounded, not 0.8149999999


def test_training_prints_one_line_per_epoch_and_nothing_else(registry, data, capsys):
    run_job("tiny/mlp", data, seed=0, registry=registry, epochs=2, **{**FAST, "progress": True})
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" (")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    assert all("train loss" in line and "val loss" in line and "lr " in line for line in lines)

def test_rotate_and_zoom_matches_independent_rotations_and_an_identity():
    x = torch.rand(3, 2, 6, 6, generator=torch.Generator().manual_seed(0))
    quarter = torch.full((3,), math.pi / 2)
    one = torch.ones(3)
    # a quarter turn counter-clockwise on screen is numpy's/torch's rot90; no zoom and no turn change nothing
    torch.testing.assert_close(rotate_and_zoom(x, quarter, one), torch.rot90(x, 1, dims=(2, 3)))
    torch.testing.assert_close(rotate_and_zoom(x, torch.zeros(3), one), x)
    # zooming out by 2 shows the image at half size, its surroundings filled by reflection (no zeros, no black)
    constant = torch.full((1, 1, 8, 8), 3.0)
    torch.testing.assert_close(rotate_and_zoom(constant, torch.zeros(1), torch.full((1,), 2.0)), constant)


def test_flip_rotate_zoom_draws_within_the_tutorial_ranges(monkeypatch):
    import imgbench.engine.data as data

    drawn = {}
    monkeypatch.setattr(data, "rotate_and_zoom", lambda x, angle, scale: drawn.update(angle=angle, scale=scale) or x)
    x = torch.zeros(4000, 1, 4, 4)
    x[..., 0] = 1.0  # a left column, to see the flips
    out = Augmenter("flip_rotate_zoom", 4, torch.device("cpu"), 0, torch.contiguous_format)(x)
    flipped = out[:, 0, 0, 3] == 1.0
    assert 0.45 < flipped.float().mean() < 0.55
    degrees = drawn["angle"] * 180 / math.pi
    assert -36 <= degrees.min() < -34 and 34 < degrees.max() <= 36  # Keras RandomRotation(0.1) = +-0.1 turn
    assert 0.9 <= drawn["scale"].min() < 0.91 and 1.09 < drawn["scale"].max() <= 1.1  # RandomZoom(0.1)


def test_flip_rotate_zoom_is_applied_to_every_training_batch(registry, data, monkeypatch):
    import imgbench.engine.data as data_module

    calls = []
    original = data_module.rotate_and_zoom
    monkeypatch.setattr(data_module, "rotate_and_zoom", lambda x, a, s: calls.append(len(x)) or original(x, a, s))
    result = run_job("tiny/mlp", data, registry=registry, epochs=1, augment="flip_rotate_zoom", **FAST)
    assert result.status == "ok" and result.metrics["recipe"]["augment"] == "flip_rotate_zoom"
    assert sum(calls) == len(data.train) // FAST["batch_size"] * FAST["batch_size"]  # each training image once


class ConstantPower:
    """An energy counter of a device drawing exactly WATTS: joules are WATTS times the seconds of the clock the
    meter itself reads, so every window's expected energy is known from its own duration."""

    WATTS = 50.0
    source, description = "rapl", "a stand-in counter"

    def read(self) -> float:
        return self.WATTS * time.perf_counter()


def test_a_job_measures_energy_over_training_to_the_target_and_inference(registry, data, monkeypatch):
    import imgbench.engine.job as job_module
    from imgbench.energy import EnergyMeter

    monkeypatch.setattr(job_module, "energy_meter", lambda device: EnergyMeter(ConstantPower(), min_window_s=0))
    result = run_job("tiny/mlp", data, registry=registry, epochs=3, target_accuracy=0.05, **FAST)
    m = result.metrics
    watts = ConstantPower.WATTS
    # the meter spans every epoch, and lies inside the train phase
    epochs_s = sum(row["epoch_time_s"] for row in result.history)
    assert watts * epochs_s <= m["train_energy_j"] <= watts * m["train_time_s"]
    steps = len(data.train.y) // FAST["batch_size"]  # drop_last: whole batches only
    assert m["energy_per_train_image_j"] == pytest.approx(m["train_energy_j"] / (3 * steps * FAST["batch_size"]))
    assert m["time_to_target_s"] is not None  # a target of 5% is reached in the first epoch
    assert m["energy_to_target_j"] == pytest.approx(watts * m["time_to_target_s"], rel=0.05)
    assert m["energy_per_inference_image_j"] == pytest.approx(watts / m["infer_throughput"], rel=1e-3)
    assert m["energy_source"] == "rapl" and m["energy_note"] == ""


def test_without_an_energy_counter_the_energy_columns_are_empty_and_say_why(registry, data, monkeypatch):
    import imgbench.engine.job as job_module
    from imgbench.energy import NO_COUNTER, EnergyMeter

    monkeypatch.setattr(job_module, "energy_meter", lambda device: EnergyMeter(None))
    m = run_job("tiny/mlp", data, registry=registry, epochs=1, **FAST).metrics
    assert [m[k] for k in ("train_energy_j", "energy_per_train_image_j", "energy_to_target_j",
                           "energy_per_inference_image_j")] == [None] * 4
    assert m["energy_note"] == NO_COUNTER and m["energy_source"] == ""


def test_energy_notes_name_each_window_only_when_their_reasons_differ():
    from imgbench.energy import EnergyReading
    from imgbench.engine.job import energy_note

    same = EnergyReading(None, 2.0, reason="no energy counter on this machine")
    short = EnergyReading(None, 0.2, "nvml", reason="window of 0.20 s is too short")
    assert energy_note(same, same) == {"energy_note": "no energy counter on this machine"}
    assert energy_note(same, short) == {"energy_note": "training: no energy counter on this machine; "
                                                       "inference: window of 0.20 s is too short"}
    assert energy_note(EnergyReading(10.0, 2.0, "nvml"), None) == {"energy_note": ""}
