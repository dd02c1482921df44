"""The runner end to end, through papermill and real kernels: a Keras and a timm model on two tiny synthetic
datasets, every fault a job can have, and resume after the runner is SIGKILLed.

Kernel start plus framework imports cost seconds per job, so each grid runs once per module and many
assertions share it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import nbformat
import pandas as pd
import psutil
import pytest

from imgbench import forkserver, schema
from imgbench.engine import frameworks
from imgbench.registry import get_registry
from imgbench.runner import run_grid
from imgbench.runner.suite import suite_from_dict

pytestmark = [pytest.mark.notebook, pytest.mark.slow]

TESTKIT = Path(__file__).parent / "fixtures" / "runner_plugins"
TINY = {"epochs": 1, "batch_size": 32, "bench_seconds": 0.05, "lr": 3e-3, "amp": False}
FAULT_TIMEOUT_S = 60  # long enough for a good job on a busy 2-core machine, short enough to wait for
WAIT_S = 300


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Module-wide isolation (the autouse fixture is per test): own cache, no ambient plugins or data."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMGBENCH_CACHE_DIR", str(tmp_path_factory.mktemp("grid-cache")))
        patch.setenv("KERAS_BACKEND", "torch")
        for name in ("IMGBENCH_DATA_DIR", "IMGBENCH_PLUGINS_DIR", "IMGBENCH_BLOCK_PLUGINS"):
            patch.delenv(name, raising=False)
        yield get_registry([TESTKIT], ())


def grid(models, datasets, **params):
    return suite_from_dict({"models": models, "datasets": datasets, "params": {**TINY, **params}})


def processes_in(folder: Path) -> list[psutil.Process]:
    """Processes working in ``folder`` (job processes and their kernels) or naming it on their command line."""
    found = []
    for process in psutil.process_iter(["cmdline", "cwd"]):
        cwd, cmdline = process.info["cwd"] or "", process.info["cmdline"] or []
        if cwd.startswith(str(folder)) or any(str(folder) in part for part in cmdline):
            found.append(process)
    return found


# -- end to end: keras + timm x two datasets ----------------------------------------------------------------

@pytest.fixture(scope="module")
def e2e(env, tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e")
    suite = grid(["keras/mnist_convnet", "timm/resnet18"], ["tinygray", "tinyrgb"])
    result = run_grid(suite, out=out, slots=2, timeout=WAIT_S, report=False, registry=env, progress=False)
    return suite, result


def test_e2e_four_ok_rows_in_the_documented_schema(e2e):
    _, result = e2e
    assert result.exit_code == 0, result.summary()
    frame = pd.read_csv(result.results_csv)
    assert list(frame.columns) == list(schema.RESULT_COLUMNS)
    assert len(frame) == 4 and set(frame.status) == {"ok"}
    assert set(zip(frame.model, frame.dataset)) == {(m, d) for m in ("keras/mnist_convnet", "timm/resnet18")
                                                    for d in ("tinygray", "tinyrgb")}
    assert set(frame.family) == {"keras", "timm"}
    assert frame.accuracy.between(0, 1).all() and (frame.params > 0).all() and (frame.duration_s > 0).all()
    assert (frame.epochs == 1).all() and (frame.batch_size == 32).all()
    for row in frame.itertuples():
        assert (result.out_dir / row.notebook).is_file()
        assert row.job_id.endswith(row.config_hash[:8]) and Path(row.notebook).parent.name == row.job_id
        metrics = json.loads((result.out_dir / "jobs" / row.job_id / "metrics.json").read_text())
        assert metrics["accuracy"] == pytest.approx(row.accuracy)


def test_e2e_phases_add_up_to_each_jobs_wall_time(e2e):
    _, result = e2e
    for job in result.jobs:
        metrics = json.loads((result.out_dir / "jobs" / job.job_id / "metrics.json").read_text())
        wall, parts = metrics["wall"], metrics["phases"]
        assert sum(parts.values()) == pytest.approx(wall["seconds"], rel=1e-6)
        assert {"process_start", "kernel_start", "imports", "load_data", "train", "evaluate", "benchmark",
                "display", "write"} <= set(parts)
        assert wall["started_at"] < wall["device_from"] < wall["ended_at"]


def test_the_next_job_starts_while_the_previous_finishes_and_waits_for_it_before_using_the_device(env, tmp_path,
                                                                                                  monkeypatch):
    servers, start = [], forkserver.SERVERS.start

    def counted_start(*args):  # every fork server the grid asks for, and when
        process, path = start(*args)
        servers.append((process.pid, time.time()))
        return process, path

    monkeypatch.setattr(forkserver.SERVERS, "start", counted_start)
    result = run_grid(suite_from_dict({"models": ["testkit/linear"], "datasets": ["tinygray"], "seeds": [0, 1],
                                       "params": TINY}), out=tmp_path / "out", slots=1, timeout=WAIT_S,
                      report=False, registry=env, progress=False)
    assert result.exit_code == 0, result.summary()
    records = sorted((json.loads((result.out_dir / "jobs" / job.job_id / "metrics.json").read_text())
                      for job in result.jobs), key=lambda metrics: metrics["wall"]["started_at"])
    first, second = (metrics["wall"] for metrics in records)
    assert second["started_at"] < first["ended_at"]  # its start overlapped the first job's figures and files
    assert second["device_from"] > first["ended_at"]  # but nothing of the first job ran beside its timed work
    # both kernels were forked from the grid's fork server, which had imported torch and imgbench: the second
    # job's imports cost nothing (a fresh kernel spends seconds on them)
    assert [metrics["provenance"]["forked_kernel"] for metrics in records] == [True, True]
    assert records[1]["phases"]["imports"] < 1.0
    # one server, started by the executor's prepare before the first job (its imports overlap the launcher's
    # preparation), and it is the one both jobs asked for their kernels
    assert len({pid for pid, _ in servers}) == 1 and servers[0][1] < first["started_at"]
    # it imported the engine's modules and no framework: testkit's family has none
    run = json.loads((result.out_dir / schema.RUN_JSON).read_text())
    assert run["env"][forkserver.PRELOAD_ENV] == ",".join(frameworks.COMMON)


def test_the_report_kernel_is_forked_from_the_grids_server_which_stops_after_it(env, tmp_path, monkeypatch):
    servers, start = [], forkserver.SERVERS.start
    forked, request = [], forkserver.request_kernel

    def counted_start(*args):
        process, path = start(*args)
        servers.append(process)
        return process, path

    def recorded(address, argv, env, cwd, status_path):  # in this process: the report's kernel (jobs ask in theirs)
        kernel = request(address, argv, env, cwd, status_path)
        forked.append((psutil.Process(kernel.pid).ppid(), cwd))
        return kernel

    monkeypatch.setattr(forkserver.SERVERS, "start", counted_start)
    monkeypatch.setattr(forkserver, "request_kernel", recorded)
    result = run_grid(suite_from_dict({"models": ["testkit/linear"], "datasets": ["tinygray"], "seeds": [0],
                                       "params": TINY}), out=tmp_path / "out", slots=1, timeout=WAIT_S,
                      registry=env, progress=False)
    assert result.exit_code == 0 and result.report is not None, result.summary()
    server = servers[0]
    assert forked == [(server.pid, str(result.out_dir.resolve()))]
    assert server.poll() is not None and not forkserver.SERVERS._servers  # closed once the report was built


def test_a_grids_fork_server_imports_the_frameworks_of_its_model_families_only():
    assert frameworks.of_grid(["timm", "timm"]) == (*frameworks.COMMON, "timm")  # no Keras for timm models
    assert frameworks.of_grid(["timm", "keras", "myplugin"]) == (*frameworks.COMMON, "keras", "timm")
    assert frameworks.of_family("keras") == (*frameworks.COMMON, "keras")


def test_e2e_notebooks_hold_exactly_the_requested_parameters(e2e):
    suite, result = e2e
    for job in result.jobs:
        nb = nbformat.read(result.out_dir / "jobs" / job.job_id / "notebook.ipynb", as_version=4)
        injected = nb.metadata.papermill.parameters
        assert injected == {**job.parameters, "out_dir": str(result.out_dir / "jobs" / job.job_id)}
        assert {k: injected[k] for k in TINY} == TINY
        assert all(type(injected[k]) is type(v) for k, v in TINY.items())  # 1e-3 stays a float, False a bool
        assert (injected["model"], injected["dataset"], injected["seed"]) == (job.model, job.dataset, 0)
        tags = [c.metadata.get("tags", []) for c in nb.cells]
        assert sum("injected-parameters" in t for t in tags) == 1
        assert not any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))


def test_e2e_metrics_record_the_recipe_and_hash_the_grid_resolved(e2e):
    _, result = e2e
    for job in result.jobs:  # through request.json, the notebook's parameters and run_job(recipe=...)
        metrics = json.loads((result.out_dir / "jobs" / job.job_id / schema.METRICS_JSON).read_text())
        assert metrics["recipe"] == job.recipe.to_dict() and metrics["config_hash"] == job.config_hash


def test_e2e_run_json_records_the_grid(e2e):
    _, result = e2e
    run = json.loads((result.out_dir / "run.json").read_text())
    assert [j["job_id"] for j in run["grid"]] == [j.job_id for j in result.jobs]
    assert run["statuses"] == {"ok": 4} and run["slots"] == 2 and run["finished_at"]


def test_rerun_skips_succeeded_jobs_and_keeps_one_row_each(e2e):
    suite, result = e2e
    records = {p: p.stat().st_mtime_ns for p in result.out_dir.glob("jobs/*/job.json")}
    again = run_grid(suite, out=result.out_dir, slots=2, report=False, registry=get_registry([TESTKIT], ()),
                     progress=False)
    assert again.skipped == 4 and again.exit_code == 0
    assert {p: p.stat().st_mtime_ns for p in result.out_dir.glob("jobs/*/job.json")} == records
    assert len(pd.read_csv(again.results_csv)) == 4


def test_a_failing_report_is_reported_and_loses_no_results(e2e, monkeypatch):
    suite, result = e2e

    def broken(out_dir, baseline=None, *, fork_server=None):
        raise RuntimeError("report exploded")

    monkeypatch.setitem(sys.modules, "imgbench.report", types.SimpleNamespace(build_report=broken))
    again = run_grid(suite, out=result.out_dir, report=True, registry=get_registry([TESTKIT], ()), progress=False)
    assert again.report_error == "RuntimeError: report exploded" and again.exit_code == 1
    assert "report failed" in again.summary()
    assert len(pd.read_csv(again.results_csv)) == 4


# -- faults stay inside their job -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """The faulty grid's temporary folder: what its jobs leave there."""
    return tmp_path_factory.mktemp("tmp")


@pytest.fixture(scope="module")
def faults(env, tmp_path_factory, scratch):
    out = tmp_path_factory.mktemp("faults")
    suite = grid(["testkit/hang", "testkit/linear", "testkit/exit", "testkit/raise"], ["tinygray"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(scratch))
        patch.setattr(tempfile, "tempdir", str(scratch))
        result = run_grid(suite, out=out, slots=2, timeout=FAULT_TIMEOUT_S, report=False, registry=env,
                          progress=False)
    return {row["model"]: row for row in result.rows}, result


def test_good_job_in_a_faulty_grid_succeeds(faults):
    rows, result = faults
    assert rows["testkit/linear"]["status"] == "ok"
    assert result.exit_code == 1
    assert len(pd.read_csv(result.results_csv)) == 4


def test_a_kernel_that_dies_is_crashed(faults):
    rows, result = faults
    assert rows["testkit/exit"]["status"] == "crashed"
    assert "kernel died (exit code 7)" in rows["testkit/exit"]["error"]


def test_a_job_past_the_timeout_is_killed_with_its_kernel(faults, scratch):
    rows, result = faults
    row = rows["testkit/hang"]
    assert row["status"] == "timeout" and f"{FAULT_TIMEOUT_S} s timeout" in row["error"]
    assert FAULT_TIMEOUT_S <= row["duration_s"] < FAULT_TIMEOUT_S + 15
    assert processes_in(result.out_dir / "jobs" / row["job_id"]) == []
    # nor its kernel's sockets, nor the grid's fork server's (torch keeps its compile cache there, by design)
    assert [path.name for path in scratch.iterdir() if path.name.startswith("imgbench-")] == []


def test_a_raising_cell_is_failed_with_the_exception_and_the_notebook_kept(faults):
    rows, result = faults
    row = rows["testkit/raise"]
    assert row["status"] == "failed"
    assert row["error"].startswith("RuntimeError: testkit/raise always fails to build")
    nb = nbformat.read(result.out_dir / row["notebook"], as_version=4)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors and errors[0]["ename"] == "RuntimeError"


def test_the_summary_says_which_jobs_failed_and_why(faults):
    rows, result = faults
    summary = result.summary()
    for model, status in (("testkit/exit", "crashed"), ("testkit/hang", "timeout"), ("testkit/raise", "failed")):
        assert f"{status:<15} {rows[model]['job_id']}: " in summary
    assert rows["testkit/linear"]["job_id"] not in summary


def test_a_notebook_that_writes_no_metrics_is_missing_metrics(env, tmp_path):
    notebook = tmp_path / "no_metrics.ipynb"
    params = nbformat.v4.new_code_cell('model = ""\ndataset = ""\nseed = 0\nout_dir = ""')
    params.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_code_cell("print('trained nothing')")],
                                  metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nbformat.write(nb, notebook)
    result = run_grid(grid(["testkit/linear"], ["tinygray"]), out=tmp_path / "out", notebook=notebook,
                      report=False, registry=env, progress=False)
    [row] = result.rows
    assert row["status"] == "missing_metrics" and "metrics.json" in row["error"]
    assert result.exit_code == 1


# -- resume after the runner is SIGKILLed -----------------------------------------------------------------

def test_sigkilled_runner_resumes_without_losing_or_repeating_jobs(env, tmp_path):
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "imgbench.cli", "run", "--plugins-dir", str(TESTKIT), "-m", "testkit/linear",
            "-d", "tinygray", "--seeds", "0,1,2", "--out", str(out), "--no-report",
            *[arg for k, v in TINY.items() for arg in ("-p", f"{k}={json.dumps(v)}")]]
    runner = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + WAIT_S
    while not list(out.glob("jobs/*/job.json")) and time.monotonic() < deadline and runner.poll() is None:
        time.sleep(0.2)
    os.kill(runner.pid, signal.SIGKILL)  # mid-grid: job 1 finished, job 2 running
    runner.wait()
    finished = {p.parent.name: p.read_text() for p in out.glob("jobs/*/job.json")}
    assert 1 <= len(finished) < 3

    deadline = time.monotonic() + 30  # the orphaned job process notices, kills its kernel and leaves
    while processes_in(out) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_in(out) == []

    rerun = subprocess.run([*argv, "--jobs", "2"], capture_output=True, text=True, timeout=WAIT_S)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    frame = pd.read_csv(out / "results.csv")
    assert len(frame) == 3 and frame.job_id.is_unique and set(frame.status) == {"ok"}
    assert sorted(frame.seed) == [0, 1, 2]
    for job_id, record in finished.items():  # finished jobs were not run again
        assert (out / "jobs" / job_id / "job.json").read_text() == record
    assert f"{len(finished)} skipped" in rerun.stdout


# -- a dead kernel leaves its trace ---------------------------------------------------------------------------

def test_a_dead_kernel_leaves_its_stack_in_runner_log_and_names_the_signal_and_cell(env, tmp_path):
    result = run_grid(grid(["crashkit/segfault", "crashkit/sigkill"], ["tinygray"]), out=tmp_path / "out", slots=2,
                      timeout=WAIT_S, report=False, registry=env, progress=False)
    rows = {row["model"]: row for row in result.rows}
    segfault, sigkill = rows["crashkit/segfault"], rows["crashkit/sigkill"]
    assert segfault["status"] == sigkill["status"] == "crashed"
    assert "the kernel died (signal SIGSEGV) while running cell" in segfault["error"]
    assert "the kernel died (signal SIGKILL; killed for memory?) while running cell" in sigkill["error"]
    nb = nbformat.read(result.out_dir / segfault["notebook"], as_version=4)
    [training] = [i for i, cell in enumerate(nb.cells) if cell.source.startswith("result = run_job(")]
    for row in (segfault, sigkill):  # the cell is the one that trained, by index and first line
        assert f"while running cell {training} (`result = run_job(model, data, seed=seed" in row["error"]
    log = (result.out_dir / "jobs" / segfault["job_id"] / "runner.log").read_text(encoding="utf-8", errors="replace")
    assert "Fatal Python error: Segmentation fault" in log
    assert "in _dereference_null" in log and "in forward" in log  # faulthandler's stack names the frames
