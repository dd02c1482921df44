"""Energy over timed windows, read from the hardware's own counters; never estimated.

- NVIDIA GPUs: NVML's total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, millijoules since the
  driver loaded; Volta and later), through ``nvidia-ml-py`` (the ``energy`` extra).
- CPUs: RAPL through ``/sys/class/powercap`` (the ``intel-rapl:N`` package zones, summed; AMD's RAPL appears
  there under the same name). ``energy_uj`` wraps at ``max_energy_range_uj``: each read folds the wrap in,
  so a window needs a read at least once per wrap period (hours at CPU power; :meth:`EnergyMeter.lap` is one).

Both count the whole device (the GPU, the CPU packages), whatever else runs on it. Where neither can be
read, a reading says why (``NO_COUNTER``) and holds no joules. NVML's counter updates about every 100 ms,
so a window shorter than ``MIN_WINDOW_S`` gives no figure either, with the reason.

At a timed window (the engine's training epochs, an inference measurement)::

    meter = energy_meter(device)       # once: picks the counter, or records why there is none
    meter.start()
    ...                                # the timed work
    reading = meter.stop()             # EnergyReading(joules or None, seconds, source, reason)
    reading.per_image(images)          # J/image, or None
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

MIN_WINDOW_S = 1.0  # NVML's counter updates about every 100 ms: shorter windows would be mostly quantisation
POWERCAP_ROOT = Path("/sys/class/powercap")
RAPL_PACKAGE = re.compile(r"intel-rapl:\d+")  # top-level zones only: their subzones (core, dram...) are inside
NO_COUNTER = "no energy counter on this machine"
NVML_EXTRA = "pip install 'imgbench[gpu]' (nvidia-ml-py)"
NVML = "nvml"
RAPL = "rapl"
MILLI, MICRO = 1e-3, 1e-6


@dataclass(frozen=True)
class EnergyReading:
    """Joules over one window, or None with the reason; ``source`` names the counter (``nvml``, ``rapl``)."""

    joules: float | None
    seconds: float
    source: str = ""
    reason: str = ""

    def per_image(self, images: float) -> float | None:
        return self.joules / images if self.joules is not None and images > 0 else None

    @property
    def watts(self) -> float | None:
        return self.joules / self.seconds if self.joules is not None and self.seconds > 0 else None

    def per_image_at(self, images_per_second: float | None) -> float | None:
        """J/image of work done at ``images_per_second`` over this window: its mean power over that rate."""
        watts = self.watts
        return watts / images_per_second if watts is not None and images_per_second else None


class Counter(Protocol):
    """A cumulative energy counter: ``read()`` gives joules since an arbitrary origin, never decreasing."""

    source: str
    description: str

    def read(self) -> float: ...


class EnergyMeter:
    """Start/lap/stop over one counter; without a counter every reading carries ``reason`` instead."""

    def __init__(self, counter: Counter | None, reason: str = "", *, clock: Callable[[], float] = time.perf_counter,
                 min_window_s: float = MIN_WINDOW_S) -> None:
        self.counter = counter
        self.reason = "" if counter is not None else (reason or NO_COUNTER)
        self.clock = clock
        self.min_window_s = min_window_s
        self._start: tuple[float, float] | None = None  # (clock, joules)

    @property
    def source(self) -> str:
        return self.counter.source if self.counter is not None else ""

    @property
    def description(self) -> str:
        return self.counter.description if self.counter is not None else self.reason

    def start(self) -> None:
        self._start = (self.clock(), self.counter.read() if self.counter is not None else 0.0)

    def lap(self) -> EnergyReading:
        """The reading since :meth:`start`, the meter still running (energy to a target accuracy)."""
        if self._start is None:
            raise RuntimeError("EnergyMeter.lap() or stop() before start()")
        began, joules_then = self._start
        seconds = self.clock() - began
        if self.counter is None:
            return EnergyReading(None, seconds, reason=self.reason)
        joules = self.counter.read() - joules_then
        if seconds < self.min_window_s:
            return EnergyReading(None, seconds, self.source,
                                 f"window of {seconds:.2f} s is shorter than the {self.min_window_s:g} s an energy "
                                 f"counter needs")
        return EnergyReading(joules, seconds, self.source)

    def stop(self) -> EnergyReading:
        reading = self.lap()
        self._start = None
        return reading


# -- NVIDIA GPUs: NVML ------------------------------------------------------------------------------------------
class NvmlCounter:
    """NVML's total-energy counter of one GPU (millijoules since the driver loaded)."""

    source = NVML

    def __init__(self, nvml: Any, handle: Any, name: str) -> None:
        self.nvml, self.handle = nvml, handle
        self.description = f"NVML total-energy counter of {name} (the whole GPU)"

    def read(self) -> float:
        return self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) * MILLI


def nvml_counter(index: int, uuid: str = "", nvml: Any = None) -> tuple[NvmlCounter | None, str]:
    """The counter of CUDA device ``index`` (found by ``uuid`` when given: NVML numbers every GPU, CUDA only the
    visible ones), or None and why not. ``nvml`` is the ``pynvml`` module unless a test passes a stand-in."""
    if nvml is None:
        try:
            import pynvml
        except ImportError:
            return None, f"nvidia-ml-py is not installed: {NVML_EXTRA}"
        nvml = pynvml
    try:
        nvml.nvmlInit()
        handle = _nvml_handle(nvml, index, uuid)
        name = nvml.nvmlDeviceGetName(handle)
        counter = NvmlCounter(nvml, handle, name.decode() if isinstance(name, bytes) else str(name))
        counter.read()  # NotSupported before Volta: known now, not at the first window
    except nvml.NVMLError as exc:
        return None, f"NVML has no energy counter for GPU {index}: {exc}"
    return counter, ""


def _nvml_handle(nvml: Any, index: int, uuid: str) -> Any:
    if uuid:
        try:
            return nvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}")
        except nvml.NVMLError:
            pass  # a UUID NVML spells otherwise: CUDA's own numbering is right without CUDA_VISIBLE_DEVICES
    return nvml.nvmlDeviceGetHandleByIndex(index)


# -- CPUs: RAPL through powercap ----------------------------------------------------------------------------------
class RaplCounter:
    """The sum of the RAPL package zones under ``root``, with each zone's wrap-around folded in at every read."""

    source = RAPL

    def __init__(self, zones: list[Path]) -> None:
        self.zones = zones
        self.ranges = [int((zone / "max_energy_range_uj").read_text()) for zone in zones]
        self.last = [self._raw(zone) for zone in zones]
        self.total_uj = 0
        names = ", ".join(_zone_name(zone) for zone in zones)
        self.description = f"RAPL energy counters of {names} under {zones[0].parent} (the whole CPU packages)"

    @staticmethod
    def _raw(zone: Path) -> int:
        return int((zone / "energy_uj").read_text())

    def read(self) -> float:
        for i, zone in enumerate(self.zones):
            now = self._raw(zone)
            step = now - self.last[i]
            self.total_uj += step if step >= 0 else step + self.ranges[i] + 1  # it wrapped past its range
            self.last[i] = now
        return self.total_uj * MICRO


def _zone_name(zone: Path) -> str:
    try:
        return (zone / "name").read_text().strip() or zone.name
    except OSError:
        return zone.name


def rapl_counter(root: Path = POWERCAP_ROOT) -> tuple[RaplCounter | None, str]:
    """The RAPL package counters under ``root``, or None and why not."""
    zones = sorted(p for p in root.glob("intel-rapl:*") if RAPL_PACKAGE.fullmatch(p.name)) if root.is_dir() else []
    if not zones:
        return None, f"{NO_COUNTER} (no NVIDIA GPU in use and no RAPL zone under {root})"
    try:
        return RaplCounter(zones), ""
    except PermissionError:
        return None, (f"the RAPL counters under {root} are readable only by root here (energy_uj is mode 0400 on "
                      f"kernels patched for CVE-2020-8694); make them readable to measure CPU energy")
    except (OSError, ValueError) as exc:
        return None, f"the RAPL counters under {root} cannot be read: {exc}"


def energy_meter(device: Any, *, nvml: Any = None, powercap: Path = POWERCAP_ROOT) -> EnergyMeter:
    """The meter for a torch device (or its name): NVML for CUDA, RAPL for the CPU, else one that says why not."""
    kind, _, index = str(device).partition(":")
    if kind == "cuda":
        position = int(index or 0)
        return EnergyMeter(*nvml_counter(position, _cuda_uuid(position), nvml))
    if kind == "cpu":
        return EnergyMeter(*rapl_counter(powercap))
    return EnergyMeter(None, f"{NO_COUNTER} for {kind} devices")


def _cuda_uuid(index: int) -> str:
    """The GPU's UUID as NVML spells it, when torch can tell (it knows only the visible GPUs' numbering)."""
    try:
        import torch

        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", "")
    except (ImportError, RuntimeError, AssertionError):
        return ""
    return str(uuid) if uuid else ""
