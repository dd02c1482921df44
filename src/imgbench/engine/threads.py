"""CPU threads per job: the jobs that run at once on one machine share its cores equally.

The executor knows how many jobs run at once (its slots on this machine, the *concurrency*) and puts the
share into each job's environment, where OpenMP, MKL and OpenBLAS read it when torch loads in the kernel;
``run_job`` then sets torch's own pools to the same count and records what was in force. Imports no
framework: the runner uses it too.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

# read by the native thread pools at load time, so they must be in the kernel's environment from its start
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
CONCURRENCY_ENV = "IMGBENCH_CONCURRENCY"  # jobs running at once on this machine, set by the executor


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def job_threads(requested: int, concurrency: int, cores: int | None = None) -> int:
    """``requested`` when set, else auto: cores // concurrency, at least 1."""
    if requested > 0:
        return requested
    return max(1, (cores if cores is not None else available_cores()) // max(1, concurrency))


def thread_env(requested: int, concurrency: int) -> dict[str, str]:
    """The environment a job's kernel needs for ``concurrency`` jobs at once and a ``threads`` recipe value."""
    threads = str(job_threads(requested, concurrency))
    return {CONCURRENCY_ENV: str(concurrency), **dict.fromkeys(THREAD_ENV_VARS, threads)}


def concurrency_from_env() -> int:
    """How many jobs the executor runs at once here (1 outside a grid, or when unset or unreadable)."""
    try:
        return max(1, int(os.environ.get(CONCURRENCY_ENV, "1")))
    except ValueError:
        return 1


@contextmanager
def threads_in_force(requested: int) -> Iterator[tuple[int, int]]:
    """Set torch's threads for one job; yields (threads torch really uses, concurrency). Restored afterwards."""
    import torch

    concurrency = concurrency_from_env()
    before = torch.get_num_threads()
    torch.set_num_threads(job_threads(requested, concurrency))
    try:
        torch.set_num_interop_threads(torch.get_num_threads())
    except RuntimeError:  # settable only before the process's first inter-op work (a fresh kernel's first job)
        pass
    try:
        yield torch.get_num_threads(), concurrency
    finally:
        torch.set_num_threads(before)
