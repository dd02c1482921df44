"""The lifecycle hooks without a kernel: how the launcher calls them one implementation at a time, and the
choice of trackers, refused before anything is written. The grids with real MLflow runs are in
test_tracking_mlflow.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pluggy
import pytest

from imgbench import hookspecs, schema
from imgbench.cli import main
from imgbench.engine.recipe import config_hash, resolve_recipe
from imgbench.hookspecs import hookimpl
from imgbench.registry import Registry
from imgbench.runner.jobs import Job
from imgbench.runner.results import make_row, write_record
from imgbench.tracking import links
from imgbench.runner.lifecycle import Lifecycle, tracker_names
from imgbench.specs import GridInfo, JobInfo, JobOutcome, RunLink

REPO = Path(__file__).resolve().parents[1]
GRID_ARGS = ["run", "none", "-m", "tinycnn/small", "-d", "digits", "-p", "epochs=1",
             "--plugins-dir", str(REPO / "plugins")]


def make_job(seed: int) -> Job:
    recipe = resolve_recipe("digits", {"epochs": 1})
    return Job("tinycnn/small", "digits", seed, recipe, config_hash("tinycnn/small", "digits", seed, recipe.to_dict()),
               family="tinycnn")


def finish(out_dir: Path, job: Job, status: str = schema.Status.OK) -> dict:
    """A job folder as a finished job leaves it: its job.json with the row."""
    row = make_row(job, status=status, error="", metrics={"accuracy": 0.5}, duration_s=1.0, notebook="")
    write_record(schema.job_dir(out_dir, job.job_id), job, row)
    return row


class Recorder:
    """Remembers every call; answers with links."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    @hookimpl
    def imgbench_grid_started(self, grid: GridInfo) -> list[RunLink]:
        self.calls.append(("started", grid))
        return [RunLink("http://tracker/grid")]

    @hookimpl
    def imgbench_job_finished(self, job: JobInfo, record: JobOutcome) -> RunLink:
        self.calls.append(("job", (job, record)))
        return RunLink(f"http://tracker/{job.job_id}")

    @hookimpl
    def imgbench_grid_finished(self, grid: GridInfo, results) -> None:
        self.calls.append(("finished", results))


class Raising:
    """Raises in every job, and tries to change the row it is given first."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def imgbench_job_finished(self, job: JobInfo, record: JobOutcome) -> None:
        self.calls += 1
        record.row["status"] = "hacked"  # a read-only view: raises TypeError, and the row stays as it was


class WrongAnswer:
    @hookimpl
    def imgbench_grid_started(self, grid: GridInfo) -> str:
        return "not a list of links"

    @hookimpl
    def imgbench_job_finished(self, job: JobInfo, record: JobOutcome) -> RunLink:
        raise AssertionError("never called: left out after its first wrong answer")


class FakeResult:
    def __init__(self, out_dir: Path, rows: list[dict]) -> None:
        self.rows, self.report, self.report_error = rows, None, ""
        self.results_csv, self.exit_code = out_dir / schema.RESULTS_CSV, 0


def test_each_implementation_is_called_on_its_own_and_a_failing_one_is_reported_once(tmp_path, capsys):
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    raising, wrong = Raising(), WrongAnswer()
    pm.register(raising, name="raising")  # registered first, so called before the recorder
    pm.register(wrong, name="wrong")
    recorder = Recorder()
    jobs = [make_job(0), make_job(1), make_job(2)]
    done = finish(tmp_path, jobs[0])  # a resume skips it
    with Lifecycle(pm, {"recorder": recorder}, tmp_path) as lifecycle:
        record = {"suite": {"source": "none"}, "executor": "local", "command": ["imgbench", "run"],
                  "started_at": "2026-01-01T00:00:00+00:00"}
        grid = lifecycle.grid_started(jobs, [jobs[0].job_id], record)
        rows = [done] + [finish(tmp_path, job, status) for job, status in
                         ((jobs[1], schema.Status.OK), (jobs[2], schema.Status.FAILED))]
        for job, row in zip(jobs[1:], rows[1:]):
            lifecycle.job_finished(job, row)
        lifecycle.grid_finished(grid, FakeResult(tmp_path, rows))
        assert pm.get_plugin("tracker:recorder") is recorder
    assert pm.get_plugin("tracker:recorder") is None  # registered for the one grid only

    kinds = [kind for kind, _ in recorder.calls]
    assert kinds == ["started", "job", "job", "finished"]  # the raising plugin never stopped the recorder
    started = recorder.calls[0][1]
    assert [job.job_id for job in started.jobs] == [job.job_id for job in jobs]
    assert list(started.done) == [jobs[0].job_id] and started.done[jobs[0].job_id].row["status"] == "ok"
    assert started.trackers == ("recorder",) and started.jobs[1].params["seed"] == 1
    job, outcome = recorder.calls[2][1]
    assert (job.job_id, outcome.status, outcome.ok) == (jobs[2].job_id, "failed", False)
    assert outcome.job_dir == schema.job_dir(tmp_path, jobs[2].job_id) and outcome.finished_at
    assert recorder.calls[3][1].rows[1]["status"] == "ok"  # the raising plugin did not change the row

    assert raising.calls == 1  # left out after its first failure
    assert [(e.plugin, e.kind, e.hook) for e in lifecycle.errors] == [
        ("wrong", "plugin", "imgbench_grid_started"), ("raising", "plugin", "imgbench_job_finished")]
    assert "TypeError" in lifecycle.errors[1].error
    err = capsys.readouterr().err
    assert err.count("plugin 'raising' failed") == 1 and err.count("plugin 'wrong' failed") == 1
    assert "tracker recorder: http://tracker/grid" in err
    assert lifecycle.run_record()["hook_errors"][1]["plugin"] == "raising"

    tracked = links.read(tmp_path)["recorder"]
    assert tracked["grid"]["url"] == "http://tracker/grid"
    assert tracked["jobs"] == {job.job_id: f"http://tracker/{job.job_id}" for job in jobs[1:]}


def test_tracker_names_come_from_the_option_or_the_environment():
    assert tracker_names("mlflow,jsonl", {}) == ("mlflow", "jsonl")
    assert tracker_names(["mlflow", "jsonl, mlflow"], {}) == ("mlflow", "jsonl")
    assert tracker_names(None, {"IMGBENCH_TRACK": " mlflow "}) == ("mlflow",)
    assert tracker_names([], {"IMGBENCH_TRACK": "mlflow"}) == ()  # given but empty: none, whatever the env says


@pytest.mark.parametrize("extra, message", [
    (["--track", "nosuch"], "unknown tracker 'nosuch' in --track/IMGBENCH_TRACK; the installed trackers are: mlflow"),
    (["--track-uri", "http://127.0.0.1:5000"], "--track-uri was given but no tracker is switched on"),
])
def test_a_bad_tracker_choice_is_refused_before_anything_is_written(tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert main([*GRID_ARGS, "--out", str(out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_mlflow_missing_is_refused_before_anything_is_written_and_says_how_to_install_it(tmp_path, monkeypatch,
                                                                                          capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what an installation without the extra has
    monkeypatch.setenv("IMGBENCH_TRACK", "mlflow")
    out = tmp_path / "out"
    assert main([*GRID_ARGS, "--out", str(out)]) == 2
    assert 'pip install "imgbench[mlflow]"' in capsys.readouterr().err
    assert not out.exists()


def test_a_tracker_with_a_misspelt_hook_is_left_out_and_reported(tmp_path, capsys):
    class Misspelt:
        @hookimpl
        def imgbench_job_finish(self, job):  # no such hook
            raise AssertionError("never called")

    registry = Registry()
    with Lifecycle(registry.pm, {"misspelt": Misspelt()}, tmp_path) as lifecycle:
        assert registry.pm.get_plugin("tracker:misspelt") is None
    assert [(e.plugin, e.hook) for e in lifecycle.errors] == [("misspelt", "registration")]
    assert "imgbench_job_finish" in capsys.readouterr().err


def test_the_report_section_links_each_row_to_its_run(tmp_path):
    import pandas as pd

    links.record(tmp_path, "mlflow", [RunLink("http://h/#/grid", note="start `mlflow ui`"),
                                      RunLink("http://h/#/a", "job-a")])
    links.record(tmp_path, "mlflow", [RunLink("http://h/#/a2", "job-a")])  # a rerun's run replaces the first
    table = pd.DataFrame({"job_id": ["job-a", "job-b"], "status": ["ok", "failed"]})
    html = links.html_section(tmp_path, table)
    assert '<a href="http://h/#/a2">run</a>' in html and "http://h/#/a\"" not in html
    assert html.count("<tr>") == 3 and '<a href="http://h/#/grid">' in html
    lines = links.markdown_lines(tmp_path, table)
    assert "| `job-a` | ok | [run](http://h/#/a2) |" in lines and "| `job-b` | failed |  |" in lines
    assert json.loads((tmp_path / schema.TRACKING_JSON).read_text())["mlflow"]["jobs"] == {"job-a": "http://h/#/a2"}
    assert links.html_section(tmp_path / "none", table) == "" and links.markdown_lines(tmp_path / "none", table) == []


def test_the_installed_example_package_offers_its_tracker_through_its_entry_point(example_package_site,
                                                                                  monkeypatch):
    monkeypatch.syspath_prepend(str(example_package_site))
    assert [spec.name for spec in Registry().trackers()] == ["jsonl", "mlflow"]


def test_the_hook_records_are_read_only(tmp_path):
    job = make_job(0)
    row = finish(tmp_path, job)
    with Lifecycle(pluggy.PluginManager(hookspecs.PROJECT), {}, tmp_path) as lifecycle:
        outcome = lifecycle._outcome(job)
    assert outcome is not None and outcome.row == row
    with pytest.raises(TypeError):
        outcome.row["status"] = "failed"  # type: ignore[index]
    with pytest.raises(AttributeError):
        outcome.finished_at = ""  # type: ignore[misc]
