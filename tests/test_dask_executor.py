"""The dask executor's pieces that need no cluster: options, the job folder's round trip, the worker's env."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from imgbench.engine import Recipe
from imgbench.errors import UsageError
from imgbench.registry import get_registry
from imgbench.runner import dask_executor as dx
from imgbench.runner.execute import JobTask
from imgbench.runner.jobs import Job
from imgbench.runner.results import read_record
from imgbench.schema import JOB_RECORD as RECORD

def make_task(out_dir: Path, device: str = "cpu", env=None) -> JobTask:
    job = Job("testkit/linear", "tinygray", 0, Recipe(device=device, epochs=1), "0123456789ab", "testkit")
    return JobTask(job, str(out_dir), str(out_dir / "benchmark.ipynb"), None, env or {})


def test_registered_through_the_executor_hook():
    registry = get_registry([])  # the installed entry point `dask = "imgbench.runner.dask_executor"`
    assert "dask" in [spec.name for spec in registry.executors()]
    assert not [error for error in registry.errors if error.plugin == "dask"]
    executor = registry.executor("dask").create(slots=3)
    assert isinstance(executor, dx.DaskExecutor)
    assert executor.scheduler is None and executor.workers == 3


def test_module_loads_without_distributed_and_create_says_how_to_install():
    code = ("import sys; sys.modules['distributed'] = None\n"
            "import imgbench.runner.dask_executor as dx\n"
            "from imgbench.errors import UsageError\n"
            "try:\n    dx.create(slots=1)\nexcept UsageError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "pip install imgbench[dask]" in done.stdout


def test_scheduler_comes_from_the_option_or_the_environment(monkeypatch):
    [spec] = dx.imgbench_executors()

    def scheduler(**given):  # what run_grid does: the declared options, then the executor
        return dx.create(slots=1, **spec.resolve_options(given, os.environ)).scheduler

    monkeypatch.setenv(dx.SCHEDULER_ENV, "tcp://10.0.0.5:8786")
    assert scheduler() == "tcp://10.0.0.5:8786"
    assert scheduler(scheduler="tls://head:9000") == "tls://head:9000"
    monkeypatch.delenv(dx.SCHEDULER_ENV)
    assert scheduler() is None
    with pytest.raises(UsageError, match="takes no option 'workers'.*scheduler, local_directory"):
        spec.resolve_options({"workers": 3}, os.environ)


def test_executor_options_are_declared_by_the_executor_and_checked_by_the_cli(capsys):
    from imgbench.cli import main

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "--executor dask:" in capsys.readouterr().out  # the dask module's own option group
    assert main(["run", "--executor", "local", "--scheduler", "tcp://h:8786", "-m", "keras/mnist_convnet"]) == 2
    assert "--scheduler only applies to --executor dask" in capsys.readouterr().err


@pytest.mark.parametrize("address", ["tcp://host:8786/extra", "http://host:8786", "two words", ""])
def test_bad_scheduler_address_is_a_usage_error(address):
    if not address:  # empty means "none given": a LocalCluster, not an error
        assert dx.create(slots=1, scheduler=address).scheduler is None
        return
    with pytest.raises(UsageError, match="tcp://HOST:8786"):
        dx.create(slots=1, scheduler=address)


@pytest.mark.parametrize("jobs", [0, -2, True, 1.5])
def test_bad_jobs_is_a_usage_error(jobs):
    with pytest.raises(UsageError, match="--jobs"):
        dx.create(slots=jobs)


def test_unreachable_scheduler_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.setattr(dx, "CONNECT_TIMEOUT_S", 2)
    executor = dx.create(slots=1, scheduler="tcp://127.0.0.1:9")  # the discard port: nothing listens
    task = make_task(tmp_path)
    Path(task.notebook).write_text("{}")
    with pytest.raises(UsageError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        executor.run([task], lambda task, row: None)


@pytest.mark.parametrize("device, gpu_cluster, expected", [
    ("cpu", True, None), ("cuda", False, {"GPU": 1}), ("cuda:1", True, {"GPU": 1}),
    ("auto", True, {"GPU": 1}), ("auto", False, None),
])
def test_a_job_that_uses_a_gpu_asks_for_one(tmp_path, device, gpu_cluster, expected):
    assert dx.job_resources(make_task(tmp_path, device), gpu_cluster) == expected


def test_job_folder_round_trip_replaces_an_earlier_attempt(tmp_path):
    source = tmp_path / "worker" / "job"
    (source / "sub").mkdir(parents=True)
    (source / "metrics.json").write_text('{"accuracy": 0.5}')
    (source / "sub" / "figure.png").write_bytes(b"\x89PNG")
    dest = tmp_path / "OUT" / "jobs" / "job"
    dest.mkdir(parents=True)
    (dest / "stale.txt").write_text("from a crashed first attempt")

    dx.unpack_job_dir(dx.pack_job_dir(source), dest)

    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == ["metrics.json", "sub", "sub/figure.png"]
    assert (dest / "metrics.json").read_text() == '{"accuracy": 0.5}'
    assert list(dest.parent.iterdir()) == [dest]  # no staging or old folder left behind


def test_unpack_refuses_paths_outside_the_job_folder(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    dest = tmp_path / "jobs" / "job"
    with pytest.raises(tarfile.TarError):
        dx.unpack_job_dir(buffer.getvalue(), dest)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "jobs" / "escaped.txt").exists()
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_record_crash_leaves_a_finished_crashed_record(tmp_path):
    task = make_task(tmp_path)
    row = dx.record_crash(task, "every Dask worker that ran this job died")
    assert row["status"] == "crashed" and row["job_id"] == task.job.job_id
    assert read_record(tmp_path, task.job)["row"] == row
    assert sorted(p.name for p in task.job_dir.iterdir()) == [RECORD]


def test_worker_task_runs_in_scratch_with_this_machines_paths(tmp_path, monkeypatch):
    launcher_plugins, worker_plugins, worker_data = (tmp_path / n for n in ("lp", "wp", "wd"))
    for folder in (launcher_plugins, worker_plugins, worker_data):
        folder.mkdir()
    env = {
        "IMGBENCH_PLUGINS_DIR": os.pathsep.join([str(launcher_plugins), "/nonexistent/on/this/worker"]),
        "IMGBENCH_CACHE_DIR": "/nonexistent/launcher/cache",
        "IMGBENCH_DATA_DIR": str(tmp_path),
        "IMGBENCH_BLOCK_PLUGINS": "broken",
    }
    monkeypatch.setenv("IMGBENCH_PLUGINS_DIR", str(worker_plugins))
    monkeypatch.setenv("IMGBENCH_DATA_DIR", str(worker_data))
    monkeypatch.delenv("IMGBENCH_CACHE_DIR")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    task = make_task(tmp_path / "OUT", env=env)

    local = dx.worker_task(task, scratch, b'{"cells": []}')

    assert local.job_dir == scratch / "out" / "jobs" / task.job.job_id
    assert Path(local.notebook).parent == scratch and Path(local.notebook).read_bytes() == b'{"cells": []}'
    assert local.env["IMGBENCH_PLUGINS_DIR"] == os.pathsep.join([str(launcher_plugins), str(worker_plugins)])
    assert "IMGBENCH_DATA_DIR" not in local.env  # the worker's own (inherited by the job) wins
    assert "IMGBENCH_CACHE_DIR" not in local.env  # the launcher's does not exist here: the worker's default
    assert local.env["IMGBENCH_BLOCK_PLUGINS"] == "broken"
    assert local.job == task.job and local.timeout == task.timeout


def test_start_is_reported_once_per_job_even_when_retried(tmp_path):
    first, second = make_task(tmp_path), make_task(tmp_path / "b", device="cuda")
    second = JobTask(Job("testkit/linear", "tinygray", 1, Recipe(), "ffffffffffff"), second.out_dir, second.notebook)
    seen = []
    tracker = dx._StartTracker([first, second], seen.append)
    tracker.event((0.0, first.job.job_id))
    tracker.event((1.0, first.job.job_id))  # the retry on another worker
    tracker.event((2.0, "not-a-job-of-this-grid"))
    tracker.ensure(second)  # a job that finished without a start event (its workers died before it)
    tracker.ensure(first)
    assert seen == [first, second]


def test_job_json_of_a_round_trip_is_readable_as_a_record(tmp_path):
    task = make_task(tmp_path / "OUT")
    worker_dir = tmp_path / "w" / "job"
    worker_dir.mkdir(parents=True)
    (worker_dir / RECORD).write_text(json.dumps({"job": task.job.to_dict(), "row": {"config_hash": "0123456789ab",
                                                                                   "status": "ok"}}))
    dx.unpack_job_dir(dx.pack_job_dir(worker_dir), task.job_dir)
    assert read_record(Path(task.out_dir), task.job)["row"]["status"] == "ok"
