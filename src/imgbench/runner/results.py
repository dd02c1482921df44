"""``OUT/results.csv``: one row per job, rebuilt atomically from the job folders after every job.

A job folder counts as finished only when it holds ``job.json`` (written last, atomically, by
:func:`imgbench.runner.execute.execute_job`); ``results.csv`` is a view of those records, so a runner killed
at any moment loses no finished job and never trusts a half-written one. ``job.json`` also holds the sha256
of each file the job wrote, so resume (:func:`check_finished`) skips a job only when its files are all there
and unchanged; a job whose record is missing files or damaged runs again.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from imgbench import schema
from imgbench.paths import atomic_write_json, atomic_write_text
from imgbench.runner.jobs import Job

MAX_ERROR_CHARS = 500  # keep one row readable; the full story is in the executed notebook and the log
# the files a job's record vouches for (job.json holds their sha256); an ok job must have the first four
REQUIRED_FILES = (schema.METRICS_JSON, schema.PREDICTIONS_CSV, schema.HISTORY_CSV, schema.NOTEBOOK)
RECORDED_FILES = (*REQUIRED_FILES, schema.MODEL_CHECKPOINT)
HASH_CHUNK = 1 << 20


def job_dir(out_dir: Path, job: Job) -> Path:
    return schema.job_dir(out_dir, job.job_id)


def make_row(job: Job, *, status: str, error: str, metrics: Mapping[str, Any] | None, duration_s: float,
             notebook: str, load: Mapping[str, float] | None = None) -> dict[str, Any]:
    """One results.csv row: the job's identity and the runner's verdict, the measurements from metrics.json,
    and ``load`` (:meth:`imgbench.runner.machine.MachineLoad.columns`), the machine's load when it started."""
    metrics = metrics or {}
    row: dict[str, Any] = dict.fromkeys(schema.RESULT_COLUMNS)
    row.update({column: _scalar(metrics.get(column)) for column in schema.ENGINE_COLUMNS}, **(load or {}))
    row.update(
        job_id=job.job_id, model=job.model, family=metrics.get("family") or job.family, dataset=job.dataset,
        seed=job.seed, status=status, error=" ".join(str(error or "").split())[:MAX_ERROR_CHARS],
        duration_s=round(duration_s, 3), config_hash=job.config_hash, notebook=notebook,
    )
    return {column: row.get(column) for column in schema.RESULT_COLUMNS}  # columns the runner leaves unset: empty


def write_record(job_dir: Path, job: Job, row: Mapping[str, Any]) -> None:
    """Write ``job.json``, the mark of a finished job: last, and atomically, so a half-done job has none. It
    holds the sha256 of each of the job's files, which resume checks before trusting them."""
    finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
    files = {name: file_sha256(job_dir / name) for name in RECORDED_FILES if (job_dir / name).is_file()}
    atomic_write_json(job_dir / schema.JOB_RECORD, {"job": job.to_dict(), "row": dict(row), "files": files,
                                                    "finished_at": finished})


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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


@dataclass(frozen=True)
class Resume:
    """What resume does with a job: skip it (it succeeded and its record checks out), or run it. ``damaged``
    says why a job whose record claimed success runs again ('' for a job that simply had not succeeded)."""

    skip: bool
    damaged: str = ""


def check_finished(out_dir: Path, job: Job) -> Resume:
    """Whether ``job`` already succeeded here with this configuration, its files all present and unchanged."""
    folder = job_dir(out_dir, job)
    if not (folder / schema.JOB_RECORD).exists():
        return Resume(False)
    record = read_record(out_dir, job)
    if record is None:
        return Resume(False, f"its {schema.JOB_RECORD} cannot be read" if _unreadable(folder) else "")
    if record["row"].get("status") != schema.Status.OK:
        return Resume(False)
    files = record.get("files")
    if not isinstance(files, dict):
        return Resume(False, f"its {schema.JOB_RECORD} holds no checksums of its files (an older imgbench wrote it)")
    missing = [name for name in REQUIRED_FILES if name not in files]
    missing += [name for name in files if not (folder / name).is_file()]
    if missing:
        return Resume(False, f"{', '.join(dict.fromkeys(missing))} missing")
    changed = [name for name, digest in files.items() if file_sha256(folder / name) != digest]
    if changed:
        return Resume(False, f"{', '.join(changed)} changed or damaged since it was written")
    return Resume(True)


def _unreadable(folder: Path) -> bool:
    """Whether ``job.json`` is damaged (not merely a record of another configuration)."""
    try:
        record = json.loads((folder / schema.JOB_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True
    return not isinstance(record, dict) or not isinstance(record.get("row"), dict)


def forget_record(out_dir: Path, job: Job) -> None:
    """Remove the ``job.json`` of a job whose files cannot be trusted: results.csv stops listing it, and it
    counts as unfinished until it runs again."""
    (job_dir(out_dir, job) / schema.JOB_RECORD).unlink(missing_ok=True)


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
