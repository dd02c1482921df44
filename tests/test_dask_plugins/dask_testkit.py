"""Test plugin for the dask executor: models that kill the Dask worker running their job.

The tests copy this file into a temporary plugin folder; the marker files live beside the copy, so each test
module starts fresh. Datasets and the healthy model come from tests/test_runner_plugins/runner_testkit.py.
"""

from __future__ import annotations

import time
from pathlib import Path

from imgbench import ModelSpec, hookimpl

JOB_PROCESS = "imgbench.runner.execute"  # the process that runs papermill; its parent is the Dask worker
WORKER_MARK = "spawn_main"  # LocalCluster workers are multiprocessing children of their nanny
AFTERLIFE_S = 60  # the kernel waits here until the job process notices its worker is gone and kills it
MARKER = "killed-worker-{name}.txt"


def _dask_worker():
    """The Dask worker process running this kernel's job; refuses to hit anything else (the test runner)."""
    import psutil

    ancestors = psutil.Process().parents()
    for index, process in enumerate(ancestors[:-1]):
        if JOB_PROCESS in process.cmdline():
            worker = ancestors[index + 1]
            if any(WORKER_MARK in part for part in worker.cmdline()):
                return worker
            break
    raise RuntimeError("the dasktest models must run on a LocalCluster worker (imgbench run --executor dask)")


def _killer(name: str, times: int):
    """A linear model whose build SIGKILLs its Dask worker the first ``times`` times (counted in a marker)."""

    def build(*, num_classes: int, in_chans: int, image_size: int, pretrained: bool = False):
        import torch.nn as nn

        marker = Path(__file__).with_name(MARKER.format(name=name))
        kills = len(marker.read_text().split()) if marker.exists() else 0
        if kills < times:
            worker = _dask_worker()
            with open(marker, "a") as record:
                record.write(f"{worker.pid}\n")
            worker.kill()  # like the OOM killer or a lost node: no goodbye to the scheduler
            time.sleep(AFTERLIFE_S)
        return nn.Sequential(nn.Flatten(), nn.Linear(in_chans * image_size * image_size, num_classes))

    return build


@hookimpl
def imgbench_models() -> list[ModelSpec]:
    return [
        ModelSpec("dasktest/kill_worker_once", _killer("once", 1), "kills its Dask worker on the first attempt only"),
        ModelSpec("dasktest/kill_worker_always", _killer("always", 1000), "kills its Dask worker on every attempt"),
    ]
