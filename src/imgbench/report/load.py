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

from imgbench import schema
from imgbench.errors import UsageError


# Without these a row cannot be placed in any table.
REQUIRED_COLUMNS = ("job_id", "model", "dataset", "seed", "status")


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
        return self.table[self.table["status"] == schema.Status.OK]

    @property
    def not_ok(self) -> pd.DataFrame:
        return self.table[self.table["status"] != schema.Status.OK]

    def job_dir(self, job_id: str) -> Path:
        return schema.job_dir(self.out_dir, job_id)

    def metrics(self, job_id: str) -> dict[str, Any] | None:
        # read once: figures, provenance and per-class tables all ask for the same files
        if job_id not in self._metrics_cache:
            self._metrics_cache[job_id] = self._read(job_id, schema.METRICS_JSON, _read_json)
        return self._metrics_cache[job_id]

    def predictions(self, job_id: str) -> pd.DataFrame | None:
        frame = self._read(job_id, schema.PREDICTIONS_CSV, pd.read_csv)
        if frame is not None and not set(schema.PREDICTION_COLUMNS) <= set(frame.columns):
            self.note(f"{schema.job_file(job_id, schema.PREDICTIONS_CSV)} lacks "
                      f"{', '.join(schema.PREDICTION_COLUMNS)}")
            return None
        return frame

    def history(self, job_id: str) -> pd.DataFrame | None:
        return self._read(job_id, schema.HISTORY_CSV, pd.read_csv)

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
            self.note(f"{schema.job_file(job_id, name)} is missing")
            return None
        try:
            return reader(path)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            self.note(f"{schema.job_file(job_id, name)} is unreadable: {exc}")
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
    results_path = out_dir / schema.RESULTS_CSV
    if not results_path.is_file() and (out_dir / schema.INFERENCE_CSV).is_file():  # `imgbench infer` alone
        return Results(out_dir=out_dir, table=_read_table(results_path))
    if not results_path.is_file():
        raise UsageError(f"{out_dir} has no {schema.RESULTS_CSV}: pass the folder `imgbench run --out` wrote "
                         f"(it holds {schema.RESULTS_CSV} and {schema.JOBS_DIR}/)")
    table = _read_table(results_path)
    return Results(out_dir=out_dir, table=table, run_info=_read_run_info(out_dir / schema.RUN_JSON))


def _read_table(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype={name: "string" for name in schema.TEXT_COLUMNS}, keep_default_na=True)
    except (pd.errors.EmptyDataError, FileNotFoundError):
        table = pd.DataFrame(columns=list(REQUIRED_COLUMNS))
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise UsageError(f"{path} lacks the column{'s' * (len(missing) > 1)} {', '.join(missing)}: it was not "
                         f"written by `imgbench run`; rerun it or fix the header")
    for column in schema.TEXT_COLUMNS:
        table[column] = table[column].astype("string").fillna("") if column in table else ""
    for column in schema.NUMERIC_COLUMNS:
        table[column] = pd.to_numeric(table[column], errors="coerce") if column in table else float("nan")
    return table.reset_index(drop=True)


def _read_run_info(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return {"unreadable": f"{path.name}: {exc}"}
    return info if isinstance(info, dict) else {schema.RUN_JSON: info}
