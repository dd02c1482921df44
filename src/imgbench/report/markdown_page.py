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
from imgbench.report import fmt
from imgbench.report.findings import Report
from imgbench.report.inference import markdown_lines as inference_lines
from imgbench.report.stats import ALPHA, PAIRING
from imgbench.report.tables import BOARD_KEYS, LEADERBOARD_METRICS

# Markdown's inline syntax; "_" only where it could open or close emphasis (never inside a word: mnist_convnet)
MARKDOWN_SYNTAX = re.compile(r"[\\`*\[\]|~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def render_markdown(report: Report) -> str:
    lines = [f"# imgbench report: {escape(report.out_dir.name)}", "",
             f"Built {escape(report.created)}. {escape(report.headline())}", ""]
    lines += ["## Verdict", ""]
    lines += [f"- **{escape(report.board_title(v.dataset, v.tested_on))}** ({v.kind}): {escape(v.text)}"
              for v in report.verdicts()] or ["Nothing to compare."]
    notes = [f"> {escape(note)}" for note in report.speed_notes()]
    lines += ["", *notes] if notes else []
    lines += ["", "## Leaderboards", ""]
    lines += [*notes, ""] if notes else []
    for (dataset, test_set), ranked in report.board.groupby(BOARD_KEYS, sort=True):
        title = report.board_title(dataset, test_set)
        lines += [f"### {escape(title)}", ""]
        if title != dataset:
            lines += [escape(report.tested_note(dataset, test_set)), ""]
        if ranked["n_seeds"].max() < 2:
            lines += ["One seed per model: no interval.", ""]
        header = ["#", "Model", "Seeds"] + list(LEADERBOARD_METRICS.values())
        rows = [[str(r["rank"]), r["model"], str(r["n_seeds"])] + [
            f"{fmt.number(m, r[f'{m}_mean'])} {fmt.half_width(m, r[f'{m}_low'], r[f'{m}_high'])}".strip()
            for m in LEADERBOARD_METRICS] for _, r in ranked.iterrows()]
        lines += _table(header, rows) + [""]
    if report.board.empty:
        lines += ["No successful job: nothing to rank.", ""]
    lines += ["## Figures", ""]
    lines += [f"![{escape(f.title)} on {escape(f.dataset)}]({schema.FIGURES_DIR}/{quote(f.png.name)})"
              for f in report.figures] or ["None."]
    lines += ["", "## Is the leader really better?", "", f"Method: {PAIRING}. Alpha = {ALPHA}.", ""]
    rows = [[report.board_title(c.dataset, c.tested_on), c.winner, c.runner_up, fmt.points(c.margin_points),
             fmt.p_value(c.p_value),
             "" if pd.isna(c.diff_low) else f"[{c.diff_low:+.2f}, {c.diff_high:+.2f}] pt",
             c.reason and f"not tested: {c.reason}" or ("significant" if c.significant else "not significant")]
            for c in report.comparisons]
    lines += _table(["Dataset", "Leader", "Runner-up", "Margin", "McNemar", "Bootstrap 95% CI", "Verdict"],
                    rows) if rows else ["No dataset has two models with results."]
    if report.baseline is not None:
        changes = report.baseline.changes
        lines += ["", "## Against the baseline", "", f"Baseline: {escape(report.baseline.out_dir)}", ""]
        rows = [[r.dataset, r.model, r.metric, fmt.number(r.metric, r.baseline), fmt.number(r.metric, r.current),
                 fmt.change(r.metric, r.change, r.change_pct), ("REGRESSION " if r.regression else "") + r.note]
                for r in changes.itertuples()]
        lines += _table(["Dataset", "Model", "Metric", "Baseline", "Now", "Change", "Flag"], rows) if rows \
            else ["No (model, dataset) pair is in both runs."]
    lines += ["", *inference_lines(report.inference, escape)]
    lines += ["", "## Failures", ""]
    failures = report.failures
    lines += _table(list(failures.columns), [[_cell(v) for v in row] for row in failures.itertuples(index=False)]) \
        if not failures.empty else ["Every job finished with status ok."]
    lines += [f"- could not use {escape(p)}" for p in report.results.problems]
    lines += ["", "## Provenance", ""]
    for title, items in report.provenance().items():
        if items:
            lines += [f"### {escape(title)}", ""] + [f"- {escape(key)}: {escape(value)}" for key, value in items] + [""]
    return "\n".join(lines).rstrip() + "\n"


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
