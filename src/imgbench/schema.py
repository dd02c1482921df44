"""The results folder and the results table: every file name, every column, and what each means.

This module is the bottom of the import graph (it imports nothing from imgbench): the engine, the runner,
the executors and the report all take their file names and columns from here. To add a column, add one
:class:`Column` to ``COLUMNS`` and have the engine (or the runner) fill it; ``results.csv``, the report's
reader, the docs' table (docs/reference/results-schema.md, where ``python tests/doc_regions.py`` writes it)
and the tests follow.

Layout of a results folder ``OUT/``::

    results.csv  run.json  tracking.json  report.html  report.md  report.ipynb  summary.csv  figures/
    inference.csv  inference.json                           (from `imgbench infer`, alone or beside a grid)
    jobs/<job-id>/{metrics.json, predictions.csv, history.csv, notebook.ipynb,
                                          runner.log, request.json, execution.json, model.safetensors, job.json}
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

# -- the results folder -------------------------------------------------------------------------------------
RESULTS_CSV = "results.csv"  # one row per job, rebuilt from the job records after every job
RUN_JSON = "run.json"  # the command, suite, grid and versions of the run
TRACKING_JSON = "tracking.json"  # where the trackers (--track) recorded the grid and each job: the report links them
JOBS_DIR = "jobs"
# the report of the folder (imgbench.report)
REPORT_HTML = "report.html"  # self-contained: inline CSS, figures as base64 PNG
REPORT_MD = "report.md"  # the same content, figures linked from FIGURES_DIR
REPORT_NOTEBOOK = "report.ipynb"  # the executed report notebook
FIGURES_DIR = "figures"  # every figure as PNG and SVG
SUMMARY_CSV = "summary.csv"  # the leaderboards: per (dataset, test set, model) mean, interval, seeds, rank
# `imgbench infer` (imgbench.inference): its table (INFERENCE_COLUMNS below) and its run's record
INFERENCE_CSV = "inference.csv"  # one row per (model, dataset, runtime, precision, batch size)
INFERENCE_JSON = "inference.json"  # the command, device, versions, allocator and energy counter of the run

# -- one job's folder: OUT/jobs/<job-id>/ ---------------------------------------------------------------------
METRICS_JSON = "metrics.json"  # the engine's results and provenance, written last by the engine
PREDICTIONS_CSV = "predictions.csv"  # one row per test image: index, y_true, y_pred, p_0..p_{K-1}
HISTORY_CSV = "history.csv"  # one row per epoch
NOTEBOOK = "notebook.ipynb"  # the executed notebook: the job's immutable record
RUNNER_LOG = "runner.log"  # the job process's and the kernel's stdout/stderr (faulthandler's crash stacks land here)
REQUEST_JSON = "request.json"  # the task, for the job's child process
OUTCOME_JSON = "execution.json"  # how the notebook ended: completed, failed (a cell raised) or crashed
MODEL_CHECKPOINT = "model.safetensors"  # the trained model, with save_weights=true
JOB_RECORD = "job.json"  # the job and its results.csv row, written last: its presence means "finished"

PREDICTION_COLUMNS = ("index", "y_true", "y_pred")  # then one probability column per class, p_0..p_{K-1}
PREDICTION_INDEX, PREDICTION_TRUE, PREDICTION_PRED = PREDICTION_COLUMNS
HISTORY_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "epoch_time_s")




class Status(StrEnum):
    """A job's status in results.csv and job.json. A ``str``: it compares, sorts and serialises as its value."""

    OK = "ok"
    DIVERGED = "diverged"  # the engine: the training loss became NaN or infinite
    OOM = "oom"  # the engine: the device ran out of memory
    FAILED = "failed"  # the runner: a notebook cell raised
    CRASHED = "crashed"  # the runner: the kernel or the job process died, or a worker was lost
    TIMEOUT = "timeout"  # the runner: the job ran past --timeout and was killed
    MISSING_METRICS = "missing_metrics"  # the runner: the notebook finished without a readable metrics.json


ENGINE_STATUSES = (Status.OK, Status.DIVERGED, Status.OOM)
RUNNER_STATUSES = tuple(s for s in Status if s not in ENGINE_STATUSES)
NOTEBOOK_COMPLETED = "completed"  # execution.json: the notebook ran to its end (else Status.FAILED / CRASHED)


def job_dir(out_dir: str | Path, job_id: str) -> Path:
    """``OUT/jobs/<job-id>/``."""
    return Path(out_dir) / JOBS_DIR / job_id


def job_file(job_id: str, name: str) -> str:
    """A job's file relative to ``OUT``, as rows and messages name it: ``jobs/<job-id>/<name>``."""
    return f"{JOBS_DIR}/{job_id}/{name}"


# -- the columns of results.csv ---------------------------------------------------------------------------------
RUNNER = "runner"  # set by the runner from the job itself and how it ended
ENGINE = "engine"  # measured by the engine, written to metrics.json and copied from there

FRACTION = "fraction"  # a share in [0, 1], shown as a percentage
HIGHER, LOWER = "higher", "lower"


@dataclass(frozen=True)
class Column:
    """One results.csv column: its type, where its value comes from, its unit and which way is better."""

    name: str
    kind: type  # str, int or float
    origin: str  # RUNNER or ENGINE
    meaning: str  # one line, as the docs' table shows it
    unit: str = ""  # FRACTION, "img/s", "ms", "MB", "s", "FLOPs" or "" (a count, a name)
    better: str = ""  # HIGHER, LOWER, or "" where neither is better
    spread: str = ""  # the column holding this figure's spread within its job (a relative IQR), if any

    @property
    def numeric(self) -> bool:
        return self.kind in (int, float)


ENERGY_SOURCE = ("the counter read: `nvml` (the GPU's total-energy counter) or `rapl` (the CPU packages); empty "
                 "when none")  # results.csv's and inference.csv's energy_source


def _c(name: str, kind: type, origin: str, meaning: str, unit: str = "", better: str = "", spread: str = "") -> Column:
    return Column(name, kind, origin, meaning, unit, better, spread)


COLUMNS: tuple[Column, ...] = (
    _c("job_id", str, RUNNER, "`<model>__<dataset>__s<seed>__<hash8>`; the job's folder under `jobs/`"),
    _c("model", str, RUNNER, "model name, e.g. `timm/resnet18`"),
    _c("family", str, RUNNER, "model family (`keras`, `timm`, or a plugin's namespace)"),
    _c("plugin", str, ENGINE, "the plugin that registered the model"),
    _c("dataset", str, RUNNER, "dataset name as given, e.g. `cifar10` or `imagefolder:/data/pets`"),
    _c("seed", int, RUNNER, "the job's seed"),
    _c("status", str, RUNNER, ", ".join(f"`{s}`" for s in ENGINE_STATUSES) + " (from the engine); "
                              + ", ".join(f"`{s}`" for s in RUNNER_STATUSES) + " (from the runner)"),
    _c("error", str, RUNNER, "why the job is not `ok` (exception, exit code or signal, timeout); empty when ok"),
    _c("accuracy", float, ENGINE, "test top-1 accuracy", FRACTION, HIGHER),
    _c("top5_accuracy", float, ENGINE, "test top-5 accuracy; empty with 5 classes or fewer", FRACTION, HIGHER),
    _c("f1_macro", float, ENGINE, "test F1, unweighted mean over classes", FRACTION, HIGHER),
    _c("precision_macro", float, ENGINE, "test precision, unweighted mean over classes", FRACTION, HIGHER),
    _c("recall_macro", float, ENGINE, "test recall, unweighted mean over classes", FRACTION, HIGHER),
    _c("f1_weighted", float, ENGINE, "test F1, mean over classes weighted by their support", FRACTION, HIGHER),
    _c("precision_weighted", float, ENGINE, "test precision, weighted by class support", FRACTION, HIGHER),
    _c("recall_weighted", float, ENGINE, "test recall, weighted by class support", FRACTION, HIGHER),
    _c("balanced_accuracy", float, ENGINE, "mean per-class recall", FRACTION, HIGHER),
    _c("log_loss", float, ENGINE, "test cross-entropy of the predicted probabilities", better=LOWER),
    _c("ece", float, ENGINE, "expected calibration error", better=LOWER),
    _c("chance_accuracy", float, ENGINE, "test accuracy of always predicting the test set's most frequent class",
       FRACTION),
    _c("chance_p_value", float, ENGINE, "one-sided exact binomial p-value of `accuracy` against `chance_accuracy` "
                                        "(small: the model learnt something)", better=LOWER),
    _c("did_not_learn", str, ENGINE, "empty when the model learnt; else why it did not (test accuracy not above "
                                     "chance, or a validation curve that never rose above it)"),
    _c("best_val_accuracy", float, ENGINE, "best validation accuracy over the epochs (model selection only)",
       FRACTION, HIGHER),
    _c("train_throughput", float, ENGINE, "training images per second", "img/s", HIGHER,
       spread="train_throughput_rel_iqr"),
    _c("infer_throughput", float, ENGINE, "inference images per second (batch = `batch_size`)", "img/s", HIGHER,
       spread="infer_throughput_rel_iqr"),
    _c("latency_p50_ms", float, ENGINE, "single-image inference latency, median (ms)", "ms", LOWER,
       spread="latency_rel_iqr"),
    _c("latency_p95_ms", float, ENGINE, "single-image inference latency, 95th percentile (ms)", "ms", LOWER),
    _c("latency_p99_ms", float, ENGINE, "single-image inference latency, 99th percentile (ms)", "ms", LOWER),
    _c("train_throughput_rel_iqr", float, ENGINE, "spread of `train_throughput` within the job: (p75 - p25) / "
                                                  "median of the timed windows' throughputs", better=LOWER),
    _c("infer_throughput_rel_iqr", float, ENGINE, "spread of `infer_throughput`: relative IQR over its equal timed "
                                                  "chunks", better=LOWER),
    _c("latency_rel_iqr", float, ENGINE, "spread of the latency: relative IQR of the single-image samples",
       better=LOWER),
    _c("train_gpu_busy", float, ENGINE, "share of the training steps' wall time the GPU spent running kernels "
                                        "(low: bound by the CPU launching kernels); empty off CUDA", FRACTION),
    _c("infer_gpu_busy", float, ENGINE, "share of the inference batches' wall time the GPU spent running kernels "
                                        "(low: bound by the CPU launching kernels); empty off CUDA", FRACTION),
    _c("params", int, ENGINE, "trainable parameters", better=LOWER),
    _c("flops", int, ENGINE, "forward FLOPs per image at the model's input size", "FLOPs", LOWER),
    _c("peak_memory_mb", float, ENGINE, "peak memory during the job (MB; GPU memory on CUDA)", "MB", LOWER),
    _c("train_peak_memory_mb", float, ENGINE, "the model's training peak on CUDA (MB): steady-state training "
                                              "steps, without the dataset held on the device or cuDNN autotuning; "
                                              "empty off CUDA", "MB", LOWER),
    _c("epochs", int, ENGINE, "training epochs of the recipe"),
    _c("batch_size", int, ENGINE, "training batch size"),
    _c("image_size", int, ENGINE, "side of the images the dataset was loaded at"),
    _c("model_input_size", int, ENGINE, "side of the images the model saw (larger when resized up to its minimum)"),
    _c("train_samples", int, ENGINE, "training images used"),
    _c("val_samples", int, ENGINE, "validation images (held out of the training split; model selection only)"),
    _c("test_samples", int, ENGINE, "test images evaluated"),
    _c("train_split_samples", int, ENGINE, "images in the whole training split (`train_samples` of them were used)"),
    _c("test_split_samples", int, ENGINE, "images in the whole test split (`test_samples` of them were evaluated)"),
    _c("device", str, ENGINE, "where the job ran (`cpu`, `cuda:0`, ...)"),
    _c("precision", str, ENGINE, "the precision the model really computed in, measured: the dtype (`fp32`, "
                                 "`bf16`, `fp16`) of at least 90% of the activation elements one forward pass "
                                 "writes, else `mixed`"),
    _c("threads", int, ENGINE, "CPU threads torch used in the job (`torch.get_num_threads()`; recipe `threads`, "
                               "0 = cores // `concurrency`)"),
    _c("concurrency", int, ENGINE, "jobs that ran at once on this machine (the executor's slots), so 1 = the job "
                                   "had the machine alone"),
    _c("load_average", float, RUNNER, "the machine's 1-minute load average when the job started"),
    _c("free_cores", float, RUNNER, "CPU cores not kept busy by other processes when the job started"),
    _c("train_time_s", float, ENGINE, "training wall time (s)", "s", LOWER),
    _c("compile_time_s", float, ENGINE, "`torch.compile` time (s); empty without `compile`", "s", LOWER),
    _c("time_to_target_s", float, ENGINE, "training time until validation accuracy first reached "
                                          "`target_accuracy` (s); empty if off or never", "s", LOWER),
    _c("train_energy_j", float, ENGINE, "energy the device's counter measured over the training phase, validation "
                                        "passes included (J); empty without a counter (`energy_note` says why)",
       "J", LOWER),
    _c("energy_per_train_image_j", float, ENGINE, "`train_energy_j` per training image seen (J)", "J", LOWER),
    _c("energy_to_target_j", float, ENGINE, "energy until validation accuracy first reached `target_accuracy` "
                                            "(J), over the same span as `time_to_target_s`", "J", LOWER),
    _c("energy_per_inference_image_j", float, ENGINE, "energy per image of the inference throughput measurement: "
                                                      "the counter's mean power over it / `infer_throughput` (J)",
       "J", LOWER),
    _c("energy_source", str, ENGINE, ENERGY_SOURCE),
    _c("energy_note", str, ENGINE, "why an energy column is empty (no counter on this machine, a window shorter "
                                   "than the counter's resolution)"),
    _c("duration_s", float, RUNNER, "the whole job, kernel start to end, as the runner saw it (s)", "s", LOWER),
    _c("dataset_fingerprint", str, ENGINE, "checksum of the data, split and preprocessing the job used"),
    _c("config_hash", str, RUNNER, "12 hex characters: sha256 of model, dataset, seed and full recipe; "
                                   "resume compares it"),
    _c("notebook", str, RUNNER, "the executed notebook, relative to `OUT` (`jobs/<job-id>/notebook.ipynb`)"),
)

BY_NAME: dict[str, Column] = {c.name: c for c in COLUMNS}
RESULT_COLUMNS: tuple[str, ...] = tuple(BY_NAME)  # results.csv, in this order
ENGINE_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.origin == ENGINE)
TEXT_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if not c.numeric)
NUMERIC_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.numeric)
# What the engine writes at the top of metrics.json: its own columns and the job's identity and status.
# speed figure -> the column of its spread within the job
SPREADS: dict[str, str] = {c.name: c.spread for c in COLUMNS if c.spread}
METRICS_KEYS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.origin == ENGINE or c.name in (
    "model", "family", "dataset", "seed", "status", "error", "config_hash"))

assert len(BY_NAME) == len(COLUMNS), "two columns share a name"
assert all(spread in BY_NAME and BY_NAME[spread].kind is float for spread in SPREADS.values()), "a spread is a column"
assert all(c.kind in (str, int, float) and c.origin in (RUNNER, ENGINE) and c.better in ("", HIGHER, LOWER)
           for c in COLUMNS)


# -- the columns of inference.csv (`imgbench infer`) -----------------------------------------------------------
INFER = "infer"  # measured or set by `imgbench infer`
RUNTIMES = ("eager", "compile", "onnxruntime")
PRECISIONS = ("fp32", "bf16", "fp16")
AGREEMENT_REFERENCE = ("eager", "fp32")  # the (runtime, precision) every other one is compared with


def _i(name: str, kind: type, meaning: str, unit: str = "", better: str = "", spread: str = "") -> Column:
    return Column(name, kind, INFER, meaning, unit, better, spread)


INFERENCE_COLUMNS: tuple[Column, ...] = (
    _i("model", str, "model name, e.g. `timm/resnet18`"),
    _i("family", str, "model family (`keras`, `timm`, or a plugin's namespace)"),
    _i("dataset", str, "the dataset that gave the input shape and the test images"),
    _i("runtime", str, ", ".join(f"`{r}`" for r in RUNTIMES) + " (torch.compile; ONNX Runtime on a model exported "
                                                                "with torch.onnx)"),
    _i("precision", str, ", ".join(f"`{p}`" for p in PRECISIONS) + ": autocast for `eager` and `compile`; the "
                                                                    "model and inputs cast for `onnxruntime`"),
    _i("batch_size", int, "images per call"),
    _i("status", str, f"`{Status.OK}`; `{Status.OOM}` (the batch did not fit); `{Status.FAILED}` (the runtime "
                      f"cannot run the model: export failure, unsupported op, missing package)"),
    _i("error", str, "why the row is not `ok`, in the runtime's own words (on an `ok` row: why its agreement "
                     "is empty); empty otherwise"),
    _i("throughput", float, "images per second at this batch size", "img/s", HIGHER, spread="throughput_rel_iqr"),
    _i("latency_p50_ms", float, "time of one call at this batch size, median (ms)", "ms", LOWER,
       spread="latency_rel_iqr"),
    _i("latency_p90_ms", float, "time of one call at this batch size, 90th percentile (ms)", "ms", LOWER),
    _i("latency_p99_ms", float, "time of one call at this batch size, 99th percentile (ms)", "ms", LOWER),
    _i("throughput_rel_iqr", float, "spread of `throughput`: relative IQR over its equal timed chunks", better=LOWER),
    _i("latency_rel_iqr", float, "spread of the latency: relative IQR of the timed calls", better=LOWER),
    _i("peak_memory_mb", float, "peak memory while this batch size was timed (MB): the CUDA allocator's peak for "
                                "torch runtimes on a GPU, the process's peak resident memory on the CPU; empty "
                                "for onnxruntime on a GPU (its own arena)", "MB", LOWER),
    _i("energy_per_image_j", float, "energy per image (J): the counter's joules over the throughput window divided "
                                    "by the window's seconds and the throughput; empty without a counter",
       "J", LOWER),
    _i("energy_source", str, ENERGY_SOURCE),
    _i("energy_note", str, "why `energy_per_image_j` is empty (e.g. no energy counter on this machine)"),
    _i("compile_time_s", float, "`compile`: the first call at this batch size (tracing and code generation); "
                                "`onnxruntime`: export and session creation, once per model and precision; empty "
                                "for `eager`", "s", LOWER),
    _i("agreement", float, "share of the test images whose top-1 class equals eager fp32's", FRACTION, HIGHER),
    _i("max_logit_diff", float, "largest absolute difference from eager fp32's logits over the test images",
       better=LOWER),
    _i("accuracy", float, "test top-1 accuracy of this runtime and precision on the same images", FRACTION, HIGHER),
    _i("agreement_samples", int, "test images compared (`--test-samples`, stratified)"),
    _i("image_size", int, "side of the images the model saw"),
    _i("weights", str, "`random`, `pretrained`, or the checkpoint file"),
    _i("device", str, "where it ran (`cpu`, `cuda:0`, ...)"),
    _i("runtime_version", str, "the runtime as it ran: torch's version, ONNX Runtime's version and execution "
                               "provider"),
    _i("threads", int, "CPU threads (torch's, and ONNX Runtime's intra-op threads)"),
    _i("bench_seconds", float, "seconds of each timed measurement (`--bench-seconds`)", "s"),
)
INFERENCE_BY_NAME: dict[str, Column] = {c.name: c for c in INFERENCE_COLUMNS}
INFERENCE_STATUSES = (Status.OK, Status.OOM, Status.FAILED)
INFERENCE_KEYS = ("model", "dataset", "runtime", "precision", "batch_size")  # one row per key

assert len(INFERENCE_BY_NAME) == len(INFERENCE_COLUMNS), "two inference columns share a name"
assert all(c.spread in INFERENCE_BY_NAME for c in INFERENCE_COLUMNS if c.spread)


def unit(name: str) -> str:
    """The unit of a column ('' for counts, names and unknown columns)."""
    column = BY_NAME.get(name)
    return column.unit if column else ""


def higher_is_better(name: str) -> bool:
    return BY_NAME[name].better == HIGHER


def markdown_table(columns: tuple[Column, ...] = COLUMNS) -> str:
    """The results.csv table of docs/reference/results-schema.md (or docs/inference.md's inference.csv table),
    generated from the columns."""
    lines = ["| column | type | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{c.name}` | {c.kind.__name__} | {c.meaning} |" for c in columns]
    return "\n".join(lines)


if __name__ == "__main__":  # python -m imgbench.schema [inference]: print it
    sys.stdout.write(markdown_table(INFERENCE_COLUMNS if sys.argv[1:] == ["inference"] else COLUMNS) + "\n")
