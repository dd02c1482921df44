"""report.md: the same content as report.html for terminals, diffs and pull requests; figures linked.

Every text that comes from the results (model and dataset names, paths, errors, provenance) goes through
:func:`escape`, as report.html escapes it: a name holding ``*``, ``|``, backticks, ``[x](y)`` or ``<script>``
reads literally instead of becoming emphasis, a broken table, a link or raw HTML.
"""

from __future__ import annotations

import html
import re
from urllib.parse import quote

import pandas as pd

from imgbench import schema
from imgbench.report import fmt, wall_time
from imgbench.report.explain import BEHIND_HEADING, INTERVALS, METHOD, behind_text, comparison_verdict, seeds_advice
from imgbench.report.findings import Report
from imgbench.report.inference import markdown_lines as inference_lines
from imgbench.report.tables import LEADERBOARD_METRICS, boards
from imgbench.tracking import links as tracking_links

# Markdown's inline syntax; "_" only where it could open or close emphasis (never inside a word: mnist_convnet)
MARKDOWN_SYNTAX = re.compile(r"[\\`*\[\]|~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def render_markdown(report: Report) -> str:
    lines = [f"# imgbench report: {escape(report.out_dir.name)}", "",
             f"Built {escape(report.created)}. {escape(report.headline())}", ""]
    lines += ["## Verdict", ""]
    lines += [f"- **{escape(report.board_title(v.dataset, v.tested_on))}** ({v.kind}): {escape(v.text)}"
              for v in report.verdicts()] or ["Nothing to compare."]
    lines += ["", "## Leaderboards", "", escape(INTERVALS), ""]
    lines += [line for note in report.speed_notes() for line in (f"> {escape(note)}", ">")][:-1] + [""]
    for dataset, test_set, ranked in boards(report.board):
        title = report.board_title(dataset, test_set)
        lines += [f"### {escape(title)}", ""]
        if title != dataset:
            lines += [escape(report.tested_note(dataset, test_set)), ""]
        metrics = list(LEADERBOARD_METRICS)
        header = ["#", "Model", "Seeds", *[LEADERBOARD_METRICS[m] for m in metrics[:2]], BEHIND_HEADING,
                  *[LEADERBOARD_METRICS[m] for m in metrics[2:]]]
        rows = []
        for _, r in ranked.iterrows():
            cells = [_cell_text(r, m) for m in metrics]
            name = r["model"] + (" (did not learn)" if r["did_not_learn"] else "")
            rank = fmt.MISSING if r["did_not_learn"] else str(r["rank"])
            rows.append([rank, name, str(r["n_seeds"]), *cells[:2], behind_text(r), *cells[2:]])
        lines += _table(header, rows) + [""]
        lines += [line for _, r in ranked.iterrows() if r["did_not_learn"] for line in (
            f"{escape(r['model'])} did not learn ({escape(r['did_not_learn'])}): it is listed, not ranked.", "")]
    if report.board.empty:
        lines += ["No successful job: nothing to rank.", ""]
    lines += ["## Figures", ""]
    lines += [f"![{escape(f.title)} on {escape(f.dataset)}]({schema.FIGURES_DIR}/{quote(f.png.name)})"
              for f in report.figures] or ["None."]
    lines += ["", "## Is the leader really better?", "", escape(METHOD), ""]
    rows = [[report.board_title(c.dataset, c.tested_on), c.leader, c.other,
             *([fmt.points(d.value), fmt.points_interval(d.low, d.high), fmt.p_value(d.p_value),
                f"{c.leader_seeds} / {c.other_seeds}"] if (d := c.difference) else [fmt.MISSING] * 4),
             comparison_verdict(c), seeds_advice(c)] for c in report.comparisons]
    lines += _table(["Leaderboard", "Leader", "Model", "Lead", "95% interval", "p", "Seeds", "Verdict",
                     "Seeds to settle it"], rows) if rows else ["No leaderboard has two models that learnt: "
                                                                "nothing to compare."]
    if report.baseline is not None:
        changes = report.baseline.changes
        lines += ["", "## Against the baseline", "", f"Baseline: {escape(report.baseline.out_dir)}", ""]
        rows = [[r["dataset"], r["model"], r["metric"], fmt.number(r["metric"], r["baseline"]),
                 fmt.number(r["metric"], r["current"]), fmt.change(r["metric"], r["change"], r["change_pct"]),
                 ("REGRESSION " if r["regression"] else "") + r["note"]]
                for r in changes.to_dict("records")]  # a record's values are typed Any
        lines += _table(["Dataset", "Model", "Metric", "Baseline", "Now", "Change", "Flag"], rows) if rows \
            else ["No (model, dataset) pair is in both runs."]
    lines += ["", *inference_lines(report.inference, escape)]
    lines += ["", "## Failures", ""]
    failures = report.failures
    lines += _table(list(failures.columns), [[_cell(v) for v in row] for row in failures.itertuples(index=False)]) \
        if not failures.empty else ["Every job finished with status ok."]
    lines += [f"- could not use {escape(p)}" for p in report.results.problems]
    lines += wall_time.render_markdown(report, escape)
    lines += ["", "## Provenance", ""]
    for title, items in report.provenance().items():
        if items:
            lines += [f"### {escape(title)}", ""] + [f"- {escape(key)}: {escape(value)}" for key, value in items] + [""]
    lines += tracking_links.markdown_lines(report.out_dir, report.results.table)  # imgbench.tracking's section
    return "\n".join(lines).rstrip() + "\n"


def _cell_text(row: pd.Series, metric: str) -> str:
    """A leaderboard cell: the mean with its unit, then its interval, or '(noisy)' for a noisy speed figure."""
    mean, low, high = row[f"{metric}_mean"], row[f"{metric}_low"], row[f"{metric}_high"]
    if row.get(f"{metric}_noisy", False):
        return f"{fmt.number(metric, mean)} (noisy)"
    interval = fmt.interval(metric, low, high) if fmt.is_percent(metric) else fmt.half_width(metric, low, high)
    return f"{fmt.number(metric, mean)} {interval}".strip()


def escape(value: object) -> str:
    """``value`` as literal Markdown text on one line: HTML entities for ``& < >``, a backslash before syntax."""
    text = html.escape(str(value), quote=False).replace("\r", " ").replace("\n", " ")
    return MARKDOWN_SYNTAX.sub(lambda match: "\\" + match.group(0), text)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cells) + " |"
    return [line(header), line(["---"] * len(header))] + [line([escape(c) for c in r]) for r in rows]


def _cell(value) -> str:
    if pd.isna(value):
        return ""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
