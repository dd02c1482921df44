"""Where a job's time goes: the launcher's breakdown adds up to the wall time, computed by hand; the report
shows it per job and for the grid; the next job starts while the previous one finishes and waits for it before
it uses the device; the job is a frozen plan and typed phases."""

from __future__ import annotations

import ast
import dataclasses
import json
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from imgbench.engine import handoff, phases
from imgbench.engine.phases import Cell, JobTimes, launcher_breakdown

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_POSITIONAL = 8


def test_the_launchers_breakdown_adds_up_to_the_wall_time_phase_by_phase():
    # launched at 100 s; papermill starts at 101 and its kernel runs the first cell at 103
    cells = (Cell("imports", 103.0, 104.0), Cell("load_data", 104.0, 105.0), Cell("display", 105.2, 105.5),
             Cell("engine", 105.6, 115.6), Cell("display", 115.7, 116.2), Cell("", 116.2, 116.3))
    engine = {"imports": 0.5, "train": 6.0, "evaluate": 1.0, "benchmark": 2.0, "not-a-phase": 9.0}
    times = JobTimes(launched=100.0, ended=117.0, notebook_started=101.0, notebook_ended=116.5, cells=cells)
    parts = launcher_breakdown(times, engine)
    expected = {"process_start": 1.0, "kernel_start": 2.0, "imports": 1.5, "load_data": 1.0, "train": 6.0,
                "benchmark": 2.0, "evaluate": 1.0, "display": 0.8,
                "write": 0.2 + 0.1 + 0.1 + 0.7,  # papermill's saves between cells, then the end
                "other": 0.5 + 0.1}  # the engine cell's 10 s less its phases; the untagged cell
    assert parts == pytest.approx(expected)
    assert list(parts) == [name for name in phases.ORDER if name in expected]  # the order a job runs them
    assert sum(parts.values()) == pytest.approx(times.ended - times.launched)


def test_a_job_that_never_reached_its_notebook_is_all_process_start():
    assert launcher_breakdown(JobTimes(10.0, 12.5), {}) == {"process_start": 2.5}


def test_papermill_cells_are_read_with_their_tags_and_times():
    notebook = {"cells": [
        {"cell_type": "markdown", "metadata": {}},
        {"cell_type": "code", "metadata": {"tags": ["parameters"], "papermill": {
            "start_time": "2026-12-04T19:16:44.774165+00:00", "end_time": "2026-12-04T19:16:44.802624+00:00"}}},
        {"cell_type": "code", "metadata": {"tags": ["engine"], "papermill": {
            "start_time": "2026-12-04T19:16:46.273515", "end_time": "2026-12-04T19:17:13.378159"}}},
        {"cell_type": "code", "metadata": {"tags": ["display"], "papermill": {"start_time": None}}},  # not run
    ]}
    first, engine = phases.notebook_cells(notebook)
    assert first.phase == "" and engine.phase == "engine"
    assert engine.end - engine.start == pytest.approx(27.104644)
    assert engine.start - first.start == pytest.approx(1.49935)  # a stamp without an offset is UTC, as papermill's


def test_the_union_of_overlapping_jobs_counts_each_second_once():
    assert phases.covered([(0, 10), (8, 12), (20, 21)]) == pytest.approx(13)


# -- the next job starts early and waits -------------------------------------------------------------------

def test_a_job_waits_for_the_previous_one_only_when_told(tmp_path, monkeypatch):
    monkeypatch.delenv(handoff.START_AFTER_ENV, raising=False)
    assert handoff.wait_for_previous_job() == 0.0
    mark = tmp_path / "previous.done"
    monkeypatch.setenv(handoff.START_AFTER_ENV, str(mark))
    threading.Timer(0.3, mark.touch).start()
    assert handoff.wait_for_previous_job() >= 0.3 and mark.exists()


def test_the_local_executor_starts_the_next_job_once_the_running_one_is_untimed(monkeypatch):
    from imgbench.runner import executors
    from imgbench.runner.executors import LocalExecutor
    from test_threads import fake_task

    events, lock = [], threading.Lock()

    def log(*event):
        with lock:
            events.append(event)

    def fake_execute(task, *, extra_env=None, stop=None, on_untimed=None):
        name = task.job.job_id
        marker = extra_env.get(handoff.START_AFTER_ENV)
        log("start", name, marker and Path(marker).exists())
        time.sleep(0.2)  # the timed windows
        log("untimed", name)
        on_untimed()
        time.sleep(0.4)  # the figures, the files, the shutdown
        log("end", name)
        return {"job_id": name}

    monkeypatch.setattr(executors, "execute_job", fake_execute)  # where LocalExecutor looks it up
    LocalExecutor(slots=1, gpus=[]).run([fake_task("a"), fake_task("b")], lambda task, row: log("recorded", task.job.job_id))
    order = [event[:2] for event in events]
    assert order.index(("start", "b")) == order.index(("untimed", "a")) + 1  # b starts while a finishes...
    assert order.index(("start", "b")) < order.index(("end", "a"))
    assert events[order.index(("start", "b"))][2] is False  # ...told to wait for a mark that is not there yet
    assert ("start", "a", None) in events  # the first job waits for nothing


# -- the report ------------------------------------------------------------------------------------------------

def test_the_report_shows_compute_against_harness_per_job_and_for_the_grid(tmp_path):
    from imgbench.report.findings import assemble
    from imgbench.report.html_page import render_html
    from imgbench.report.markdown_page import render_markdown
    from imgbench.report.wall_time import grid_time
    from report_synthetic import make_results

    out = make_results(tmp_path / "out", plan={"mnist": {"timm/resnet18": 0.98, "keras/mobilenet_v3_small": 0.97}}, seeds=(0,),
                       failed=())
    jobs = [out / "jobs" / job_id for job_id in pd.read_csv(out / "results.csv")["job_id"]]  # the table's order
    timed = [  # two jobs, the second started 2 s before the first ended
        ({"process_start": 1.0, "imports": 3.0, "train": 10.0, "evaluate": 1.0, "benchmark": 2.0, "display": 1.0,
          "write": 2.0}, 100.0),
        ({"process_start": 1.0, "imports": 3.0, "wait": 1.0, "train": 4.0, "evaluate": 1.0, "benchmark": 2.0,
          "display": 1.0, "write": 1.0}, 118.0),
    ]
    for job, (parts, start) in zip(jobs, timed):
        metrics = json.loads((job / "metrics.json").read_text())
        wall = sum(parts.values())
        metrics.update(phases=parts, wall={"started_at": start, "ended_at": start + wall, "seconds": wall})
        (job / "metrics.json").write_text(json.dumps(metrics))
    report = assemble(out)
    grid = grid_time(report)
    assert [job.wall_s for job in grid.jobs] == [20.0, 14.0]
    assert [job.compute_s for job in grid.jobs] == [13.0, 7.0] and grid.compute_s == 20.0
    assert grid.span_s == 132.0 - 100.0  # the overlap of 2 s counted once
    text = render_markdown(report)
    assert "took 32.0 s from the first one's start" in text and "harness around them took 12.0 s (38%)" in text
    assert "6.0 s per job" in text and "| wait | 1.0 | 3% | harness |" in text
    html = render_html(report)
    assert '<section id="time">' in html and 'data-phase="train"' in html


def test_jobs_without_phases_leave_the_section_saying_so(tmp_path):
    from imgbench.report.findings import assemble
    from imgbench.report.wall_time import render_html
    from report_synthetic import make_results

    out = make_results(tmp_path / "out", plan={"mnist": {"timm/resnet18": 0.98}}, seeds=(0,), failed=())
    for job in (out / "jobs").iterdir():
        metrics = json.loads((job / "metrics.json").read_text())
        metrics.pop("phases")
        (job / "metrics.json").write_text(json.dumps(metrics))
    assert "No job recorded its phases." in render_html(assemble(out))


# -- the job's structure ---------------------------------------------------------------------------------------

def test_no_function_takes_more_than_eight_positional_parameters():
    crowded = []
    for path in (SRC / "imgbench").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                count = len(node.args.posonlyargs) + len(node.args.args)
                if count > MAX_POSITIONAL:
                    crowded.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({count})")
    assert not crowded, crowded


def test_the_job_plan_is_frozen_and_the_phases_results_are_typed():
    from imgbench.engine import job, plan

    assert dataclasses.is_dataclass(plan.JobPlan) and plan.JobPlan.__dataclass_params__.frozen
    for result in (job.JobData, job.BuiltModel, job.Inputs, job.Compiled, job.Evaluation):
        assert result.__dataclass_params__.frozen and callable(result.record)
    assert not hasattr(job, "_start_from") and not hasattr(job, "_train_and_measure")
