"""``OUT/results.csv``: one row per job, rebuilt atomically from the job folders after every job.

A job folder counts as finished only when it holds ``job.json`` (written last, atomically, by
:func:`imgbench.runner.execute.execute_job`); ``results.csv`` is a view of those records, so a runner killed
at any moment loses no finished job and never trusts a half-written one.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from imgbench import schema
from imgbench.paths import atomic_write_json, atomic_write_text
from imgbench.runner.jobs import Job

MAX_ERROR_CHARS = 500  # keep one row readable; the full story is in the executed notebook and the log


def job_dir(out_dir: Path, job: Job) -> Path:
    return schema.job_dir(out_dir, job.job_id)


def make_row(job: Job, *, status: str, error: str, metrics: Mapping[str, Any] | None, duration_s: float,
             notebook: str) -> dict[str, Any]:
    """One results.csv row: the job's identity and the runner's verdict, the measurements from metrics.json."""
    metrics = metrics or {}
    row: dict[str, Any] = {column: _scalar(metrics.get(column)) for column in schema.ENGINE_COLUMNS}
    row.update(
        job_id=job.job_id, model=job.model, family=metrics.get("family") or job.family, dataset=job.dataset,
        seed=job.seed, status=status, error=" ".join(str(error or "").split())[:MAX_ERROR_CHARS],
        duration_s=round(duration_s, 3), config_hash=job.config_hash, notebook=notebook,
    )
    return {column: row.get(column) for column in schema.RESULT_COLUMNS}  # columns the runner leaves unset: empty


def write_record(job_dir: Path, job: Job, row: Mapping[str, Any]) -> None:
    """Write ``job.json``, the mark of a finished job: last, and atomically, so a half-done job has none."""
    finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
    atomic_write_json(job_dir / schema.JOB_RECORD, {"job": job.to_dict(), "row": dict(row), "finished_at": finished})


def read_record(out_dir: Path, job: Job) -> dict[str, Any] | None:
    """The finished record of ``job`` in ``out_dir``, or None when it has none (or an unreadable one)."""
    path = job_dir(out_dir, job) / schema.JOB_RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    row = record.get("row") if isinstance(record, dict) else None
    if not isinstance(row, dict) or row.get("config_hash") != job.config_hash:
        return None
    return record


def is_done(out_dir: Path, job: Job) -> bool:
    """Whether ``job`` already succeeded here with the same configuration (resume skips it)."""
    record = read_record(out_dir, job)
    return record is not None and record["row"].get("status") == schema.Status.OK


def write_results(out_dir: Path, jobs: Iterable[Job]) -> Path:
    """Rewrite ``results.csv`` atomically: one row per job of the grid that has a finished record."""
    import pandas as pd

    rows = [record["row"] for job in jobs if (record := read_record(out_dir, job)) is not None]
    frame = pd.DataFrame(rows, columns=list(schema.RESULT_COLUMNS))
    path = Path(out_dir) / schema.RESULTS_CSV
    atomic_write_text(path, frame.to_csv(index=False))
    return path


def _scalar(value: Any) -> Any:
    """Keep CSV cells scalar: nested values have no column, NaN/inf become empty cells."""
    if isinstance(value, (dict, list, tuple)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
