"""What ``imgbench infer`` will measure, checked whole before any model is built.

Models, datasets, weights, device, threads, ``bench_seconds`` and ``test_samples`` go through the grid's own
preflight (names, globs, recipe bounds, devices, data on disk), as ``imgbench run`` checks them; runtimes,
precisions and batch sizes are checked here. Every problem is named at once in one
:class:`~imgbench.runner.suite.GridError`. A runtime this machine cannot run (a missing package) is refused
when it is the only one asked for; among several, its rows say why.
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from imgbench import schema
from imgbench.engine.weights import checkpoint_metadata, weights_format
from imgbench.errors import UsageError
from imgbench.runner.preflight import preflight
from imgbench.runner.suite import GridError, Suite

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from imgbench.engine.recipe import Recipe
    from imgbench.registry import Registry

DEFAULT_BATCH_SIZES = (1, 8, 32, 128, 256)
DEFAULT_RUNTIMES = ("eager", "compile", "onnxruntime")
DEFAULT_TEST_SAMPLES = 1000  # stratified test images compared with eager fp32 (0 = the whole test split)
MAX_BATCH_SIZE = 65536
ONNX_EXTRA = "pip install 'imgbench[onnx]'"
ONNX_PACKAGES = ("onnxruntime", "onnx", "onnxscript")  # the session, and torch.onnx's exporter
CXX_COMPILERS = ("g++", "clang++", "c++")  # what inductor's CPU backend looks for
PRETRAINED, RANDOM = "pretrained", "random"
INFER_KEYS = ("runtimes", "precisions", "batch_sizes", "bench_seconds", "test_samples", "threads", "image_size",
              "weights")  # what a suite's [infer] table may set
RECIPE_KEYS = ("bench_seconds", "test_samples", "threads", "image_size", "device")  # checked as recipe fields


@dataclass(frozen=True)
class ModelRun:
    """One model on one dataset: the resolved recipe gives image size, val share, weights and timing lengths."""

    model: str
    dataset: str
    recipe: "Recipe"
    family: str
    weights: str  # for the table: random, pretrained or the checkpoint's path


@dataclass(frozen=True)
class InferencePlan:
    runs: tuple[ModelRun, ...]
    runtimes: tuple[str, ...]
    precisions: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    out_dir: Path
    data_dir: str | None = None
    unavailable: Mapping[str, str] = field(default_factory=dict)  # runtime -> why its rows cannot run
    suite: str = ""

    @property
    def recipe(self) -> "Recipe":
        return self.runs[0].recipe  # device, threads, bench_seconds, test_samples: the same for every run


# -- options -------------------------------------------------------------------------------------------------------
def names(value: str | Sequence[str] | None, allowed: Sequence[str], option: str, problems: list[str]) -> tuple[str, ...]:
    """``"eager,compile"`` or a list -> ('eager', 'compile'); unknown names become problems."""
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value or [])
    items = [v for v in items if v]
    bad = [v for v in items if v not in allowed]
    if bad:
        problems.append(f"{option}: {', '.join(map(repr, bad))} not known; choose from {', '.join(allowed)}")
    if not items:
        problems.append(f"{option}: none given; choose from {', '.join(allowed)}")
    return tuple(dict.fromkeys(v for v in items if v in allowed))


def batch_sizes(value: str | Sequence[int] | None, problems: list[str]) -> tuple[int, ...]:
    items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value or [])
    sizes = []
    for item in items:
        size = int(item) if isinstance(item, str) and item.isdigit() else item
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_BATCH_SIZE:
            problems.append(f"--batch-sizes: {item!r} is not a batch size (a whole number from 1 to {MAX_BATCH_SIZE})")
        else:
            sizes.append(size)
    if not items:
        problems.append("--batch-sizes: none given, e.g. --batch-sizes 1,32,128")
    return tuple(sorted(set(sizes)))


def precision_problem(precision: str, device: "torch.device") -> str:
    """Why ``device`` cannot compute in ``precision`` in hardware (torch would emulate it, slowly), or ''."""
    import torch

    from imgbench.engine.train import BF16_MIN_MAJOR_CAPABILITY

    if precision == "fp32":
        return ""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if precision == "bf16" and not torch.version.hip and major < BF16_MIN_MAJOR_CAPABILITY:
            return (f"{device} (compute capability {major}.{minor}) has no bf16 in hardware "
                    f"(needs {BF16_MIN_MAJOR_CAPABILITY}.0 or later)")
        return ""
    if device.type == "cpu":
        return "" if cpu_has(precision) else f"this CPU has no {precision} instructions that oneDNN uses (torch would " \
                                              f"emulate it)"
    if device.type == "mps" and precision == "bf16":
        return "MPS runs fp16, not bf16"
    return ""


def cpu_has(precision: str) -> bool:
    """oneDNN's own answer: AVX512-BF16 or AMX-BF16 for bf16, AVX512-FP16 or AMX-FP16 for fp16."""
    import torch

    mkldnn = torch.ops.mkldnn
    return bool(mkldnn._is_mkldnn_bf16_supported() if precision == "bf16" else mkldnn._is_mkldnn_fp16_supported())


def runtime_problem(runtime: str, device: "torch.device") -> str:
    """Why ``runtime`` cannot run on this machine, naming the fix, or ''."""
    if runtime == "onnxruntime":
        missing = [p for p in ONNX_PACKAGES if importlib.util.find_spec(p) is None]
        if missing:
            return f"onnxruntime needs {', '.join(missing)}, not installed: {ONNX_EXTRA}"
        if device.type == "cuda":
            import onnxruntime

            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                return ("the installed onnxruntime has no CUDAExecutionProvider: install onnxruntime-gpu, or time "
                        "ONNX Runtime on the CPU with --device cpu")
        elif device.type != "cpu":
            return f"onnxruntime runs here on the CPU or CUDA, not {device.type}"
    if runtime == "compile" and device.type == "cpu" and not any(map(shutil.which, CXX_COMPILERS)):
        return f"torch.compile's CPU backend (inductor) needs a C++ compiler on PATH ({', '.join(CXX_COMPILERS)})"
    return ""


# -- weights ---------------------------------------------------------------------------------------------------------
def weights_by_model(values: Iterable[str], models: list[str], problems: list[str]) -> tuple[list[str], dict[str, str]]:
    """``--weights``: ``pretrained`` (every model), ``MODEL=PATH``, or ``PATH`` of an imgbench checkpoint (its
    model is in its metadata; a plain state_dict needs exactly one -m). Returns the models (with those the
    checkpoints name) and model -> ``pretrained`` or a path; models not named start from random weights."""
    chosen: dict[str, str] = {}
    models = list(models)
    for value in values:
        if value == PRETRAINED:
            chosen.update(dict.fromkeys(models, PRETRAINED))
            continue
        model, sep, path = value.partition("=")
        if not sep:
            model, path = "", value
        try:
            weights_format(path)
            metadata = checkpoint_metadata(path) if Path(path).is_file() else None
        except (UsageError, OSError, ValueError) as exc:
            problems.append(f"--weights {value}: {exc}")
            continue
        model = model or (metadata or {}).get("model", "")
        if not model and len(models) == 1:
            model = models[0]
        if not model:
            problems.append(f"--weights {value}: not an imgbench checkpoint, so it names no model; "
                            f"write --weights MODEL={path}")
            continue
        if model not in models:
            models.append(model)
        chosen[model] = path
    return models, chosen


# -- the plan --------------------------------------------------------------------------------------------------------
def make_plan(registry: "Registry", *, models: Sequence[str], datasets: Sequence[str], runtimes: Any,
              precisions: Any, batch: Any, weights: Sequence[str] = (), out_dir: Path, data_dir: str | None = None,
              params: Mapping[str, Any] | None = None, suite: str = "") -> InferencePlan:
    """The checked plan, or a GridError naming every problem; builds nothing and loads no data."""
    from imgbench.engine.train import select_device

    problems: list[str] = []
    run_runtimes = names(runtimes, schema.RUNTIMES, "--runtimes", problems)
    sizes = batch_sizes(batch, problems)
    all_models, chosen = weights_by_model(weights, list(models), problems)
    params = {"test_samples": DEFAULT_TEST_SAMPLES, **(params or {})}
    groups: dict[str, list[str]] = {}
    for model in all_models:
        groups.setdefault(chosen.get(model, RANDOM), []).append(model)
    runs = []
    for start, group in (groups or {RANDOM: []}).items():
        weight_params = {} if start == RANDOM else {"pretrained": True} if start == PRETRAINED else {"weights": start}
        grid = Suite(models=tuple(group), datasets=tuple(datasets), params={**params, **weight_params})
        try:
            jobs = preflight(grid, registry, data_dir=data_dir)
        except GridError as exc:
            problems += exc.problems
            continue
        runs += [ModelRun(job.model, job.dataset, job.recipe, job.family, job.recipe.weights or start)
                 for job in jobs]
    problems += _weights_problems(runs, registry)
    try:
        device = select_device(str(params.get("device", "auto")))
    except UsageError:  # the preflight named it
        device = None
    run_precisions = _precisions(precisions, device, problems)
    unavailable = {r: problem for r in run_runtimes if device and (problem := runtime_problem(r, device))}
    if unavailable and len(unavailable) == len(run_runtimes):
        problems += [f"--runtimes {r}: {problem}" for r, problem in unavailable.items()]
    if problems:
        raise GridError(problems)
    return InferencePlan(tuple(runs), run_runtimes, run_precisions, sizes, Path(out_dir), data_dir, unavailable,
                         suite)


def _precisions(value: Any, device: "torch.device | None", problems: list[str]) -> tuple[str, ...]:
    """The precisions asked for (default: every one ``device`` computes in hardware), each checked."""
    if device is None:  # the preflight named the device's problem; nothing to check the precisions against
        return names(value, schema.PRECISIONS, "--precisions", problems) if value is not None else ()
    if value is None:
        return tuple(p for p in schema.PRECISIONS if not precision_problem(p, device))
    asked = names(value, schema.PRECISIONS, "--precisions", problems)
    for precision in asked:
        if problem := precision_problem(precision, device):
            supported = ", ".join(p for p in schema.PRECISIONS if not precision_problem(p, device))
            problems.append(f"--precisions {precision}: {problem}; supported here: {supported}")
    return asked


def _weights_problems(runs: list[ModelRun], registry: "Registry") -> list[str]:
    """Pretrained weights a model does not have, and a checkpoint trained on other classes than the dataset's
    (it would be tested with a fresh head): refused."""
    problems = []
    for run in runs:
        if run.recipe.pretrained and not registry.model(run.model).pretrained:
            problems.append(f"--weights pretrained: {run.model} has no pretrained weights; leave it out or give "
                            f"--weights {run.model}=PATH")
        if not run.recipe.weights:
            continue
        metadata = checkpoint_metadata(run.recipe.weights) or {}
        classes = list(metadata.get("classes") or [])
        spec, _ = registry.dataset(run.dataset)
        if classes and spec.classes and classes != list(spec.classes):
            problems.append(f"--weights {run.recipe.weights}: trained on {len(classes)} classes of "
                            f"{metadata.get('dataset', 'another dataset')}, not the {len(spec.classes)} classes of "
                            f"{run.dataset}; give the dataset it was trained on")
    return problems
