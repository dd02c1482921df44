"""The comparison report, built in-process (no papermill): statistics, leaderboards, figures and the page."""

from __future__ import annotations

import argparse
import base64
import io
import math
import re
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats

from imgbench.errors import UsageError
from imgbench.report import assemble, render
from imgbench.report import cli as report_cli
from imgbench.report.baseline import compare_to_baseline
from imgbench.report.load import load_results
from imgbench.report.tables import LOG_SCALE_METRICS, leaderboard, pareto_front, t_interval
from report_synthetic import CLASSES, PLAN, RESULTS_COLUMNS, ReportPage, make_results

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SECTIONS = ["verdict", "leaderboards", "figures", "statistics", "baseline", "failures", "time", "provenance"]
# current run against the baseline: resnet18 10% slower everywhere, mobilenet 1% slower
SPEED_CHANGE = {"timm/resnet18": 0.90, "keras/mobilenet_v3_small": 0.99}


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    """Three models, two datasets, three seeds, one failed job, against a baseline: rendered once."""
    root = tmp_path_factory.mktemp("report")
    baseline = make_results(root / "baseline")
    out = make_results(root / "current", speed=SPEED_CHANGE)
    html = render(out, baseline)
    return out, html, ReportPage(html.read_text(encoding="utf-8"))


# ---- library functions ----------------------------------------------------------------------------------------

def test_t_interval_matches_scipy_and_has_none_for_one_seed():
    values = [0.81, 0.84, 0.86]
    mean, low, high = t_interval(values)
    expected = stats.t.interval(0.95, 2, loc=np.mean(values), scale=stats.sem(values))
    assert mean == pytest.approx(np.mean(values))
    assert (low, high) == pytest.approx(expected)
    mean, low, high = t_interval([0.9])
    assert mean == 0.9 and math.isnan(low) and math.isnan(high)
    assert t_interval([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)


def test_pareto_front_keeps_only_undominated_models():
    frame = pd.DataFrame({"speed": [100, 200, 50, 300, 150], "accuracy": [0.9, 0.8, 0.85, 0.6, 0.7]})
    assert pareto_front(frame, "speed", "accuracy").tolist() == [True, True, False, True, False]


def test_leaderboard_means_and_ranks_come_from_ok_rows(tmp_path):
    out = make_results(tmp_path / "out")
    results = load_results(out)
    board = leaderboard(results.ok)
    raw = pd.read_csv(out / "results.csv")
    ok = raw[raw["status"] == "ok"]
    for (dataset, model), group in ok.groupby(["dataset", "model"]):
        row = board[(board["dataset"] == dataset) & (board["model"] == model)].iloc[0]
        assert row["accuracy_mean"] == pytest.approx(group["accuracy"].mean())
        assert row["n_seeds"] == len(group)
    cifar = board[board["dataset"] == "cifar10"]
    assert list(cifar["model"]) == sorted(PLAN["cifar10"], key=PLAN["cifar10"].get, reverse=True)
    assert list(cifar["rank"]) == [1, 2, 3]
    vit_mnist = board[(board["dataset"] == "mnist") & (board["model"] == "timm/vit_tiny_patch16_224")]
    assert vit_mnist["n_seeds"].item() == 2  # its seed 2 failed and is left out


def test_baseline_flags_ten_percent_throughput_drop_not_one_percent(tmp_path):
    base = leaderboard(load_results(make_results(tmp_path / "base")).ok)
    now = leaderboard(load_results(make_results(tmp_path / "now", speed=SPEED_CHANGE)).ok)
    changes = compare_to_baseline(now, base).set_index(["dataset", "model", "metric"])
    for dataset in PLAN:
        assert changes.loc[(dataset, "timm/resnet18", "infer_throughput"), "regression"]
        assert changes.loc[(dataset, "timm/resnet18", "train_throughput"), "regression"]
        assert not changes.loc[(dataset, "keras/mobilenet_v3_small", "infer_throughput"), "regression"]
        assert not changes.loc[(dataset, "timm/resnet18", "accuracy"), "regression"]


def test_baseline_flags_accuracy_below_the_baseline_interval(tmp_path):
    base = make_results(tmp_path / "base")
    now = make_results(tmp_path / "now", accuracy_shift=-0.05)
    changes = assemble(now, base).baseline.changes.set_index(["dataset", "model", "metric"])
    assert changes.loc[("cifar10", "timm/resnet18", "accuracy"), "regression"]
    assert not changes.loc[("cifar10", "timm/resnet18", "params"), "regression"]


def test_load_results_rejects_a_folder_without_results_csv(tmp_path):
    with pytest.raises(UsageError, match="no results.csv"):
        load_results(tmp_path)
    with pytest.raises(UsageError, match="does not exist"):
        load_results(tmp_path / "missing")
    (tmp_path / "results.csv").write_text("model,accuracy\nx,0.5\n")
    with pytest.raises(UsageError, match="job_id.*dataset.*seed.*status"):
        load_results(tmp_path)


def test_the_leaders_missing_predictions_leave_the_comparison_untested_and_say_why(tmp_path):
    out = make_results(tmp_path / "out", plan={"cifar10": PLAN["cifar10"]})
    for job in (out / "jobs").glob("timm-resnet18__cifar10__*"):
        (job / "predictions.csv").unlink()
    report = assemble(out)
    (verdict,) = report.verdicts()
    assert verdict.kind == "untested"
    assert "no seed of timm/resnet18 has a readable predictions.csv" in verdict.headline
    assert any("predictions.csv is missing" in p for p in report.results.problems)


# ---- the rendered page ----------------------------------------------------------------------------------------

def test_every_section_is_present_in_reading_order(full_report):
    _, _, page = full_report
    assert page.sections == SECTIONS


def test_every_figure_is_a_valid_embedded_image_and_files_exist(full_report):
    out, html, page = full_report
    assert len(page.images) == 12  # six figures for each of two datasets
    for src in page.images:
        header, _, payload = src.partition(",")
        data = base64.b64decode(payload, validate=True)
        if header == "data:image/png;base64":
            assert data.startswith(PNG_SIGNATURE)
            assert min(Image.open(io.BytesIO(data)).size) > 100
        else:
            assert header == "data:image/svg+xml;base64"
            assert ET.fromstring(data).tag.endswith("svg")
    for svg in (out / "figures").glob("*.svg"):
        assert ET.parse(svg).getroot().tag.endswith("svg")
    assert len(list((out / "figures").glob("*.png"))) == 12
    text = html.read_text(encoding="utf-8")
    assert "<script" not in text and "http://" not in text and "https://" not in text


def test_leaderboard_numbers_equal_those_computed_from_results_csv(full_report):
    out, _, page = full_report
    raw = pd.read_csv(out / "results.csv")
    ok = raw[raw["status"] == "ok"]
    checked = 0
    for (dataset, model), group in ok.groupby(["dataset", "model"]):
        for metric in ("accuracy", "f1_macro", "infer_throughput", "params"):
            value, text = page.leaderboard[(dataset, model, metric)]
            mean = stats.gmean(group[metric]) if metric in LOG_SCALE_METRICS else group[metric].mean()
            assert value == pytest.approx(mean, rel=1e-12)
            checked += 1
        _, accuracy_text = page.leaderboard[(dataset, model, "accuracy")]
        assert accuracy_text.startswith(f"{100 * group['accuracy'].mean():.2f} %")
        _, params_text = page.leaderboard[(dataset, model, "params")]
        assert params_text == f"{group['params'].mean() / 1e6:.3g} M"
    assert checked == 4 * ok.groupby(["dataset", "model"]).ngroups
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == ok.groupby(["dataset", "model"]).ngroups


def test_significance_verdict_for_a_planted_clear_difference_and_a_planted_tie(full_report):
    _, html, page = full_report
    assert page.verdict_kinds == {"cifar10": "significant", "mnist": "tie"}
    runner_up = "keras/mobilenet_v3_small"
    assert page.significance[("cifar10", runner_up)]["data-significant"] == "true"
    assert float(page.significance[("cifar10", runner_up)]["data-p"]) < 0.001
    assert page.significance[("mnist", runner_up)]["data-significant"] == "false"
    assert float(page.significance[("mnist", runner_up)]["data-p"]) > 0.05
    text = html.read_text(encoding="utf-8")
    assert "timm/resnet18 leads on cifar10 by" in text and "are tied on mnist" in text


def test_baseline_regressions_are_flagged_on_the_page(full_report):
    _, _, page = full_report
    for dataset in PLAN:
        assert page.baseline[(dataset, "timm/resnet18", "infer_throughput")] is True
        assert page.baseline[(dataset, "keras/mobilenet_v3_small", "infer_throughput")] is False
        assert page.baseline[(dataset, "keras/mobilenet_v3_small", "accuracy")] is False


def test_failed_job_is_listed_with_status_and_error(full_report):
    out, html, _ = full_report
    text = html.read_text(encoding="utf-8")
    assert "timm-vit_tiny_patch16_224__mnist__s2" in text
    assert "mat1 and mat2 shapes cannot be multiplied" in text
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "| failed |" in markdown and "## Provenance" in markdown


def test_provenance_shows_versions_device_fingerprints_and_run_parameters(full_report):
    _, html, _ = full_report
    text = html.read_text(encoding="utf-8")
    for expected in ("versions.torch", "2.14.0", "cpu (2 cores)", "cifar10 fingerprint", "imgbench run --suite quick",
                     "Recipe on mnist", "weight_decay"):
        assert expected in text


# ---- partial and empty results --------------------------------------------------------------------------------

def test_one_seed_gives_test_image_intervals_only_and_says_what_it_cannot_know(tmp_path):
    out = make_results(tmp_path / "out", plan={"cifar10": PLAN["cifar10"]}, seeds=(0,), failed=())
    page_text = render(out).read_text(encoding="utf-8")
    page = ReportPage(page_text)
    assert "With one seed per model the intervals count the 300 test images only" in page_text
    assert "Run 3 or more seeds" in page_text
    assert "interval over the test images only (one seed per model)" in page_text  # the figure's caption
    for (_, _, metric), (_, text) in page.leaderboard.items():
        assert "±" not in text and "×/÷" not in text  # no spread over seeds from one seed
        assert ("[" in text) == (metric in ("accuracy", "f1_macro", "behind_leader") and text != "leader"), text


def test_empty_results_produce_a_report_that_says_so(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    pd.DataFrame(columns=RESULTS_COLUMNS).to_csv(out / "results.csv", index=False)
    page_text = render(out).read_text(encoding="utf-8")
    assert "results.csv has no jobs yet" in page_text
    assert ReportPage(page_text).sections == [s for s in SECTIONS if s != "baseline"]


def test_all_failed_results_produce_a_report_that_says_so(tmp_path):
    plan = {"mnist": {"timm/resnet18": 0.98}}
    out = make_results(tmp_path / "out", plan=plan, seeds=(0, 1),
                       failed=(("timm/resnet18", "mnist", 0), ("timm/resnet18", "mnist", 1)))
    page_text = render(out).read_text(encoding="utf-8")
    assert "All 2 jobs failed: there is no leaderboard" in page_text
    assert "All 2 jobs on mnist failed" in page_text
    assert ReportPage(page_text).images == []


def test_cli_builds_the_report_without_a_notebook(tmp_path, capsys):
    out = make_results(tmp_path / "out", plan={"mnist": {"timm/resnet18": 0.98, "timm/vit_tiny_patch16_224": 0.9}},
                       seeds=(0,), failed=(), n_test=100)
    parser = argparse.ArgumentParser()
    report_cli.add_arguments(parser)
    assert report_cli.main(parser.parse_args([str(out), "--no-notebook"])) == 0
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    assert str(out / "report.html") in capsys.readouterr().out


def test_classes_in_the_synthetic_folder_reach_the_confusion_figure(full_report):
    out, _, _ = full_report
    svg = (out / "figures" / "confusion-cifar10.svg").read_text(encoding="utf-8")
    assert ET.fromstring(svg.encode()).tag.endswith("svg")
    assert len(CLASSES["cifar10"]) == 10


# ---- test subsets ------------------------------------------------------------------------------------------------

def test_test_subsets_are_stated_and_rows_on_different_test_images_are_ranked_apart(tmp_path):
    """Two models scored on 300 of mnist's 1,000 test images, a third on all 1,000: two leaderboards, each
    saying what it was tested on; the third is not ranked under the others although its accuracy is lower."""
    models = sorted(PLAN["mnist"], key=PLAN["mnist"].get, reverse=True)
    out = make_results(tmp_path / "out", plan={"mnist": {m: PLAN["mnist"][m] for m in models[:2]}},
                       n_test=300, split_sizes=(54000, 1000), failed=())
    whole = make_results(tmp_path / "whole", plan={"mnist": {models[2]: PLAN["mnist"][models[2]]}},
                         n_test=1000, split_sizes=(54000, 1000), failed=())
    for job in (whole / "jobs").iterdir():
        job.rename(out / "jobs" / job.name)
    merged = pd.concat([pd.read_csv(out / "results.csv"), pd.read_csv(whole / "results.csv")])
    merged.to_csv(out / "results.csv", index=False)

    report = assemble(out)
    subset, full = "tested on 300 of 1,000 images", "tested on all 1,000 images"
    boards = {label: group for label, group in report.board.groupby("tested_on")}
    assert set(boards) == {subset, full}
    assert list(boards[subset]["model"]) == models[:2] and list(boards[subset]["rank"]) == [1, 2]
    assert list(boards[full]["model"]) == [models[2]] and list(boards[full]["rank"]) == [1]
    assert set(report.board["trained_on"]) == {"trained on 5,000 of 54,000 images"}
    [comparison] = report.comparisons  # only the two models that saw the same images are tested
    assert comparison.tested_on == subset and comparison.n_images == 300

    verdicts = {v.tested_on: v for v in report.verdicts()}
    assert verdicts[full].kind == "single" and f"mnist ({full})" in verdicts[full].headline
    assert f"leads on mnist ({subset})" in verdicts[subset].headline or f"tied on mnist ({subset})" in verdicts[
        subset].headline
    assert f"Not ranked against the rows {full}: different test images." in verdicts[subset].details
    assert "Trained on 5,000 of 54,000 images." in verdicts[subset].details

    html = render(out)
    page, markdown = html.read_text(encoding="utf-8"), (out / "report.md").read_text(encoding="utf-8")
    for text in (page, markdown):
        assert f"mnist, {subset}" in text and f"mnist, {full}" in text
        assert f"Every model here was {subset}." in text
    assert page.count("<table class=\"leaderboard\"") == 2


def test_a_whole_test_split_is_not_called_a_subset(tmp_path):
    out = make_results(tmp_path / "out", n_test=300, split_sizes=(5000, 300))
    report = assemble(out)
    assert set(report.board["tested_on"]) == {"tested on all 300 images"}
    assert all(report.board_title(v.dataset, v.tested_on) == v.dataset for v in report.verdicts())
    assert not any("tested on" in v.text for v in report.verdicts())


# ---- report.md escapes what it prints --------------------------------------------------------------------------

HOSTILE_MODEL = "evil/a|b *c* __d__ `e` [x](http://y) <script>alert(1)</script>"
HOSTILE_DATASET = "imagefolder:/data/p|q_*x*_[l](http://u)<b>"
HOSTILE_ERROR = "ValueError: <img src=x onerror=alert(1)> | `rm -rf` [click](http://z) **bold**"


def test_report_md_escapes_names_paths_and_errors(tmp_path, monkeypatch):
    """Rendered by a real CommonMark + tables renderer, the hostile texts stay literal: no HTML, link, emphasis
    or extra table cell comes out of them."""
    import report_synthetic

    markdown_it = pytest.importorskip("markdown_it")
    monkeypatch.setitem(report_synthetic.CLASSES, HOSTILE_DATASET, ["a", "b", "c"])
    monkeypatch.setitem(report_synthetic.COSTS, HOSTILE_MODEL, report_synthetic.COSTS["timm/resnet18"])
    monkeypatch.setattr(report_synthetic, "FAILED_ERROR", HOSTILE_ERROR)
    plan = {HOSTILE_DATASET: {HOSTILE_MODEL: 0.9, "timm/resnet18": 0.8}}
    out = make_results(tmp_path / "out", plan=plan, seeds=(0, 1), failed=((HOSTILE_MODEL, HOSTILE_DATASET, 1),))
    render(out)
    text = (out / "report.md").read_text(encoding="utf-8")
    assert "<script>" not in text and "<img" not in text and "<b>" not in text
    page = markdown_it.MarkdownIt("commonmark").enable("table").render(text)
    for tag in ("<script", "<img src=x", "<b>", "<em>c</em>", "<code>e</code>", 'href="http://y"', 'href="http://u"',
                'href="http://z"', "<strong>bold</strong>", "<strong>d</strong>"):
        assert tag not in page, tag
    # every hostile text survives literally: the reader sees exactly the name and the error
    for literal in (HOSTILE_MODEL, HOSTILE_DATASET, HOSTILE_ERROR):
        assert html_text(literal) in page, literal
    # the pipes inside names did not add table cells: every row has as many cells as its header
    for table in page.split("<table>")[1:]:
        head, body = table.split("</thead>")[0], table.split("</thead>")[1].split("</table>")[0]
        for row in body.split("<tr>")[1:]:
            assert len(re.findall(r"<td[ >]", row)) == len(re.findall(r"<th[ >]", head)), row


def html_text(text: str) -> str:
    import html

    return html.escape(text, quote=False)


def test_one_model_trained_with_two_recipes_gets_two_leaderboard_rows(tmp_path):
    """The reference suite trains a model with its published recipe and with the default: those are two
    entries, named by the recipe fields that differ, not six seeds of one."""
    plan = {"mnist": {"timm/resnet18": 0.988}}
    out = make_results(tmp_path / "out", plan=plan, epochs=4, failed=())
    other = make_results(tmp_path / "other", plan=plan, epochs=8, failed=())
    rows = pd.read_csv(other / "results.csv")
    for job_id in rows["job_id"]:
        (other / "jobs" / job_id).rename(out / "jobs" / f"{job_id}-long")
    rows["job_id"] = rows["job_id"] + "-long"
    pd.concat([pd.read_csv(out / "results.csv"), rows]).to_csv(out / "results.csv", index=False)

    report = assemble(out)
    assert sorted(report.board["model"]) == ["timm/resnet18 [epochs=4]", "timm/resnet18 [epochs=8]"]
    assert list(report.board["n_seeds"]) == [3, 3]
    [comparison] = report.comparisons  # the two recipes compared image by image like two models
    assert comparison.tested and comparison.n_images == 300
