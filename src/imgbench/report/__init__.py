"""The comparison report of a results folder: leaderboards with intervals, figures, significance tests,
baseline regressions, failures and provenance, written as report.html, report.md, figures/ and summary.csv.

``build_report`` executes notebooks/report.ipynb with papermill; ``render`` does the same work in-process.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# Lazy, so that the command line (which imports .cli for its parser) loads no pandas, seaborn or Jupyter.
_HOMES = {"assemble": "findings", "draw_figures": "build", "render": "build", "write_report": "build",
          "build_report": "notebook"}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(f"imgbench.report.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'imgbench.report' has no attribute {name!r}")
