"""``run_grid``: check a whole grid, run the jobs that have not succeeded yet, keep results.csv current.

Order of events: load the suite and apply the options; the preflight (:mod:`.preflight`) checks every job, its
devices, that its data can be had and that the results folder can be written, and names every problem at once
(nothing is written before it passes); say so when the machine is already busy (:mod:`.machine`); skip jobs
whose ``job.json`` says ok with the same configuration hash and whose files check out
(:func:`~.results.check_finished`); call ``imgbench_grid_started`` (:mod:`imgbench.runner.lifecycle`: each
plugin's and ``--track`` tracker's implementation on its own); write ``run.json``; run the rest through the
chosen executor, rewriting ``results.csv`` after every job (then ``imgbench_job_finished``); build the report
(its kernel forked from the local executor's fork server, as the jobs' were); close the executor;
``imgbench_grid_finished``. A results folder that cannot be written any more stops the run with one
:class:`~.folder.ResultsFolderError` (:mod:`.folder`).
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from contextlib import closing, contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

from filelock import FileLock, Timeout

from imgbench import __version__, forkserver, schema
from imgbench.engine import frameworks
from imgbench.errors import UsageError
from imgbench.paths import DataFolders, atomic_write_json
from imgbench.plugins import BLOCK_ENV, PLUGINS_DIR_ENV
from imgbench.registry import get_registry
from imgbench.resources import NO_SUITE, notebook_path, suite_path
from imgbench.runner.execute import JobTask
from imgbench.runner.folder import FolderWatch, folder_problem, write_failure
from imgbench.runner.jobs import Job
from imgbench.runner.lifecycle import Lifecycle, create_trackers
from imgbench.runner.machine import measure_load
from imgbench.runner.preflight import preflight, timeout_problem
from imgbench.runner.progress import GridProgress
from imgbench.runner.results import check_finished, forget_record, read_record, write_results
from imgbench.runner.suite import Suite, load_suite, with_options
from imgbench.terminal import plural, wrap

if TYPE_CHECKING:  # pragma: no cover
    from imgbench.registry import Registry
    from imgbench.specs import Executor

LOCK_FILE = ".imgbench-run.lock"
RESULTS_ROOT = "results"  # default OUT is ./results/<timestamp>/
TIMESTAMP_FORMAT = "%Y-%m-%d_%H%M%S"
THIS_MACHINE_EXECUTORS = ("local",)  # their jobs run here: the preflight checks this machine's devices and data


@dataclass
class GridResult:
    """What a grid run left: the folder, one row per job (grid order) and the report."""

    out_dir: Path
    rows: list[dict[str, Any]]
    skipped: int = 0
    report: Path | None = None
    report_error: str = ""
    jobs: list[Job] = field(default_factory=list)
    rerun: dict[str, str] = field(default_factory=dict)  # job id -> why its record was not trusted on resume

    @property
    def results_csv(self) -> Path:
        return self.out_dir / schema.RESULTS_CSV

    @property
    def not_ok(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row["status"] != schema.Status.OK]

    @property
    def did_not_learn(self) -> list[dict[str, Any]]:
        """The ok rows flagged as not better than chance (``did_not_learn``)."""
        return [row for row in self.rows if row["status"] == schema.Status.OK and row.get("did_not_learn")]

    @property
    def exit_code(self) -> int:
        return 1 if self.not_ok or self.report_error or len(self.rows) < len(self.jobs) else 0

    def frame(self):
        import pandas as pd

        return pd.read_csv(self.results_csv)

    def summary(self) -> str:
        """What the command line prints at the end, wrapped to the terminal."""
        counts = Counter(row["status"] for row in self.rows)
        notes = [f"{self.skipped} skipped: already succeeded"] if self.skipped else []
        notes += [f"{len(self.rerun)} run again: record damaged"] if self.rerun else []
        statuses = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        lines = [f"{plural(len(self.jobs), 'job')}: {statuses}"
                 + (f", {len(self.did_not_learn)} of them did not learn" if self.did_not_learn else "")
                 + (f" ({'; '.join(notes)})" if notes else "")]
        if self.not_ok:
            lines.append("did not succeed:")
            lines += [f"  {row['status']:<15} {row['job_id']}: {row['error'] or '(no message)'}" for row in self.not_ok]
        if self.did_not_learn:
            lines.append("did not learn (status ok, but not better than always predicting the most frequent class; "
                         "the report does not rank them):")
            lines += [f"  {row['job_id']}: {row['did_not_learn']}" for row in self.did_not_learn]
        lines.append(f"results: {self.results_csv}")
        if self.report:
            lines.append(f"report: {self.report}")
        if self.report_error:
            lines.append(f"report failed: {self.report_error}; the results are intact, rebuild the report with "
                         f"`imgbench report {self.out_dir}`")
        return wrap("\n".join(lines))


def _create_executor(registry: "Registry", name: str, slots: int, options: dict[str, Any]) -> Executor[JobTask]:
    spec = registry.executor(name)
    return spec.create(slots=slots, **spec.resolve_options(options, os.environ))


def run_grid(
    suite: Suite | str | os.PathLike | None = None,
    *,
    models: Iterable[str] = (),
    datasets: Iterable[str] = (),
    seeds: Iterable[int] | str | None = None,
    params: Mapping[str, Any] | None = None,
    out: str | os.PathLike | None = None,
    slots: int = 1,
    timeout: float | None = None,
    executor: str = "local",
    executor_options: Mapping[str, Any] | None = None,
    report: bool = True,
    registry: "Registry | None" = None,
    data_dir: str | os.PathLike | None = None,
    notebook: str | os.PathLike | None = None,
    progress: bool = True,
    command: Sequence[str] | None = None,
    log_output: bool = False,
    track: str | Sequence[str] | None = None,
    track_uri: str | None = None,
) -> GridResult:
    """Run a benchmark grid: every (model, dataset, seed) job of a suite, each in its own notebook and kernel,
    into one results folder; return what it left.

    Parameters:
        suite: a :class:`Suite`, the path of a suite TOML file, or a shipped suite's name (``imgbench suites``).
            None: the default suite ``quick``; ``"none"``: no suite at all, so every job gets its dataset's full
            default recipe. With ``models`` or ``datasets`` and no suite, the grid inherits the default suite's
            parameters and says so on stderr (and in ``run.json`` under ``inherited``).
        models, datasets, seeds: replace the suite's. Models are names or globs (``"timm/resnet*"``), datasets
            names such as ``"mnist"`` or ``"imagefolder:/data/pets"``, seeds non-negative ints or ``"0,1,2"``.
        params: recipe parameters (``imgbench params``) on top of the suite's ``[params]`` and
            ``[overrides.DATASET]``; messages call them ``-p NAME=VALUE``.
        out: the results folder (default ``./results/<timestamp>/``). A folder of an earlier run resumes it:
            jobs that succeeded with the same configuration, and whose files still match the checksums in their
            ``job.json``, are skipped; a job whose record is missing files or damaged runs again.
        slots: how many jobs run at once (``imgbench run --jobs``); they share the CPU cores equally.
        timeout: seconds after which a job is killed with its kernel (status ``timeout``); default: the suite's.
        executor: ``"local"`` (this machine) or a plugin's executor (``"dask"``); ``executor_options`` are its
            declared options (``{"scheduler": "tcp://host:8786"}``).
        report: build ``report.html``/``report.md`` at the end. A failing report never loses results: it is
            recorded in ``GridResult.report_error``.
        registry: the plugin registry (default: the built-ins, ``./plugins`` of a checkout and
            ``IMGBENCH_PLUGINS_DIR``); ``data_dir``: local dataset copies (default ``IMGBENCH_DATA_DIR``).
        notebook: the notebook executed per job (default: the shipped ``benchmark.ipynb``).
        progress: a progress bar (on a terminal) or one line per finished job on stderr, and the notices
            (inherited suite, busy machine, resume); False: silent.
        command: recorded in ``run.json`` (default ``sys.argv``).
        log_output: stream every job's cell output to stderr, each line prefixed with the job id.
        track: the experiment trackers to switch on, by name (``"mlflow"``, ``["mlflow", "jsonl"]``; None:
            ``IMGBENCH_TRACK``); ``track_uri``: where they record (MLflow: the tracking URI).

    Returns:
        :class:`GridResult`: the folder, one results.csv row per finished job (grid order), how many were skipped
        and which were run again on resume, the report's path. ``exit_code`` is 0 when every job is ok, 1 when
        any is not (a job that did not learn is ok, and flagged in its ``did_not_learn`` cell).

    Raises:
        UsageError (a :class:`~.suite.GridError` listing every problem at once) before anything is written: bad
            names or parameters, each named with where it was set (``-p``, the suite file, the default suite);
            missing data, devices or notebook; a results folder that cannot be written; another run writing
            into ``out``.
        :class:`~.folder.ResultsFolderError`: the results folder could not be written any more during the run (a full disk, a
            folder made read-only, deleted or unmounted). The run stopped; the message says what was kept
            (every finished job's record) and how to resume.
        KeyboardInterrupt: passed on after the running jobs were killed; finished jobs are kept.

    Files written into ``out``: ``run.json`` (command, suite, grid, the machine's load at the start, skipped and
    rerun jobs), ``jobs/<job-id>/`` per job (``metrics.json``, ``predictions.csv``, ``history.csv``, the
    executed ``notebook.ipynb``, ``runner.log``, ``job.json`` last), ``results.csv`` (rewritten after every
    job) and the report. Before the first job it warns on stderr when the machine is already busy (its load
    average above its free cores); every row records ``load_average`` and ``free_cores`` at its job's start.
    """
    registry = registry or get_registry()
    grid, inherited = grid_suite(suite, models, datasets, seeds, params)
    timeout = grid.timeout if timeout is None else timeout
    out_dir = Path(out).expanduser().resolve() if out else default_out_dir()
    problems = [p for p in [timeout_problem(timeout), folder_problem(out_dir)] if p]
    job_executor: Executor[JobTask] | None = None  # the object; `executor` is its name
    try:
        job_executor = _create_executor(registry, executor, slots, dict(executor_options or {}))
    except UsageError as exc:
        problems.append(str(exc))
    trackers: dict[str, object] = {}
    try:
        trackers = create_trackers(registry, track, track_uri)
    except UsageError as exc:
        problems.append(str(exc))
    notebook_file = Path(notebook).resolve() if notebook else notebook_path()
    if not notebook_file.is_file():
        problems.append(f"notebook {notebook_file} does not exist")
    on_this_machine = executor in THIS_MACHINE_EXECUTORS
    job_list = preflight(grid, registry, data_dir=data_dir, on_this_machine=on_this_machine, problems=problems)

    env = job_env(registry, data_dir, (job.family for job in job_list))
    tasks = [JobTask(job, str(out_dir), str(notebook_file), timeout, env, log_output=log_output)
             for job in job_list]
    assert job_executor is not None  # preflight raised the problem of an executor that could not be made
    job_executor.check(tasks)  # e.g. local refuses to put several jobs on one GPU
    record = {
        "command": list(command) if command is not None else sys.argv, "imgbench": __version__,
        "suite": grid.to_dict(), "executor": executor, "executor_options": dict(executor_options or {}),
        "slots": slots, "timeout": timeout,
        "notebook": str(notebook_file), "env": env, "grid": [job.to_dict() for job in job_list],
    }
    if inherited is not None:
        record["inherited"] = inherited
        _say(inherited["message"], progress)
    # Everything is checked: from here on, write.
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with _exclusive(out_dir), Lifecycle(registry.pm, trackers, out_dir) as lifecycle:
            return _run(tasks, job_executor, out_dir, record, report=report, progress=progress, lifecycle=lifecycle,
                        on_this_machine=on_this_machine)
    except OSError as exc:
        failure = write_failure(exc, out_dir, job_list)
        if failure is None:
            raise
        raise failure from exc


def _say(message: str, progress: bool) -> None:
    if progress:
        print(wrap(message), file=sys.stderr, flush=True)


def _resume(tasks: list[JobTask], out_dir: Path) -> tuple[list[str], dict[str, str]]:
    """The jobs resume skips, and those whose record claimed success but cannot be trusted (job id -> why);
    the latter lose their ``job.json``, so nothing counts them as finished before they run again."""
    skipped, rerun = [], {}
    for task in tasks:
        found = check_finished(out_dir, task.job)
        if found.skip:
            skipped.append(task.job.job_id)
        elif found.damaged:
            rerun[task.job.job_id] = found.damaged
            forget_record(out_dir, task.job)
    return skipped, rerun


def _run(tasks: list[JobTask], executor: Executor[JobTask], out_dir: Path, record: dict[str, Any], *, report: bool,
         progress: bool, lifecycle: Lifecycle, on_this_machine: bool) -> GridResult:
    job_list = [task.job for task in tasks]
    skipped, rerun = _resume(tasks, out_dir)
    todo = [task for task in tasks if task.job.job_id not in skipped]
    with closing(executor):  # once the report is built: the local executor's fork servers give its kernel
        executor.prepare(todo)  # e.g. the first kernels' imports start now, beside what follows
        if on_this_machine:  # elsewhere (a cluster) each job's own row says how busy its machine was
            load = measure_load()  # what prepare started is ours, and left out
            record["load_at_start"] = load.to_dict()
            if load.overloaded:
                _say(load.warning(), progress)
        record.update(started_at=_now(), skipped=skipped, rerun=rerun)
        grid = lifecycle.grid_started(job_list, skipped, record)
        record.update(lifecycle.run_record())
        atomic_write_json(out_dir / schema.RUN_JSON, record)
        write_results(out_dir, job_list)
        watch = FolderWatch(out_dir)

        bar = GridProgress(len(tasks), skipped=len(skipped), enabled=progress, slots=record["slots"], rerun=rerun)

        finished: list[str] = []

        def on_result(task: JobTask, row: dict[str, Any]) -> None:
            finished.append(task.job.job_id)
            # a vanished folder must not be silently recreated by the next write,
            # nor a full disk meet the next job
            watch.check(job_list, more_to_run=len(finished) < len(todo))
            write_results(out_dir, job_list)
            bar.finished(row)
            lifecycle.job_finished(task.job, row)

        try:
            executor.run(todo, on_result, on_start=bar.started)
        except KeyboardInterrupt:
            write_results(out_dir, job_list)  # a job may have finished as the run was interrupted
            raise
        finally:
            bar.close()

        watch.check(job_list, more_to_run=False)
        rows = [found["row"] for job in job_list if (found := read_record(out_dir, job)) is not None]
        result = GridResult(out_dir, rows, skipped=len(skipped), jobs=job_list, rerun=rerun)
        if report:
            result.report, result.report_error = _build_report(out_dir)
    lifecycle.grid_finished(grid, result)
    record.update(finished_at=_now(), statuses=dict(Counter(row["status"] for row in rows)),
                  report=str(result.report or ""), report_error=result.report_error, **lifecycle.run_record())
    atomic_write_json(out_dir / schema.RUN_JSON, record)
    return result


def _build_report(out_dir: Path) -> tuple[Path | None, str]:
    """The report, and why there is none; its kernel forked from the grid's fork server when one is up."""
    try:
        from imgbench.report import build_report  # pandas, seaborn, Jupyter: only when a report is built

        return Path(build_report(out_dir, fork_server=forkserver.SERVERS.running())), ""
    except Exception as exc:  # the results are already on disk; a broken report must not lose them
        return None, f"{type(exc).__name__}: {exc}"


@contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    """One launcher per output folder at a time (the OS drops the lock if the launcher is killed)."""
    lock = FileLock(out_dir / LOCK_FILE)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UsageError(f"another imgbench run is writing to {out_dir}; wait for it or choose another --out") from None
    try:
        yield
    finally:
        lock.release()


def job_env(registry: "Registry", data_dir: str | os.PathLike | None = None,
            families: Iterable[str] = ()) -> dict[str, str]:
    """What every job's kernel must see to find the same plugins, data and cache as this process, and what its
    fork server imports ahead of it: the frameworks of the grid's model ``families``."""
    return {
        PLUGINS_DIR_ENV: os.pathsep.join(str(Path(d).resolve()) for d in registry.plugin_dirs),
        BLOCK_ENV: ",".join(registry.blocked),
        **DataFolders.resolve(data_dir).env(),
        forkserver.PRELOAD_ENV: ",".join(frameworks.of_grid(families)),
    }


def grid_suite(suite: Suite | str | os.PathLike | None, models: Iterable[str] = (), datasets: Iterable[str] = (),
               seeds: Iterable[int] | str | None = None, params: Mapping[str, Any] | None = None,
               ) -> tuple[Suite, dict[str, Any] | None]:
    """The suite with the options applied, and what it inherited from the default suite (None: nothing).

    -m/-d without a suite inherit the default suite's parameters; the suite ``none`` is no suite at all.
    """
    models, datasets = tuple(models), tuple(datasets)
    if isinstance(suite, Suite):
        base = suite
    elif suite is not None and str(suite) == NO_SUITE:
        base = Suite(source=NO_SUITE)
    else:
        base = load_suite(suite_path(None if suite is None else os.fspath(suite)))
    inherited = inherited_settings(base, models, datasets) if suite is None and (models or datasets) else None
    if inherited is not None:
        base = replace(base, label=f"the default suite {inherited['suite']!r} ({base.source}, inherited: no suite "
                                   f"was given)")
    return with_options(base, models, datasets, seeds, params), inherited


def inherited_settings(base: Suite, models: Iterable[str] = (), datasets: Iterable[str] = ()) -> dict[str, Any]:
    """What -m/-d without a suite take from the default suite, and the sentence that tells the user so."""
    settings = [f"{key}={value}" for key, value in base.params.items()]
    settings += [f"{kind} {', '.join(names)}" for kind, given, names in
                 (("models", models, base.models), ("datasets", datasets, base.datasets)) if not list(given)]
    settings += [f"[overrides.{name}] " + ", ".join(f"{k}={v}" for k, v in table.items())
                 for name, table in base.overrides.items()]
    if base.timeout is not None:
        settings.append(f"timeout={base.timeout:g} s")
    name = Path(base.source).stem
    message = (f"imgbench run: no suite given, so this grid inherits the parameters of the default suite {name!r} "
               f"({'; '.join(settings) or 'none'}); pass the suite `{NO_SUITE}` for the datasets' full "
               f"default recipes (`imgbench params DATASET` lists them)")
    return {"suite": name, "source": base.source, "params": dict(base.params),
            "overrides": {k: dict(v) for k, v in base.overrides.items()}, "timeout": base.timeout,
            "message": message}


def default_out_dir() -> Path:
    stamp = datetime.now().strftime(TIMESTAMP_FORMAT)
    candidate = Path.cwd() / RESULTS_ROOT / stamp
    suffix = 1
    while candidate.exists():
        suffix += 1
        candidate = Path.cwd() / RESULTS_ROOT / f"{stamp}-{suffix}"
    return candidate


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
