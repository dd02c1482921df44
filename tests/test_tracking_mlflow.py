"""MLflow tracking of real grids, read back through MlflowClient: a real `mlflow server` (sqlite backend) that
the module starts on 127.0.0.1, MLflow's default local store, the Dask executor, a resume, a tracker that
raises, the example package's JSON-lines tracker, and a server that does not answer.

Every grid is one or two tiny jobs (tinycnn/small on the bundled digits, one epoch, a few hundred images);
kernel start-up dominates, so each grid runs once and many assertions share it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from imgbench import schema
from imgbench.cli import main
from imgbench.registry import Registry
from imgbench.runner import run_grid
from imgbench.runner.jobs import Job
from imgbench.tracking.mlflow_tracker import FOLDER_TAG, GRID_ROLE, JOB_ARTIFACTS, JOB_TAG, ROLE_TAG

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import ViewType  # noqa: E402

pytestmark = [pytest.mark.notebook, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "plugins"
TINY = {"epochs": 1, "bench_seconds": 0.05, "train_samples": 200, "test_samples": 100, "device": "cpu"}
MODEL, DATASET = "tinycnn/small", "digits"
SERVER_START_S = 240  # `mlflow server` takes half a minute to answer on a busy 2-core machine
RAISING_TRACKER = '''
from imgbench import TrackerSpec, hookimpl

class Raising:
    def __init__(self, uri):
        pass

    @hookimpl
    def imgbench_job_finished(self, job, record):
        raise RuntimeError("a bug in a tracker")

@hookimpl
def imgbench_trackers():
    return [TrackerSpec("raising", Raising, "raises in every job")]
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real MLflow tracking server on 127.0.0.1 with a sqlite backend; yields its URI."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no GenAI job runner processes
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
               "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1"]
    log = (folder / "server.log").open("w")
    process = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert process.poll() is None, (folder / "server.log").read_text()
            assert time.monotonic() < deadline, "mlflow server did not answer: " + (folder / "server.log").read_text()
            time.sleep(1)
        yield uri
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
        log.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory, example_package_site):
    """Module-wide isolation, the example package pip-installed (on sys.path: the launcher alone uses its tracker)
    and a drop-in plugin whose tracker raises."""
    raising = tmp_path_factory.mktemp("raising-plugin")
    (raising / "raising_tracker.py").write_text(RAISING_TRACKER)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMGBENCH_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        patch.setenv("KERAS_BACKEND", "torch")
        for name in ("IMGBENCH_DATA_DIR", "IMGBENCH_PLUGINS_DIR", "IMGBENCH_BLOCK_PLUGINS", "IMGBENCH_TRACK",
                     "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
            patch.delenv(name, raising=False)
        patch.syspath_prepend(str(example_package_site))
        patch.chdir(tmp_path_factory.mktemp("cwd"))  # MLflow's default store would land here, never in the repo
        yield Registry(plugin_dirs=[PLUGINS, raising])


def grid(registry: Registry, out: Path, seeds=(0,), **options):
    """run_grid on the tiny grid; returns the result and what it wrote on stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        result = run_grid("none", models=[MODEL], datasets=[DATASET], seeds=list(seeds), params=TINY, out=out,
                          registry=registry, progress=False, **{"report": False, **options})
    return result, err.getvalue()


def runs(client: MlflowClient, out: Path, experiment: str = "imgbench", view: int = ViewType.ACTIVE_ONLY) -> list:
    """The runs of the grid in ``out``: its parent and its children."""
    found = client.get_experiment_by_name(experiment)
    every = client.search_runs([found.experiment_id], run_view_type=view) if found else []
    return [run for run in every if run.data.tags.get(FOLDER_TAG) == str(out)]


def parent_and_children(client: MlflowClient, out: Path, experiment: str = "imgbench"):
    every = runs(client, out, experiment)
    parents = [r for r in every if r.data.tags.get(ROLE_TAG) == GRID_ROLE]
    assert len(parents) == 1, [r.data.tags for r in parents]
    children = {r.data.tags[JOB_TAG]: r for r in every
                if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id}
    return parents[0], children


def assert_child_matches_results(client: MlflowClient, child, row: pd.Series, out: Path) -> None:
    """Metrics equal results.csv, history is step metrics, params are the job's, artifacts are there."""
    numeric = {name: float(row[name]) for name in schema.NUMERIC_COLUMNS if not pd.isna(row[name])}
    assert {name: child.data.metrics[name] for name in numeric} == pytest.approx(numeric, rel=1e-12)
    assert not set(schema.NUMERIC_COLUMNS) - set(numeric) & set(child.data.metrics)  # no metric for an empty cell
    job_dir = schema.job_dir(out, row["job_id"])
    record = json.loads((job_dir / schema.JOB_RECORD).read_text())
    job = Job.from_dict(record["job"])
    assert child.data.params == {key: str(value) for key, value in job.parameters.items()}
    assert child.data.tags["imgbench.config_hash"] == row["config_hash"] == job.config_hash
    assert child.data.tags[FOLDER_TAG] == str(out) and child.data.tags["imgbench.status"] == row["status"]
    history = pd.read_csv(job_dir / schema.HISTORY_CSV)
    steps = client.get_metric_history(child.info.run_id, "val_accuracy")
    assert [m.step for m in steps] == list(history.epoch)
    assert [m.value for m in steps] == pytest.approx(list(history.val_accuracy), rel=1e-12)
    assert {a.path for a in client.list_artifacts(child.info.run_id)} == set(JOB_ARTIFACTS)
    metrics_json = client.download_artifacts(child.info.run_id, schema.METRICS_JSON, str(out.parent / "download"))
    assert Path(metrics_json).read_bytes() == (job_dir / schema.METRICS_JSON).read_bytes()
    provenance = json.loads((job_dir / schema.METRICS_JSON).read_text())["provenance"]
    assert child.data.tags["imgbench.provenance.torch"] == provenance["torch"]
    assert child.data.tags["imgbench.provenance.device_name"] == provenance["device_name"]
    assert child.info.status == ("FINISHED" if row["status"] == "ok" else "FAILED")


# -- a real server: two jobs, the example package's tracker and a raising one beside MLflow ------------------

@pytest.fixture(scope="module")
def served(env, server, tmp_path_factory):
    out = tmp_path_factory.mktemp("served") / "out"
    result, err = grid(env, out, seeds=(0, 1), track=["mlflow", "jsonl", "raising"], track_uri=server, report=True)
    return out, result, err


def test_every_job_is_a_child_of_one_parent_with_the_metrics_of_results_csv(served, server):
    out, result, _ = served
    assert result.exit_code == 0, result.summary()  # the raising tracker changed nothing
    client = MlflowClient(server)
    parent, children = parent_and_children(client, out)
    frame = pd.read_csv(out / schema.RESULTS_CSV)
    assert sorted(children) == sorted(frame.job_id) and len(frame) == 2
    for _, row in frame.iterrows():
        assert_child_matches_results(client, children[row.job_id], row, out)
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs_ok"] == 2
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {schema.RESULTS_CSV, schema.REPORT_HTML}
    assert parent.data.tags["imgbench.provenance.imgbench"] == "0.1.0"


def test_a_raising_tracker_is_reported_once_and_loses_nothing(served):
    out, result, err = served
    assert [row["status"] for row in result.rows] == ["ok", "ok"]
    assert len(pd.read_csv(out / schema.RESULTS_CSV)) == 2
    errors = json.loads((out / schema.RUN_JSON).read_text())["hook_errors"]
    assert [(e["plugin"], e["kind"], e["hook"]) for e in errors] == [("raising", "tracker", "imgbench_job_finished")]
    assert "a bug in a tracker" in errors[0]["error"]
    assert err.count("tracker 'raising' failed") == 1  # two jobs, one warning
    assert "failed" not in err.replace("tracker 'raising' failed", "")


def test_the_example_package_s_jsonl_tracker_saw_every_event(served):
    out, _, _ = served
    events = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["grid_started", "job_finished", "job_finished", "grid_finished"]
    frame = pd.read_csv(out / schema.RESULTS_CSV, keep_default_na=False)
    assert {e["row"]["job_id"]: e["row"]["accuracy"] for e in events[1:3]} == dict(zip(frame.job_id, frame.accuracy))
    assert events[0]["skipped"] == [] and events[-1]["exit_code"] == 0


def test_the_report_links_each_row_to_its_mlflow_run(served, server):
    out, _, _ = served
    _, children = parent_and_children(MlflowClient(server), out)
    html = (out / schema.REPORT_HTML).read_text()
    for run in children.values():
        assert f'href="{server}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"' in html
    assert str(out / "runs.jsonl") in html  # the jsonl tracker's link to its file


def test_a_resume_reuses_the_parent_and_replaces_only_the_job_that_ran_again(served, env, server):
    out, first, _ = served
    client = MlflowClient(server)
    parent, before = parent_and_children(client, out)
    rerun = first.rows[1]["job_id"]
    (schema.job_dir(out, rerun) / schema.JOB_RECORD).unlink()  # as if it had been killed: it runs again
    result, err = grid(env, out, seeds=(0, 1), track=["mlflow"], track_uri=server)
    assert result.exit_code == 0 and result.skipped == 1, result.summary()
    again, after = parent_and_children(client, out)
    assert again.info.run_id == parent.info.run_id and again.info.status == "FINISHED"
    kept = first.rows[0]["job_id"]
    assert after[kept].info.run_id == before[kept].info.run_id  # the skipped job's run, untouched
    assert after[rerun].info.run_id != before[rerun].info.run_id
    deleted = [r.info.run_id for r in runs(client, out, view=ViewType.DELETED_ONLY)]
    assert deleted == [before[rerun].info.run_id]  # the earlier attempt's run, not a duplicate
    assert len(runs(client, out)) == 3  # one parent, two children
    assert_child_matches_results(client, after[rerun], pd.read_csv(out / schema.RESULTS_CSV).iloc[1], out)


# -- a server that does not answer, then does ------------------------------------------------------------

def test_an_unreachable_server_costs_one_warning_and_its_runs_are_logged_on_the_rerun(env, server, tmp_path):
    out = tmp_path / "out"
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result, err = grid(env, out, track=["mlflow"], track_uri=dead)
    assert result.exit_code == 0 and len(pd.read_csv(out / schema.RESULTS_CSV)) == 1, result.summary()
    assert err.count("tracker 'mlflow' failed") == 1, err
    assert sum(dead in line for line in err.splitlines()) == 1, err  # one warning, no retry messages
    errors = json.loads((out / schema.RUN_JSON).read_text())["hook_errors"]
    assert len(errors) == 1 and errors[0]["hook"] == "imgbench_grid_started" and dead in errors[0]["error"]

    result, err = grid(env, out, track=["mlflow"], track_uri=server)  # the server answers again
    assert result.skipped == 1 and "failed" not in err
    client = MlflowClient(server)
    _, children = parent_and_children(client, out)
    frame = pd.read_csv(out / schema.RESULTS_CSV)
    assert list(children) == list(frame.job_id)
    assert_child_matches_results(client, children[frame.job_id[0]], frame.iloc[0], out)


# -- the Dask executor, switched on by the environment --------------------------------------------------------

def test_a_grid_on_the_dask_executor_is_tracked_from_the_launcher(env, server, tmp_path, monkeypatch):
    monkeypatch.setenv("IMGBENCH_TRACK", "mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "imgbench-dask")
    out = tmp_path / "out"
    result, _ = grid(env, out, executor="dask")
    assert result.exit_code == 0, result.summary()
    client = MlflowClient(server)
    _, children = parent_and_children(client, out, "imgbench-dask")
    frame = pd.read_csv(out / schema.RESULTS_CSV)
    assert list(children) == list(frame.job_id)
    assert_child_matches_results(client, children[frame.job_id[0]], frame.iloc[0], out)


# -- MLflow's default local store, from the command line ----------------------------------------------------

def test_without_a_uri_the_runs_go_to_mlflow_s_default_sqlite_store_in_the_working_folder(env, tmp_path,
                                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results" / "grid"
    assert main(["run", "none", "-m", MODEL, "-d", DATASET, *[f"-p{k}={json.dumps(v)}" for k, v in TINY.items()],
                 "--plugins-dir", str(PLUGINS), "--out", str(out), "--no-report", "--track", "mlflow"]) == 0
    assert (tmp_path / "mlflow.db").is_file()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent, children = parent_and_children(client, out)
    frame = pd.read_csv(out / schema.RESULTS_CSV)
    assert list(children) == list(frame.job_id) and parent.info.status == "FINISHED"
    assert_child_matches_results(client, children[frame.job_id[0]], frame.iloc[0], out)
    artifacts = Path(children[frame.job_id[0]].info.artifact_uri.removeprefix("file://"))
    assert artifacts.is_relative_to(tmp_path / "mlruns")  # MLflow's default artifact folder, beside mlflow.db
    link = json.loads((out / schema.TRACKING_JSON).read_text())["mlflow"]["grid"]
    assert link["note"] == f"start `mlflow ui --backend-store-uri sqlite:///{tmp_path / 'mlflow.db'}` to open it"
    assert parent.data.metrics["jobs"] == 1
