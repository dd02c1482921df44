"""The CUDA path on a real GPU: devices, dtypes, memory format, synchronised timing, no host syncs, memory
figures, compile, and learning. Skipped without CUDA (test_engine_cuda_paths.py and test_timing.py show each
mechanism on the CPU). benchmarks/gpu_check.sh runs this file first on a GPU machine."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from imgbench.engine import run_job
from imgbench.engine.data import Augmenter, ImageBatches
from imgbench.engine.recipe import resolve_recipe
from imgbench.engine.timing import SteadyTimer
from imgbench.engine.train import Precision, TrainStep, choose_precision
from imgbench.registry import get_registry

from test_engine import compiled_graphs, count_compiled_graphs, synthetic

pytestmark = pytest.mark.gpu

CUDA = torch.device("cuda:0")
# Learning with a margin: 5 classes (chance 0.2), 500 training images, 3 epochs of batch 32 (45 steps). The
# same settings on the CPU (fp32, seed 0) reached test accuracy 1.0 with timm/resnet18 and keras/mnist_convnet;
# bf16 and other kernels take another path there, hence the margin.
LEARN = dict(per_class=(100, 10, 40), size=32, channels=3)
LEARN_RECIPE = dict(epochs=3, batch_size=32, warmup_epochs=0.5, augment="none", bench_seconds=0.2, progress=False)
CHANCE = 0.2
MIN_ACCURACY = 0.8


def run_without_host_syncs(step) -> None:
    """Run ``step()`` with torch's sync debug mode at ``error``: any host sync in it (``.item()``, a read back, a
    synchronize, a copy from pageable host memory) raises. A profiler would count its own synchronisation too."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_timm_job_runs_bf16_channels_last_on_device_data_and_learns(tmp_path):
    result = run_job("timm/resnet18", synthetic(**LEARN), seed=0, out_dir=tmp_path, **LEARN_RECIPE)
    metrics = result.metrics
    assert result.status == "ok" and metrics["device"].startswith("cuda")
    assert metrics["precision_requested"] == "bf16" and metrics["precision"] == "bf16"  # H100/H200/A100
    assert metrics["data_on_device"] is True and metrics["provenance"]["cuda"] and metrics["provenance"]["cudnn"]
    assert 0 < metrics["train_peak_memory_mb"] < metrics["peak_memory_mb"]
    assert math.isfinite(metrics["infer_throughput"]) and metrics["train_throughput"] > 0
    assert metrics["accuracy"] >= MIN_ACCURACY > CHANCE + 0.3


def test_keras_job_computes_in_bf16_on_the_gpu():
    result = run_job("keras/mnist_convnet", synthetic(**LEARN), seed=0, **LEARN_RECIPE)
    assert result.status == "ok" and result.metrics["device"].startswith("cuda")
    assert result.metrics["precision"] == "bf16" and result.metrics["activation_dtypes"]["bf16"] > 0.9
    assert result.metrics["accuracy"] >= MIN_ACCURACY


def test_a_keras_job_asked_for_the_cpu_leaves_the_gpu_alone():
    # allocations made, not bytes held: an earlier test's tensors freed meanwhile change the bytes, not the count
    before = torch.cuda.memory_stats(CUDA).get("allocation.all.allocated", 0)
    result = run_job("keras/mnist_convnet", synthetic(per_class=(8, 2, 4), size=12), seed=0, device="cpu",
                     epochs=1, batch_size=16, bench_seconds=0.02, progress=False)
    assert result.status == "ok" and result.metrics["device"] == "cpu"
    assert torch.cuda.memory_stats(CUDA).get("allocation.all.allocated", 0) == before


def _cuda_step(model: str, size: int, precision: Precision):
    from contextlib import nullcontext

    from imgbench.families.keras_models import build_scope

    with build_scope("cuda:0", precision.name) if model.startswith("keras/") else nullcontext():
        net = get_registry().build_model(model, num_classes=5, in_chans=3, image_size=size)
    net = net.to(CUDA, memory_format=torch.channels_last)
    data = synthetic(per_class=(8, 1, 1), size=size, channels=3)
    batches = ImageBatches(data.train, CUDA, np.full(3, 127.0), np.full(3, 64.0), torch.channels_last, True)
    x, y = next(batches.batches(32, torch.Generator().manual_seed(0), drop_last=True))
    assert x.is_contiguous(memory_format=torch.channels_last) and x.device == y.device and x.device.type == "cuda"
    recipe = resolve_recipe("cifar10", {"optimizer": "adamw"})
    step = TrainStep(net, recipe, precision, 10, Augmenter("flip_crop", size, CUDA, 0, torch.channels_last))
    step.reset_totals(CUDA)
    net.train()
    step(x, y)
    step(x, y)
    return net, lambda: step(x, y)


@pytest.mark.parametrize("model, size", [("timm/resnet18", 32), ("keras/mnist_convnet", 32),
                                         ("keras/efficientnet_b0", 32)])
def test_a_cuda_training_step_makes_no_host_sync(model, size):
    net, step = _cuda_step(model, size, choose_precision(CUDA, amp=True))
    assert all(p.device.type == "cuda" for p in net.parameters())
    run_without_host_syncs(step)


def test_fp16_with_a_grad_scaler_and_fused_optimiser_makes_no_host_sync():
    precision = Precision("cuda", torch.float16, torch.amp.GradScaler("cuda"))
    _net, step = _cuda_step("timm/resnet18", 32, precision)
    run_without_host_syncs(step)


def test_the_sync_check_sees_a_sync():  # the control: the check fails a step that reads back
    x = torch.ones(3, device=CUDA)
    with pytest.raises(RuntimeError):
        run_without_host_syncs(lambda: x.sum().item())
    run_without_host_syncs(lambda: x * 2)


def test_the_steady_timer_waits_for_the_gpu():
    timer = SteadyTimer(CUDA)
    torch.cuda.synchronize()
    timer.start()
    start = time.perf_counter()
    torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU time, returned from at once
    launched = time.perf_counter() - start
    timer.stop()
    assert launched < 0.05 < timer.elapsed


def test_cuda_events_time_the_gpu_and_the_busy_share_sees_a_launch_bound_loop():
    from imgbench.engine import timing
    from imgbench.engine.gpu_busy import busy_meter

    clock = timing.EventClock()
    start = clock.mark()
    torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU time
    assert 0.05 < clock.seconds(start, clock.mark()) < 1.0
    meter = busy_meter(CUDA)
    if meter is None:
        pytest.skip("no nvidia-ml-py: no busy share (pip install 'imgbench[gpu]')")
    x = torch.ones(1, device=CUDA)

    def launch_bound(_):  # tiny kernels with the CPU sleeping between them: the GPU mostly idle
        x.add_(1)
        time.sleep(0.002)

    idle = timing.inference_throughput(launch_bound, x, CUDA, seconds=1.0, busy=meter)
    busy = timing.inference_throughput(lambda _: torch.cuda._sleep(2_000_000), x, CUDA, seconds=1.0,
                                       busy=busy_meter(CUDA))
    assert idle["infer_gpu_busy"] < 0.3 < 0.7 < busy["infer_gpu_busy"]


def test_compile_time_is_reported_apart_and_nothing_recompiles_after_it(monkeypatch):
    seen = count_compiled_graphs(monkeypatch)
    # 170 test images in batches of 64: a remainder of 42; then batch-1 latency
    result = run_job("timm/resnet18", synthetic(per_class=(40, 6, 34), size=32, channels=3), seed=0,
                     epochs=1, batch_size=64, compile=True, bench_seconds=0.2, progress=False)
    assert result.status == "ok" and result.metrics["compile_time_s"] > 0
    assert result.metrics["phases"]["compile"] >= result.metrics["compile_time_s"]
    assert seen["warm"] > 0 and compiled_graphs() == seen["warm"]
