"""How the launcher calls the lifecycle hooks: the trackers of ``--track``, each implementation on its own.

pluggy stops a hook call at the first implementation that raises, so :class:`Lifecycle` calls the
implementations one at a time instead. One that raises, or returns something other than its hook documents,
is reported once (a line on stderr and an entry in run.json's ``hook_errors``) and is not called again for
this grid: a tracker whose server went away costs one timeout, not one per job. No row, file or exit status
depends on a hook.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Protocol, Sequence

import pluggy
from tqdm import tqdm

from imgbench import schema
from imgbench.errors import UsageError
from imgbench.runner.jobs import Job
from imgbench.runner.results import read_record
from imgbench.tracking import links
from imgbench.specs import (
    GridInfo,
    GridOutcome,
    JobInfo,
    JobOutcome,
    RunLink,
    TrackerSpec,
    frozen_mapping,
)

if TYPE_CHECKING:  # pragma: no cover
    from imgbench.registry import Registry

TRACK_ENV = "IMGBENCH_TRACK"  # comma-separated tracker names, when --track is not given
TRACKER_PREFIX = "tracker:"  # a tracker object's plugin name: "tracker:mlflow" (the entry point is "mlflow")
GRID_STARTED, JOB_FINISHED, GRID_FINISHED = "imgbench_grid_started", "imgbench_job_finished", "imgbench_grid_finished"


class GridResultLike(Protocol):
    """What ``imgbench_grid_finished`` reports of :class:`imgbench.runner.grid.GridResult`."""

    rows: list[dict[str, Any]]
    report: Path | None
    report_error: str

    @property
    def results_csv(self) -> Path: ...

    @property
    def exit_code(self) -> int: ...


@dataclass(frozen=True)
class HookError:
    """A lifecycle hook implementation that raised or returned something it should not; it was left out."""

    plugin: str  # the plugin's name; a tracker's name for a tracker
    kind: str  # "tracker" or "plugin"
    hook: str
    error: str

    def __str__(self) -> str:
        return (f"imgbench run: {self.kind} {self.plugin!r} failed in {self.hook}: {self.error}; it is not called "
                f"again in this grid (the jobs, results.csv and the exit status are not affected)")


def tracker_names(track: str | Sequence[str] | None, environ: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """``--track`` values (each may be a comma-separated list), or ``IMGBENCH_TRACK`` when None; no duplicates."""
    given = environ.get(TRACK_ENV, "") if track is None else track
    parts = [given] if isinstance(given, str) else list(given)
    names = [name.strip() for part in parts for name in part.split(",")]
    return tuple(dict.fromkeys(name for name in names if name))


def create_trackers(registry: "Registry", track: str | Sequence[str] | None = None,
                    uri: str | None = None) -> dict[str, object]:
    """The tracker objects for ``--track`` (or ``IMGBENCH_TRACK``), created before any job starts.

    Raises UsageError for an unknown name or a tracker whose package is missing (its ``create`` says how to
    install it), and for ``--track-uri`` without a tracker.
    """
    names = tracker_names(track)
    if uri and not names:
        raise UsageError("--track-uri was given but no tracker is switched on; add --track mlflow "
                         f"(or set {TRACK_ENV}=mlflow)")
    specs: dict[str, TrackerSpec] = {spec.name: spec for spec in registry.trackers()}
    unknown = [name for name in names if name not in specs]
    if unknown:
        offered = ", ".join(sorted(specs)) or "none"
        raise UsageError(f"unknown tracker {unknown[0]!r} in --track/{TRACK_ENV}; the installed trackers are: "
                         f"{offered} (a plugin offers one through the imgbench_trackers hook)")
    return {name: specs[name].create(uri or None) for name in names}


class Lifecycle:
    """Calls the lifecycle hooks of every plugin and of this grid's trackers; use it as a context manager,
    which registers the tracker objects as plugins for the grid and unregisters them afterwards."""

    def __init__(self, pm: pluggy.PluginManager, trackers: Mapping[str, object], out_dir: Path) -> None:
        self.pm = pm
        self.trackers = dict(trackers)
        self.out_dir = out_dir
        self.errors: list[HookError] = []
        self.left_out: set[str] = set()  # plugin names not called again

    def __enter__(self) -> "Lifecycle":
        for name, tracker in self.trackers.items():
            self.pm.register(tracker, name=TRACKER_PREFIX + name)
            try:
                self.pm.check_pending()
            except pluggy.PluginValidationError as exc:  # a tracker with a misspelt hook: leave it out
                self.pm.unregister(name=TRACKER_PREFIX + name)
                self._fail(TRACKER_PREFIX + name, "registration", str(exc))
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        for name in self.trackers:
            if self.pm.get_plugin(TRACKER_PREFIX + name) is not None:
                self.pm.unregister(name=TRACKER_PREFIX + name)

    # -- the three calls the grid makes ------------------------------------------------------------------
    def grid_started(self, jobs: Sequence[Job], skipped: Iterable[str], record: Mapping[str, Any]) -> GridInfo:
        """Call ``imgbench_grid_started``; returns the grid record the other two calls take."""
        skipped = set(skipped)
        done = {job.job_id: outcome for job in jobs if job.job_id in skipped
                and (outcome := self._outcome(job)) is not None}
        grid = GridInfo(out_dir=self.out_dir, jobs=tuple(job_info(job) for job in jobs), done=frozen_mapping(done),
                        suite=str(record["suite"].get("source") or ""), executor=str(record["executor"]),
                        command=tuple(map(str, record["command"])), started_at=str(record["started_at"]),
                        trackers=tuple(self.trackers))
        for plugin, value in self._call(GRID_STARTED, grid=grid):
            if value is not None and not (isinstance(value, (list, tuple)) and all(map(is_link, value))):
                self._fail(plugin, GRID_STARTED, f"returned {type(value).__name__}, not a list of RunLink")
                continue
            for link in value or ():
                if not link.job_id:
                    say(f"{self._label(plugin)}: {link.url}" + (f" ({link.note})" if link.note else ""))
            links.record(self.out_dir, self._name(plugin), value or ())
        return grid

    def job_finished(self, job: Job, row: Mapping[str, Any]) -> None:
        """Call ``imgbench_job_finished`` for a job this invocation ran."""
        outcome = self._outcome(job) or JobOutcome(frozen_mapping(row), schema.job_dir(self.out_dir, job.job_id), "")
        for plugin, value in self._call(JOB_FINISHED, job=job_info(job), record=outcome):
            if value is not None and not is_link(value):
                self._fail(plugin, JOB_FINISHED, f"returned {type(value).__name__}, not a RunLink")
            elif value is not None:
                links.record(self.out_dir, self._name(plugin), [RunLink(value.url, job.job_id, value.note)])

    def grid_finished(self, grid: GridInfo, result: GridResultLike) -> None:
        """Call ``imgbench_grid_finished`` once the report is built."""
        results = GridOutcome(tuple(frozen_mapping(row) for row in result.rows), result.results_csv, result.report,
                              result.report_error, result.exit_code)
        for plugin, value in self._call(GRID_FINISHED, grid=grid, results=results):
            if value is not None:
                self._fail(plugin, GRID_FINISHED, f"returned {type(value).__name__}, not None")

    def run_record(self) -> dict[str, Any]:
        """What run.json records: the trackers switched on and every hook that failed."""
        return {"track": list(self.trackers), "hook_errors": [asdict(error) for error in self.errors]}

    def _outcome(self, job: Job) -> JobOutcome | None:
        """The job's outcome as its job.json records it (row and finish time), None when it has none."""
        found = read_record(self.out_dir, job)
        if found is None:
            return None
        return JobOutcome(frozen_mapping(found["row"]), schema.job_dir(self.out_dir, job.job_id),
                          str(found.get("finished_at") or ""))

    # -- one implementation at a time --------------------------------------------------------------------
    def _call(self, hook: str, **arguments: Any) -> list[tuple[str, Any]]:
        answered = []
        for impl in getattr(self.pm.hook, hook).get_hookimpls():  # registration order: built-ins first
            if impl.plugin_name in self.left_out:
                continue
            try:
                if impl.wrapper or impl.hookwrapper:
                    raise TypeError("lifecycle hooks are called one implementation at a time: no wrappers")
                value = impl.function(*(arguments[name] for name in impl.argnames))
            except Exception as exc:  # a broken tracker or plugin must never cost a job or a row
                self._fail(impl.plugin_name, hook, f"{type(exc).__name__}: {exc}")
                continue
            answered.append((impl.plugin_name, value))
        return answered

    def _fail(self, plugin: str, hook: str, error: str) -> None:
        tracker = plugin.startswith(TRACKER_PREFIX)
        failure = HookError(self._name(plugin), "tracker" if tracker else "plugin", hook, error)
        self.errors.append(failure)
        self.left_out.add(plugin)
        say(str(failure))

    @staticmethod
    def _name(plugin: str) -> str:
        return plugin.removeprefix(TRACKER_PREFIX)

    def _label(self, plugin: str) -> str:
        return f"tracker {self._name(plugin)}" if plugin.startswith(TRACKER_PREFIX) else f"plugin {plugin}"


def is_link(value: object) -> bool:
    """A RunLink of strings: what tracking.json can hold."""
    return isinstance(value, RunLink) and all(isinstance(text, str) for text in (value.url, value.job_id, value.note))


def job_info(job: Job) -> JobInfo:
    return JobInfo(job_id=job.job_id, model=job.model, dataset=job.dataset, seed=job.seed,
                   config_hash=job.config_hash, family=job.family, params=frozen_mapping(job.parameters))


def say(line: str) -> None:
    """One line on stderr, above the progress bar when there is one."""
    tqdm.write(line, file=sys.stderr)
