"""The comparison report of a results folder: leaderboards with intervals, figures, significance tests,
baseline regressions, failures and provenance, written as report.html, report.md, figures/ and summary.csv.

``build_report`` executes notebooks/report.ipynb with papermill; ``render`` does the same work in-process.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {"assemble": "content", "draw_figures": "content", "render": "content", "write_report": "content",
         "build_report": "notebook"}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    # Lazy: every `imgbench` command imports imgbench.report.cli, and seaborn + scipy cost seconds to import.
    if name in _LAZY:
        return getattr(import_module(f"imgbench.report.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'imgbench.report' has no attribute {name!r}")
