"""Executors: how the jobs of a grid are run. ``local`` is built in; others (Dask, ...) come from plugins.

A plugin returns ``ExecutorSpec(name, create, description)`` from its ``imgbench_executors`` hook;
``imgbench run --executor NAME --jobs N`` calls ``create(slots=N)``, then the executor's ``check(tasks)``,
``prepare(tasks)`` and, once, its ``run(tasks, on_result, on_start=None)``. The contract, what each is given
and must do, is :class:`imgbench.specs.Executor`; here its tasks are :class:`imgbench.runner.execute.JobTask`.

An executor may start a slot's next job while the running one finishes: ``execute_job``'s ``on_untimed`` says
when the running job's timed windows are over, and :mod:`imgbench.engine.handoff` makes the next job wait,
before it first uses the device, until the previous one is recorded (``local`` does this).
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from imgbench import forkserver
from imgbench.engine.handoff import START_AFTER_ENV
from imgbench.engine.threads import thread_env
from imgbench.errors import UsageError
from imgbench.hookspecs import hookimpl
from imgbench.runner.execute import execute_job, start_kernel_server
from imgbench.specs import Executor, ExecutorSpec

if TYPE_CHECKING:  # pragma: no cover
    from imgbench.runner.execute import JobTask

NVIDIA_SMI_TIMEOUT_S = 10

OnResult = Callable[["JobTask", dict[str, Any]], None]
OnStart = Callable[["JobTask"], None]


def visible_gpus() -> list[str]:
    """The GPU ids jobs may use: ``CUDA_VISIBLE_DEVICES`` when set, else what ``nvidia-smi`` lists."""
    declared = os.environ.get("CUDA_VISIBLE_DEVICES")
    if declared is not None:
        return [d.strip() for d in declared.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listed = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in listed.stdout.splitlines() if line.strip()]


def job_device(task: JobTask) -> str:
    return task.job.recipe.device


def wants_gpu(device: str, gpus_here: bool) -> bool:
    """Whether a job will compute on a GPU: ``device=cuda*``, or ``auto`` where GPUs are present."""
    return device.startswith("cuda") or (device == "auto" and gpus_here)


def check_device_indices(tasks: Sequence[JobTask]) -> None:
    """Where each job sees only its slot's GPU (as cuda:0), ``device=cuda:N`` with N >= 1 names no GPU."""
    for task in tasks:
        device = job_device(task)
        if device.startswith("cuda:") and device != "cuda:0":
            raise UsageError(f"job {task.job.job_id} asks for device={device!r}, but each job slot sees only its "
                             f"own GPU, as cuda:0 (CUDA_VISIBLE_DEVICES); use device=cuda (each job gets the GPU "
                             f"of its slot), or --jobs 1 to choose a GPU by its index")


class LocalExecutor(Executor["JobTask"]):
    """Runs ``jobs`` jobs at a time on this machine, each in its own process and kernel.

    CPU cores are shared equally: each job gets cores // (jobs at once) threads unless its recipe sets
    ``threads``. With several GPUs and several slots, slot ``i`` sees only GPU ``i mod #GPUs``
    (``CUDA_VISIBLE_DEVICES``), where it is ``cuda:0``. A grid of GPU jobs with more slots than GPUs is refused:
    jobs sharing a GPU slow each other down, and every speed figure would be contaminated.

    A slot starts its next job as soon as the running one's timed windows are over, so that the next job's
    process, kernel, imports and data load run while the previous one tests its model, draws its figures,
    writes its files and shuts down; the next job waits for the previous one's record before it touches the device
    (:mod:`imgbench.engine.handoff`).
    """

    def __init__(self, slots: int = 1, gpus: Sequence[str] | None = None) -> None:
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise UsageError(f"--jobs must be 1 or more, got {slots!r}")
        self.slots = slots
        self.gpus = visible_gpus() if gpus is None else list(gpus)
        self.prepared = False  # by the runner, which then closes: the fork servers outlive run for the report

    @property
    def pins_gpus(self) -> bool:
        return self.slots > 1 and len(self.gpus) > 1

    def slot_env(self, slot: int) -> dict[str, str]:
        if self.pins_gpus:
            return {"CUDA_VISIBLE_DEVICES": self.gpus[slot % len(self.gpus)]}
        return {}

    def check(self, tasks: Sequence[JobTask]) -> None:
        """Refuse GPU jobs that would share a GPU, or name a GPU index their slot cannot see."""
        gpu_jobs = [task for task in tasks if wants_gpu(job_device(task), bool(self.gpus))]
        at_once = min(self.slots, len(tasks))
        if gpu_jobs and self.gpus and at_once > len(self.gpus):
            raise UsageError(f"--jobs {self.slots} would run {at_once} jobs at once on {len(self.gpus)} GPU(s) "
                             f"({len(gpu_jobs)} jobs use a GPU, first: {gpu_jobs[0].job.job_id}); jobs sharing a "
                             f"GPU slow each other down and contaminate every speed figure: use --jobs "
                             f"{len(self.gpus)} (one job per GPU), or device=cpu")
        if gpu_jobs and self.pins_gpus:
            check_device_indices(gpu_jobs)

    def job_env(self, task: JobTask, slot: int, at_once: int) -> dict[str, str]:
        """What ``execute_job`` adds to the environment of ``task`` run in ``slot``, ``at_once`` jobs at a time."""
        return {**self.slot_env(slot), **thread_env(task.job.recipe.threads, at_once)}

    def prepare(self, tasks: Sequence[JobTask]) -> None:
        """Start the fork servers of the slots' first jobs: the frameworks import while the launcher prepares.
        They stay up until :meth:`close`, so that the report's kernel is forked from them too."""
        self.prepared = True
        at_once = min(self.slots, len(tasks))
        for slot, task in enumerate(tasks[:at_once]):
            start_kernel_server(task, self.job_env(task, slot, at_once))

    def close(self) -> None:
        """Stop the fork servers: the grid and its report are done."""
        forkserver.SERVERS.close()

    def run(self, tasks: Sequence[Any], on_result: OnResult, on_start: OnStart | None = None) -> None:
        self.check(tasks)
        at_once = min(self.slots, len(tasks))
        todo: queue.Queue[Any] = queue.Queue()
        for task in tasks:
            todo.put(task)
        finished: queue.Queue[tuple[Any, Any, Path]] = queue.Queue()  # (task, row or exception, its done mark)
        stop = threading.Event()
        marks = Path(tempfile.mkdtemp(prefix="imgbench-handoff-"))
        workers: list[threading.Thread] = []

        def run_one(task: Any, env: dict[str, str], untimed: threading.Event, done: Path) -> None:
            try:
                if on_start is not None:
                    on_start(task)
                finished.put((task, execute_job(task, extra_env=env, stop=stop, on_untimed=untimed.set), done))
            except BaseException as exc:  # handed to the caller's thread, which re-raises it
                finished.put((task, exc, done))
            finally:
                untimed.set()

        def slot(index: int) -> None:
            """Run the slot's jobs, each started once the one before it is past its timed windows."""
            before: Path | None = None
            while not stop.is_set():
                try:
                    task = todo.get_nowait()
                except queue.Empty:
                    return
                env = self.job_env(task, index, at_once)
                if before is not None:
                    env[START_AFTER_ENV] = str(before)
                before, untimed = marks / f"{task.job.job_id}.done", threading.Event()
                worker = threading.Thread(target=run_one, args=(task, env, untimed, before),
                                          name=f"imgbench-job-{index}")
                workers.append(worker)
                worker.start()
                untimed.wait()

        slots = [threading.Thread(target=slot, args=(index,), name=f"imgbench-slot-{index}")
                 for index in range(self.slots)]
        for thread in slots:
            thread.start()
        try:
            for _ in tasks:
                task, row, done = finished.get()
                if isinstance(row, BaseException):
                    raise row
                on_result(task, row)
                done.touch()  # the slot's next job may use the device now
        finally:
            stop.set()  # on an error or Ctrl-C, running jobs kill their kernels and queued ones never start
            for thread in slots:  # once they are done, no slot starts another worker
                thread.join()
            for thread in workers:
                thread.join()
            shutil.rmtree(marks, ignore_errors=True)
            if not self.prepared:  # run on its own: nothing else will close the servers it started
                self.close()


@hookimpl
def imgbench_executors() -> list[ExecutorSpec]:
    return [ExecutorSpec("local", LocalExecutor,
                         "this machine, --jobs N at a time, each job in its own kernel with its share of the "
                         "cores; GPU jobs need one GPU per slot")]
