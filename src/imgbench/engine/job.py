"""``run_job``: one model, one dataset, one seed, one recipe -> a trained, tested and timed job folder.

The job reads as its steps. :func:`~imgbench.engine.plan.plan_job` decides everything first (a frozen
:class:`~imgbench.engine.plan.JobPlan`); then each phase takes the plan and what the phases before it returned,
and returns a typed result: the data (:class:`JobData`), the built model (:class:`BuiltModel`), the model's
inputs (:class:`Inputs`), the compiled model (:class:`Compiled`), the training (``FitResult``), the speed
figures, the test (:class:`Evaluation`). ``run_job`` merges their records into metrics.json once. Every timed
window comes before the test, so that a grid can start its next job beside the untimed end of this one.
A diverged loss or an out-of-memory error stops the job with status ``diverged`` / ``oom``; metrics.json is
written either way, with what the phases before it measured.
"""

from __future__ import annotations

import importlib
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence, cast

import numpy as np
import pandas as pd

from imgbench import schema
from imgbench.energy import EnergyMeter, EnergyReading, energy_meter
from imgbench.engine import frameworks
from imgbench.engine.handoff import mark_untimed, wait_for_previous_job
from imgbench.engine.loading import load_dataset
from imgbench.engine.phases import (BENCHMARK, BUILD_MODEL, COMPILE, EVALUATE, FLOPS, IMPORTS, LOAD_DATA, SAVE_WEIGHTS,
                                    TRAIN, WAIT, PhaseTimer)
from imgbench.engine.plan import JobPlan, plan_job
from imgbench.engine.record import Recorded, merge_record, provenance, write_job
from imgbench.engine.threads import THREAD_ENV_VARS, threads_in_force
from imgbench.engine.weights import core_module, default_classifier, load_weights, save_checkpoint
from imgbench.errors import UsageError
from imgbench.families.keras_models import build_scope
from imgbench.registry import get_registry, input_size
from imgbench.specs import DataConfig, LoadedDataset, Split

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from imgbench.engine.data import ImageBatches
    from imgbench.engine.recipe import Recipe
    from imgbench.engine.timing import PeakMemory
    from imgbench.registry import Registry

@dataclass
class JobResult:
    status: schema.Status  # one of schema.ENGINE_STATUSES
    metrics: dict[str, Any]  # exactly what metrics.json holds
    history: list[dict[str, Any]]  # one dict per epoch (history.csv)
    predictions: pd.DataFrame  # one row per test image (predictions.csv); empty unless status is ok
    out_dir: Path | None


def run_job(model: str, dataset: str | LoadedDataset, *, seed: int = 0, out_dir: Path | str | None = None,
            registry: Registry | None = None, data_dir: Path | str | None = None, progress: bool = True,
            recipe: Recipe | None = None, **params: Any) -> JobResult:
    """Train ``model`` on ``dataset``, test it and time it: the one engine every model and job goes through.

    Args:
        model: a registered model name (``timm/resnet18``, ``keras/mnist_convnet``, a plugin's
            ``<namespace>/<arch>``; ``imgbench models`` lists them).
        dataset: a registered dataset name (``mnist``, ``imagefolder:/data/pets``), loaded at the recipe's
            ``image_size`` and ``val_size``; or a :class:`~imgbench.specs.LoadedDataset` used as given (its image
            size and validation split are then already fixed; its recipe defaults are those of the dataset
            registered under its name, else the generic ones).
        seed: seeds the weights, the shuffling and the augmentation (a non-negative int).
        out_dir: the job folder to write (see *Files*); ``None`` keeps the results in memory only.
        registry: the :class:`~imgbench.registry.Registry` to find the model and dataset in (default: the
            installed plugins and ``IMGBENCH_PLUGINS_DIR``).
        data_dir: where local dataset copies live (default ``IMGBENCH_DATA_DIR``, else a verified download).
        progress: print one line per epoch (loss, accuracy, learning rate, seconds) on stdout.
        recipe: a resolved :class:`~imgbench.engine.recipe.Recipe`, used as it is (a grid job's, resolved when
            the grid was expanded). Give either ``recipe`` or ``params``, not both.
        **params: recipe fields overriding the dataset's default recipe (``epochs=3, lr=1e-3``;
            ``imgbench params DATASET`` lists them with their defaults).

    Returns:
        A :class:`JobResult`: ``status`` (``ok``, ``diverged`` or ``oom``), ``metrics`` (what metrics.json
        holds), ``history`` (one dict per epoch), ``predictions`` (one row per test image; empty unless ok)
        and ``out_dir``.

    Raises:
        UsageError: before any work starts, for an unknown model or dataset, a bad parameter (name, type,
            range), ``recipe`` and ``params`` both given, a negative seed, ``save_weights`` without
            ``out_dir``, or a training or test subset that leaves a split empty.

    Phases, in order, each timed into ``metrics["phases"]`` (seconds): ``imports`` (torch, scikit-learn and
    the model's framework), ``load_data`` (the dataset and its stratified ``train_samples`` /
    ``test_samples`` subsets), ``wait`` (only for a job started while the one before it finishes:
    :mod:`imgbench.engine.handoff`), ``build_model`` (after seeding; starting weights loaded, the head
    frozen for ``finetune=head``), ``flops`` (the activation dtypes the model really ran in, and its FLOPs),
    ``compile`` (with ``compile=true``: every graph the job will run, so no recompile lands in a timed
    window), ``train`` (``epochs`` epochs; the validation split after each, for model selection only),
    ``benchmark`` (inference throughput at ``batch_size`` and batch-1 latency, each at least
    ``bench_seconds``: the last timed window), ``save_weights`` (with ``save_weights=true``), ``evaluate``
    (the final model on the test subset), ``flops``, ``write``.

    Measurements: every timer stops on the device's own clock (CUDA events on a GPU), after a warm-up;
    training throughput comes from the steady steps (the first ones are left out), inference throughput from
    equal timed chunks added until their spread is small or a time cap is reached; each speed figure carries
    its spread within the job (``*_rel_iqr``) and, on a GPU, the share of its wall time the GPU was busy
    (``train_gpu_busy``, ``infer_gpu_busy``; low means bound by the CPU launching kernels). Compile time is
    reported apart (``compile_time_s``), torch's CPU threads are set and recorded (``threads``,
    ``concurrency``), and peak memory is measured for the whole job and, on CUDA, for the training steps alone.
    Energy comes from the device's own counter (:mod:`imgbench.energy`: NVML on a GPU, RAPL on a CPU) over the
    training phase and the inference throughput measurement (``train_energy_j``, ``energy_per_train_image_j``,
    ``energy_to_target_j``, ``energy_per_inference_image_j``); without a counter those stay empty and
    ``energy_note`` says why.

    Failures: a loss that becomes NaN or infinite stops training with status ``diverged``; running out of
    device memory stops the job with status ``oom``. Either way metrics.json is written, with what the
    phases before the failure measured and the error.

    Files (with ``out_dir``): ``history.csv`` and ``predictions.csv`` first, then ``metrics.json`` last (its
    presence means the job finished): every engine column of :mod:`imgbench.schema` at its top level, with
    nested ``recipe``, ``classes``, ``per_class``, ``confusion_matrix``, ``phases``, ``preprocessing``,
    ``weights`` and ``provenance``. With ``save_weights=true`` also ``model.safetensors``. Every file is
    written atomically.

    Example:
        >>> from imgbench.engine import run_job
        >>> result = run_job("keras/mnist_convnet", "digits", epochs=2, bench_seconds=0.2)  # doctest: +SKIP
        >>> result.status, result.metrics["accuracy"], result.metrics["infer_throughput"]  # doctest: +SKIP
    """
    registry = registry or get_registry()
    family = registry.model(model).family  # an unknown model is refused before anything heavy is imported
    phases = PhaseTimer()
    with phases(IMPORTS):
        import_frameworks(family)
    plan = plan_job(model, dataset, seed=seed, out_dir=out_dir, registry=registry, progress=progress,
                    recipe=recipe, params=params)
    with phases(LOAD_DATA):
        data = load_job_data(plan, dataset, registry, data_dir)
    outcome = _run(plan, data, registry, phases)
    metrics = merge_record(plan, data, *outcome.parts, {"phases": phases.seconds})
    if plan.out_dir is not None:
        write_job(plan.out_dir, metrics, outcome.history, outcome.predictions, phases)
    return JobResult(metrics["status"], metrics, outcome.history, outcome.predictions, plan.out_dir)


def import_frameworks(family: str) -> None:
    """Import what every job needs (torch and the engine's modules, scikit-learn) and the framework of
    ``family``'s models (:mod:`imgbench.engine.frameworks`), so that the phases after it time their own work."""
    if family == "keras":
        os.environ.setdefault("KERAS_BACKEND", "torch")
    for name in frameworks.of_family(family):
        importlib.import_module(name)


# -- the phases and what each returns ----------------------------------------------------------------------

@dataclass(frozen=True)
class JobData:
    """The job's images: the dataset as loaded and the stratified subsets it trains and tests on."""

    loaded: LoadedDataset
    train: Split
    test: Split
    test_index: np.ndarray  # each test image's index in the dataset's test split
    model_input_size: int  # the side the model sees (larger than the data's when resized up to its minimum)

    @property
    def image_size(self) -> int:
        return int(self.loaded.image_shape[0])

    @property
    def channels(self) -> int:
        return int(self.loaded.image_shape[2])

    def record(self) -> dict[str, Any]:
        loaded = self.loaded
        return {"image_size": self.image_size, "model_input_size": self.model_input_size,
                "train_samples": len(self.train), "val_samples": len(loaded.val), "test_samples": len(self.test),
                "train_split_samples": len(loaded.train), "test_split_samples": len(loaded.test),
                "dataset_fingerprint": loaded.fingerprint, "dataset_source": loaded.source,
                "classes": list(loaded.classes)}


def load_job_data(plan: JobPlan, dataset: str | LoadedDataset, registry: Registry,
                  data_dir: Path | str | None) -> JobData:
    from imgbench.engine.data import stratified_subset

    loaded = dataset if isinstance(dataset, LoadedDataset) else load_dataset(
        dataset, plan.recipe, model=plan.spec, data_dir=data_dir, registry=registry, start=plan.start)
    train, _ = stratified_subset(loaded.train, plan.recipe.train_samples, "train_samples")
    test, test_index = stratified_subset(loaded.test, plan.recipe.test_samples, "test_samples")
    if not len(train) or not len(test):
        raise UsageError(f"dataset {plan.dataset!r} has {len(train)} training and {len(test)} test images; "
                         f"the engine needs both")
    return JobData(loaded, train, test, test_index, input_size(plan.spec, int(loaded.image_shape[0])))


@dataclass(frozen=True)
class BuiltModel:
    """The model on the device, its starting weights loaded."""

    net: torch.nn.Module  # what trains: the model, or its FrozenBackbone for finetune=head
    core: torch.nn.Module  # the bare built model, what a checkpoint holds
    loaded_weights: Mapping[str, Any]  # what loading the starting weights reported (empty: none loaded)
    params: int
    trained_params: int

    def record(self) -> dict[str, Any]:
        return {"params": self.params, "trained_params": self.trained_params, "weights": dict(self.loaded_weights)}


def build_model(plan: JobPlan, data: JobData, registry: Registry) -> BuiltModel:
    """Build (after seeding), load the starting weights and, for ``finetune=head``, freeze all but the head."""
    import torch

    from imgbench.engine.timing import count_parameters
    from imgbench.wrappers import FrozenBackbone

    with _build_scope(plan):
        net = registry.build_model(plan.model, num_classes=len(data.loaded.classes), in_chans=data.channels,
                                   image_size=data.image_size, pretrained=plan.recipe.pretrained)
        core = core_module(net)
        head = (plan.spec.classifier or default_classifier)(core)
        loaded = load_weights(core, plan.start.path, head, plan.model) if plan.start.path else {}
        params = count_parameters(net)
        if plan.recipe.finetune == "head":
            net = FrozenBackbone(net, head)
        # memory formats are for torch's NCHW weights; Keras keeps its own kernel layout (HWIO)
        keras = plan.spec.family == "keras"
        net = net.to(plan.device).to(memory_format=torch.preserve_format if keras else _memory_format(plan))
    return BuiltModel(net, core, loaded, params, count_parameters(net))


def _build_scope(plan: JobPlan) -> Any:
    """Keras builds on its own default device and dtype policy unless told; every other family is a torch
    module built on the CPU and moved by the engine."""
    if plan.spec.family != "keras":
        return nullcontext()

    return build_scope(str(plan.device), plan.precision.name)


def _memory_format(plan: JobPlan) -> torch.memory_format:
    import torch

    cuda_channels_last = plan.recipe.channels_last and plan.device.type == "cuda"
    return torch.channels_last if cuda_channels_last else torch.contiguous_format


@dataclass(frozen=True)
class Inputs:
    """The three splits as the model's inputs (normalised batches on, or pinned for, the device)."""

    train: ImageBatches
    val: ImageBatches
    test: ImageBatches
    data_config: DataConfig  # the normalisation in use: the weights' own, or the training split's statistics
    on_device: bool  # the uint8 splits are held on the device
    image_size: int
    in_model_resize: bool

    def record(self) -> dict[str, Any]:
        config = self.data_config
        values = ", ".join(f"{m:.4g}/{s:.4g}" for m, s in zip(config.mean, config.std))
        return {"preprocessing": config.to_dict() | {"image_size": self.image_size,
                                                     "in_model_resize": self.in_model_resize},
                "data_on_device": self.on_device,
                "provenance": {"preprocessing": config.source,
                               "normalisation": f"{config.channel_order} mean/std {values}"}}


def prepare_inputs(plan: JobPlan, data: JobData, memory: PeakMemory) -> Inputs:
    from imgbench.engine.data import ImageBatches, fits_on_device, normalisation

    mean, std, config = normalisation(plan.start.data_config, data.train.x)
    splits = (data.train, data.loaded.val, data.test)
    nbytes = sum(split.x.nbytes + split.y.nbytes for split in splits)
    on_device = fits_on_device(nbytes, plan.device)
    memory.exclude(nbytes if on_device and plan.device.type == "cuda" else 0)
    train, val, test = (ImageBatches(split, plan.device, mean, std, _memory_format(plan), on_device,
                                     config.channel_order == "BGR") for split in splits)
    return Inputs(train, val, test, config, on_device, data.image_size, data.model_input_size != data.image_size)


@dataclass(frozen=True)
class Compiled:
    """The compiled model, warmed on every shape and mode the job will run."""

    module: torch.nn.Module
    compile_time_s: float

    def record(self) -> dict[str, Any]:
        return {"compile_time_s": self.compile_time_s}


def compile_model(plan: JobPlan, built: BuiltModel, inputs: Inputs) -> Compiled:
    """``torch.compile`` with one static graph per batch shape, each compiled here (see ``warm_compile``)."""
    import torch

    from imgbench.engine.train import warm_compile

    compiled = cast(torch.nn.Module, torch.compile(built.net, dynamic=False))  # an OptimizedModule
    batch = plan.recipe.batch_size
    fit_batch = min(batch, len(inputs.train))  # what fit trains and validates at
    eval_sizes = sorted({*inputs.val.batch_sizes(fit_batch), *inputs.test.batch_sizes(batch)})
    seconds = warm_compile(built.net, compiled, inputs.train, fit_batch, plan.precision, eval_sizes, [batch, 1])
    return Compiled(compiled, seconds)


@dataclass(frozen=True)
class Evaluation:
    """The final model on the test subset: scikit-learn's metrics and one prediction row per image."""

    metrics: Mapping[str, Any]
    predictions: pd.DataFrame

    def record(self) -> dict[str, Any]:
        return dict(self.metrics)


def evaluate_model(plan: JobPlan, data: JobData, inputs: Inputs, model: torch.nn.Module,
                   history: Sequence[Mapping[str, Any]]) -> Evaluation:
    """scikit-learn's metrics on the test subset, and whether the model learnt (test and validation curve)."""
    from imgbench.engine import evaluate

    logits = evaluate.predict_logits(model, inputs.test, plan.recipe.batch_size, plan.precision.autocast)
    probs = evaluate.probabilities(logits)
    metrics = evaluate.classification_metrics(data.test.y, probs)
    metrics["did_not_learn"] = evaluate.learning_finding(metrics["did_not_learn"], history, data.loaded.val.y)
    return Evaluation(metrics, evaluate.predictions_frame(data.test_index, data.test.y, probs))


def measure_precision(plan: JobPlan, built: BuiltModel, inputs: Inputs) -> dict[str, Any]:
    """The precision the model really runs in, from one forward pass's activation dtypes."""
    from imgbench.engine.timing import activation_dtypes, ran_in

    shares = activation_dtypes(built.net, inputs.train.inputs(inputs.train.x[:1]), plan.precision.autocast)
    return {"precision": ran_in(shares), "activation_dtypes": shares}


def _bench_batch(plan: JobPlan, inputs: Inputs) -> torch.Tensor:
    import torch

    test = inputs.test
    return test.inputs(test.x[torch.arange(plan.recipe.batch_size) % len(test)])


def count_cost(plan: JobPlan, built: BuiltModel, inputs: Inputs) -> dict[str, Any]:
    from imgbench.engine.timing import count_flops

    test = inputs.test  # one image: the benchmark batch's first
    return {"flops": count_flops(built.net, test.inputs(test.x[:1]), plan.precision.autocast)}


@dataclass(frozen=True)
class InferenceTiming:
    """Inference throughput and batch-1 latency, and the energy the counter measured over the throughput."""

    figures: Mapping[str, Any]
    energy: EnergyReading

    def record(self) -> dict[str, Any]:
        return {**self.figures, "energy_source": self.energy.source,
                "energy_per_inference_image_j": self.energy.per_image_at(self.figures["infer_throughput"])}


def time_inference(plan: JobPlan, inputs: Inputs, model: torch.nn.Module, energy: EnergyMeter) -> InferenceTiming:
    """Inference throughput at ``batch_size`` (the energy meter running over it) and batch-1 latency, each timed
    for ``bench_seconds`` or more."""
    from imgbench.engine import timing

    batch = _bench_batch(plan, inputs)
    forward = timing.inference_forward(model, plan.precision.autocast)
    seconds = plan.recipe.bench_seconds
    energy.start()
    speed = timing.inference_throughput(forward, batch, plan.device, seconds)
    reading = energy.stop()
    return InferenceTiming({**speed, **timing.latency_ms(forward, batch[:1].clone(), plan.device, seconds)}, reading)


def energy_note(training: EnergyReading | None, inference: EnergyReading | None) -> dict[str, str]:
    """Why an energy column is empty: one reason when both windows share it, else each named."""
    reasons = {name: reading.reason for name, reading in (("training", training), ("inference", inference))
               if reading is not None and reading.reason}
    if len(set(reasons.values())) <= 1:
        return {"energy_note": next(iter(reasons.values()), "")}
    return {"energy_note": "; ".join(f"{name}: {reason}" for name, reason in reasons.items())}


def save_weights(plan: JobPlan, data: JobData, built: BuiltModel, inputs: Inputs) -> dict[str, Any]:
    """The trained model with what a later job needs to feed it the same inputs."""

    assert plan.out_dir is not None  # plan_job refuses save_weights without out_dir
    recipe, start = plan.recipe, plan.start
    save_checkpoint(built.core, plan.out_dir / schema.MODEL_CHECKPOINT, {
        "model": plan.model, "classes": list(data.loaded.classes), "in_chans": data.channels,
        "preprocessing": replace(inputs.data_config, input_size=data.image_size).to_dict(),
        "model_input_size": data.model_input_size, "dataset": plan.dataset,
        "dataset_fingerprint": data.loaded.fingerprint, "config_hash": plan.config_hash,
        "started_from": "imagenet" if recipe.pretrained else start.path or "random",
    })
    return {"saved_weights": schema.MODEL_CHECKPOINT}


# -- the job, phase after phase -----------------------------------------------------------------------------

@dataclass
class _Outcome:
    """What the phases returned, in order, and the two tables besides metrics.json."""

    parts: list[Recorded | Mapping[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    predictions: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(schema.PREDICTION_COLUMNS)))


def _run(plan: JobPlan, data: JobData, registry: Registry, phases: PhaseTimer) -> _Outcome:
    """The phases from the model build on, under the job's threads and determinism; an out-of-memory error
    ends them with status ``oom``."""
    import torch

    from imgbench.engine.timing import PeakMemory
    from imgbench.engine.train import reproducibility

    outcome = _Outcome()
    with reproducibility(plan.recipe.deterministic, plan.device) as flags, \
            threads_in_force(plan.recipe.threads) as (threads, concurrency):
        found = provenance(plan.device, plan.precision.name, {"seed": plan.seed, **flags}, plan.plugin,
                           plan.plugin_version, plan.plugin_location)
        found.update(weights_path=plan.start.path or None, weights_sha256=plan.start.sha256 or None)
        outcome.parts.append({"threads": threads, "concurrency": concurrency, "provenance": found,
                              "thread_env": {name: os.environ.get(name) for name in THREAD_ENV_VARS}})
        waited = wait_for_previous_job()  # before the device is first used: nothing else competes from here on
        if waited:
            phases.add(WAIT, waited)
        outcome.parts.append({"wall": {"device_from": time.time()}})  # when the device work began (wall clock)
        memory = PeakMemory(plan.device)
        try:
            _measure(plan, data, registry, phases, memory, outcome, energy_meter(plan.device))
        except torch.OutOfMemoryError as exc:
            outcome.parts.append({"status": schema.Status.OOM,
                                  "error": f"out of memory: {str(exc).splitlines()[0]}"})
            if plan.device.type == "cuda":
                torch.cuda.empty_cache()
        outcome.parts.append({"peak_memory_mb": memory.peak_mb(), "train_peak_memory_mb": memory.train_peak_mb()})
    return outcome


def _measure(plan: JobPlan, data: JobData, registry: Registry, phases: PhaseTimer, memory: PeakMemory,
             outcome: _Outcome, energy: EnergyMeter) -> None:
    """Build, train, test and time, adding each phase's result to ``outcome`` as soon as it is there."""
    from imgbench.engine.train import fit, seed_everything

    seed_everything(plan.seed, keras_model=plan.spec.family == "keras")
    with phases(BUILD_MODEL):
        built = build_model(plan, data, registry)
    with phases(LOAD_DATA):  # the data as the model's inputs, on the device when it fits: after the model
        inputs = prepare_inputs(plan, data, memory)
    outcome.parts += [built, inputs]
    with phases(FLOPS):  # measured before training, so a job that fails still says what it ran in
        outcome.parts.append(measure_precision(plan, built, inputs))
    model = built.net  # what the job trains, tests and times: the compiled module with compile=true
    if plan.recipe.compile:
        with phases(COMPILE):
            compiled = compile_model(plan, built, inputs)
        outcome.parts.append(compiled)
        model = compiled.module
    with phases(TRAIN):
        fitted = fit(model, inputs.train, inputs.val, plan.recipe, plan.precision, seed=plan.seed,
                     image_size=data.image_size, memory=memory, progress=plan.progress, energy=energy)
    outcome.parts += [fitted, {"train_time_s": phases.seconds[TRAIN]}]
    outcome.history = fitted.history
    if fitted.error:
        outcome.parts += [{"status": schema.Status.DIVERGED, "error": fitted.error}, energy_note(fitted.energy, None)]
        return
    with phases(BENCHMARK):
        timed = time_inference(plan, inputs, model, energy)
    outcome.parts += [timed, energy_note(fitted.energy, timed.energy)]
    memory.sample()
    mark_untimed()  # the last timed window is over: the executor may start the next job beside what follows
    if plan.recipe.save_weights:
        with phases(SAVE_WEIGHTS):
            outcome.parts.append(save_weights(plan, data, built, inputs))
    with phases(EVALUATE):
        evaluation = evaluate_model(plan, data, inputs, model, fitted.history)
    outcome.parts.append(evaluation)
    outcome.predictions = evaluation.predictions
    memory.sample()
    with phases(FLOPS):
        outcome.parts.append(count_cost(plan, built, inputs))
