"""Building the report's files from an assembled :class:`~imgbench.report.findings.Report`: the figures, then
report.html, report.md and summary.csv, each written atomically into the results folder."""

from __future__ import annotations

from pathlib import Path

from imgbench import schema
from imgbench.paths import atomic_write_text
from imgbench.report import figures as figs
from imgbench.report import inference as report_inference
from imgbench.report.findings import Report, assemble
from imgbench.report.significance import IMAGES_ONLY
from imgbench.report.stats import CONFIDENCE
from imgbench.report.html_page import render_html
from imgbench.report.markdown_page import render_markdown


def draw_figures(report: Report) -> list[figs.FigureFile]:
    """Draw every figure into OUT/figures (PNG and SVG), drop stale ones, and remember them on the report."""
    directory = report.out_dir / schema.FIGURES_DIR
    directory.mkdir(parents=True, exist_ok=True)
    palette = figs.model_palette(sorted(set(report.board["model"])))
    files = []
    # a dataset tested on several test sets is drawn for its largest: one ranking per figure
    largest = report.board.sort_values("test_samples", ascending=False, kind="stable").drop_duplicates("dataset")
    board = report.board.merge(largest[["dataset", "tested_on"]], on=["dataset", "tested_on"])
    for dataset in sorted(set(board["dataset"])):
        ranked = board[board["dataset"] == dataset]
        leader = ranked.loc[ranked["rank"] == 1, "model"]
        covers = set(ranked["interval_covers"]) - {""}
        interval = ("no interval: no predictions.csv" if not covers else
                    f"whiskers: {CONFIDENCE:.0%} interval over " + (
                        "the test images only (one seed per model)" if covers == {IMAGES_ONLY}
                        else "seeds and test images (test images only for a model with one seed)"
                        if IMAGES_ONLY in covers else "seeds and test images"))
        if len(report.test_sets(dataset)) > 1:
            interval += f"; models ranked as {ranked.iloc[0]['tested_on']}"
        noisy = bool(ranked["infer_throughput_noisy"].any())
        planned = [
            ("scores", "Accuracy and macro F1", f"Diamond: mean over seeds; dots: single seeds; {interval}.",
             lambda: figs.scores(board, report.results.ok, dataset, palette)),
            ("pareto", "Accuracy vs. inference throughput",
             "Outlined points lie on the Pareto front (no other model that learnt is both faster and more "
             f"accurate); whiskers as above{'; hollow points: inference speed too noisy to rank on' * noisy}.",
             lambda: figs.pareto(board, dataset, palette)),
            ("params", "Accuracy vs. parameters", "Mean accuracy against parameter count; whiskers as above.",
             lambda: figs.accuracy_vs_params(board, dataset, palette)),
            ("history", "Validation accuracy per epoch", "Line: mean over seeds; band: min to max over seeds.",
             lambda: figs.history(report.results, dataset, palette)),
            *([("confusion", f"Confusion matrix of {leader.iloc[0]}",
                "The leader by mean accuracy, summed over its seeds; each row is normalised to its true class.",
                lambda: figs.confusion(report.results, dataset, leader.iloc[0]))] if len(leader) else []),
            ("perclass", "Per-class F1", "F1 of each class, mean over seeds; models best first.",
             lambda: figs.per_class_f1(report.results, board, dataset)),
        ]
        for key, title, caption, draw in planned:
            figure = draw()
            if figure is None:
                continue
            png, svg = figs.save_figure(figure, directory, f"{key}-{figs.slug(dataset)}")
            files.append(figs.FigureFile(key, dataset, title, caption, png, svg))
    keep = {f.png for f in files} | {f.svg for f in files}
    for stale in list(directory.glob("*.png")) + list(directory.glob("*.svg")):
        if stale not in keep:
            stale.unlink()
    report.figures = files
    report_inference.draw_figures(report.inference, directory)  # after the sweep of stale files: its own
    return files


def write_report(report: Report) -> Path:
    """Write report.html, report.md and summary.csv into the results folder; returns report.html's path."""
    out = report.out_dir
    atomic_write_text(out / schema.SUMMARY_CSV, report.board.to_csv(index=False))
    atomic_write_text(out / schema.REPORT_MD, render_markdown(report))
    atomic_write_text(out / schema.REPORT_HTML, render_html(report))
    return out / schema.REPORT_HTML


def render(out_dir: str | Path, baseline: str | Path | None = None) -> Path:
    """The whole report in this process, without a notebook: assemble, draw, write."""
    report = assemble(out_dir, baseline)
    draw_figures(report)
    return write_report(report)
