"""Cost and speed: parameters, FLOPs, inference throughput, batch-1 latency, peak memory, steady-state
training throughput.

Every timer stops only after the device is synchronised; every measurement warms up first and then runs for
at least ``bench_seconds`` (and a few iterations), so its cost is bounded and its figure stable.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import Callable

import numpy as np
import psutil
import torch

WARMUP_ITERATIONS = 2
WARMUP_SHARE = 0.2  # warm-up lasts at least this share of bench_seconds
MIN_ITERATIONS = 3  # timed iterations per throughput figure, however slow the model
MIN_LATENCY_SAMPLES = 10
MAX_LATENCY_SAMPLES = 10_000
CHUNK_SHARE = 0.1  # throughput chunks grow until one takes this share of bench_seconds
LATENCY_PERCENTILES = (50, 95, 99)
MIB = 2**20


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def count_parameters(model: torch.nn.Module) -> int:
    """Trainable parameters (Keras moving statistics are non-trainable parameters and do not count)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_flops(model: torch.nn.Module, image: torch.Tensor, autocast: Callable[[], AbstractContextManager]) -> int:
    """FLOPs of one forward pass on one image, as torch's FlopCounterMode counts them (2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), autocast(), counter:
        model(image)
    return int(counter.get_total_flops())


def inference_forward(model: torch.nn.Module, autocast: Callable[[], AbstractContextManager]) -> Callable:
    model.eval()

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), autocast():
            return model(x)

    return forward


def _warm_up(forward: Callable, x: torch.Tensor, device: torch.device, seconds: float) -> None:
    start, iterations = time.perf_counter(), 0
    while iterations < WARMUP_ITERATIONS or time.perf_counter() - start < WARMUP_SHARE * seconds:
        forward(x)
        synchronize(device)
        iterations += 1


def inference_throughput(forward: Callable, batch: torch.Tensor, device: torch.device, seconds: float) -> float:
    """Images per second at this batch, timed in growing chunks with one synchronisation per chunk."""
    _warm_up(forward, batch, device, seconds)
    elapsed, iterations, chunk = 0.0, 0, 1
    while elapsed < seconds or iterations < MIN_ITERATIONS:
        start = time.perf_counter()
        for _ in range(chunk):
            forward(batch)
        synchronize(device)
        took = time.perf_counter() - start
        elapsed, iterations = elapsed + took, iterations + chunk
        if took < CHUNK_SHARE * seconds:
            chunk *= 2
    return iterations * len(batch) / elapsed


def latency_ms(forward: Callable, image: torch.Tensor, device: torch.device, seconds: float) -> dict[str, float]:
    """Batch-1 latency percentiles in milliseconds, each call timed alone."""
    _warm_up(forward, image, device, seconds)
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(samples) < MAX_LATENCY_SAMPLES and (len(samples) < MIN_LATENCY_SAMPLES or time.perf_counter() < deadline):
        start = time.perf_counter()
        forward(image)
        synchronize(device)
        samples.append((time.perf_counter() - start) * 1000)
    values = np.percentile(samples, LATENCY_PERCENTILES)
    return {f"latency_p{p}_ms": float(v) for p, v in zip(LATENCY_PERCENTILES, values)}


class SteadyTimer:
    """Training throughput over windows that skip the first steps; the device is synced at each edge."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.elapsed = 0.0
        self.images = 0
        self._started: float | None = None

    def start(self) -> None:
        synchronize(self.device)
        self._started = time.perf_counter()

    def stop(self) -> None:
        if self._started is not None:
            synchronize(self.device)
            self.elapsed += time.perf_counter() - self._started
            self._started = None

    @property
    def running(self) -> bool:
        return self._started is not None

    def images_per_second(self) -> float | None:
        return self.images / self.elapsed if self.elapsed > 0 and self.images else None


class PeakMemory:
    """Peak memory in MiB: the CUDA allocator's peak on a GPU, else the largest sampled process RSS."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.process = psutil.Process()
        self.rss_peak = 0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        self.sample()

    def sample(self) -> None:
        self.rss_peak = max(self.rss_peak, self.process.memory_info().rss)

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / MIB
        self.sample()
        return self.rss_peak / MIB
