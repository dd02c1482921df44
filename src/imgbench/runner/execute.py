"""Running one job: a child process executes the benchmark notebook; its faults become statuses.

This is the supervisor's side; the child is :mod:`imgbench.jobrecord.child`. :func:`execute_job` is a plain
function of a picklable :class:`JobTask`: it needs nothing from the process that launched the grid, so an
executor may call it in a thread, another process or on another machine that shares the output folder. It

1. clears the job folder (what an unfinished earlier attempt left is never trusted),
2. starts ``python -m imgbench.jobrecord.child REQUEST PID`` in its own session with the job folder as working
   directory; that child runs papermill with a kernel of this very Python, forked by the fork server for the
   job's environment (:mod:`imgbench.forkserver`, started by the executor's ``prepare`` or on first use),
3. waits up to the timeout, then kills the child and its kernel (and removes the kernel's socket folder),
4. classifies the outcome: the engine's status from ``metrics.json`` (ok, diverged, oom), or ``failed`` (a
   cell raised), ``crashed`` (the kernel or the child died), ``timeout``, ``missing_metrics`` (the notebook
   finished without writing metrics.json),
5. completes metrics.json's ``phases`` with the whole job as it saw it, from launch to exit
   (:func:`imgbench.engine.phases.launcher_breakdown`): they add up to the job's ``duration_s``,
6. writes ``job.json`` last and atomically, and returns the results.csv row.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import psutil
from tqdm import tqdm

from imgbench import schema
from imgbench import forkserver
from imgbench.engine.handoff import PER_JOB_ENV, UNTIMED_ENV
from imgbench.engine.phases import JobTimes, launcher_breakdown, notebook_cells
from imgbench.schema import Status
from imgbench.paths import atomic_write_json
from imgbench.runner.jobs import Job
from imgbench.runner.machine import measure_load
from imgbench.runner.results import make_row, write_record

CHILD_MODULE = "imgbench.jobrecord.child"  # started by name: it imports this module, never the reverse
POLL_S = 0.2  # how often the supervisor checks the child, and the child checks its parent
KILL_WAIT_S = 10  # for killed processes to go, and for a dead kernel's exit status
CELL_LINE_CHARS = 80  # of the running cell's first line, in a crashed job's error
UNTIMED_MARK = ".untimed"  # in the job folder while the job runs: the engine's timed windows are over


class JobCancelled(Exception):
    """The launcher asked to stop (Ctrl-C): the job was killed and left unfinished, to rerun on resume."""


@dataclass(frozen=True)
class JobTask:
    """Everything needed to run one job, as plain data."""

    job: Job
    out_dir: str  # absolute path of the grid folder (OUT)
    notebook: str  # absolute path of the parameterised notebook
    timeout: float | None = None  # seconds for the whole job, kernel start included
    env: Mapping[str, str] = field(default_factory=dict)  # added to the job's environment
    log_output: bool = False  # stream the cells' output to the launcher's stderr (imgbench run --log-output)

    @property
    def job_dir(self) -> Path:
        return schema.job_dir(self.out_dir, self.job.job_id)

    @property
    def parameters(self) -> dict[str, Any]:
        return {**self.job.parameters, "out_dir": str(self.job_dir)}

    def to_dict(self) -> dict[str, Any]:
        return {"job": self.job.to_dict(), "out_dir": self.out_dir, "notebook": self.notebook,
                "timeout": self.timeout, "env": dict(self.env), "log_output": self.log_output}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "JobTask":
        return cls(Job.from_dict(data["job"]), data["out_dir"], data["notebook"], data["timeout"], data["env"],
                   log_output=bool(data.get("log_output", False)))


def execute_job(task: JobTask, *, extra_env: Mapping[str, str] | None = None,
                stop: threading.Event | None = None, on_untimed: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run one job into ``OUT/jobs/<job-id>/`` and return its results.csv row (also saved in job.json).

    ``extra_env`` is for the executor's slot (``CUDA_VISIBLE_DEVICES``); setting ``stop`` kills the job and
    raises :class:`JobCancelled`. ``on_untimed`` is called once, as soon as the job's engine has marked its
    timed windows over (it still tests, the notebook still draws) or the job process has ended: the executor
    may start the slot's next job then (:mod:`imgbench.engine.handoff`).
    """
    job_dir = task.job_dir
    if job_dir.exists():
        shutil.rmtree(job_dir)
    job_dir.mkdir(parents=True)
    atomic_write_json(job_dir / schema.REQUEST_JSON, task.to_dict())
    untimed = job_dir / UNTIMED_MARK
    env = {**job_process_env(task, extra_env), UNTIMED_ENV: str(untimed)}
    started, launched = time.monotonic(), time.time()
    if forkserver.enabled():  # the kernel is forked with the frameworks imported (the first job waits for them)
        try:
            env[forkserver.ADDRESS_ENV] = forkserver.SERVERS.address(env, PER_JOB_ENV)
        except RuntimeError as exc:
            print(f"imgbench: {exc}; the job's kernel starts fresh", file=sys.stderr)
    with open(job_dir / schema.RUNNER_LOG, "wb") as log:
        # our pid goes along: read from os.getppid() after the child's slow imports, a supervisor killed in
        # the meantime would already be gone, and the child would never notice it was orphaned
        command = [sys.executable, "-m", CHILD_MODULE, str(job_dir / schema.REQUEST_JSON),
                   str(os.getpid())]
        child = subprocess.Popen(command,
                                 cwd=job_dir, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)  # Ctrl-C in the terminal goes to the launcher only
        # while the job starts: its processes are ours and left out, so this is the machine as the job finds it
        load = measure_load()
        watch = Watch(LogForwarder(job_dir / schema.RUNNER_LOG, task.job.job_id) if task.log_output else None,
                      untimed, on_untimed)
        ended = _wait(child, task.timeout, stop, watch)
    duration = time.monotonic() - started
    untimed.unlink(missing_ok=True)
    if ended == "stopped":
        raise JobCancelled(task.job.job_id)
    status, error, metrics = _classify(task, ended, child.returncode)
    if metrics is not None:
        metrics = record_phases(job_dir, metrics, launched, launched + duration)
    row = make_row(task.job, status=status, error=error, metrics=metrics, duration_s=duration,
                   notebook=schema.job_file(task.job.job_id, schema.NOTEBOOK), load=load.columns())
    write_record(job_dir, task.job, row)
    return row


def job_process_env(task: JobTask, extra_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the job's process and kernel (the per-job handoff marks aside)."""
    return {**os.environ, "PYTHONFAULTHANDLER": "1", "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "torch"),
            **task.env, **(extra_env or {})}


def start_kernel_server(task: JobTask, extra_env: Mapping[str, str] | None = None) -> None:
    """Start, without waiting for it, the fork server that ``execute_job(task, extra_env=extra_env)`` will ask
    for its kernel: its imports then run while the launcher prepares the grid."""
    if forkserver.enabled():
        forkserver.SERVERS.start(job_process_env(task, extra_env), PER_JOB_ENV)


class LogForwarder:
    """Copies the new complete lines of a job's runner.log to this process's stderr as ``[job-id] line``.

    The child logs every cell output there (papermill ``log_output``); of a line redrawn with carriage
    returns (a text progress bar) only its last frame is forwarded.
    """

    def __init__(self, path: Path, job_id: str) -> None:
        self.path, self.prefix, self.offset, self.partial = path, f"[{job_id}] ", 0, b""

    def pump(self, final: bool = False) -> None:
        try:
            with open(self.path, "rb") as log:
                log.seek(self.offset)
                chunk = log.read()
        except OSError:
            return
        self.offset += len(chunk)
        *lines, self.partial = (self.partial + chunk).split(b"\n")
        if final and self.partial:
            lines, self.partial = [*lines, self.partial], b""
        for line in lines:
            frames = [f for f in line.decode("utf-8", "replace").split("\r") if f.strip()]
            if frames:  # tqdm.write prints above the grid's progress bar instead of through it
                tqdm.write(self.prefix + frames[-1].rstrip(), file=sys.stderr)


@dataclass
class Watch:
    """What the supervisor does while the child runs: forward its log, and say when the engine has marked its
    timed windows over."""

    forward: LogForwarder | None = None
    untimed_mark: Path | None = None
    on_untimed: Callable[[], None] | None = None

    def poll(self) -> None:
        if self.forward is not None:
            self.forward.pump()
        if self.on_untimed is not None and self.untimed_mark is not None and self.untimed_mark.exists():
            self.untimed()

    def untimed(self) -> None:
        if self.on_untimed is not None:
            callback, self.on_untimed = self.on_untimed, None
            callback()


def _wait(child: subprocess.Popen, timeout: float | None, stop: threading.Event | None, watch: Watch) -> str:
    deadline = time.monotonic() + timeout if timeout else None
    try:
        return _poll(child, deadline, stop, watch)
    finally:
        if watch.forward is not None:
            watch.forward.pump(final=True)
        watch.untimed()


def _poll(child: subprocess.Popen, deadline: float | None, stop: threading.Event | None, watch: Watch) -> str:
    while child.poll() is None:
        watch.poll()
        if stop is not None and stop.is_set():
            _kill_tree(child)
            return "stopped"
        if deadline is not None and time.monotonic() > deadline:
            _kill_tree(child)
            return "timeout"
        try:
            child.wait(POLL_S)  # returns as soon as the child exits
        except subprocess.TimeoutExpired:
            pass
    return "exited"


def _kill_tree(child: subprocess.Popen) -> None:
    """Kill the papermill child and everything it started (the kernel, its workers)."""
    try:
        processes = [psutil.Process(child.pid), *psutil.Process(child.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        processes = []
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(processes, timeout=KILL_WAIT_S)
    child.wait()
    from imgbench.kernel import remove_socket_dirs  # jupyter_client: only once a job was killed

    remove_socket_dirs(child.pid)


def _classify(task: JobTask, ended: str, returncode: int | None) -> tuple[str, str, dict[str, Any] | None]:
    """(status, error, metrics) from how the child ended, what it recorded and what the notebook wrote."""
    job_dir = task.job_dir
    metrics = _read_json(job_dir / schema.METRICS_JSON)
    log = schema.job_file(task.job.job_id, schema.RUNNER_LOG)
    if ended == "timeout":
        return Status.TIMEOUT, f"ran longer than the {task.timeout:g} s timeout (--timeout) and was killed", metrics
    outcome = _read_json(job_dir / schema.OUTCOME_JSON)
    if outcome is None:
        running = while_running(job_dir / schema.NOTEBOOK)
        return Status.CRASHED, f"the job process ended with {exit_text(returncode)}{running} " \
                          f"before recording an outcome (see {log})", metrics
    if outcome["status"] == Status.FAILED:
        return Status.FAILED, outcome["error"], metrics
    if outcome["status"] == Status.CRASHED:
        return Status.CRASHED, f"{outcome['error']} (see {log})", metrics
    if metrics is None:
        return Status.MISSING_METRICS, f"the notebook finished without writing a readable {schema.METRICS_JSON}", None
    return str(metrics.get("status") or Status.MISSING_METRICS), str(metrics.get("error") or ""), metrics


def record_phases(job_dir: Path, metrics: dict[str, Any], launched: float, ended: float) -> dict[str, Any]:
    """metrics.json with ``phases`` covering the whole job, launch to exit, and ``wall`` (its start, end and
    seconds, wall-clock, beside the engine's ``device_from``), rewritten atomically; the engine's own phases
    come from the same file."""
    outcome = _read_json(job_dir / schema.OUTCOME_JSON) or {}
    times = JobTimes(launched, ended, outcome.get("notebook_started"), outcome.get("notebook_ended"),
                     notebook_cells(_read_json(job_dir / schema.NOTEBOOK) or {}))
    metrics = {**metrics, "phases": launcher_breakdown(times, metrics.get("phases") or {}),
               "wall": {**(metrics.get("wall") or {}), "started_at": launched, "ended_at": ended,
                        "seconds": ended - launched}}
    atomic_write_json(job_dir / schema.METRICS_JSON, metrics)
    return metrics


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def while_running(notebook: Path) -> str:
    """`` while running cell N (`first line`)``: the cell papermill last started, from the notebook it saves
    as each cell starts (request_save_on_cell_execute); '' when no cell had started."""
    cells = (_read_json(notebook) or {}).get("cells", [])
    started = [(index, cell) for index, cell in enumerate(cells)
               if cell.get("metadata", {}).get("papermill", {}).get("start_time")]
    if not started:
        return ""
    index, cell = started[-1]
    source = cell.get("source", "")
    lines = ("".join(source) if isinstance(source, list) else source).strip().splitlines()
    first = lines[0] if lines else ""
    return f" while running cell {index}" + (f" (`{first[:CELL_LINE_CHARS]}`)" if first else "")


def exit_text(returncode: int | None) -> str:
    """How a process ended, in words (``exit code 7``, ``signal SIGSEGV``): the job process or its kernel."""
    if returncode is None:
        return "an unknown status"
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else str(-returncode)
        hint = "; killed for memory?" if -returncode == signal.SIGKILL else ""
        return f"signal {name}{hint}"
    return f"exit code {returncode}"
