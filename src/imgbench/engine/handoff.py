"""A job that starts while the one before it finishes.

A job's untimed start (its process, kernel, imports and data) and the previous job's untimed end (its test,
figures, files and shutdown) can run at the same time; its timed windows cannot. So the engine marks the end
of its last timed window (:func:`mark_untimed`, the file named by ``UNTIMED_ENV``), the executor then starts
the slot's next job, and tells the new job, through ``START_AFTER_ENV``, a file that appears once the previous
job is recorded. The engine waits for that file (:func:`wait_for_previous_job`) before it first touches the
device: nothing of the previous job competes with its model build, compile, training or benchmarks.

Imports no framework: the executor uses it too.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

START_AFTER_ENV = "IMGBENCH_START_AFTER"  # a file whose existence means: the previous job is finished
UNTIMED_ENV = "IMGBENCH_UNTIMED_MARK"  # the file the engine creates when its last timed window is over
PER_JOB_ENV = (START_AFTER_ENV, UNTIMED_ENV)  # new for every job: not part of a fork server's environment
POLL_S = 0.01  # how often the waiting job looks for the file (a sleep: no CPU taken from the finishing job)


def wait_for_previous_job(poll_s: float = POLL_S) -> float:
    """Wait until the file named by ``START_AFTER_ENV`` exists (at once when unset); the seconds waited."""
    marker = os.environ.get(START_AFTER_ENV)
    if not marker:
        return 0.0
    start = time.perf_counter()
    path = Path(marker)
    while not path.exists():
        time.sleep(poll_s)
    return time.perf_counter() - start


def mark_untimed() -> None:
    """Say that this job's timed windows are over (when the executor asked, through ``UNTIMED_ENV``)."""
    marker = os.environ.get(UNTIMED_ENV)
    if marker:
        Path(marker).touch()
