"""report.html: one self-contained page (inline CSS, figures as base64 PNG, no scripts, no web fonts).

Sections in reading order: verdict, leaderboards, figures, statistics, baseline, failures, provenance.
Leaderboard cells carry the raw number in ``data-value`` so tools (and tests) can read the page exactly.
"""

from __future__ import annotations

import base64
import math
from html import escape

import pandas as pd

from imgbench import schema
from imgbench.report import fmt, wall_time
from imgbench.report.baseline import SPEED_TOLERANCE
from imgbench.report.findings import Report
from imgbench.report import inference as report_inference
from imgbench.report.figures import slug
from imgbench.report.tables import LEADERBOARD_METRICS, boards
from imgbench.report.explain import BEHIND_HEADING, INTERVALS, METHOD, behind_text, comparison_verdict, seeds_advice
from imgbench.tracking import links as tracking_links

SECTIONS = {"verdict": "Verdict", "leaderboards": "Leaderboards", "figures": "Figures",
            "statistics": "Is the leader really better?", "baseline": "Against the baseline",
            "inference": report_inference.TITLE, "failures": "Failures", wall_time.KEY: wall_time.TITLE,
            "provenance": "Provenance"}
BADGES = {"significant": "significant", "tie": "not significant", "untested": "not tested",
          "single": "one model", "no_learner": "no model learnt", "failed": "failed"}
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#1d2330;
 margin:0;background:#f5f6f8;line-height:1.45}
main{max-width:1320px;margin:0 auto;padding:24px 32px 64px;background:#fff;min-height:100vh}
h1{margin:0 0 4px;font-size:1.7rem} h2{margin-top:2.2rem;border-bottom:2px solid #e3e6eb;padding-bottom:4px}
h3{margin:1.4rem 0 .5rem;font-size:1.1rem} .meta{color:#5b6473;margin:0}
nav{margin:12px 0 8px;font-size:.92rem} nav a{margin-right:14px;color:#2456a6;text-decoration:none}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:12px}
.card{border:1px solid #e3e6eb;border-left:5px solid #9aa3b0;border-radius:6px;padding:10px 14px}
.card.significant{border-left-color:#1f8a4c} .card.tie{border-left-color:#c98a0b}
.card.failed{border-left-color:#c0392b} .card h3{margin:0 0 4px} .card p{margin:2px 0}
.card .headline{font-weight:600;margin-bottom:6px} .card .detail{color:#3d4552;font-size:.9rem}
.badge{display:inline-block;font-size:.75rem;font-weight:600;padding:1px 8px;border-radius:10px;
 background:#e3e6eb;margin-left:6px;vertical-align:middle}
.significant .badge{background:#d6f0e0;color:#14633a} .tie .badge{background:#fbecc8;color:#7a5306}
.failed .badge,.no_learner .badge{background:#f8d7d3;color:#8c2318} .card.no_learner{border-left-color:#c0392b}
table{border-collapse:collapse;font-size:.88rem;margin:6px 0 4px;font-variant-numeric:tabular-nums}
th,td{padding:5px 8px;border-bottom:1px solid #e9ecf0;text-align:right;white-space:nowrap}
th{background:#f0f2f5;font-weight:600;white-space:normal;vertical-align:bottom} td.text,th.text{text-align:left}
tr:nth-child(even) td{background:#fafbfc} td.best{font-weight:700}
.ci{color:#6b7482;font-size:.8rem} .ci.below{display:block} .note{color:#5b6473;font-size:.88rem}
td.noisy{color:#8a919c;font-style:italic} .tag{font-size:.72rem;font-weight:600;font-style:normal;padding:0 5px;
 border-radius:8px;background:#eceef2;color:#5b6473;margin-left:4px} .tag.flag{background:#f8d7d3;color:#8c2318}
tr.unlearnt td{color:#8a919c}
.wrap{overflow-x:auto} td.error{white-space:pre-wrap;text-align:left;font-family:ui-monospace,Menlo,Consolas,
 monospace;font-size:.8rem;max-width:640px}
td.regression{background:#fbe3e0 !important;color:#8c2318;font-weight:600} .flag{color:#b03020;font-weight:700}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:18px;align-items:start}
figure{margin:0} figure img{max-width:100%;height:auto;border:1px solid #eef0f3}
figcaption{font-size:.82rem;color:#5b6473;margin-top:2px} .wide{grid-column:1/-1}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;font-size:.86rem;margin:4px 0}
.provenance{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:0 28px}
dt{color:#5b6473} dd{margin:0;overflow-wrap:anywhere}
"""


def render_html(report: Report) -> str:
    body = [_header(report), _verdict(report), _leaderboards(report), _figures(report), _statistics(report),
            _baseline(report), report_inference.html_section(report.inference), _failures(report),
            wall_time.render_html(report), _provenance(report)]
    body.append(tracking_links.html_section(report.out_dir, report.results.table))  # imgbench.tracking's section
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>imgbench report: {escape(report.out_dir.name)}</title>"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<style>{STYLE}</style></head>\n<body><main>\n" + "\n".join(body) + "\n</main></body></html>\n")


def _header(report: Report) -> str:
    links = "".join(f'<a href="#{key}">{title}</a>' for key, title in SECTIONS.items()
                    if (key != "baseline" or report.baseline) and (key != "inference" or report.inference))
    return (f"<header><h1>imgbench report</h1><p class=\"meta\">{escape(str(report.out_dir))} &middot; "
            f"built {escape(report.created)}</p><p class=\"meta\">{escape(report.headline())}</p>"
            f"<nav>{links}</nav></header>")


def _section(key: str, content: str) -> str:
    return f'<section id="{key}"><h2>{SECTIONS[key]}</h2>\n{content}\n</section>'


def _verdict(report: Report) -> str:
    verdicts = report.verdicts()
    if not verdicts:
        return _section("verdict", f"<p>{escape(report.headline())}</p>")
    cards = "".join(
        f'<div class="card {v.kind}" data-dataset="{escape(v.dataset)}" data-tested-on="{escape(v.tested_on)}" '
        f'data-kind="{v.kind}"><h3>{escape(report.board_title(v.dataset, v.tested_on))}<span class="badge">'
        f'{BADGES[v.kind]}</span></h3><p class="headline">{escape(v.headline)}</p>'
        + "".join(f'<p class="detail">{escape(d)}</p>' for d in v.details) + "</div>"
        for v in verdicts)
    return _section("verdict", f'<div class="cards">{cards}</div>')


def _leaderboards(report: Report) -> str:
    if report.board.empty:
        return _section("leaderboards", "<p>No successful job: nothing to rank.</p>")
    notes = "".join(f'<p class="note speed-note">{escape(note)}</p>' for note in report.speed_notes())
    parts = [f'<p class="note">{escape(INTERVALS)} Best value per column in bold.</p>{notes}']
    for dataset, test_set, ranked in boards(report.board):
        title = report.board_title(dataset, test_set)
        parts.append(f"<h3>{escape(title)}</h3>")
        if title != dataset:
            parts.append(f'<p class="note">{escape(report.tested_note(dataset, test_set))}</p>')
        parts.append(_leaderboard_table(dataset, title, ranked))
        parts += [f'<p class="note">{escape(row["model"])} did not learn ({escape(row["did_not_learn"])}): '
                  "it is listed, not ranked.</p>" for _, row in ranked.iterrows() if row["did_not_learn"]]
    return _section("leaderboards", "\n".join(parts))


def _leaderboard_table(dataset: str, title: str, ranked: pd.DataFrame) -> str:
    metrics = list(LEADERBOARD_METRICS)
    head = ("<tr><th>#</th><th class=\"text\">Model</th><th>Seeds</th>"
            + "".join(f"<th>{escape(LEADERBOARD_METRICS[m])}{escape(fmt.unit_suffix(m))}</th>" for m in metrics[:2])
            + f"<th>{escape(BEHIND_HEADING)}</th>"
            + "".join(f"<th>{escape(LEADERBOARD_METRICS[m])}{escape(fmt.unit_suffix(m))}</th>" for m in metrics[2:])
            + "</tr>")
    learnt = ranked[ranked["rank"].notna()]
    best = {metric: (learnt[f"{metric}_mean"].max() if schema.higher_is_better(metric)
                     else learnt[f"{metric}_mean"].min()) for metric in metrics}
    rows = []
    for _, row in ranked.iterrows():
        flagged = bool(row["did_not_learn"])
        model = escape(row["model"]) + ('<span class="tag flag">did not learn</span>' if flagged else "")
        cells = [f"<td>{fmt.MISSING if flagged else row['rank']}</td>", f'<td class="text">{model}</td>',
                 f"<td>{row['n_seeds']}</td>"]
        for metric in metrics:
            cells.append(_metric_cell(row, metric, best[metric] if len(learnt) > 1 and not flagged else None))
            if metric == metrics[1]:
                lead, _, interval = behind_text(row).partition(" ")
                cells.append(f'<td data-metric="behind_leader">{escape(lead)}'
                             + (f' <span class="ci below">{escape(interval)}</span>' if interval else "") + "</td>")
        css = ' class="unlearnt"' if flagged else ""
        rows.append(f'<tr{css} data-model="{escape(row["model"])}" data-rank="{"" if flagged else row["rank"]}">'
                    f'{"".join(cells)}</tr>')
    return (f'<div class="wrap"><table class="leaderboard" id="leaderboard-{slug(title)}" '
            f'data-dataset="{escape(dataset)}" data-tested-on="{escape(ranked["tested_on"].iloc[0])}"><thead>{head}'
            f'</thead><tbody>{"".join(rows)}</tbody></table></div>')


def _metric_cell(row: pd.Series, metric: str, best: float | None) -> str:
    """One leaderboard cell: the mean, then its interval or 'noisy'; ``data-value`` carries the raw mean."""
    mean, low, high = row[f"{metric}_mean"], row[f"{metric}_low"], row[f"{metric}_high"]
    noisy = bool(row.get(f"{metric}_noisy", False))
    classes = " ".join(name for name, on in (("best", pd.notna(mean) and mean == best and not noisy),
                                             ("noisy", noisy)) if on)
    if noisy:
        extra = ' <span class="tag">noisy</span>'
    else:
        interval = fmt.interval(metric, low, high) if fmt.is_percent(metric) else fmt.half_width(metric, low, high)
        below = " below" if fmt.is_percent(metric) else ""  # brackets on their own line: the table stays narrow
        extra = f' <span class="ci{below}">{escape(interval)}</span>' if interval else ""
    value = "" if pd.isna(mean) else repr(float(mean))
    css = f' class="{classes}"' if classes else ""
    return (f'<td{css} data-metric="{metric}" data-value="{value}" data-noisy="{str(noisy).lower()}">'
            f"{escape(fmt.cell(metric, mean))}{extra}</td>")


def _figures(report: Report) -> str:
    if not report.figures:
        return _section("figures", "<p>No figures: there is no successful job to draw.</p>")
    parts = []
    for dataset in sorted({f.dataset for f in report.figures}):
        items = []
        for figure in (f for f in report.figures if f.dataset == dataset):
            data = base64.b64encode(figure.png.read_bytes()).decode("ascii")
            wide = ' class="wide"' if figure.key in ("scores", "perclass") else ""
            items.append(f'<figure{wide} data-key="{figure.key}"><img alt="{escape(figure.title)} on '
                         f'{escape(dataset)}" src="data:image/png;base64,{data}"><figcaption><b>'
                         f"{escape(figure.title)}.</b> {escape(figure.caption)} "
                         f"Files: figures/{escape(figure.png.name)}, figures/{escape(figure.svg.name)}"
                         "</figcaption></figure>")
        parts.append(f"<h3>{escape(dataset)}</h3><div class=\"grid\">{''.join(items)}</div>")
    return _section("figures", "\n".join(parts))


def _statistics(report: Report) -> str:
    method = f'<p class="note">{escape(METHOD)}</p>'
    if not report.comparisons:
        return _section("statistics", method + "<p>No leaderboard has two models that learnt: nothing to "
                        "compare.</p>")
    head = ("<tr><th class=\"text\">Leaderboard</th><th class=\"text\">Leader</th><th class=\"text\">Model</th>"
            "<th>Lead</th><th>95% interval</th><th>p</th><th>Seeds</th><th>Test images</th>"
            "<th class=\"text\">Verdict</th><th class=\"text\">Seeds to settle it</th></tr>")
    rows = []
    for c in report.comparisons:
        d = c.difference
        cells = [report.board_title(c.dataset, c.tested_on), c.leader, c.other]
        numbers = ([fmt.points(d.value), fmt.points_interval(d.low, d.high), fmt.p_value(d.p_value),
                    f"{c.leader_seeds} / {c.other_seeds}", f"{c.n_images:,}"] if d else [fmt.MISSING] * 5)
        rows.append(
            f'<tr data-dataset="{escape(c.dataset)}" data-model="{escape(c.other)}" '
            f'data-significant="{str(c.significant).lower()}" data-p="{d.p_value if d else math.nan!r}">'
            + "".join(f'<td class="text">{escape(cell)}</td>' for cell in cells)
            + "".join(f"<td>{escape(n)}</td>" for n in numbers)
            + f'<td class="text">{escape(comparison_verdict(c))}</td><td class="text">{escape(seeds_advice(c))}'
            f"</td></tr>")
    table = (f'<div class="wrap"><table id="significance"><thead>{head}</thead><tbody>{"".join(rows)}</tbody>'
             "</table></div>")
    return _section("statistics", method + table)


def _baseline(report: Report) -> str:
    base = report.baseline
    if base is None:
        return ""
    parts = [f'<p class="note">Baseline: {escape(str(base.out_dir))}. Flagged: accuracy or macro F1 below the '
             f"baseline's 95% interval; throughput more than {SPEED_TOLERANCE:.0%} lower or latency more than "
             f"{SPEED_TOLERANCE:.0%} higher.</p>"]
    changes = base.changes
    flagged = changes[changes["regression"]]
    compared = fmt.plural(len(changes), "compared metric")
    parts.append(f"<p><span class=\"flag\">{fmt.plural(len(flagged), 'regression')}</span> in {compared} (red "
                 "cells; hover a cell for both values).</p>" if len(flagged)
                 else f"<p>No regression in {compared}.</p>")
    if not changes.empty:
        parts.append(_baseline_table(changes))
    for label, pairs in (("Only in this run", base.only_here), ("Only in the baseline", base.only_there)):
        if pairs:
            parts.append(f'<p class="note">{label}: {escape(", ".join(pairs))}.</p>')
    return _section("baseline", "\n".join(parts))


def _baseline_table(changes: pd.DataFrame) -> str:
    """(dataset, model) down, metrics across; each cell is the change, red where it is a regression."""
    metrics = list(dict.fromkeys(changes["metric"]))
    head = ('<tr><th class="text">Dataset</th><th class="text">Model</th>'
            + "".join(f"<th>{escape(LEADERBOARD_METRICS[m])}</th>" for m in metrics) + "</tr>")
    rows = []
    for (dataset, model), group in changes.groupby(["dataset", "model"], sort=True):
        by_metric = {r["metric"]: r for r in group.to_dict("records")}  # a record's values are typed Any
        cells = []
        for metric in metrics:
            r = by_metric.get(metric)
            if r is None:
                cells.append("<td></td>")
                continue
            title = f"{fmt.number(metric, r['baseline'])} -> {fmt.number(metric, r['current'])}" + (
                f"; {r['note']}" if r["note"] else "")
            css = ' class="regression"' if r["regression"] else ""
            cells.append(f'<td{css} data-metric="{metric}" data-regression="{str(r["regression"]).lower()}" '
                         f'title="{escape(title)}">{fmt.change(metric, r["change"], r["change_pct"])}'
                         + (' <span class="flag">&#9660;</span>' if r["regression"] else "") + "</td>")
        rows.append(f'<tr data-dataset="{escape(str(dataset))}" data-model="{escape(str(model))}"><td class="text">'
                    f'{escape(str(dataset))}</td><td class="text">{escape(str(model))}</td>{"".join(cells)}</tr>')
    return (f'<div class="wrap"><table id="baseline-changes"><thead>{head}</thead><tbody>{"".join(rows)}'
            "</tbody></table></div>")


def _failures(report: Report) -> str:
    failures = report.failures
    parts = []
    if failures.empty:
        parts.append("<p>Every job finished with status ok.</p>")
    else:
        head = "".join(f'<th class="text">{c}</th>' for c in failures.columns)
        rows = "".join(
            "<tr>" + "".join(f'<td class="{"error" if c == "error" else "text"}">{escape(_cell(v))}</td>'
                             for c, v in row.items()) + "</tr>" for _, row in failures.iterrows())
        verb = "is" if len(failures) == 1 else "are"
        parts.append(f'<p>{fmt.plural(len(failures), "job")} did not finish with status ok and {verb} left out of '
                     f'every table and figure.</p><div class="wrap"><table id="failures"><thead><tr>{head}</tr></thead>'
                     f"<tbody>{rows}</tbody></table></div>")
    if report.results.problems:
        items = "".join(f"<li>{escape(p)}</li>" for p in report.results.problems)
        parts.append(f'<p class="note">Files the report could not use:</p><ul class="note">{items}</ul>')
    return _section("failures", "\n".join(parts))


def _provenance(report: Report) -> str:
    sections = report.provenance()
    parts = []
    for title, rows in sections.items():
        if rows:
            items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in rows)
            parts.append(f"<div><h3>{escape(title)}</h3><dl>{items}</dl></div>")
    if not parts:
        return _section("provenance", "<p>No provenance recorded (no metrics.json or run.json read).</p>")
    return _section("provenance", f'<div class="provenance">{"".join(parts)}</div>')


def _cell(value) -> str:
    if pd.isna(value):
        return ""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
