"""The machine's load when a job starts: free cores count only other processes' work, measured over a window."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from imgbench.runner import machine
from imgbench.runner.machine import MachineLoad, free_cores, measure_load

BURN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass\n"


def test_free_cores_are_the_cores_less_what_other_processes_kept_busy():
    assert free_cores(cores=4, busy_s=2.0, own_busy_s=0.0, wall_s=1.0) == 2.0
    assert free_cores(cores=4, busy_s=2.0, own_busy_s=1.5, wall_s=1.0) == 3.5  # our own jobs do not count
    assert free_cores(cores=2, busy_s=9.0, own_busy_s=0.0, wall_s=1.0) == 0.0  # never below none
    assert free_cores(cores=2, busy_s=0.1, own_busy_s=0.3, wall_s=1.0) == 2.0  # never above all


def test_a_machine_is_overloaded_when_its_load_exceeds_its_free_cores():
    assert MachineLoad(load_average=4.0, free_cores=0.1, cores=2).overloaded
    # a grid's own previous job leaves the load average high, but the cores are free again: not overloaded
    assert not MachineLoad(load_average=1.9, free_cores=2.0, cores=2).overloaded
    assert MachineLoad(1.0, 0.5, 2).columns() == {"load_average": 1.0, "free_cores": 0.5}


@pytest.mark.slow
def test_a_busy_process_counts_as_ours_in_our_tree_and_as_another_from_elsewhere(monkeypatch):
    """Within one window: the busy child's CPU time is in our tree's (so not taken from the free cores) and in
    the cores' busy time; measured from an unrelated root, the same child is another process's work."""
    busy = subprocess.Popen([sys.executable, "-c", BURN.format(seconds=30)])
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    windows: list[dict[str, float]] = []
    burnt: list[float] = []
    real_sleep = time.sleep

    def burn_of_child() -> float:
        times = psutil.Process(busy.pid).cpu_times()
        return times.user + times.system

    def sleep(seconds: float) -> None:
        before = burn_of_child()
        real_sleep(seconds)
        burnt.append(burn_of_child() - before)

    def free(cores: int, busy_s: float, own_busy_s: float, wall_s: float) -> float:
        windows.append({"busy_s": busy_s, "own_busy_s": own_busy_s, "wall_s": wall_s})
        return free_cores(cores, busy_s, own_busy_s, wall_s)

    time.sleep(0.5)  # past the children's start-up
    monkeypatch.setattr(time, "sleep", sleep)  # the module's window; the one time module is everyone's
    monkeypatch.setattr(machine, "free_cores", free)
    try:
        ours = measure_load(window_s=1.0)
        foreign = measure_load(window_s=1.0, root=idle.pid)
    finally:
        for child in (busy, idle):
            child.kill()
            child.wait()
    mine, other = windows
    assert min(burnt) > 0.1, "the busy child got no CPU; the machine is too loaded to tell"
    assert mine["own_busy_s"] == pytest.approx(burnt[0], abs=0.1)  # the child, and this idle test process
    assert mine["busy_s"] >= mine["own_busy_s"] - 0.05  # the cores' busy time holds our tree's
    assert other["own_busy_s"] == pytest.approx(0.0, abs=0.02)  # a sleeping root: the child is another's work
    assert other["busy_s"] >= burnt[1] - 0.05
    assert 0 <= foreign.free_cores <= foreign.cores and 0 <= ours.free_cores <= ours.cores
    assert ours.load_average == pytest.approx(os.getloadavg()[0], abs=2.0)


@pytest.mark.slow
def test_a_process_of_ours_that_starts_during_the_window_counts_as_ours(monkeypatch):
    """A job's load is measured while its processes start (a kernel appears mid-window): their CPU time is
    ours from their start, not another process's work."""
    started: list[subprocess.Popen] = []
    windows: list[dict[str, float]] = []
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:  # the window: a busy child of ours starts inside it
        started.append(subprocess.Popen([sys.executable, "-c", BURN.format(seconds=30)]))
        real_sleep(seconds)

    def free(cores: int, busy_s: float, own_busy_s: float, wall_s: float) -> float:
        windows.append({"own_busy_s": own_busy_s})
        return free_cores(cores, busy_s, own_busy_s, wall_s)

    monkeypatch.setattr(time, "sleep", sleep)
    monkeypatch.setattr(machine, "free_cores", free)
    try:
        measure_load(window_s=1.0)
        times = psutil.Process(started[0].pid).cpu_times()
    finally:
        started[0].kill()
        started[0].wait()
    burnt = times.user + times.system
    assert burnt > 0.1, "the busy child got no CPU; the machine is too loaded to tell"
    assert windows[0]["own_busy_s"] == pytest.approx(burnt, abs=0.15)  # all of it (and this idle test process)
