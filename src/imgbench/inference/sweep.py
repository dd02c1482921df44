"""The sweep of ``imgbench infer``: every model x dataset x runtime x precision x batch size, one row each.

Per model and dataset: load the data as a job would (the weights' size and preprocessing), build the model
and load its weights, and compute eager fp32's logits on the test images: the reference. Per runtime and
precision: prepare the model (a failure is a row per batch size saying why); per batch size, smallest first:
the first call (compile: its compile time), throughput (``timing.inference_throughput``) with the energy
counter read over that window, latency percentiles (``timing.latency_ms``), and the window's peak memory.
A batch that runs out of memory is an ``oom`` row, and the larger ones are not tried. Last, the same test
images through the runtime: top-1 agreement with the reference, the largest logit difference, accuracy.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from imgbench import schema
from imgbench.energy import EnergyMeter, energy_meter
from imgbench.engine import timing
from imgbench.engine.data import ImageBatches, fits_on_device, normalisation, stratified_subset
from imgbench.engine.loading import load_dataset
from imgbench.engine.threads import threads_in_force
from imgbench.engine.weights import core_module, default_classifier, load_weights, model_state, plan_start
from imgbench.families.keras_models import build_scope
from imgbench.inference.allocator import pin_thresholds, release_free_memory
from imgbench.inference.plan import InferencePlan, ModelRun
from imgbench.inference.runtimes import RUNTIMES, Prepared
from imgbench.inference.table import InferenceTable, Row
from imgbench.paths import atomic_write_json
from imgbench.registry import Registry, input_size

LATENCY_PERCENTILES = (50, 90, 99)
REFERENCE_BATCH = 64  # eager fp32's logits on the test images are computed in batches of this size
MAX_AGREEMENT_BATCH = 256  # the agreement runs at the largest timed batch that fitted, at most this
SEED = 0  # random weights are torch's (and Keras') draws from this seed; every precision gets the same
MAX_ERROR_CHARS = 600
OOM_MARKERS = ("out of memory", "can't allocate memory", "failed to allocate memory", "bad_alloc")
MIB = 2**20


def run_inference(plan: InferencePlan, registry: Registry, command: list[str] | None = None,
                  progress: bool = True) -> Path:
    """Measure the plan into ``plan.out_dir``; returns the path of inference.csv."""
    from imgbench.engine.train import select_device

    plan.out_dir.mkdir(parents=True, exist_ok=True)
    allocator = pin_thresholds()
    device = select_device(plan.recipe.device)
    table = InferenceTable(plan.out_dir / schema.INFERENCE_CSV)
    with threads_in_force(plan.recipe.threads) as (threads, _concurrency):
        meter = energy_meter(device)
        _write_record(plan, device, threads, allocator, meter, command)
        for run in plan.runs:
            ModelSweep(plan, run, registry, device, threads=threads, meter=meter, table=table, progress=progress).run()
    return table.path


def _write_record(plan: InferencePlan, device: torch.device, threads: int, allocator: str, meter: EnergyMeter,
                  command: list[str] | None) -> None:
    versions: dict[str, str | None] = {}
    for package in ("torch", "timm", "keras", "onnxruntime", "onnx", "onnxscript", "nvidia-ml-py", "imgbench"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    atomic_write_json(plan.out_dir / schema.INFERENCE_JSON, {
        "command": command or [], "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "suite": plan.suite, "device": str(device), "device_name": _device_name(device), "threads": threads,
        "runtimes": list(plan.runtimes), "precisions": list(plan.precisions), "batch_sizes": list(plan.batch_sizes),
        "unavailable_runtimes": dict(plan.unavailable), "bench_seconds": plan.recipe.bench_seconds,
        "test_samples": plan.recipe.test_samples, "latency_percentiles": list(LATENCY_PERCENTILES),
        "allocator": allocator, "energy": {"source": meter.source, "counter": meter.description},
        "python": sys.version.split()[0], "platform": platform.platform(), "versions": versions,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "models": [{"model": r.model, "dataset": r.dataset, "weights": r.weights} for r in plan.runs],
    })


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:  # Linux names the CPU model here; platform.processor() is often empty there
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    except OSError:
        found = None
    return found.group(1).strip() if found else platform.processor() or platform.machine()


class WindowPeak:
    """Peak memory over one timed window: the CUDA allocator's peak, or on the CPU the process's peak resident
    memory (Linux: ``VmHWM``, reset through ``/proc/self/clear_refs``); None where neither can be had."""

    STATUS, CLEAR = Path("/proc/self/status"), Path("/proc/self/clear_refs")

    def __init__(self, device: torch.device, runtime: str) -> None:
        self.cuda = device.type == "cuda" and runtime != "onnxruntime"  # ONNX Runtime's arena is not torch's
        self.device = device
        self.resident = device.type == "cpu" and self.CLEAR.exists()

    def start(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.resident:
            release_free_memory()  # so the peak is this window's, not what earlier batches left in the heap
            self.CLEAR.write_text("5")  # 5: reset the peak resident set size to the current one

    def stop(self) -> float | None:
        if self.cuda:
            return torch.cuda.max_memory_allocated(self.device) / MIB
        if self.resident:
            found = re.search(r"VmHWM:\s+(\d+) kB", self.STATUS.read_text())
            return int(found.group(1)) / 1024 if found else None
        return None


class ModelSweep:
    """Every runtime, precision and batch size of one model on one dataset."""

    def __init__(self, plan: InferencePlan, run: ModelRun, registry: Registry, device: torch.device, *, threads: int,
                 meter: EnergyMeter, table: InferenceTable, progress: bool) -> None:
        self.plan, self.entry, self.registry, self.device = plan, run, registry, device
        self.threads, self.meter, self.table, self.progress = threads, meter, table, progress
        self.spec = registry.model(run.model)
        self.reference_state: dict[str, torch.Tensor] | None = None

    # -- data and model -------------------------------------------------------------------------------------
    def run(self) -> None:
        recipe = self.entry.recipe
        self.base = {"model": self.entry.model, "family": self.spec.family, "dataset": self.entry.dataset,
                     "weights": self.entry.weights, "device": str(self.device), "threads": self.threads,
                     "bench_seconds": recipe.bench_seconds}
        try:
            self.load()
            self.reference = self.reference_logits()
        except Exception as exc:  # a model that cannot even be built or run eagerly: its rows say why
            self._release()
            rows = [{**self.base, "runtime": runtime, "precision": precision, "batch_size": size}
                    for runtime in self.plan.runtimes for precision in self.plan.precisions
                    for size in self.plan.batch_sizes]
            return self.fail(rows, f"eager fp32 (the reference) failed: {_error_text(exc)}", oom=_is_oom(exc))
        for runtime in self.plan.runtimes:
            for precision in self.plan.precisions:
                self.sweep(runtime, precision)

    def load(self) -> None:
        """The test images as a job would see them (the weights' size and preprocessing)."""
        recipe = self.entry.recipe
        start = plan_start(self.spec, recipe.pretrained, recipe.weights)
        loaded = load_dataset(self.entry.dataset, recipe, model=self.spec, data_dir=self.plan.data_dir,
                              registry=self.registry, start=start)
        test, _ = stratified_subset(loaded.test, recipe.test_samples, "test_samples")
        mean, std, config = normalisation(start.data_config, loaded.train.x)
        self.images = ImageBatches(test, self.device, mean, std, torch.contiguous_format,
                                   fits_on_device(test.x.nbytes, self.device), config.channel_order == "BGR")
        self.classes, self.start = len(loaded.classes), start
        self.channels, self.size = loaded.image_shape[2], loaded.image_shape[0]
        self.base.update(image_size=input_size(self.spec, self.size), agreement_samples=len(test))

    def reference_logits(self) -> torch.Tensor:
        """Eager fp32's logits of the test images, in batches of ``REFERENCE_BATCH`` or, if that runs out of
        memory, the largest power-of-two fraction of it that fits."""
        eager_fp32 = RUNTIMES["eager"](self.build("fp32"), self.device, "fp32", self.threads, self.batch(2))
        size = min(REFERENCE_BATCH, len(self.images))
        while True:
            try:
                return self.logits_of(eager_fp32, size)
            except Exception as exc:
                if not _is_oom(exc) or size == 1:
                    raise
                self._release()
                size //= 2

    def build(self, precision: str) -> torch.nn.Module:
        """The model for ``precision`` (Keras builds under its dtype policy), with the first build's weights."""
        from imgbench.engine.train import seed_everything

        seed_everything(SEED, keras_model=self.spec.family == "keras")
        with _build_scope(self.spec.family, self.device, precision):
            net = self.registry.build_model(self.entry.model, num_classes=self.classes, in_chans=self.channels,
                                            image_size=self.size, pretrained=self.entry.recipe.pretrained)
        core = core_module(net)
        if self.reference_state is None:
            if self.start.path:
                load_weights(core, self.start.path, (self.spec.classifier or default_classifier)(core),
                             self.spec.name)
            self.reference_state = {k: v.detach().clone() for k, v in model_state(core).items()}
        else:  # the same weights in every precision: a fresh pretrained head would otherwise differ
            with torch.no_grad():
                for name, tensor in model_state(core).items():
                    tensor.copy_(self.reference_state[name])
        return net.to(self.device).eval()

    def batch(self, size: int) -> torch.Tensor:
        """``size`` test images, repeated when the test set is smaller (as the engine times its batches)."""
        return self.images.inputs(self.images.x[torch.arange(size) % len(self.images)])

    def logits_of(self, prepared: Prepared, batch_size: int) -> torch.Tensor:
        """Float32 logits of every test image, in batches of ``batch_size`` (the last one padded to it, so a
        compiled model sees no new shape)."""
        n, out = len(self.images), []
        for first in range(0, n, batch_size):
            index = torch.arange(first, first + batch_size) % n
            out.append(prepared.logits(self.images.inputs(self.images.x[index]))[: min(batch_size, n - first)])
        return torch.cat(out)

    # -- one runtime and precision --------------------------------------------------------------------------------
    def sweep(self, runtime: str, precision: str) -> None:
        group = {**self.base, "runtime": runtime, "precision": precision}
        rows = [{**group, "batch_size": size} for size in self.plan.batch_sizes]
        if runtime in self.plan.unavailable:
            return self.fail(rows, self.plan.unavailable[runtime])
        try:
            prepared = RUNTIMES[runtime](self.build(precision), self.device, precision, self.threads, self.batch(2))
        except Exception as exc:  # an export failure, an unsupported op: this runtime's rows say so
            return self.fail(rows, _error_text(exc), oom=_is_oom(exc))
        out_of_memory = False
        for row in rows:
            if out_of_memory:
                row.update(status=schema.Status.OOM, error="not run: a smaller batch was already out of memory")
            else:
                self.time(prepared, row)
                out_of_memory = row["status"] == schema.Status.OOM
            row.setdefault("runtime_version", prepared.version)
            self.table.put(row)
            self.say(row)
        if any(row["status"] == schema.Status.OK for row in rows):
            self.agree(prepared, rows)

    def time(self, prepared: Prepared, row: Row) -> None:
        size = row["batch_size"]
        try:
            batch = self.batch(size)
            compile_time = prepared.first_call(batch, self.device)
            peak = WindowPeak(self.device, row["runtime"])
            peak.start()
            self.meter.start()
            speed = timing.inference_throughput(prepared.forward, batch, self.device, row["bench_seconds"])
            energy = self.meter.stop()
            latency = timing.latency_ms(prepared.forward, batch, self.device, row["bench_seconds"],
                                        percentiles=LATENCY_PERCENTILES)
            memory = peak.stop()
        except Exception as exc:
            self._release()
            row.update(status=schema.Status.OOM if _is_oom(exc) else schema.Status.FAILED, error=_error_text(exc))
            return
        throughput = speed["infer_throughput"]
        row.update(status=schema.Status.OK, error="", throughput=throughput,
                   throughput_rel_iqr=speed["infer_throughput_rel_iqr"], peak_memory_mb=memory,
                   compile_time_s=compile_time if compile_time is not None else prepared.compile_time_s,
                   energy_per_image_j=energy.per_image_at(throughput),
                   energy_source=energy.source, energy_note=energy.reason,
                   **{key: value for key, value in latency.items() if key in schema.INFERENCE_BY_NAME})

    def agree(self, prepared: Prepared, rows: list[Row]) -> None:
        """Top-1 agreement and logit difference against eager fp32, and accuracy, on every row of the group."""
        ran = [r for r in rows if r["status"] == schema.Status.OK]
        size = min(max(r["batch_size"] for r in ran), MAX_AGREEMENT_BATCH, len(self.images))  # a timed shape
        try:
            logits = self.logits_of(prepared, size)
        except Exception as exc:
            self._release()
            return self.table.update(ran, {"error": f"agreement not measured: {_error_text(exc)}"})
        predicted, n = logits.argmax(1), len(logits)
        self.table.update(ran, {
            "agreement": int((predicted == self.reference.argmax(1)).sum()) / n,
            "max_logit_diff": float((logits - self.reference).abs().max()),
            "accuracy": int((predicted == self.images.y.cpu()).sum()) / n,
        })

    def fail(self, rows: list[Row], error: str, oom: bool = False) -> None:
        for row in rows:
            row.update(status=schema.Status.OOM if oom else schema.Status.FAILED, error=error)
            self.table.put(row)
            self.say(row)

    def _release(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def say(self, row: Row) -> None:
        if not self.progress:
            return
        what = f"{row['model']} {row['dataset']} {row['runtime']} {row['precision']} batch {row['batch_size']}"
        if row["status"] != schema.Status.OK:
            print(f"{what}: {row['status']}: {row['error'][:200]}", flush=True)
            return
        print(f"{what}: {row['throughput']:.1f} img/s (rel IQR {row['throughput_rel_iqr'] or float('nan'):.3f}), "
              f"p50 {row['latency_p50_ms']:.2f} ms", flush=True)


def _build_scope(family: str, device: torch.device, precision: str) -> AbstractContextManager:
    """Keras models are built on the device under the precision's dtype policy (as the engine builds them)."""
    if family != "keras":
        return nullcontext()

    return build_scope(str(device), precision)


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or any(marker in text for marker in OOM_MARKERS)


def _error_text(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:MAX_ERROR_CHARS]
