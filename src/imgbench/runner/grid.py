"""``run_grid``: check a whole grid, run the jobs that have not succeeded yet, keep results.csv current.

Order of events: load the suite and apply the options; the preflight (:mod:`.preflight`) checks every job, its
devices and that its data can be had, and names every problem at once (nothing is written before it passes);
write ``run.json``; skip jobs whose ``job.json`` says ok with the same configuration hash; run the rest through
the chosen executor, rewriting ``results.csv`` after every job; build the report.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

from filelock import FileLock, Timeout

from imgbench import __version__, schema
from imgbench.errors import UsageError
from imgbench.paths import DataFolders, atomic_write_json
from imgbench.plugins import BLOCK_ENV, PLUGINS_DIR_ENV
from imgbench.runner.execute import JobTask
from imgbench.runner.jobs import Job
from imgbench.runner.progress import GridProgress
from imgbench.resources import NO_SUITE, notebook_path, suite_path
from imgbench.runner.results import is_done, read_record, write_results
from imgbench.runner.preflight import preflight, timeout_problem
from imgbench.runner.suite import Suite, load_suite, with_options

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

    @property
    def results_csv(self) -> Path:
        return self.out_dir / schema.RESULTS_CSV

    @property
    def not_ok(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row["status"] != schema.Status.OK]

    @property
    def exit_code(self) -> int:
        return 1 if self.not_ok or self.report_error or len(self.rows) < len(self.jobs) else 0

    def frame(self):
        import pandas as pd

        return pd.read_csv(self.results_csv)

    def summary(self) -> str:
        counts = Counter(row["status"] for row in self.rows)
        lines = [f"{len(self.jobs)} jobs: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
                 + (f" ({self.skipped} skipped: already succeeded)" if self.skipped else "")]
        if self.not_ok:
            lines.append("did not succeed:")
            lines += [f"  {row['status']:<15} {row['job_id']}: {row['error'] or '(no message)'}" for row in self.not_ok]
        lines.append(f"results: {self.results_csv}")
        if self.report:
            lines.append(f"report: {self.report}")
        if self.report_error:
            lines.append(f"report failed: {self.report_error}; the results are intact, rebuild the report with "
                         f"`imgbench report {self.out_dir}`")
        return "\n".join(lines)


def _create_executor(registry: "Registry", name: str, jobs: int, options: dict[str, Any]) -> Executor[JobTask]:
    spec = registry.executor(name)
    return spec.create(jobs=jobs, **spec.resolve_options(options, os.environ))


def run_grid(
    suite: Suite | str | os.PathLike | None = None,
    *,
    models: Iterable[str] = (),
    datasets: Iterable[str] = (),
    seeds: Iterable[int] | str | None = None,
    params: Mapping[str, Any] | None = None,
    out: str | os.PathLike | None = None,
    jobs: int = 1,
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
) -> GridResult:
    """Run a benchmark grid; see the module docstring. Raises UsageError before anything runs on bad input.

    ``suite`` is a :class:`Suite`, a TOML path or a shipped suite name (default ``quick``; ``"none"``: no
    suite, the datasets' own default recipes); ``models``, ``datasets`` and ``seeds`` replace the suite's,
    ``params`` go on top of its parameters. ``log_output`` streams every job's cell output to this process's
    stderr, each line prefixed with the job id.
    """
    from imgbench.registry import get_registry

    registry = registry or get_registry()
    grid, inherited = grid_suite(suite, models, datasets, seeds, params)
    timeout = grid.timeout if timeout is None else timeout
    problems = [p for p in [timeout_problem(timeout)] if p]
    runner: Executor[JobTask] | None = None
    try:
        runner = _create_executor(registry, executor, jobs, dict(executor_options or {}))
    except UsageError as exc:
        problems.append(str(exc))
    notebook_file = Path(notebook).resolve() if notebook else notebook_path()
    if not notebook_file.is_file():
        problems.append(f"notebook {notebook_file} does not exist")
    job_list = preflight(grid, registry, data_dir=data_dir, on_this_machine=executor in THIS_MACHINE_EXECUTORS,
                         problems=problems)
    out_dir = Path(out).expanduser().resolve() if out else default_out_dir()

    env = job_env(registry, data_dir)
    tasks = [JobTask(job, str(out_dir), str(notebook_file), timeout, env, log_output=log_output)
             for job in job_list]
    assert runner is not None  # preflight raised the problem of an executor that could not be made
    runner.check(tasks)  # e.g. local refuses to put several jobs on one GPU
    record = {
        "command": list(command) if command is not None else sys.argv, "imgbench": __version__,
        "suite": grid.to_dict(), "executor": executor, "executor_options": dict(executor_options or {}),
        "jobs": jobs, "timeout": timeout,
        "notebook": str(notebook_file), "env": env, "grid": [job.to_dict() for job in job_list],
    }
    if inherited is not None:
        record["inherited"] = inherited
        if progress:
            print(inherited["message"], file=sys.stderr, flush=True)
    # Everything is checked: from here on, write.
    out_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(out_dir):
        return _run(tasks, runner, out_dir, record, report=report, progress=progress)


def _run(tasks: list[JobTask], runner: Executor[JobTask], out_dir: Path, record: dict[str, Any], *, report: bool,
         progress: bool) -> GridResult:
    job_list = [task.job for task in tasks]
    skipped = [task.job.job_id for task in tasks if is_done(out_dir, task.job)]
    todo = [task for task in tasks if task.job.job_id not in skipped]
    record.update(started_at=_now(), skipped=skipped)
    atomic_write_json(out_dir / schema.RUN_JSON, record)
    write_results(out_dir, job_list)

    bar = GridProgress(len(tasks), skipped=len(skipped), enabled=progress, slots=record["jobs"])

    def on_result(task: JobTask, row: dict[str, Any]) -> None:
        write_results(out_dir, job_list)
        bar.finished(row)

    try:
        runner.run(todo, on_result, on_start=bar.started)
    finally:
        bar.close()
        write_results(out_dir, job_list)

    rows = [found["row"] for job in job_list if (found := read_record(out_dir, job)) is not None]
    result = GridResult(out_dir, rows, skipped=len(skipped), jobs=job_list)
    if report:
        try:
            from imgbench.report import build_report

            result.report = Path(build_report(out_dir))
        except Exception as exc:  # the results are already on disk; a broken report must not lose them
            result.report_error = f"{type(exc).__name__}: {exc}"
    record.update(finished_at=_now(), statuses=dict(Counter(row["status"] for row in rows)),
                  report=str(result.report or ""), report_error=result.report_error)
    atomic_write_json(out_dir / schema.RUN_JSON, record)
    return result


@contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    """One runner per output folder at a time (the OS drops the lock if the runner is killed)."""
    lock = FileLock(out_dir / LOCK_FILE)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UsageError(f"another imgbench run is writing to {out_dir}; wait for it or choose another --out") from None
    try:
        yield
    finally:
        lock.release()


def job_env(registry: "Registry", data_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """What every job's kernel must see to find the same plugins, data and cache as this process."""
    return {
        PLUGINS_DIR_ENV: os.pathsep.join(str(Path(d).resolve()) for d in registry.plugin_dirs),
        BLOCK_ENV: ",".join(registry.blocked),
        **DataFolders.resolve(data_dir).env(),
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
        base = load_suite(suite_path(suite))
    inherited = inherited_settings(base, models, datasets) if suite is None and (models or datasets) else None
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
