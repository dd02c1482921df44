"""Executors: how the jobs of a grid are run. ``local`` is built in; others (Dask, ...) come from plugins.

The protocol
------------
A plugin returns ``ExecutorSpec(name, create, description)`` from its ``imgbench_executors`` hook.
``imgbench run --executor NAME --jobs N`` calls ``create(jobs=N)`` and then, once::

    executor.run(tasks, on_result, on_start=None)

- ``tasks`` is a list of :class:`imgbench.runner.execute.JobTask` (frozen, picklable plain data).
- Each task is run by calling :func:`imgbench.runner.execute.execute_job` ``(task, extra_env=..., stop=...)``
  wherever the executor likes: a thread, a process, a Dask worker. It needs nothing from the launcher;
  the worker needs the same Python environment, and either the task's ``out_dir`` on a shared filesystem
  or an executor that ships the job folder back (as ``dask`` does).
  ``extra_env`` is for per-slot settings such as ``CUDA_VISIBLE_DEVICES``. Job faults (a crashed kernel,
  a timeout, a raising cell) are rows with a status, never exceptions.
- ``on_result(task, row)`` must be called in the thread that called ``run``, once per finished job, as
  soon as it finishes (the runner rewrites results.csv there). ``on_start(task)``, when given, is called
  when a job really starts, from any thread.
- On KeyboardInterrupt the executor stops the running jobs (``stop`` event, or cancelling them) and
  re-raises; unfinished jobs simply have no ``job.json`` and run again on resume.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, Callable, Sequence

from imgbench.errors import UsageError
from imgbench.hookspecs import hookimpl
from imgbench.specs import ExecutorSpec

NVIDIA_SMI_TIMEOUT_S = 10

OnResult = Callable[[Any, dict], None]
OnStart = Callable[[Any], None]


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


class LocalExecutor:
    """Runs ``jobs`` jobs at a time on this machine, each in its own process and kernel.

    With several GPUs, slot ``i`` sees only GPU ``i mod #GPUs`` (``CUDA_VISIBLE_DEVICES``), so N jobs on N
    GPUs do not share one.
    """

    def __init__(self, jobs: int = 1, gpus: Sequence[str] | None = None) -> None:
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise UsageError(f"--jobs must be 1 or more, got {jobs!r}")
        self.jobs = jobs
        self.gpus = visible_gpus() if gpus is None else list(gpus)

    def slot_env(self, slot: int) -> dict[str, str]:
        if len(self.gpus) > 1:
            return {"CUDA_VISIBLE_DEVICES": self.gpus[slot % len(self.gpus)]}
        return {}

    def run(self, tasks: Sequence[Any], on_result: OnResult, on_start: OnStart | None = None) -> None:
        from imgbench.runner.execute import execute_job

        stop = threading.Event()
        free_slots: queue.Queue[int] = queue.Queue()
        for slot in range(self.jobs):
            free_slots.put(slot)

        def run_one(task: Any) -> dict:
            slot = free_slots.get()
            try:
                if on_start is not None:
                    on_start(task)
                return execute_job(task, extra_env=self.slot_env(slot), stop=stop)
            finally:
                free_slots.put(slot)

        with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="imgbench-job") as pool:
            futures = {pool.submit(run_one, task): task for task in tasks}
            try:
                for future in as_completed(futures):
                    on_result(futures[future], future.result())
            except BaseException:
                stop.set()  # running jobs kill their kernels; queued ones never start
                for future in futures:
                    future.cancel()
                raise


@hookimpl
def imgbench_executors() -> list[ExecutorSpec]:
    return [ExecutorSpec("local", LocalExecutor,
                         "this machine, --jobs N at a time, each job in its own kernel; one GPU per slot")]
