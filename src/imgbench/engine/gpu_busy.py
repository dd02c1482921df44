"""How busy the GPU was while a speed figure was timed: the share of the wall time it ran kernels.

A small model at a small batch keeps a fast GPU idle between kernels while the CPU launches the next ones:
its speed is the CPU's launch rate, and it jitters with everything else the CPU does. The busy share tells
the report so ("bound by the CPU launching kernels") instead of blaming noise.

The share comes from the driver's own utilisation samples (NVML's ``GPU_UTILIZATION_SAMPLES``: for each of
its sample periods, the percent of time one or more kernels ran, as ``nvidia-smi`` shows it), read after the
window from the driver's buffer: nothing polls during the timed window. The samples taken while a window ran
are those newer than the newest one when it started, whatever clock their time stamps count in.
Needs ``nvidia-ml-py`` (``pynvml``, the ``gpu`` extra); without it, or off CUDA, there is no busy share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import torch

PERCENT = 100.0
Samples = Sequence[tuple[int, float]]  # (time stamp, percent busy over the sample period ending then)


class BusyMeter:
    """The mean busy share of the driver's samples taken inside ``start``/``stop`` windows.

    ``read(since)`` returns the driver's samples newer than time stamp ``since`` (0: all it holds).
    """

    def __init__(self, read: Callable[[int], Samples]) -> None:
        self.read = read
        self.values: list[float] = []
        self._since: int | None = None

    def start(self) -> None:
        self._since = max((stamp for stamp, _ in self.read(0)), default=0)

    def stop(self) -> None:
        if self._since is not None:
            self.values += [value for _, value in self.read(self._since)]
            self._since = None

    def share(self) -> float | None:
        """Mean fraction of the windows' time the GPU ran kernels; None when no sample fell inside them."""
        return sum(self.values) / len(self.values) / PERCENT if self.values else None


def busy_meter(device: torch.device) -> BusyMeter | None:
    """A meter of ``device``'s utilisation samples; None off CUDA or without a working NVML."""
    if device.type != "cuda":
        return None
    try:
        import pynvml
        import torch

        handle = torch.cuda._get_pynvml_handler(device)  # NVML's index of this device, CUDA_VISIBLE_DEVICES applied
    except Exception:  # no nvidia-ml-py, no driver, an index NVML does not know: no busy share, no failure
        return None

    def read(since: int) -> Samples:
        try:
            _kind, samples = pynvml.nvmlDeviceGetSamples(handle, pynvml.NVML_GPU_UTILIZATION_SAMPLES, since)
        except pynvml.NVMLError:  # NVML_ERROR_NOT_FOUND: no sample newer than ``since``
            return []
        return [(int(sample.timeStamp), float(sample.sampleValue.uiVal)) for sample in samples]

    return BusyMeter(read)
