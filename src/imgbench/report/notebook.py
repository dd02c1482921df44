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


def build_report(out_dir: str | Path, baseline: str | Path | None = None, *, fork_server: str | None = None) -> Path:
    """Build the comparison report of a results folder by executing ``notebooks/report.ipynb``.

    This is what ``imgbench report OUT [--baseline OTHER_OUT]`` runs, and what ``imgbench run`` runs when its
    grid ends. :func:`imgbench.report.render` does the same work in this process, without a notebook.

    Parameters:
        out_dir: a results folder written by ``imgbench run --out``: it holds ``results.csv`` and ``jobs/``.
            The report reads only ``results.csv`` and each job's ``metrics.json``, ``predictions.csv`` and
            ``history.csv``; a missing or unreadable job file is listed under Failures instead of stopping it.
        baseline: an earlier results folder, or None. With one, the report adds "Against the baseline": each
            metric's change per (dataset, model), regressions flagged.
        fork_server: the socket of a fork server (:mod:`imgbench.forkserver`) to fork the kernel from, with
            pandas and matplotlib already imported: ``imgbench run`` passes its grid's. None, or a server that
            does not answer: a fresh kernel.

    Returns:
        The path of ``OUT/report.html``.

    Raises:
        UsageError: ``out_dir`` or ``baseline`` does not exist, has no ``results.csv``, or its ``results.csv``
            lacks the columns job_id, model, dataset, seed, status. Checked here, before a kernel starts.
        RuntimeError: a notebook cell failed; the message names the cell and the exception, and the executed
            notebook is kept for inspection.

    Writes into ``out_dir``, each file atomically:
        ``report.html`` (one self-contained page: inline CSS, figures as base64 PNG, no scripts), ``report.md``
        (the same content, figures linked), ``figures/`` (every figure as PNG and SVG), ``summary.csv`` (the
        leaderboards, one row per dataset, test set and model: means, intervals, rank, did_not_learn, the
        noise flags and the comparison with the leader) and ``report.ipynb`` (the executed notebook, also kept
        when a cell fails).

    What the report says, in reading order (docs/report.md, "Reading the report", explains each part):
        Verdict: per dataset and test set, whether the leader is really better than the runner-up. Leaderboards:
        mean over seeds of accuracy, macro F1, speed, size and memory; accuracy and F1 with a 95% interval that
        counts both the training seeds and the finite test set (:mod:`imgbench.report.stats`), the verdict and
        the figures use the same intervals. A model with a job that did not learn (``did_not_learn``) is listed
        but never ranked or named leader; a speed figure too noisy to rank on is marked noisy, with the cause
        the job's record points to, once per page. Figures, "Is the leader really better?" (every model against
        the leader, with the seeds that would settle a tie), the baseline, failures and provenance.

    The kernel is this very Python (:class:`imgbench.kernel.ReportKernelManager`), whatever kernelspecs are
    installed; the notebook runs with ``out_dir`` as its working directory.

    Example:
        >>> from imgbench.report import build_report
        >>> build_report("results/demo")  # doctest: +SKIP
        PosixPath('/home/me/results/demo/report.html')
    """
    import papermill

    results = load_results(out_dir)
    base = load_results(baseline).out_dir if baseline else None
    executed = results.out_dir / schema.REPORT_NOTEBOOK
    try:
        papermill.execute_notebook(
            str(notebook_path(NOTEBOOK_NAME)), str(executed),
            parameters={"out_dir": str(results.out_dir), "baseline": str(base) if base else None},
            kernel_manager_class=ReportKernelManager.forked_from(fork_server), kernel_name="python3",
            start_timeout=KERNEL_START_TIMEOUT_S, progress_bar=False, report_mode=True, cwd=str(results.out_dir))
    except papermill.PapermillExecutionError as exc:
        raise RuntimeError(f"the report notebook failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue} "
                           f"(see {executed})") from exc
    return results.out_dir / schema.REPORT_HTML
