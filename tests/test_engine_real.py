"""One epoch on the real datasets: the keras-io MNIST convnet and a timm ResNet must really learn.

Slow (about a minute or two each on a 2-core CPU); skipped when the real data folder is absent.
"""

from __future__ import annotations

import pytest

from imgbench.engine import run_job

pytestmark = [pytest.mark.slow, pytest.mark.data]
# A one-epoch smoke run: a short warm-up (the mnist default of half an epoch would be half the run).
ONE_EPOCH = dict(epochs=1, warmup_epochs=0.1, bench_seconds=0.2, progress=False)


def test_keras_mnist_convnet_one_epoch_on_real_mnist_reaches_97_percent(real_data, session_cache, monkeypatch):
    monkeypatch.setenv("IMGBENCH_CACHE_DIR", str(session_cache))
    result = run_job("keras/mnist_convnet", "mnist", data_dir=real_data, **ONE_EPOCH)
    assert result.status == "ok" and result.metrics["test_samples"] == 10_000
    assert result.metrics["accuracy"] >= 0.97, result.metrics["accuracy"]
    assert result.metrics["best_val_accuracy"] >= 0.96


def test_timm_resnet_one_epoch_on_real_cifar10_beats_chance_clearly(real_data, session_cache, monkeypatch):
    monkeypatch.setenv("IMGBENCH_CACHE_DIR", str(session_cache))
    result = run_job("timm/resnet18", "cifar10", data_dir=real_data, batch_size=64, test_samples=2000, **ONE_EPOCH)
    assert result.status == "ok" and result.metrics["top5_accuracy"] is not None
    assert result.metrics["accuracy"] >= 0.25, result.metrics["accuracy"]  # chance is 0.10
