"""How loaded the machine is when a job starts: its load average and the cores other processes keep busy.

The load average alone misleads: a grid's own previous job keeps it high for minutes after it ended, and it
counts waiting processes, not cores. So the free cores are measured over a short window instead: the CPU
time all the cores we may run on spent busy, less the CPU time this grid's own processes (this process and
everything it started: the other jobs running beside this one, their kernels) spent in the same window.
What is left is work of other processes, which a speed figure measured now competes with.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Iterable

import psutil

from imgbench.engine.threads import available_cores
from imgbench.terminal import plural

WINDOW_S = 0.5  # long enough to average out a scheduler tick, short beside a job's kernel start


@dataclass(frozen=True)
class MachineLoad:
    """``load_average`` (1 minute) and ``free_cores`` as results.csv records them, and the cores counted."""

    load_average: float
    free_cores: float
    cores: int

    @property
    def overloaded(self) -> bool:
        """More work queued than there are cores left to run it: speed figures measured now will be low."""
        return self.load_average > self.free_cores

    def columns(self) -> dict[str, float]:
        """The results.csv cells (``load_average``, ``free_cores``)."""
        return {"load_average": self.load_average, "free_cores": self.free_cores}

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def warning(self) -> str:
        """What ``imgbench run`` says before the first job when the machine is already loaded."""
        return (f"imgbench run: warning: this machine is busy before the first job: load average "
                f"{self.load_average:.1f} over the last minute, and other processes keep "
                f"{self.cores - self.free_cores:.1f} of its {plural(self.cores, 'core')} busy ({self.free_cores:.1f} "
                f"free). "
                f"Speed figures measured now will be low and noisy; each job records load_average and "
                f"free_cores beside them. Wait for a quiet machine for figures to compare.")


def free_cores(cores: int, busy_s: float, own_busy_s: float, wall_s: float) -> float:
    """Cores left when other processes kept ``busy_s - own_busy_s`` CPU-seconds busy over ``wall_s``."""
    others = max(busy_s - own_busy_s, 0.0) / wall_s if wall_s > 0 else 0.0
    return round(min(max(cores - others, 0.0), float(cores)), 2)


def measure_load(window_s: float = WINDOW_S, root: int | None = None) -> MachineLoad:
    """The load now. ``root`` is the process whose tree counts as this grid's own (default: this process)."""
    cpus = _our_cpus()
    root = root if root is not None else os.getpid()
    busy_before, own_before, start = _busy_s(cpus), _cpu_s(_tree(root)), time.monotonic()
    time.sleep(window_s)
    busy_after, own_after, wall = _busy_s(cpus), _cpu_s(_tree(root)), time.monotonic() - start
    # a process of ours that started during the window (a job's kernel) counts from its start
    own = sum(used - own_before.get(pid, 0.0) for pid, used in own_after.items())
    return MachineLoad(load_average=round(psutil.getloadavg()[0], 2),
                       free_cores=free_cores(len(cpus), busy_after - busy_before, own, wall), cores=len(cpus))


def _our_cpus() -> list[int]:
    """The CPU ids this process may run on (its affinity); all of them where affinity is unknown."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return list(range(available_cores()))


def _busy_s(cpus: Iterable[int]) -> float:
    """CPU-seconds these CPUs have spent neither idle nor waiting for I/O since boot."""
    per_cpu = psutil.cpu_times(percpu=True)
    total = 0.0
    for cpu in cpus:
        if cpu < len(per_cpu):
            times = per_cpu[cpu]._asdict()
            # as psutil's cpu_percent counts: Linux's guest time is already inside user and nice
            spent = sum(times.values()) - times.get("guest", 0.0) - times.get("guest_nice", 0.0)
            total += spent - times["idle"] - times.get("iowait", 0.0)
    return total


def _tree(root: int) -> list[psutil.Process]:
    try:
        process = psutil.Process(root)
        return [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _cpu_s(processes: Iterable[psutil.Process]) -> dict[int, float]:
    """CPU-seconds (user + system) each still-running process of ``processes`` has used."""
    used = {}
    for process in processes:
        try:
            times = process.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        used[process.pid] = times.user + times.system
    return used
