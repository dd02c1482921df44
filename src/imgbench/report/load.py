"""Read a results folder: ``results.csv`` plus each job's ``metrics.json``, ``predictions.csv`` and ``history.csv``.

Nothing here draws or formats. A job file that is missing or unreadable is recorded in ``Results.problems``
(the report lists them) instead of stopping the report: partial results are the normal case mid-run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from imgbench.errors import UsageError

RESULTS_FILE = "results.csv"
RUN_FILE = "run.json"
JOBS_DIR = "jobs"
OK = "ok"

# Without these a row cannot be placed in any table.
REQUIRED_COLUMNS = ("job_id", "model", "dataset", "seed", "status")
TEXT_COLUMNS = ("job_id", "model", "family", "dataset", "status", "error", "device", "dataset_fingerprint",
                "config_hash", "notebook")
NUMERIC_COLUMNS = (
    "seed", "accuracy", "top5_accuracy", "f1_macro", "precision_macro", "recall_macro", "balanced_accuracy",
    "log_loss", "ece", "train_throughput", "infer_throughput", "latency_p50_ms", "latency_p95_ms",
    "latency_p99_ms", "params", "flops", "peak_memory_mb", "epochs", "batch_size", "image_size",
    "train_samples", "test_samples", "train_time_s", "compile_time_s", "time_to_target_s", "duration_s",
    "train_throughput_rel_iqr", "infer_throughput_rel_iqr", "latency_rel_iqr", "threads", "concurrency",
)


@dataclass
class Results:
    """One results folder: the ``results.csv`` table and lazy access to each job's files."""

    out_dir: Path
    table: pd.DataFrame
    run_info: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> pd.DataFrame:
        """The rows of jobs that finished with status ``ok``: the only ones that enter leaderboards."""
        return self.table[self.table["status"] == OK]

    @property
    def not_ok(self) -> pd.DataFrame:
        return self.table[self.table["status"] != OK]

    def job_dir(self, job_id: str) -> Path:
        return self.out_dir / JOBS_DIR / job_id

    def metrics(self, job_id: str) -> dict[str, Any] | None:
        # read once: figures, provenance and per-class tables all ask for the same files
        if job_id not in self._metrics_cache:
            self._metrics_cache[job_id] = self._read(job_id, "metrics.json", _read_json)
        return self._metrics_cache[job_id]

    def predictions(self, job_id: str) -> pd.DataFrame | None:
        frame = self._read(job_id, "predictions.csv", pd.read_csv)
        if frame is not None and not {"index", "y_true", "y_pred"} <= set(frame.columns):
            self.note(f"{JOBS_DIR}/{job_id}/predictions.csv lacks index, y_true or y_pred")
            return None
        return frame

    def history(self, job_id: str) -> pd.DataFrame | None:
        return self._read(job_id, "history.csv", pd.read_csv)

    def note(self, problem: str) -> None:
        """Record something the report could not use (once), so the reader learns why a piece is absent."""
        if problem not in self.problems:
            self.problems.append(problem)

    @cached_property
    def _metrics_cache(self) -> dict[str, dict[str, Any] | None]:
        return {}

    def _read(self, job_id: str, name: str, reader) -> Any:
        path = self.job_dir(job_id) / name
        if not path.is_file():
            self.note(f"{JOBS_DIR}/{job_id}/{name} is missing")
            return None
        try:
            return reader(path)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            self.note(f"{JOBS_DIR}/{job_id}/{name} is unreadable: {exc}")
            return None


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def load_results(out_dir: str | Path) -> Results:
    """Read ``OUT/results.csv`` (and ``OUT/run.json`` when present).

    Raises UsageError when ``out_dir`` is not a results folder or ``results.csv`` lacks the key columns.
    An empty ``results.csv`` gives an empty table: the report then says there is nothing to compare.
    """
    out_dir = Path(out_dir).expanduser().resolve()
    if not out_dir.is_dir():
        raise UsageError(f"results folder {out_dir} does not exist: pass the folder `imgbench run --out` wrote")
    results_path = out_dir / RESULTS_FILE
    if not results_path.is_file():
        raise UsageError(f"{out_dir} has no {RESULTS_FILE}: pass the folder `imgbench run --out` wrote "
                         f"(it holds {RESULTS_FILE} and {JOBS_DIR}/)")
    table = _read_table(results_path)
    return Results(out_dir=out_dir, table=table, run_info=_read_run_info(out_dir / RUN_FILE))


def _read_table(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype={name: "string" for name in TEXT_COLUMNS}, keep_default_na=True)
    except pd.errors.EmptyDataError:
        table = pd.DataFrame(columns=list(REQUIRED_COLUMNS))
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise UsageError(f"{path} lacks the column(s) {', '.join(missing)}: it was not written by "
                         f"`imgbench run`; rerun it or fix the header")
    for column in TEXT_COLUMNS:
        table[column] = table[column].astype("string").fillna("") if column in table else ""
    for column in NUMERIC_COLUMNS:
        table[column] = pd.to_numeric(table[column], errors="coerce") if column in table else float("nan")
    return table.reset_index(drop=True)


def _read_run_info(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return {"unreadable": f"{path.name}: {exc}"}
    return info if isinstance(info, dict) else {"run.json": info}
