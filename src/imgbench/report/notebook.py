"""Build the report by executing notebooks/report.ipynb with papermill in this Python's environment.

The kernel is the one every job uses (:mod:`imgbench.kernel`): this very Python, whatever
kernelspecs are installed.
"""

from __future__ import annotations

from pathlib import Path

from imgbench import schema
from imgbench.kernel import ReportKernelManager
from imgbench.report.load import load_results
from imgbench.resources import notebook_path

NOTEBOOK_NAME = "report.ipynb"
KERNEL_START_TIMEOUT_S = 120


def build_report(out_dir: str | Path, baseline: str | Path | None = None) -> Path:
    """Execute the report notebook on ``out_dir``; returns the path of report.html.

    The folders are checked here first, so a wrong path raises UsageError instead of failing in the kernel.
    The executed notebook is kept as OUT/report.ipynb, also when a cell fails.
    """
    import papermill

    results = load_results(out_dir)
    base = load_results(baseline).out_dir if baseline else None
    executed = results.out_dir / schema.REPORT_NOTEBOOK
    try:
        papermill.execute_notebook(
            str(notebook_path(NOTEBOOK_NAME)), str(executed),
            parameters={"out_dir": str(results.out_dir), "baseline": str(base) if base else None},
            kernel_manager_class=ReportKernelManager, kernel_name="python3",
            start_timeout=KERNEL_START_TIMEOUT_S, progress_bar=False, report_mode=True, cwd=str(results.out_dir))
    except papermill.PapermillExecutionError as exc:
        raise RuntimeError(f"the report notebook failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue} "
                           f"(see {executed})") from exc
    return results.out_dir / schema.REPORT_HTML
