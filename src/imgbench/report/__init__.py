"""The comparison report of a results folder: leaderboards with intervals, figures, significance tests,
baseline regressions, failures and provenance, written as report.html, report.md, figures/ and summary.csv.

``build_report`` executes notebooks/report.ipynb with papermill; ``render`` does the same work in-process.
"""

from __future__ import annotations

from imgbench.report.content import assemble, draw_figures, render, write_report
from imgbench.report.notebook import build_report

__all__ = ["assemble", "build_report", "draw_figures", "render", "write_report"]
