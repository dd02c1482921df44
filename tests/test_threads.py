"""Threads and concurrency: jobs that run at once share the cores, the kernel's thread pools get the share
before torch loads, both are recorded; GPU jobs never share a GPU, and ``cuda:N`` means what a slot can see."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from imgbench.engine import Recipe, threads
from imgbench.engine.train import select_device
from imgbench.errors import UsageError
from imgbench.registry import get_registry
from imgbench.runner import executors, run_grid
from imgbench.runner.dask_executor import host_slots
from imgbench.runner.executors import LocalExecutor
from imgbench.runner.suite import suite_from_dict

REPO = Path(__file__).resolve().parents[1]
TESTKIT = Path(__file__).parent / "fixtures" / "runner_plugins"
CORES = threads.available_cores()


def fake_task(job_id: str, device: str = "auto", requested: int = 0):
    return SimpleNamespace(job=SimpleNamespace(job_id=job_id, recipe=Recipe(device=device, threads=requested)))


def test_each_job_gets_its_share_of_the_cores_at_least_one():
    assert threads.job_threads(0, 2, cores=2) == 1
    assert threads.job_threads(0, 3, cores=2) == 1  # never 0
    assert threads.job_threads(0, 4, cores=16) == 4
    assert threads.job_threads(3, 2, cores=2) == 3  # an explicit recipe value wins
    env = threads.thread_env(0, 2)
    assert env == {"IMGBENCH_CONCURRENCY": "2", "OMP_NUM_THREADS": str(max(1, CORES // 2)),
                   "MKL_NUM_THREADS": str(max(1, CORES // 2)), "OPENBLAS_NUM_THREADS": str(max(1, CORES // 2))}


def test_threads_in_force_sets_torch_from_the_concurrency_and_restores_it(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv(threads.CONCURRENCY_ENV, str(CORES))  # as many jobs as cores: one thread each
    with threads.threads_in_force(0) as (in_force, concurrency):
        assert (in_force, concurrency) == (1, CORES) and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_local_executor_gives_every_job_its_share_and_the_concurrency(monkeypatch):
    seen, lock = [], threading.Lock()

    def fake_execute(task, *, extra_env=None, stop=None, on_untimed=None):
        with lock:
            seen.append((task.job.job_id, dict(extra_env)))
        return {"job_id": task.job.job_id}

    monkeypatch.setattr(executors, "execute_job", fake_execute)  # where LocalExecutor looks it up
    tasks = [fake_task("a"), fake_task("b"), fake_task("c", requested=3)]
    LocalExecutor(slots=2, gpus=[]).run(tasks, lambda task, row: None)
    envs = dict(seen)
    share = str(max(1, CORES // 2))
    assert envs["a"]["OMP_NUM_THREADS"] == envs["b"]["MKL_NUM_THREADS"] == share
    assert envs["c"]["OMP_NUM_THREADS"] == "3"
    assert {env["IMGBENCH_CONCURRENCY"] for env in envs.values()} == {"2"}
    seen.clear()
    LocalExecutor(slots=8, gpus=[]).run(tasks[:2], lambda task, row: None)  # only 2 jobs can run at once
    assert {env["IMGBENCH_CONCURRENCY"] for _, env in seen} == {"2"}


def test_several_gpu_jobs_on_one_gpu_are_refused_cpu_jobs_are_not():
    tasks = [fake_task("a"), fake_task("b")]
    with pytest.raises(UsageError, match=r"--jobs 2 would run 2 jobs at once on 1 GPU.*use --jobs 1"):
        LocalExecutor(slots=2, gpus=["0"]).check(tasks)
    with pytest.raises(UsageError, match="contaminate every speed figure"):
        LocalExecutor(slots=2, gpus=["0"]).check([fake_task("a", "cuda"), fake_task("b", "cpu")])
    LocalExecutor(slots=2, gpus=["0"]).check([fake_task("a", "cpu"), fake_task("b", "cpu")])
    LocalExecutor(slots=2, gpus=["0", "1"]).check(tasks)  # one GPU per slot
    LocalExecutor(slots=2, gpus=["0"]).check(tasks[:1])  # one job: nothing to share with


def test_cuda_index_is_refused_where_each_slot_sees_only_its_own_gpu():
    with pytest.raises(UsageError, match=r"device='cuda:1'.*sees only its own GPU, as cuda:0"):
        LocalExecutor(slots=2, gpus=["0", "1"]).check([fake_task("a", "cuda:1"), fake_task("b")])
    LocalExecutor(slots=2, gpus=["0", "1"]).check([fake_task("a", "cuda:0"), fake_task("b", "cuda")])
    one_slot = LocalExecutor(slots=1, gpus=["0", "1"])  # one job at a time sees every GPU: the index is real
    one_slot.check([fake_task("a", "cuda:1")])
    assert one_slot.slot_env(0) == {}


def test_cuda_index_in_the_kernel_is_checked_against_the_gpus_it_sees(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # what a slot pinned to one GPU sees
    assert select_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(UsageError, match="only 1 CUDA device"):
        select_device("cuda:1")


def test_grid_refuses_shared_gpu_before_writing_anything(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # one GPU, as the executor sees it
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # and as the device preflight sees it
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    registry = get_registry([TESTKIT, REPO / "plugins"], ())
    suite = suite_from_dict({"models": ["tinycnn/small"], "datasets": ["tinygray"], "seeds": [0, 1],
                             "params": {"device": "cuda"}})
    with pytest.raises(UsageError, match="one job per GPU"):
        run_grid(suite, out=tmp_path / "out", slots=2, registry=registry, report=False, progress=False)
    assert not (tmp_path / "out").exists()


def test_dask_slots_count_the_worker_threads_that_share_a_machine():
    workers = {"tcp://a:1": {"host": "a", "nthreads": 1}, "tcp://a:2": {"host": "a", "nthreads": 1},
               "tcp://b:1": {"host": "b", "nthreads": 4}}
    assert host_slots(workers, 10) == {"tcp://a:1": 2, "tcp://a:2": 2, "tcp://b:1": 4}
    assert host_slots(workers, 1) == {"tcp://a:1": 1, "tcp://a:2": 1, "tcp://b:1": 1}


@pytest.mark.slow
@pytest.mark.notebook
def test_jobs_2_runs_each_job_on_its_share_and_records_threads_and_concurrency(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    registry = get_registry([TESTKIT, REPO / "plugins"], ())
    suite = suite_from_dict({"models": ["tinycnn/small"], "datasets": ["tinygray"], "seeds": [0, 1],
                             "params": {"epochs": 1, "batch_size": 8, "bench_seconds": 0.05, "device": "cpu"}})
    result = run_grid(suite, out=tmp_path / "out", slots=2, registry=registry, report=False, progress=False,
                      timeout=300)
    assert result.exit_code == 0, result.summary()
    frame = pd.read_csv(result.results_csv)
    share = max(1, CORES // 2)  # 1 on the 2-core development machine and CI
    assert list(frame["threads"]) == [share, share] and list(frame["concurrency"]) == [2, 2]
    for job_id in frame["job_id"]:
        metrics = json.loads((tmp_path / "out" / "jobs" / job_id / "metrics.json").read_text())
        assert metrics["thread_env"]["OMP_NUM_THREADS"] == str(share)  # the kernel started with it
        assert metrics["provenance"]["torch_threads"] == share
    assert frame[["train_throughput_rel_iqr", "infer_throughput_rel_iqr", "latency_rel_iqr"]].notna().all().all()
