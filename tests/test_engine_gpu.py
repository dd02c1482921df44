"""The CUDA path: mixed precision, channels-last, data held on the device, torch.compile. Skipped without CUDA."""

from __future__ import annotations

import math

import pytest

from imgbench.engine import run_job

pytestmark = pytest.mark.gpu


def test_gpu_job_uses_amp_channels_last_and_device_data(tmp_path):
    from test_engine import synthetic

    result = run_job("timm/resnet18", synthetic(size=32, channels=3), seed=0, out_dir=tmp_path, epochs=2,
                     batch_size=64, bench_seconds=0.2, progress=False)
    metrics = result.metrics
    assert result.status == "ok" and metrics["device"].startswith("cuda")
    assert metrics["precision"] in ("bf16", "fp16") and metrics["data_on_device"] is True
    assert metrics["provenance"]["cuda"] and metrics["provenance"]["cudnn"]
    assert metrics["peak_memory_mb"] > 0 and math.isfinite(metrics["infer_throughput"])
    assert metrics["accuracy"] > 0.5


def test_gpu_compile_reports_compile_time_apart():
    from test_engine import synthetic

    result = run_job("timm/resnet18", synthetic(size=32, channels=3), seed=0, epochs=1, batch_size=64,
                     compile=True, bench_seconds=0.2, progress=False)
    assert result.status == "ok" and result.metrics["compile_time_s"] > 0
    assert result.metrics["phases"]["compile"] >= result.metrics["compile_time_s"]
