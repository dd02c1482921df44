"""``run_job``: one model, one dataset, one seed, one recipe -> a trained, tested and timed job folder.

Phases, in order: load data, build the model (after seeding) and load its starting weights, compile
(opt-in), train (val after each epoch, for selection only), save the weights (opt-in), test the final
model, count FLOPs, time inference. A diverged loss or an out-of-memory error stops the job with status
``diverged`` / ``oom``; metrics.json is written either way.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from imgbench import schema
from imgbench.engine.loading import load_dataset
from imgbench.engine.recipe import Recipe, config_hash, resolve_recipe
from imgbench.engine.record import empty_metrics, provenance, write_job
from imgbench.engine.weights import Start, plan_start
from imgbench.errors import UsageError
from imgbench.specs import DatasetSpec, LoadedDataset

EVALUATED_MODEL = "final"  # the model after the last epoch is tested; val only picks best_val_accuracy


@dataclass
class JobResult:
    status: schema.Status  # one of schema.ENGINE_STATUSES
    metrics: dict[str, Any]  # exactly what metrics.json holds
    history: list[dict[str, Any]]  # one dict per epoch (history.csv)
    predictions: pd.DataFrame  # one row per test image (predictions.csv); empty unless status is ok
    out_dir: Path | None


class Phases:
    """Wall time per phase, in seconds."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def _job_recipe(dataset: str | LoadedDataset, registry: Any, recipe: Recipe | None,
                params: dict[str, Any]) -> Recipe:
    """``recipe`` as it is, or else the dataset's recipe resolved with ``params``; never both."""
    if recipe is None:
        return resolve_recipe(_defaults_from(dataset, registry), params)
    if params:
        raise UsageError(f"run_job takes recipe=... or recipe parameters ({', '.join(params)}), not both")
    if not isinstance(recipe, Recipe):
        raise UsageError(f"recipe must be an imgbench.engine.Recipe, not {type(recipe).__name__}")
    return recipe


def run_job(model: str, dataset: str | LoadedDataset, *, seed: int = 0, out_dir: Path | str | None = None,
            registry: Any = None, data_dir: Path | str | None = None, progress: bool = True,
            recipe: Recipe | None = None, **params: Any) -> JobResult:
    """Train ``model`` on ``dataset`` with its dataset's recipe overridden by ``params``; test and time it.

    ``dataset`` is a registered name (``mnist``, ``imagefolder:/path``) or a ``LoadedDataset`` used as
    given (its image size and val split are then already fixed; its recipe defaults are those of the dataset
    registered under its name, else the generic ones). ``recipe``, instead of ``params``, is a
    resolved :class:`Recipe` used as it is (a grid job's, resolved when the grid was expanded). With
    ``out_dir`` the job's files are written there. Raises ``UsageError`` for bad names or parameters before
    any work starts.
    """
    import torch

    from imgbench.engine.data import stratified_subset
    from imgbench.engine.train import choose_precision, reproducibility, select_device
    from imgbench.engine.threads import THREAD_ENV_VARS, threads_in_force
    from imgbench.engine.timing import PeakMemory
    from imgbench.registry import get_registry, input_size

    dataset_name = dataset.name if isinstance(dataset, LoadedDataset) else dataset
    if not isinstance(dataset_name, str):
        raise UsageError(f"dataset must be a name or a LoadedDataset, not {type(dataset).__name__}")
    registry = registry or get_registry()
    recipe = _job_recipe(dataset, registry, recipe, params)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"seed must be a non-negative int, got {seed!r}")
    spec = registry.model(model)
    plugin, source = registry.model_plugin(model)
    if recipe.save_weights and out_dir is None:
        raise UsageError(f"save_weights=true writes {schema.MODEL_CHECKPOINT} into the job folder; give out_dir")
    start = plan_start(spec, recipe.pretrained, recipe.weights)
    device = select_device(recipe.device)
    phases = Phases()
    with phases("load_data"):
        loaded = dataset if isinstance(dataset, LoadedDataset) else load_dataset(
            dataset, recipe, model=spec, data_dir=data_dir, registry=registry, start=start)
    train, _ = stratified_subset(loaded.train, recipe.train_samples, "train_samples")
    test, test_index = stratified_subset(loaded.test, recipe.test_samples, "test_samples")
    if not len(train) or not len(test):
        raise UsageError(f"dataset {dataset_name!r} has {len(train)} training and {len(test)} test images; "
                         f"the engine needs both")
    image_size = int(loaded.image_shape[0])
    precision = choose_precision(device, recipe.amp)
    memory = PeakMemory(device)
    metrics = empty_metrics() | {
        "model": model, "family": spec.family, "plugin": plugin, "dataset": dataset_name, "seed": seed,
        "status": schema.Status.OK, "epochs": recipe.epochs, "batch_size": recipe.batch_size, "image_size": image_size,
        "model_input_size": input_size(spec, image_size), "train_samples": len(train),
        "val_samples": len(loaded.val), "test_samples": len(test), "device": str(device),
        "train_split_samples": len(loaded.train), "test_split_samples": len(loaded.test),
        "precision_requested": precision.name, "evaluated_model": EVALUATED_MODEL,
        "dataset_fingerprint": loaded.fingerprint, "dataset_source": loaded.source,
        "config_hash": config_hash(model, dataset_name, seed, recipe.to_dict()),
        "recipe": recipe.to_dict(), "classes": list(loaded.classes), "finetune": recipe.finetune,
        "weights": {"pretrained": recipe.pretrained, **start.record()},
    }
    history: list[dict[str, Any]] = []
    predictions = pd.DataFrame(columns=list(schema.PREDICTION_COLUMNS))
    with reproducibility(recipe.deterministic, device) as flags, threads_in_force(recipe.threads) as (threads, jobs):
        metrics.update(threads=threads, concurrency=jobs, thread_env={v: os.environ.get(v) for v in THREAD_ENV_VARS})
        metrics["provenance"] = provenance(device, precision.name, {"seed": seed, **flags}, plugin,
                                           source.version if source else None,
                                           source.location if source else None)
        metrics["provenance"].update(weights_path=start.path or None, weights_sha256=start.sha256 or None)
        try:
            history, predictions = _train_and_measure(metrics, registry, spec, start, loaded, train, test,
                                                      test_index, recipe, seed, device, precision, memory,
                                                      phases, progress, out_dir)
        except torch.OutOfMemoryError as exc:
            metrics.update(status=schema.Status.OOM, error=f"out of memory: {str(exc).splitlines()[0]}")
            if device.type == "cuda":
                torch.cuda.empty_cache()
    metrics["peak_memory_mb"] = memory.peak_mb()
    metrics["train_peak_memory_mb"] = memory.train_peak_mb()
    metrics["phases"] = phases.seconds
    folder = Path(out_dir) if out_dir is not None else None
    if folder is not None:
        write_job(folder, metrics, history, predictions)
    return JobResult(metrics["status"], metrics, history, predictions, folder)


def _build_scope(family: str, device: Any, precision: Any):
    """Keras builds on its own default device and dtype policy unless told; every other family is a torch
    module built on the CPU and moved by the engine."""
    if family != "keras":
        return nullcontext()
    from imgbench.families.keras_models import build_scope

    return build_scope(str(device), precision.name)


def _defaults_from(dataset: str | LoadedDataset, registry: Any) -> DatasetSpec | None:
    """The spec whose recipe defaults the job takes: the named dataset's, or for a ``LoadedDataset`` the one
    registered under its name; None (the generic recipe) for an in-memory dataset nothing registers."""
    from imgbench.registry import UnknownNameError

    if not isinstance(dataset, LoadedDataset):
        return registry.dataset(dataset)[0]
    try:
        return registry.dataset(dataset.name)[0]
    except UnknownNameError:
        return None


def _start_from(net, spec, start: Start, recipe: Recipe, metrics: dict[str, Any]):
    """Load the starting weights into the built model and, for ``finetune=head``, freeze all but its head.
    Returns (the module to train, the bare model a checkpoint holds)."""
    from imgbench.engine import timing
    from imgbench.engine.weights import core_module, default_classifier, load_weights
    from imgbench.wrappers import FrozenBackbone

    core = core_module(net)
    head = (spec.classifier or default_classifier)(core)
    if start.path:
        metrics["weights"].update(load_weights(core, start.path, head, spec.name))
    metrics["params"] = timing.count_parameters(net)
    if recipe.finetune == "head":
        net = FrozenBackbone(net, head)
    metrics["trained_params"] = timing.count_parameters(net)
    return net, core


def _train_and_measure(metrics, registry, spec, start, loaded, train, test, test_index, recipe, seed, device,
                       precision, memory, phases, progress, out_dir):
    """Fills ``metrics`` in place; returns (history, predictions)."""
    import torch

    from imgbench.engine import evaluate, timing
    from imgbench.engine.data import ImageBatches, fits_on_device, normalisation
    from imgbench.engine.train import fit, seed_everything, warm_compile

    seed_everything(seed, keras_model=spec.family == "keras")
    height, _width, channels = loaded.image_shape
    memory_format = torch.channels_last if recipe.channels_last and device.type == "cuda" else torch.contiguous_format
    mean, std, data_config = normalisation(start.data_config, train.x)
    metrics["preprocessing"] = data_config.to_dict() | {
        "image_size": height, "in_model_resize": metrics["model_input_size"] != height}
    metrics["provenance"].update(preprocessing=data_config.source, normalisation=_normalisation_text(data_config))
    with phases("build_model"), _build_scope(spec.family, device, precision):
        net = registry.build_model(metrics["model"], num_classes=len(loaded.classes), in_chans=channels,
                                   image_size=height, pretrained=recipe.pretrained)
        net, core = _start_from(net, spec, start, recipe, metrics)
        # memory formats are for torch's NCHW weights; Keras keeps its own kernel layout (HWIO)
        net = net.to(device=device,
                     memory_format=memory_format if spec.family != "keras" else torch.preserve_format)

    nbytes = sum(s.x.nbytes + s.y.nbytes for s in (train, loaded.val, test))
    on_device = fits_on_device(nbytes, device)
    memory.exclude(nbytes if on_device and device.type == "cuda" else 0)
    reverse = data_config.channel_order == "BGR"
    splits = {name: ImageBatches(split, device, mean, std, memory_format, on_device, reverse)
              for name, split in (("train", train), ("val", loaded.val), ("test", test))}
    metrics["data_on_device"] = on_device
    with phases("flops"):  # measured before training, so a job that fails still says what it ran in
        shares = timing.activation_dtypes(net, splits["train"].inputs(splits["train"].x[:1]), precision.autocast)
        metrics.update(precision=timing.ran_in(shares), activation_dtypes=shares)
    runner = net
    if recipe.compile:
        with phases("compile"):
            runner = torch.compile(net)
            fit_batch = min(recipe.batch_size, len(train))
            # every batch shape the compiled model will see, so no recompile lands in a timed phase
            eval_sizes = {*splits["val"].batch_sizes(fit_batch), *splits["test"].batch_sizes(recipe.batch_size),
                          recipe.batch_size, 1}
            metrics["compile_time_s"] = warm_compile(net, runner, splits["train"], fit_batch, precision,  # type: ignore[arg-type]  # torch.compile of a module is one
                                                     sorted(eval_sizes))

    with phases("train"):
        fitted = fit(runner, splits["train"], splits["val"], recipe, precision, seed, height, memory, progress)
    metrics.update(train_time_s=phases.seconds["train"], train_throughput=fitted.train_throughput,
                   train_throughput_rel_iqr=fitted.train_throughput_rel_iqr,
                   best_val_accuracy=fitted.best_val_accuracy, best_val_epoch=fitted.best_val_epoch,
                   time_to_target_s=fitted.time_to_target_s,
                   final_val_accuracy=fitted.history[-1]["val_accuracy"] if fitted.history else None)
    if fitted.error:
        metrics.update(status=schema.Status.DIVERGED, error=fitted.error)
        return fitted.history, pd.DataFrame(columns=list(schema.PREDICTION_COLUMNS))
    if recipe.save_weights:
        with phases("save_weights"):
            _save(core, Path(out_dir) / schema.MODEL_CHECKPOINT, metrics, data_config, channels)
        metrics["saved_weights"] = schema.MODEL_CHECKPOINT

    with phases("evaluate"):
        logits = evaluate.predict_logits(runner, splits["test"], recipe.batch_size, precision.autocast)
        probs = evaluate.probabilities(logits)
        metrics.update(evaluate.classification_metrics(test.y, probs))
        metrics["did_not_learn"] = evaluate.learning_finding(metrics["did_not_learn"], fitted.history, loaded.val.y)
        predictions = evaluate.predictions_frame(test_index, test.y, probs)
    memory.sample()

    bench_batch = splits["test"].inputs(splits["test"].x[torch.arange(recipe.batch_size) % len(test)])
    with phases("flops"):
        metrics["flops"] = timing.count_flops(net, bench_batch[:1], precision.autocast)
    with phases("benchmark"):
        forward = timing.inference_forward(runner, precision.autocast)
        metrics.update(timing.inference_throughput(forward, bench_batch, device, recipe.bench_seconds))
        metrics.update(timing.latency_ms(forward, bench_batch[:1].clone(), device, recipe.bench_seconds))
    memory.sample()
    return fitted.history, predictions


def _normalisation_text(config) -> str:
    values = ", ".join(f"{m:.4g}/{s:.4g}" for m, s in zip(config.mean, config.std))
    return f"{config.channel_order} mean/std {values}"


def _save(core, path: Path, metrics: dict[str, Any], data_config, channels: int) -> None:
    """The trained model with what a later job needs to feed it the same inputs."""
    from dataclasses import replace

    from imgbench.engine.weights import save_checkpoint

    save_checkpoint(core, path, {
        "model": metrics["model"], "classes": metrics["classes"], "in_chans": channels,
        "preprocessing": replace(data_config, input_size=metrics["image_size"]).to_dict(),
        "model_input_size": metrics["model_input_size"], "dataset": metrics["dataset"],
        "dataset_fingerprint": metrics["dataset_fingerprint"], "config_hash": metrics["config_hash"],
        "started_from": "imagenet" if metrics["weights"]["pretrained"] else metrics["weights"]["path"] or "random",
    })
