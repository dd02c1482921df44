"""The read-only records the lifecycle hooks are given and return, and the spec a tracker is offered with.

The launcher builds them from its own state (:mod:`imgbench.tracking.lifecycle`); every mapping in them is a
read-only view of a copy, so an implementation cannot change a row or the grid by writing to its arguments.
This module imports nothing from imgbench but the schema, so :mod:`imgbench.hookspecs` can name its types.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

from imgbench import schema


def frozen_mapping(values: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only view of a copy of ``values``."""
    return MappingProxyType(dict(values))


@dataclass(frozen=True)
class JobInfo:
    """One job of the grid: what it runs. ``params`` holds model, dataset, seed and every recipe field, as the
    notebook receives them."""

    job_id: str
    model: str
    dataset: str
    seed: int
    config_hash: str
    family: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class JobOutcome:
    """How one job ended: its results.csv row (every column of :data:`imgbench.schema.RESULT_COLUMNS`), its
    folder (``OUT/jobs/<job-id>/``: metrics.json, predictions.csv, history.csv, the executed notebook) and
    when it finished (ISO 8601, UTC)."""

    row: Mapping[str, Any]
    job_dir: Path
    finished_at: str

    @property
    def status(self) -> str:
        return str(self.row["status"])

    @property
    def ok(self) -> bool:
        return self.status == schema.Status.OK


@dataclass(frozen=True)
class GridInfo:
    """The grid this invocation runs. ``jobs`` is every job in grid order; ``done`` holds the outcome of each
    job a resume skips because it already succeeded here (``imgbench_job_finished`` is not called for them)."""

    out_dir: Path
    jobs: tuple[JobInfo, ...]
    done: Mapping[str, JobOutcome]
    suite: str  # the suite's file or shipped name; "none" for no suite
    executor: str
    command: tuple[str, ...]
    started_at: str
    trackers: tuple[str, ...] = ()  # the --track names switched on for this grid


@dataclass(frozen=True)
class GridOutcome:
    """What the grid left: every row of results.csv (grid order, skipped jobs included), the report (None
    when it was not built) and the exit status ``imgbench run`` returns."""

    rows: tuple[Mapping[str, Any], ...]
    results_csv: Path
    report: Path | None
    report_error: str
    exit_code: int


@dataclass(frozen=True)
class RunLink:
    """Where a tracker recorded the grid (``job_id`` empty) or one job: shown in the launcher's output and
    linked from the report. ``note`` says how to open it when the URL needs a server started first."""

    url: str
    job_id: str = ""
    note: str = ""


@dataclass(frozen=True)
class TrackerSpec:
    """An experiment tracker, switched on by ``imgbench run --track NAME`` (or ``IMGBENCH_TRACK``).

    ``create(uri)`` is called before any job starts, with ``--track-uri`` or None; it raises
    :class:`imgbench.errors.UsageError` when something it needs is missing (say how to install it), and
    returns an object whose ``@hookimpl`` methods implement the lifecycle hooks. That object is registered as
    a plugin for the one grid, then unregistered.
    """

    name: str
    create: Callable[[str | None], object]
    description: str
