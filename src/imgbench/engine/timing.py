"""Cost and speed: parameters, FLOPs, inference throughput, batch-1 latency, peak memory, steady-state
training throughput.

Every measurement warms up first and is timed by the device's own clock (:func:`device_clock`): CUDA events on
a GPU, so that a window's edges cost no host sync and its time is the GPU's; elsewhere the host's clock after
the device is synchronised. Each speed figure comes with its spread within the job, the relative interquartile
range (IQR / median) of the throughputs of its equal timed chunks, windows or samples: a figure is only as good
as that spread says. Inference chunks are added, as torch.utils.benchmark's ``adaptive_autorange`` adds
blocks, until the chunks' spread is within ``TARGET_REL_IQR`` or ``MAX_BENCH_FACTOR`` times ``bench_seconds``
have been timed. On a GPU each figure also says how busy the GPU was (:mod:`imgbench.engine.gpu_busy`).
"""

from __future__ import annotations

import time
from collections import Counter
from contextlib import AbstractContextManager
from typing import Any, Callable, Sequence

import numpy as np
import psutil
import torch

from imgbench.engine import gpu_busy
from imgbench.engine.gpu_busy import BusyMeter

WARMUP_ITERATIONS = 2
WARMUP_SHARE = 0.2  # warm-up lasts at least this share of bench_seconds
MIN_CHUNKS = 5  # timed chunks per throughput figure, however slow the model (its spread needs several)
TARGET_REL_IQR = 0.05  # inference chunks are added until their spread is within this...
MAX_BENCH_FACTOR = 3.0  # ...or until this many times bench_seconds have been timed
CHUNK_SHARE = 0.1  # every inference chunk holds as many batches as fill this share of bench_seconds
MIN_LATENCY_SAMPLES = 10
MAX_LATENCY_SAMPLES = 10_000
LATENCY_PERCENTILES = (50, 95, 99)
SYNC_WINDOW_STEPS = 10  # training steps per timed window on an accelerator
MIN_SPREAD_SAMPLES = 4  # fewer timed chunks, windows or samples than this give no spread figure
MIB = 2**20
PRECISION_SHARE = 0.9  # a model "ran in" a dtype when at least this share of its activations were in it
DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def count_parameters(model: torch.nn.Module) -> int:
    """Trainable parameters (Keras moving statistics are non-trainable parameters and do not count)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_flops(model: torch.nn.Module, image: torch.Tensor, autocast: Callable[[], AbstractContextManager]) -> int:
    """FLOPs of one forward pass on one image, as torch's FlopCounterMode counts them (2 per multiply-add).

    Attention runs through the math SDPA kernel here: the counter has formulas for the CUDA flash and
    memory-efficient kernels but none for the CPU's fused one, so a ViT's count would depend on the device.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), autocast(), sdpa_kernel(SDPBackend.MATH), counter:
        model(image)
    return int(counter.get_total_flops())


def activation_dtypes(model: torch.nn.Module, image: torch.Tensor,
                      autocast: Callable[[], AbstractContextManager]) -> dict[str, float]:
    """Share of the floating-point elements that one eval forward pass writes, per dtype (views excluded).

    The precision a model really ran in: under autocast a model whose layers cast back to float32 (Keras'
    float32 policy) computes its matmuls in bf16 but keeps most activations in float32.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class Tally(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.elements: Counter[torch.dtype] = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if not func.is_view:
                for value in tree_leaves(out):
                    if isinstance(value, torch.Tensor) and value.is_floating_point():
                        self.elements[value.dtype] += value.numel()
            return out

    model.eval()
    tally = Tally()
    with torch.no_grad(), autocast(), tally:
        model(image)
    total = sum(tally.elements.values())
    return {DTYPE_NAMES.get(dtype, str(dtype)): count / total for dtype, count in tally.elements.most_common()}


def ran_in(shares: dict[str, float]) -> str:
    """The precision a model ran in, from its ``activation_dtypes``: the dtype of at least ``PRECISION_SHARE``
    of the activations, else ``mixed``."""
    dtype, share = max(shares.items(), key=lambda item: item[1])
    return dtype if share >= PRECISION_SHARE else "mixed"


def inference_forward(model: torch.nn.Module, autocast: Callable[[], AbstractContextManager]) -> Callable:
    """The timed call: eval mode under ``inference_mode`` (no autograd bookkeeping at all), as timm's
    ``benchmark.py`` and deployed inference run it."""
    model.eval()

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), autocast():
            return model(x)

    return forward


def relative_iqr(values: "list[float] | np.ndarray") -> float | None:
    """(75th - 25th percentile) / median: the spread of repeated timings, robust to a few outliers."""
    values = np.asarray(values, dtype=float)
    if values.size < MIN_SPREAD_SAMPLES:
        return None
    q25, median, q75 = np.percentile(values, (25, 50, 75))
    return float((q75 - q25) / median) if median > 0 else None


class HostClock:
    """The host's clock, the device synchronised at every mark: a mark waits for the work queued before it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def mark(self) -> float:
        synchronize(self.device)
        return time.perf_counter()

    def seconds(self, start: float, end: float) -> float:
        return end - start


class EventClock:
    """CUDA events on the current stream. A mark queues an event and returns at once; the seconds between two
    marks wait for the later one only when read. So a window's edges cost no host sync, and its time is the
    GPU's timeline between them: kernels and the gaps where the GPU waited for the CPU to launch the next.

    ``make_event`` makes a ``torch.cuda.Event(enable_timing=True)`` unless a test passes a stand-in.
    """

    def __init__(self, make_event: Callable[[], Any] | None = None) -> None:
        self.make_event = make_event or (lambda: torch.cuda.Event(enable_timing=True))

    def mark(self) -> Any:
        event = self.make_event()
        event.record()
        return event

    def seconds(self, start: Any, end: Any) -> float:
        end.synchronize()
        return start.elapsed_time(end) / 1000  # elapsed_time is in milliseconds


Clock = HostClock | EventClock


def device_clock(device: torch.device) -> Clock:
    """CUDA events on a GPU; the host's clock, after a synchronisation, elsewhere."""
    return EventClock() if device.type == "cuda" else HostClock(device)


def _warm_up(forward: Callable, x: torch.Tensor, clock: Clock, seconds: float) -> float:
    """Run until warm; the median seconds per call (a slow first call only makes the chunks smaller)."""
    calls: list[float] = []
    previous = clock.mark()
    while len(calls) < WARMUP_ITERATIONS or sum(calls) < WARMUP_SHARE * seconds:
        forward(x)
        now = clock.mark()
        calls.append(clock.seconds(previous, now))
        previous = now
    return float(np.median(calls))


def steady(rates: list[float], elapsed: float, seconds: float) -> bool:
    """Whether timed chunks are enough: ``seconds`` timed in ``MIN_CHUNKS`` or more, and their spread within
    ``TARGET_REL_IQR``, or ``MAX_BENCH_FACTOR`` times ``seconds`` timed whatever the spread."""
    if elapsed < seconds or len(rates) < MIN_CHUNKS:
        return False
    spread = relative_iqr(rates)
    return (spread is not None and spread <= TARGET_REL_IQR) or elapsed >= MAX_BENCH_FACTOR * seconds


def inference_throughput(forward: Callable, batch: torch.Tensor, device: torch.device, seconds: float, *,
                         clock: Clock | None = None, busy: BusyMeter | None = None) -> dict[str, float | None]:
    """Images per second at this batch, its spread, and (on a GPU) how busy the GPU was.

    Chunks are equal, so that their throughputs compare: each holds as many calls as the warm-up says fill
    ``CHUNK_SHARE`` of ``seconds``. They are added until :func:`steady`. ``clock`` and ``busy`` default to the
    device's (:func:`device_clock`, :func:`~imgbench.engine.gpu_busy.busy_meter`); tests pass stand-ins.
    """
    clock = clock or device_clock(device)
    busy = busy if busy is not None else gpu_busy.busy_meter(device)
    per_call = _warm_up(forward, batch, clock, seconds)
    chunk = max(1, round(CHUNK_SHARE * seconds / per_call)) if per_call > 0 else 1
    rates: list[float] = []
    elapsed = 0.0
    if busy is not None:
        busy.start()
    start = clock.mark()
    while not steady(rates, elapsed, seconds):  # chunks end to end: each one's end is the next one's start
        for _ in range(chunk):
            forward(batch)
        end = clock.mark()
        took = clock.seconds(start, end)
        elapsed += took
        rates.append(chunk * len(batch) / took)
        start = end
    if busy is not None:
        busy.stop()
    return {"infer_throughput": len(rates) * chunk * len(batch) / elapsed,
            "infer_throughput_rel_iqr": relative_iqr(rates),
            "infer_gpu_busy": busy.share() if busy is not None else None}


def latency_ms(forward: Callable, image: torch.Tensor, device: torch.device, seconds: float,
               percentiles: Sequence[int] = LATENCY_PERCENTILES, *,
               clock: Clock | None = None) -> dict[str, float | None]:
    """Batch-1 latency percentiles in milliseconds, each call timed alone, and the samples' relative IQR."""
    clock = clock or device_clock(device)
    _warm_up(forward, image, clock, seconds)
    samples: list[float] = []
    timed = 0.0
    while len(samples) < MAX_LATENCY_SAMPLES and (len(samples) < MIN_LATENCY_SAMPLES or timed < seconds):
        start = clock.mark()  # a fresh start: each call is timed alone, after the one before it has finished
        forward(image)
        took = clock.seconds(start, clock.mark())
        timed += took
        samples.append(took * 1000)
    values = np.percentile(samples, percentiles)
    return {**{f"latency_p{p}_ms": float(v) for p, v in zip(percentiles, values)},
            "latency_rel_iqr": relative_iqr(samples)}


class SteadyTimer:
    """Training throughput over windows that skip the first steps, timed by the device's clock.

    A window is one step on the CPU and ``SYNC_WINDOW_STEPS`` steps on an accelerator. With CUDA events a
    window's edges are events queued between the steps, read only when the timer stops (at the end of the
    epoch): training never waits for the GPU to be timed. The per-window throughputs give the spread; a
    ``busy`` meter, when given, measures the GPU's busy share over the same windows.
    """

    def __init__(self, device: torch.device, window_steps: int | None = None, *, clock: Clock | None = None,
                 busy: BusyMeter | None = None) -> None:
        self.clock = clock or device_clock(device)
        self.busy = busy
        self.window_steps = window_steps or (1 if device.type == "cpu" else SYNC_WINDOW_STEPS)
        self.elapsed = 0.0
        self.images = 0
        self.window_rates: list[float] = []  # images per second of each timed window
        self._open: Any = None  # the mark the current window started at; None when stopped
        self._closed: list[tuple[Any, Any, int]] = []  # (start mark, end mark, images), read when stopped
        self._window_images = self._window_steps = 0

    def start(self) -> None:
        if self.busy is not None:
            self.busy.start()
        self._open = self.clock.mark()
        self._window_images = self._window_steps = 0

    def step(self, images: int) -> None:
        """One training step of ``images`` images ended (its work may still be queued on the device)."""
        self.images += images
        self._window_images += images
        self._window_steps += 1
        if self._window_steps >= self.window_steps:
            self._close_window()

    def stop(self) -> None:
        if self._open is None:
            return
        self._close_window()
        self._open = None
        for start, end, images in self._closed:
            took = self.clock.seconds(start, end)
            self.elapsed += took
            if images and took > 0:
                self.window_rates.append(images / took)
        self._closed.clear()
        if self.busy is not None:
            self.busy.stop()

    def _close_window(self) -> None:
        end = self.clock.mark()
        self._closed.append((self._open, end, self._window_images))
        self._open, self._window_images, self._window_steps = end, 0, 0

    @property
    def running(self) -> bool:
        return self._open is not None

    def images_per_second(self) -> float | None:
        return self.images / self.elapsed if self.elapsed > 0 and self.images else None

    def rel_iqr(self) -> float | None:
        return relative_iqr(self.window_rates)

    def gpu_busy(self) -> float | None:
        return self.busy.share() if self.busy is not None else None


class PeakMemory:
    """Peak memory in MiB, two figures.

    ``peak_mb``: the whole job. On CUDA the allocator's peak, which also holds the dataset kept on the device,
    cuDNN's autotuning trials and evaluation; elsewhere the largest sampled process RSS.

    ``train_peak_mb`` (CUDA only): the model's training peak. The allocator's peak within the steady-state
    training windows (``start_window``/``end_window``, after the first steps, so autotuning is past), less the
    bytes of data held on the device (``exclude``): parameters, gradients, optimiser state, activations and the
    chosen kernels' workspace. ``allocator`` is ``torch.cuda`` unless a test passes a stand-in.
    """

    def __init__(self, device: torch.device, allocator: Any = None) -> None:
        self.device = device
        self.allocator = allocator if allocator is not None else (torch.cuda if device.type == "cuda" else None)
        self.process = psutil.Process()
        self.rss_peak = 0
        self.job_peak = 0
        self.window_peak: int | None = None
        self.excluded = 0
        self._in_window = False
        if self.allocator is not None:
            self.allocator.reset_peak_memory_stats(device)
        self.sample()

    def exclude(self, nbytes: int) -> None:
        """Bytes held on the device that are not the model's (the dataset), left out of ``train_peak_mb``."""
        self.excluded = nbytes

    def start_window(self) -> None:
        if self.allocator is None:
            return
        self._fold()
        self.allocator.reset_peak_memory_stats(self.device)  # the window's own peak from here
        self._in_window = True

    def end_window(self) -> None:
        if not self._in_window or self.allocator is None:
            return
        peak = self.allocator.max_memory_allocated(self.device)
        self.window_peak = max(self.window_peak or 0, peak)
        self.job_peak = max(self.job_peak, peak)
        self._in_window = False

    def _fold(self) -> None:
        if self.allocator is not None:
            self.job_peak = max(self.job_peak, self.allocator.max_memory_allocated(self.device))

    def sample(self) -> None:
        self.rss_peak = max(self.rss_peak, self.process.memory_info().rss)
        self._fold()

    def peak_mb(self) -> float:
        self.sample()
        return (self.job_peak if self.allocator is not None else self.rss_peak) / MIB

    def train_peak_mb(self) -> float | None:
        if self.window_peak is None:
            return None
        return (self.window_peak - self.excluded) / MIB
