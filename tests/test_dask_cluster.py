"""The dask executor on a real LocalCluster of two worker processes, with tiny synthetic jobs.

One cluster serves the module; its workers' scratch space is a folder of their own, not the launcher's, so
every job folder reaches OUT/jobs/<job-id>/ only by being sent back.
"""

from __future__ import annotations

import _thread
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pandas as pd
import psutil
import pytest

import imgbench
from imgbench import forkserver
from imgbench.errors import UsageError
from imgbench.registry import get_registry
from imgbench.runner import dask_executor as dx
from imgbench.schema import RESULTS_CSV

pytestmark = [pytest.mark.slow, pytest.mark.notebook]

TESTS = Path(__file__).resolve().parent
RUNNER_TESTKIT = TESTS / "fixtures" / "runner_plugins"  # tinygray/tinyrgb datasets, testkit/linear
DASK_TESTKIT = TESTS / "fixtures" / "dask_plugins" / "dask_testkit.py"  # models that kill their worker
PARAMS = {"epochs": 2, "deterministic": True, "device": "cpu", "bench_seconds": 0.05}
SEEDS = [0, 1]
KERNEL = "ipykernel_launcher"  # in the command line of a job's fresh kernel (a forked one: its process name)
JOB_PROCESS = "imgbench.jobrecord.child"  # in the command line of the process that supervises the kernel
PROCESS_WAIT_S = 120  # how long the Ctrl-C test waits for a kernel to appear, and then to disappear
FAULT_TIMEOUT_S = 60  # testkit/hang sleeps for an hour; the worker kills it after this (kernel start is slow here)
ALLOWED_FAILURES = 1  # one retry: enough for kill_worker_once, quick to exhaust for kill_worker_always
# Columns that depend on the seed and the data only; timings and memory naturally differ between runs.
SAME_COLUMNS = ["job_id", "model", "family", "dataset", "seed", "status", "error", "accuracy", "f1_macro",
                "precision_macro", "recall_macro", "balanced_accuracy", "log_loss", "ece", "params", "flops",
                "epochs", "batch_size", "image_size", "train_samples", "test_samples", "device",
                "dataset_fingerprint", "config_hash", "notebook"]


@pytest.fixture(scope="module")
def plugin_dirs(tmp_path_factory) -> list[Path]:
    """The runner's test kit, and a fresh copy of the dask kit (its kill markers are written beside it)."""
    folder = tmp_path_factory.mktemp("dask-plugins")
    shutil.copy(DASK_TESTKIT, folder)
    return [RUNNER_TESTKIT, folder]


@pytest.fixture(scope="module")
def worker_scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("worker-scratch")


@pytest.fixture(scope="module")
def cluster(worker_scratch):
    with dx.start_local_cluster(2, local_directory=str(worker_scratch), allowed_failures=ALLOWED_FAILURES) as cluster:
        yield cluster


@pytest.fixture
def launcher(cluster, plugin_dirs, tmp_path, monkeypatch):
    """run_grid on the module's cluster, from a working directory of its own."""
    monkeypatch.setenv(dx.SCHEDULER_ENV, cluster.scheduler_address)
    monkeypatch.chdir(tmp_path)
    registry = get_registry(plugin_dirs)

    def run(models, seeds, out, executor="dask", params=PARAMS, **options):
        return imgbench.run_grid(models=models, datasets=["tinygray"], seeds=seeds, params=params, out=out,
                                 registry=registry, executor=executor, report=False, progress=False, **options)

    return run


@pytest.fixture(scope="module")
def dask_grid(cluster, plugin_dirs, tmp_path_factory):
    """A grid of two tiny jobs run once on the cluster, for the tests that only read it."""
    out = tmp_path_factory.mktemp("dask-grid")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(dx.SCHEDULER_ENV, cluster.scheduler_address)
        patch.setenv("IMGBENCH_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        result = imgbench.run_grid(models=["testkit/linear"], datasets=["tinygray"], seeds=SEEDS, params=PARAMS,
                                   out=out, registry=get_registry(plugin_dirs), executor="dask",
                                   report=False, progress=False)
    return result


def test_cluster_grid_gives_the_local_executors_results(dask_grid, launcher, tmp_path):
    local = launcher(["testkit/linear"], SEEDS, tmp_path / "local", executor="local", slots=2)
    assert [row["status"] for row in dask_grid.rows] == ["ok", "ok"]
    on_dask, here = dask_grid.frame(), local.frame()
    assert len(on_dask) == len(SEEDS)
    pd.testing.assert_frame_equal(on_dask[SAME_COLUMNS], here[SAME_COLUMNS])
    assert on_dask["accuracy"].nunique() > 1 or on_dask["log_loss"].nunique() > 1  # the seeds really differ
    # two one-thread workers on this machine: two jobs at once, each with its share of the cores, as locally
    assert list(on_dask["concurrency"]) == list(here["concurrency"]) == [2, 2]
    assert list(on_dask["threads"]) == list(here["threads"])
    for job_id in on_dask["job_id"]:
        pd.testing.assert_frame_equal(pd.read_csv(dask_grid.out_dir / "jobs" / job_id / "predictions.csv"),
                                      pd.read_csv(local.out_dir / "jobs" / job_id / "predictions.csv"))


def test_job_folders_come_back_from_the_workers_scratch(dask_grid, worker_scratch):
    for row in dask_grid.rows:
        folder = dask_grid.out_dir / "jobs" / row["job_id"]
        assert {"notebook.ipynb", "metrics.json", "predictions.csv", "history.csv", "job.json"} <= \
            {p.name for p in folder.iterdir()}
        assert json.loads((folder / "metrics.json").read_text())["accuracy"] == row["accuracy"]
        assert row["notebook"] == f"jobs/{row['job_id']}/notebook.ipynb"  # relative to the launcher's OUT
        notebook = nbformat.read(folder / "notebook.ipynb", as_version=4)
        injected = next(c for c in notebook.cells if "injected-parameters" in c.metadata.get("tags", []))
        assert str(worker_scratch) in injected.source  # the kernel ran in the worker's scratch space...
        assert str(dask_grid.out_dir) not in injected.source  # ...not in the launcher's OUT
    assert not list(worker_scratch.rglob("imgbench-job-*"))  # the worker cleaned up after sending


def test_rerun_resumes_only_the_unfinished_job(dask_grid, launcher):
    out = dask_grid.out_dir
    lost = dask_grid.rows[1]["job_id"]
    kept_notebook = (out / "jobs" / dask_grid.rows[0]["job_id"] / "notebook.ipynb").stat().st_mtime_ns
    (out / "jobs" / lost / "job.json").unlink()  # as if the launcher was killed before this job came back
    result = launcher(["testkit/linear"], SEEDS, out)
    assert result.skipped == 1
    assert (out / "jobs" / dask_grid.rows[0]["job_id"] / "notebook.ipynb").stat().st_mtime_ns == kept_notebook
    again = pd.read_csv(out / RESULTS_CSV)
    assert list(again["job_id"]) == [row["job_id"] for row in dask_grid.rows]  # one row per job, grid order
    assert list(again["status"]) == ["ok", "ok"]
    assert again.loc[1, "accuracy"] == dask_grid.rows[1]["accuracy"]


def test_a_worker_killed_mid_job_does_not_lose_the_job(launcher, plugin_dirs, tmp_path):
    result = launcher(["dasktest/kill_worker_once"], [0], tmp_path / "out")
    killed = (plugin_dirs[1] / "killed-worker-once.txt").read_text().split()
    assert len(killed) == 1  # it really killed a worker, once
    [row] = result.rows
    assert row["status"] == "ok" and row["accuracy"] is not None
    assert len(result.frame()) == 1  # the job ran twice, and has one row
    folder = result.out_dir / "jobs" / row["job_id"]
    assert json.loads((folder / "metrics.json").read_text())["accuracy"] == row["accuracy"]
    assert [p.name for p in folder.parent.iterdir()] == [row["job_id"]]  # no staging folder left over


def test_a_job_that_kills_every_worker_is_recorded_as_crashed(launcher, plugin_dirs, tmp_path):
    result = launcher(["dasktest/kill_worker_always"], [0], tmp_path / "out")
    killed = (plugin_dirs[1] / "killed-worker-always.txt").read_text().split()
    assert len(killed) == ALLOWED_FAILURES + 1 and len(set(killed)) == len(killed)
    [row] = result.rows
    assert row["status"] == "crashed" and "died" in row["error"]
    assert result.frame().loc[0, "status"] == "crashed" and result.exit_code == 1


def test_without_a_scheduler_a_local_cluster_is_started(dask_grid, plugin_dirs, tmp_path, monkeypatch):
    monkeypatch.delenv(dx.SCHEDULER_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    result = imgbench.run_grid(models=["testkit/linear"], datasets=["tinygray"], seeds=SEEDS[:1], params=PARAMS,
                               out=tmp_path / "out", registry=get_registry(plugin_dirs), executor="dask",
                               report=False, progress=False)
    [row] = result.rows
    assert row["status"] == "ok"
    assert {k: row[k] for k in SAME_COLUMNS} == {k: dask_grid.rows[0][k] for k in SAME_COLUMNS}


def test_cuda_jobs_on_a_cluster_without_gpus_are_refused_before_sending(launcher, tmp_path):
    with pytest.raises(UsageError, match="--resources GPU=1"):
        launcher(["testkit/linear"], [0], tmp_path / "out", params={**PARAMS, "device": "cuda"})
    assert not (tmp_path / "out" / "jobs").exists()


def _processes(mark: str) -> list[psutil.Process]:
    """This test run's descendants (cluster workers, their jobs and kernels) whose command line has ``mark``;
    for ``KERNEL``, the forked kernels too."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if any(mark in part for part in process.cmdline()) or (
                    mark == KERNEL and process.name() == forkserver.KERNEL_PROCESS_NAME):
                found.append(process)
        except psutil.NoSuchProcess:
            pass
    return found


def _wait_for(condition, timeout: float = PROCESS_WAIT_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return False


def test_ctrl_c_stops_the_jobs_running_on_the_workers(launcher, tmp_path):
    def press_ctrl_c_once_a_kernel_runs() -> None:
        if _wait_for(lambda: _processes(KERNEL)):
            _thread.interrupt_main()

    # interrupt_main does nothing where SIGINT is ignored, as in a suite started in the background by a
    # non-interactive shell: the launcher would wait for the hour-long job
    ignored = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=press_ctrl_c_once_a_kernel_runs, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            launcher(["testkit/hang"], [0], tmp_path / "out")  # would sleep for an hour
    finally:
        signal.signal(signal.SIGINT, ignored)
    assert _wait_for(lambda: not _processes(JOB_PROCESS) and not _processes(KERNEL))
    assert not list((tmp_path / "out" / "jobs").glob("*/job.json"))  # unfinished: it runs again on resume


def test_job_faults_on_the_workers_become_statuses(launcher, tmp_path):
    result = launcher(["testkit/hang", "testkit/raise", "testkit/exit"], [0], tmp_path / "out", timeout=FAULT_TIMEOUT_S)
    statuses = {row["model"]: row["status"] for row in result.rows}
    assert statuses == {"testkit/raise": "failed", "testkit/exit": "crashed", "testkit/hang": "timeout"}
    frame = result.frame()
    assert len(frame) == 3 and frame["error"].notna().all()
    for row in result.rows:  # the job's own record and log came back too
        assert {"job.json", "runner.log"} <= {p.name for p in (result.out_dir / "jobs" / row["job_id"]).iterdir()}


LAUNCHER_SCRIPT = """
import sys, imgbench
from imgbench.registry import get_registry
if __name__ == "__main__":
    out, plugins, params = sys.argv[1], sys.argv[2], eval(sys.argv[3])
    imgbench.run_grid(models=["testkit/linear"], datasets=["tinygray"], seeds=[0, 1], params=params, out=out,
                      registry=get_registry([plugins]), executor="dask", slots=1, report=False, progress=False)
"""


def test_a_killed_launcher_leaves_no_job_running_and_the_rerun_resumes(dask_grid, launcher, tmp_path):
    scratch, out = tmp_path / "scratch", tmp_path / "out"
    first, second = dask_grid.rows[0]["job_id"], dask_grid.rows[1]["job_id"]
    env = {key: value for key, value in os.environ.items() if key != dx.SCHEDULER_ENV}  # its own LocalCluster,
    env["DASK_TEMPORARY_DIRECTORY"] = str(scratch)  # whose workers work here
    child = subprocess.Popen([sys.executable, "-c", LAUNCHER_SCRIPT, str(out), str(RUNNER_TESTKIT), repr(PARAMS)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # one worker: the second job starts once the first is back
        assert _wait_for(lambda: (out / "jobs" / first / "job.json").is_file() and _processes(str(scratch)),
                         timeout=PROCESS_WAIT_S)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert _wait_for(lambda: not _processes_anywhere(str(scratch)))  # the worker, its job and kernel went too
    assert not (out / "jobs" / second / "job.json").exists()

    result = launcher(["testkit/linear"], SEEDS, out)
    assert result.skipped == 1 and [row["status"] for row in result.rows] == ["ok", "ok"]
    assert list(pd.read_csv(out / RESULTS_CSV)["job_id"]) == [first, second]


def _processes_anywhere(mark: str) -> list[psutil.Process]:
    """Every process on the machine whose command line has ``mark`` (orphans are no longer our children)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(mark in part for part in process.info["cmdline"] or []):
            found.append(process)
    return found
