"""Cost and speed: parameters, FLOPs, inference throughput, batch-1 latency, peak memory, steady-state
training throughput.

Every timer stops only after the device is synchronised; every measurement warms up first and then runs for
at least ``bench_seconds`` (and a few iterations), so its cost is bounded and its figure stable. Each speed
figure comes with its spread within the job, the relative interquartile range (IQR / median) of the
throughputs of its equal timed chunks, windows or samples: a figure is only as good as that spread says.
"""

from __future__ import annotations

import time
from collections import Counter
from contextlib import AbstractContextManager
from typing import Any, Callable, Sequence

import numpy as np
import psutil
import torch

WARMUP_ITERATIONS = 2
WARMUP_SHARE = 0.2  # warm-up lasts at least this share of bench_seconds
MIN_CHUNKS = 5  # timed chunks per throughput figure, however slow the model (its spread needs several)
CHUNK_SHARE = 0.1  # every inference chunk holds as many batches as fill this share of bench_seconds
MIN_LATENCY_SAMPLES = 10
MAX_LATENCY_SAMPLES = 10_000
LATENCY_PERCENTILES = (50, 95, 99)
SYNC_WINDOW_STEPS = 10  # training steps per timed window on an accelerator (one host sync per window)
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


def _warm_up(forward: Callable, x: torch.Tensor, device: torch.device, seconds: float) -> float:
    """Run until warm; the median seconds per call (a slow first call only makes the chunks smaller)."""
    start, calls = time.perf_counter(), []
    while len(calls) < WARMUP_ITERATIONS or time.perf_counter() - start < WARMUP_SHARE * seconds:
        call = time.perf_counter()
        forward(x)
        synchronize(device)
        calls.append(time.perf_counter() - call)
    return float(np.median(calls))


def inference_throughput(forward: Callable, batch: torch.Tensor, device: torch.device,
                         seconds: float) -> dict[str, float | None]:
    """Images per second at this batch and its spread, from chunks of equal size synchronised at their ends.

    The chunk size comes from the warm-up's calls, so that each chunk lasts about ``CHUNK_SHARE`` of
    ``seconds``; equal chunks make their throughputs comparable, and their spread measures the noise.
    """
    per_call = _warm_up(forward, batch, device, seconds)
    chunk = max(1, round(CHUNK_SHARE * seconds / per_call)) if per_call > 0 else 1
    rates: list[float] = []
    elapsed = 0.0
    while elapsed < seconds or len(rates) < MIN_CHUNKS:
        start = time.perf_counter()
        for _ in range(chunk):
            forward(batch)
        synchronize(device)
        took = time.perf_counter() - start
        elapsed += took
        rates.append(chunk * len(batch) / took)
    return {"infer_throughput": len(rates) * chunk * len(batch) / elapsed,
            "infer_throughput_rel_iqr": relative_iqr(rates)}


def latency_ms(forward: Callable, image: torch.Tensor, device: torch.device, seconds: float,
               percentiles: Sequence[int] = LATENCY_PERCENTILES) -> dict[str, float]:
    """Latency percentiles (``latency_p{p}_ms`` for each of ``percentiles``) in milliseconds, each call timed
    alone, and the samples' relative IQR."""
    _warm_up(forward, image, device, seconds)
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(samples) < MAX_LATENCY_SAMPLES and (len(samples) < MIN_LATENCY_SAMPLES or time.perf_counter() < deadline):
        start = time.perf_counter()
        forward(image)
        synchronize(device)
        samples.append((time.perf_counter() - start) * 1000)
    values = np.percentile(samples, percentiles)
    return {**{f"latency_p{p}_ms": float(v) for p, v in zip(percentiles, values)},
            "latency_rel_iqr": relative_iqr(samples)}


class SteadyTimer:
    """Training throughput over windows that skip the first steps; the device is synced at each window edge.

    A window is one step on the CPU (nothing to synchronise) and ``SYNC_WINDOW_STEPS`` steps on an
    accelerator, so the per-window throughputs give the spread without a host sync per step.
    """

    def __init__(self, device: torch.device, window_steps: int | None = None) -> None:
        self.device = device
        self.window_steps = window_steps or (1 if device.type == "cpu" else SYNC_WINDOW_STEPS)
        self.elapsed = 0.0
        self.images = 0
        self.window_rates: list[float] = []  # images per second of each timed window
        self._started: float | None = None
        self._window_images = self._window_steps = 0

    def start(self) -> None:
        synchronize(self.device)
        self._started = time.perf_counter()
        self._window_images = self._window_steps = 0

    def step(self, images: int) -> None:
        """One training step of ``images`` images ended (its work may still be queued on the device)."""
        self.images += images
        self._window_images += images
        self._window_steps += 1
        if self._window_steps >= self.window_steps:
            self._close_window()

    def stop(self) -> None:
        if self._started is not None:
            self._close_window()
            self._started = None

    def _close_window(self) -> None:
        synchronize(self.device)
        now = time.perf_counter()
        took = now - self._started
        self.elapsed += took
        if self._window_images and took > 0:
            self.window_rates.append(self._window_images / took)
        self._started, self._window_images, self._window_steps = now, 0, 0

    @property
    def running(self) -> bool:
        return self._started is not None

    def images_per_second(self) -> float | None:
        return self.images / self.elapsed if self.elapsed > 0 and self.images else None

    def rel_iqr(self) -> float | None:
        return relative_iqr(self.window_rates)


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
        if not self._in_window:
            return
        peak = self.allocator.max_memory_allocated(self.device)
        self.window_peak = max(self.window_peak or 0, peak)
        self.job_peak = max(self.job_peak, peak)
        self._in_window = False

    def _fold(self) -> None:
        self.job_peak = max(self.job_peak, self.allocator.max_memory_allocated(self.device))

    def sample(self) -> None:
        self.rss_peak = max(self.rss_peak, self.process.memory_info().rss)
        if self.allocator is not None:
            self._fold()

    def peak_mb(self) -> float:
        self.sample()
        return (self.job_peak if self.allocator is not None else self.rss_peak) / MIB

    def train_peak_mb(self) -> float | None:
        if self.window_peak is None:
            return None
        return (self.window_peak - self.excluded) / MIB
