"""The one training loop every model goes through, with its device, precision, optimiser and schedule.

The loop keeps the harness off the critical path: loss and accuracy accumulate on the device and are read
once per epoch (plus one cheap finiteness check every ``CHECK_EVERY`` steps), so the accelerator is never
stalled by a per-step ``.item()``.
"""

from __future__ import annotations

import copy
import importlib
import math
import os
import random
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from imgbench.energy import EnergyMeter, EnergyReading
from imgbench.engine import gpu_busy
from imgbench.engine.data import Augmenter, ImageBatches
from imgbench.engine.evaluate import loss_and_accuracy, predict_logits
from imgbench.engine.recipe import Recipe, device_problem
from imgbench.engine.timing import DTYPE_NAMES, PeakMemory, SteadyTimer, synchronize
from imgbench.errors import UsageError

SKIP_STEPS = 5  # steps left out of the training-throughput window (allocator, cuDNN autotuning, caches)
CHECK_EVERY = 50  # steps between divergence checks (one host sync each)
STEP_DECAY_AT = (0.5, 0.75)  # the "step" schedule multiplies the rate by STEP_DECAY at these fractions
STEP_DECAY = 0.1
ONECYCLE_MIN_WARMUP = 0.05  # OneCycleLR needs a non-empty rising phase
BF16_MIN_MAJOR_CAPABILITY = 8  # Ampere and later have bf16 tensor cores; older GPUs only emulate bf16
FUSED_OPTIMIZER_DEVICES = ("cuda", "cpu")  # where torch has fused SGD/Adam/AdamW kernels


class Diverged(Exception):
    """The training loss became NaN or infinite."""


def select_device(name: str) -> torch.device:
    """``auto``: CUDA when present, else MPS where it works, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    problem = device_problem(name)
    if problem:
        raise UsageError(f"parameter device={name!r}: {problem}")
    return torch.device(name)


@dataclass
class Precision:
    """Autocast dtype (None = fp32) and, for fp16, the gradient scaler."""

    device_type: str
    dtype: torch.dtype | None = None
    scaler: Any = None

    @property
    def name(self) -> str:
        return DTYPE_NAMES[self.dtype or torch.float32]

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()


def choose_precision(device: torch.device, amp: bool) -> Precision:
    """Mixed precision on CUDA only: bf16 where the GPU has it in hardware, else fp16 with a GradScaler.

    ``torch.cuda.is_bf16_supported()`` also counts emulated bf16 (V100, T4: slower than fp32) and asks about
    the current device rather than this one, so the decision reads this device's compute capability.
    """
    if device.type != "cuda" or not amp:
        return Precision(device.type)
    if torch.version.hip or torch.cuda.get_device_capability(device)[0] >= BF16_MIN_MAJOR_CAPABILITY:
        return Precision("cuda", torch.bfloat16)
    return Precision("cuda", torch.float16, torch.amp.GradScaler("cuda"))


def seed_everything(seed: int, keras_model: bool = False) -> None:
    """Python, NumPy, torch and, when in use, Keras' own generators (imported first for a Keras model)."""
    if keras_model:
        os.environ.setdefault("KERAS_BACKEND", "torch")
        importlib.import_module("keras")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # every device
    if "keras" in sys.modules:
        import keras

        keras.utils.set_random_seed(seed)


@contextmanager
def reproducibility(deterministic: bool, device: torch.device) -> Iterator[dict[str, Any]]:
    """Deterministic algorithms (warn-only where an op has none) or cuDNN autotuning, restored afterwards."""
    cudnn = torch.backends.cudnn
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              cudnn.deterministic, cudnn.benchmark)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS needs it
    _set_deterministic_algorithms(deterministic, warn_only=True)
    cudnn.deterministic = deterministic
    cudnn.benchmark = device.type == "cuda" and not deterministic
    try:
        yield {"deterministic": deterministic, "deterministic_warn_only": True,
               "cudnn_deterministic": cudnn.deterministic, "cudnn_benchmark": cudnn.benchmark,
               "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG")}
    finally:
        _set_deterministic_algorithms(before[0], warn_only=before[1])
        cudnn.deterministic, cudnn.benchmark = before[2], before[3]


def _set_deterministic_algorithms(enabled: bool, warn_only: bool) -> None:
    # only when it changes: the call imports torch's compiler stack, seconds on a CPU
    current = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    if current != (enabled, warn_only) and (enabled or current[0]):
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def build_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """Only parameters that require grad; no weight decay on biases and normalisation weights (1-D).

    torch's fused implementations on CUDA and the CPU: one kernel per step, and with fp16 the GradScaler
    hands them its ``found_inf`` as a device tensor instead of reading it back to the host every step.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if p.ndim > 1], "weight_decay": recipe.weight_decay},
              {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    fused = True if trainable and trainable[0].device.type in FUSED_OPTIMIZER_DEVICES else None
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.momentum > 0,
                               fused=fused)
    betas = (recipe.momentum, 0.999)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, lr=recipe.lr, betas=betas, fused=fused)
    return torch.optim.AdamW(groups, lr=recipe.lr, betas=betas, fused=fused)


def build_schedule(optimizer: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int):
    """A per-step schedule: linear warm-up then cosine/step/constant, or torch's OneCycleLR."""
    total = max(1, recipe.epochs * steps_per_epoch)
    warmup = min(total, round(recipe.warmup_epochs * steps_per_epoch))
    if recipe.schedule == "onecycle":
        rising = max(ONECYCLE_MIN_WARMUP, warmup / total)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=total,
                                                   pct_start=min(rising, 0.5))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        if recipe.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        if recipe.schedule == "step":
            return STEP_DECAY ** sum(progress >= at for at in STEP_DECAY_AT)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def warm_compile(model: torch.nn.Module, compiled: torch.nn.Module, train: ImageBatches, batch_size: int,
                 precision: Precision, eval_sizes: Sequence[int] = (), bench_sizes: Sequence[int] = ()) -> float:
    """Compile every graph the job will run before anything is timed; the seconds it took. Weights are restored.

    Each (mode, batch shape) is a graph of its own: the training step at ``batch_size`` (train mode, forward
    and backward); evaluation (eval mode, ``no_grad``, as validation and testing run it) at each of
    ``eval_sizes``, remainders included; and the benchmarks' forward (eval mode, ``inference_mode``, as
    :func:`imgbench.engine.timing.inference_forward` runs it) at each of ``bench_sizes``: its batch and batch 1.
    A shape or mode first seen later would compile inside a timed window.
    """
    snapshot = copy.deepcopy(model.state_dict())
    x, y = next(train.batches(batch_size))
    start = time.perf_counter()
    compiled.train()
    with precision.autocast():
        loss = torch.nn.functional.cross_entropy(compiled(x).float(), y)
    loss.backward()
    compiled.eval()
    # inputs made where the job makes them: evaluation's under no_grad, the benchmarks' before inference_mode
    # (an inference tensor as input would be a graph of its own)
    modes = ((torch.no_grad, torch.no_grad, eval_sizes or (len(x),)), (nullcontext, torch.inference_mode, bench_sizes))
    for made_under, run_under, sizes in modes:
        for size in sizes:
            with made_under():
                inputs = train.inputs(train.x[torch.arange(size, device=train.x.device) % len(train)])
            with run_under(), precision.autocast():
                compiled(inputs)
    synchronize(train.device)
    seconds = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    model.load_state_dict(snapshot)
    return seconds


@dataclass
class FitResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    train_throughput: float | None = None
    train_throughput_rel_iqr: float | None = None  # spread of the timed windows' throughputs
    train_gpu_busy: float | None = None  # the GPU's busy share over the same windows (CUDA only)
    best_val_accuracy: float | None = None
    best_val_epoch: int | None = None
    time_to_target_s: float | None = None
    images_seen: int = 0  # training images over every epoch, warm-up steps included
    energy: EnergyReading | None = None  # over the whole of fit, validation included
    energy_to_target: EnergyReading | None = None  # over the span of time_to_target_s
    error: str | None = None  # set when training diverged

    def record(self) -> dict[str, Any]:
        return {"train_throughput": self.train_throughput, "train_throughput_rel_iqr": self.train_throughput_rel_iqr,
                "train_gpu_busy": self.train_gpu_busy, "best_val_accuracy": self.best_val_accuracy,
                "best_val_epoch": self.best_val_epoch, "time_to_target_s": self.time_to_target_s,
                "final_val_accuracy": self.history[-1]["val_accuracy"] if self.history else None,
                **self._energy_record()}

    def _energy_record(self) -> dict[str, Any]:
        if self.energy is None:
            return {}
        target = self.energy_to_target
        return {"train_energy_j": self.energy.joules,
                "energy_per_train_image_j": self.energy.per_image(self.images_seen),
                "energy_to_target_j": target.joules if target is not None else None,
                "energy_source": self.energy.source}


class TrainStep:
    """One optimisation step as ``fit`` runs it: augment, forward under autocast, float32 loss, backward,
    optimiser and schedule step. Loss and correct predictions accumulate on the device: no host sync."""

    def __init__(self, model: torch.nn.Module, recipe: Recipe, precision: Precision, steps_per_epoch: int,
                 augment: Augmenter) -> None:
        self.model, self.precision, self.augment = model, precision, augment
        self.optimizer = build_optimizer(model, recipe)
        self.schedule = build_schedule(self.optimizer, recipe, steps_per_epoch)
        self.criterion = torch.nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
        self.loss_sum = self.correct = torch.zeros(())

    def reset_totals(self, device: torch.device) -> None:
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x = self.augment(x)
        with self.precision.autocast():
            logits = self.model(x)
        loss = self.criterion(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        self.precision.step(loss, self.optimizer)
        self.schedule.step()
        self.loss_sum += loss.detach() * len(y)
        self.correct += (logits.detach().argmax(1) == y).sum()


def fit(model: torch.nn.Module, train: ImageBatches, val: ImageBatches | None, recipe: Recipe,
        precision: Precision, *, seed: int, image_size: int, memory: PeakMemory, progress: bool = False,
        energy: EnergyMeter | None = None) -> FitResult:
    """Train for ``recipe.epochs``; validate after each epoch. The final model is what the caller tests.

    With ``energy``, the meter runs over the whole of it (and is lapped when ``target_accuracy`` is reached).

    With ``progress``, one line per epoch on stdout once the epoch is done (as Keras' ``fit(verbose=2)``):
    nothing is printed while a window is timed, and the lines stay in a saved notebook as plain text.
    """
    device = train.device
    batch_size = min(recipe.batch_size, len(train))
    steps_per_epoch = train.steps(batch_size, drop_last=True)
    step = TrainStep(model, recipe, precision, steps_per_epoch,
                     Augmenter(recipe.augment, image_size, device, seed, train.memory_format))
    shuffle = torch.Generator().manual_seed(seed)
    timer = SteadyTimer(device, busy=gpu_busy.busy_meter(device))
    skip = min(SKIP_STEPS, recipe.epochs * steps_per_epoch // 2)
    result = FitResult()
    if energy is not None:
        energy.start()
    started = time.perf_counter()
    done = 0
    try:
        for epoch in range(1, recipe.epochs + 1):
            epoch_start = time.perf_counter()
            model.train()
            step.reset_totals(device)
            seen = 0
            for x, y in train.batches(batch_size, shuffle, drop_last=True):
                if done >= skip and not timer.running:  # steady state: each epoch's window, after warm-up
                    timer.start()
                    memory.start_window()
                step(x, y)
                seen += len(y)
                result.images_seen += len(y)
                done += 1
                if timer.running:
                    timer.step(len(y))
                if done % CHECK_EVERY == 0:
                    _check_finite(step.loss_sum, epoch, done)
            timer.stop()
            memory.end_window()
            _check_finite(step.loss_sum, epoch, done)
            row = {"epoch": epoch, "train_loss": step.loss_sum.item() / seen,
                   "train_accuracy": step.correct.item() / seen,
                   "val_loss": None, "val_accuracy": None, "lr": step.optimizer.param_groups[0]["lr"]}
            if val is not None and len(val):
                row["val_loss"], row["val_accuracy"] = loss_and_accuracy(
                    predict_logits(model, val, batch_size, precision.autocast), val.y)
                reached = _track_best(result, row, recipe.target_accuracy, time.perf_counter() - started)
                if reached and energy is not None:
                    result.energy_to_target = energy.lap()
            row["epoch_time_s"] = time.perf_counter() - epoch_start
            result.history.append(row)
            memory.sample()
            if progress:
                print(epoch_line(row, recipe.epochs, steps_per_epoch), flush=True)
    except Diverged as exc:
        timer.stop()
        memory.end_window()
        result.error = str(exc)
        if progress:
            print(f"stopped: {exc}", flush=True)
    result.train_throughput, result.train_throughput_rel_iqr = timer.images_per_second(), timer.rel_iqr()
    result.train_gpu_busy = timer.gpu_busy()
    if energy is not None:
        result.energy = energy.stop()
    return result


def epoch_line(row: dict[str, Any], epochs: int, steps: int) -> str:
    """``epoch 2/3 (160 steps, 4.1 s): train loss 0.7589 accuracy 0.7542, val loss 0.4357 accuracy 0.8728, lr 0.000707``."""
    parts = [f"train loss {row['train_loss']:.4f} accuracy {row['train_accuracy']:.4f}"]
    if row["val_accuracy"] is not None:
        parts.append(f"val loss {row['val_loss']:.4f} accuracy {row['val_accuracy']:.4f}")
    parts.append(f"lr {row['lr']:.3g}")
    return f"epoch {row['epoch']}/{epochs} ({steps} steps, {row['epoch_time_s']:.1f} s): " + ", ".join(parts)


def _check_finite(loss_sum: torch.Tensor, epoch: int, step: int) -> None:
    if not torch.isfinite(loss_sum).item():
        raise Diverged(f"training loss became {loss_sum.item()} in epoch {epoch} (by step {step}); "
                       f"lower lr or check the model")


def _track_best(result: FitResult, row: dict[str, Any], target: float, elapsed: float) -> bool:
    """Update the best epoch; True when this epoch is the first to reach ``target``."""
    if result.best_val_accuracy is None or row["val_accuracy"] > result.best_val_accuracy:
        result.best_val_accuracy, result.best_val_epoch = row["val_accuracy"], row["epoch"]
    if target and result.time_to_target_s is None and row["val_accuracy"] >= target:
        result.time_to_target_s = elapsed
        return True
    return False
