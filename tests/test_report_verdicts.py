"""The report tells one story: the verdict, the leaderboard and the figures use the same intervals; a model that
did not learn is never a winner; noisy speed figures are shown as noisy, once per page, with the cause the job's
record points to; rounded titles, whole epochs, right plurals."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from imgbench.report import assemble, render
from imgbench.report import figures as figs
from imgbench.report.markdown_page import render_markdown
from imgbench.report.html_page import render_html
from report_synthetic import PLAN, ReportPage, make_results

CIFAR = {"cifar10": PLAN["cifar10"]}
LEADER, RUNNER_UP, THIRD = sorted(PLAN["cifar10"], key=PLAN["cifar10"].get, reverse=True)
NOISE_NOTE = "Too noisy to rank on"


def edit_results(out, **changes) -> None:
    """Set results.csv cells: ``column={row_selector: value}`` where a selector is a (model, seed) pair."""
    table = pd.read_csv(out / "results.csv")
    for column, cells in changes.items():
        if column not in table or table[column].dtype != object:
            table[column] = table[column].astype(object) if column in table else ""
        for (model, seed), value in cells.items():
            table.loc[(table["model"] == model) & (table["seed"] == seed), column] = value
    table.to_csv(out / "results.csv", index=False)


# ---- one set of intervals ------------------------------------------------------------------------------------------

def test_verdict_leaderboard_and_statistics_show_the_same_intervals(tmp_path):
    out = make_results(tmp_path / "out", plan=CIFAR, failed=())
    html = render(out).read_text(encoding="utf-8")
    page = ReportPage(html)
    report = assemble(out)
    (verdict,) = report.verdicts()
    for model in (LEADER, RUNNER_UP):
        _, cell = page.leaderboard[("cifar10", model, "accuracy")]
        assert re.fullmatch(r"\d+\.\d\d % \[\d+\.\d\d, \d+\.\d\d\]", cell), cell
        assert cell in verdict.text  # the verdict quotes the leaderboard's interval
    _, behind = page.leaderboard[("cifar10", RUNNER_UP, "behind_leader")]
    lead, interval = behind.split(" ", 1)
    comparison = report.comparison("cifar10", report.test_sets("cifar10")[0], RUNNER_UP)
    assert f"by {lead} points" in verdict.headline
    assert interval.removesuffix(" behind") + " pt" in verdict.headline
    assert page.significance[("cifar10", RUNNER_UP)]["data-p"] == repr(comparison.difference.p_value)
    board = report.board
    assert ((board[["accuracy_low", "f1_macro_low"]] >= 0).all().all()
            and (board[["accuracy_high", "f1_macro_high"]] <= 1).all().all())


def test_intervals_stay_in_0_1_even_with_two_scattered_seeds_near_100_percent(tmp_path):
    """The demo's case: two seeds 3 points apart near 97%: Student's t with one degree of freedom is wide, and
    the interval still ends at or below 100%."""
    out = make_results(tmp_path / "out", plan={"mnist": {"timm/resnet18": 0.965, "keras/mobilenet_v3_small": 0.95}},
                       seeds=(0, 1), failed=(), seed_jitter=0.6)
    board = assemble(out).board
    assert (board["accuracy_high"] <= 1).all() and (board["accuracy_low"] >= 0).all()
    assert (board["accuracy_high"] - board["accuracy_low"] > 0.05).all()  # wide: two seeds know little


def test_two_seeds_say_what_they_cannot_know_and_how_many_seeds_would_settle_it(tmp_path):
    out = make_results(tmp_path / "out", plan={"mnist": {"timm/resnet18": 0.97, "keras/mobilenet_v3_small": 0.965}},
                       seeds=(0, 1), failed=(), n_test=2000, seed_jitter=0.3)
    report = assemble(out)
    (verdict,) = report.verdicts()
    assert verdict.kind == "tie"
    assert "With 2 seeds per model the seeds' spread is estimated from two values each" in verdict.text
    (comparison,) = report.comparisons
    needed = comparison.seeds_needed
    assert needed is not None and needed > 2
    if np.isfinite(needed):
        assert f"about {int(needed)} seeds per model would show a true lead of" in verdict.text
    else:
        assert "More seeds would not settle it" in verdict.text


def test_one_seed_cannot_know_the_seed_variance_and_says_run_more(tmp_path):
    out = make_results(tmp_path / "out", plan=CIFAR, seeds=(0,), failed=())
    (verdict,) = assemble(out).verdicts()
    assert "how far another training seed would move each model is unknown" in verdict.text
    assert "Run 3 or more seeds (--seeds 0,1,2)" in verdict.text


# ---- did not learn -------------------------------------------------------------------------------------------------

def test_a_model_that_did_not_learn_is_flagged_and_never_the_leader(tmp_path):
    out = make_results(tmp_path / "out", plan=CIFAR, failed=())
    why = "test accuracy 0.1000 not above chance 0.1000 (p = 0.53)"
    edit_results(out, did_not_learn={(LEADER, 1): why})
    report = assemble(out)
    board = report.board.set_index("model")
    assert pd.isna(board.loc[LEADER, "rank"]) and board.loc[LEADER, "did_not_learn"] == f"seed 1: {why}"
    assert board.loc[RUNNER_UP, "rank"] == 1 and board.loc[THIRD, "rank"] == 2
    (verdict,) = report.verdicts()
    assert verdict.headline.startswith(f"{RUNNER_UP} leads on cifar10")
    assert f"Not ranked: {LEADER} did not learn (seed 1: {why})." in verdict.details
    assert all(LEADER not in (c.leader, c.other) for c in report.comparisons)
    html, markdown = render_html(report), render_markdown(report)
    page = ReportPage(html)
    assert page.leaderboard[("cifar10", LEADER, "behind_leader")][1] == "not ranked"
    assert f'data-model="{LEADER}" data-rank=""' in html and "did not learn</span>" in html
    assert f"| – | {LEADER} (did not learn) |" in markdown


def test_when_no_model_learnt_there_is_no_leader(tmp_path):
    out = make_results(tmp_path / "out", plan=CIFAR, seeds=(0,), failed=())
    edit_results(out, did_not_learn={(model, 0): "never above chance" for model in PLAN["cifar10"]})
    report = assemble(out)
    (verdict,) = report.verdicts()
    assert verdict.kind == "no_learner" and "no leader" in verdict.headline
    assert report.comparisons == [] and report.board["rank"].isna().all()
    render(out)  # the figures skip the leader's confusion matrix and still draw
    assert not (out / "figures" / "confusion-cifar10.png").exists()


# ---- noise: shown as noisy, once per page, with the recorded cause -------------------------------------------------

def noisy_folder(tmp_path, **changes):
    out = make_results(tmp_path / "out", plan=CIFAR, seeds=(0, 1, 2), failed=())
    edit_results(out, **changes)
    return out


def test_a_wildly_spread_speed_is_shown_noisy_without_an_interval(tmp_path):
    """The demo's ×/÷ 207: one seed at 94 img/s, the others near 6,800. The cell says noisy, gives no interval,
    and the note appears once on each page."""
    out = noisy_folder(tmp_path, train_throughput={(LEADER, 0): 94.0, (LEADER, 1): 6800.0, (LEADER, 2): 6700.0})
    report = assemble(out)
    row = report.board.set_index("model").loc[LEADER]
    assert row["train_throughput_noisy"] and pd.isna(row["train_throughput_low"])
    assert not report.board.set_index("model").loc[RUNNER_UP, "train_throughput_noisy"]
    html, markdown = render_html(report), render_markdown(report)
    value, text = ReportPage(html).leaderboard[("cifar10", LEADER, "train_throughput")]
    assert text.endswith("noisy") and "×/÷" not in text
    train_cell = markdown.split(f"| {LEADER} |")[1].split(" | ")[4]  # seeds, accuracy, F1, behind, train speed
    assert train_cell.endswith("img/s (noisy)") and "×/÷" not in train_cell
    for page in (html, markdown):
        assert page.count(NOISE_NOTE) == 1
        assert f"{LEADER} on cifar10, seeds apart: train speed 72.3x" in page


@pytest.mark.parametrize(("columns", "expected"), [
    ({"device": "cuda:0", "infer_gpu_busy": 0.22}, "Bound by the CPU launching kernels"),
    ({"load_average": 4.1, "free_cores": 0.0, "threads": 2}, "The machine was already loaded when the job started"),
    ({"load_average": 0.2, "free_cores": 1.8, "threads": 1}, "The machine was quiet when the job started"),
    ({}, "The machine's load when the job started was not recorded"),
])
def test_the_noise_diagnosis_follows_the_jobs_record(tmp_path, columns, expected):
    changes = {"infer_throughput_rel_iqr": {(LEADER, 0): 0.4}}
    changes.update({column: {(LEADER, 0): value} for column, value in columns.items()})
    report = assemble(noisy_folder(tmp_path, **changes))
    notes = " ".join(report.speed_notes())
    assert f"{expected}" in notes
    assert f"{LEADER} on cifar10, seed 0: inference speed 40%" in notes
    others = [text for text in ("Bound by the CPU", "already loaded", "was quiet", "was not recorded")
              if text not in expected]
    assert not any(other in notes for other in others), notes
    if "load_average" in columns and columns["free_cores"] < 1:
        assert "load average 4.1, 0.0 free cores for 2 threads" in notes
    if "device" in columns:
        assert "GPU busy 22%" in notes


# ---- figures and wording -------------------------------------------------------------------------------------------

def test_a_gap_that_is_not_significant_does_not_fill_the_accuracy_axis(tmp_path):
    """The H200 grid's Pareto plot: 44.10% against 44.35% on 2,000 test images, one seed each, spanned the whole
    height. The axis now holds both intervals, so the gap is a small part of it."""
    plan = {"cifar10": {"timm/resnet18": 0.4435, "keras/mobilenet_v3_small": 0.4410}}
    out = make_results(tmp_path / "out", plan=plan, seeds=(0,), failed=(), n_test=2000, seed_jitter=0.0)
    report = assemble(out)
    assert report.verdicts()[0].kind == "tie"
    board = report.board
    palette = figs.model_palette(list(board["model"]))
    for figure in (figs.pareto(board, "cifar10", palette), figs.accuracy_vs_params(board, "cifar10", palette)):
        low, high = figure.axes[0].get_ylim()
        assert low <= board["accuracy_low"].min() and high >= board["accuracy_high"].max()
        gap = abs(board["accuracy_mean"].iloc[0] - board["accuracy_mean"].iloc[1])
        assert gap / (high - low) < 0.2


@pytest.mark.parametrize("epochs", [2, 30])
def test_history_epoch_axis_has_whole_epochs_only(tmp_path, epochs):
    out = make_results(tmp_path / "out", plan=CIFAR, seeds=(0,), failed=(), epochs=epochs)
    report = assemble(out)
    figure = figs.history(report.results, "cifar10", figs.model_palette(list(report.board["model"])))
    figure.canvas.draw()
    ax = figure.axes[0]
    low, high = ax.get_xlim()
    shown = [(tick, label.get_text()) for tick, label in zip(ax.get_xticks(), ax.get_xticklabels())
             if low <= tick <= high]
    assert shown and all(tick == int(tick) and label == str(int(tick)) for tick, label in shown), shown


def test_counts_read_as_english(tmp_path):
    out = make_results(tmp_path / "out", plan={"mnist": {"timm/resnet18": 0.98}}, seeds=(0,), failed=())
    assert assemble(out).headline() == "1 job: 1 ok, 0 not ok; 1 model on 1 dataset, seed 0."
    failed = make_results(tmp_path / "failed", plan={"mnist": {"timm/resnet18": 0.98}}, seeds=(0,),
                          failed=(("timm/resnet18", "mnist", 0),))
    report = assemble(failed)
    assert report.headline().startswith("The 1 job failed")
    assert "The 1 job on mnist failed" in report.verdicts()[0].headline
