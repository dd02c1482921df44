"""build_report executes notebooks/report.ipynb with papermill in a kernel started from sys.executable."""

from __future__ import annotations

import os
import sys

import nbformat
import psutil
import pytest

from imgbench import forkserver
from imgbench.errors import UsageError
from imgbench.kernel import CurrentPythonKernelManager
from imgbench.report import build_report
from imgbench.resources import notebook_path
from report_synthetic import PLAN, ReportPage, make_results


def test_report_notebook_is_found_and_thin():
    notebook = nbformat.read(notebook_path("report.ipynb"), as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert "out_dir" in code[0].source and "baseline" in code[0].source
    assert all(len(cell.source.splitlines()) <= 6 for cell in code)  # cells call the library, nothing more


def test_kernel_manager_starts_this_interpreter():
    assert CurrentPythonKernelManager(kernel_name="python3").kernel_spec.argv[0] == sys.executable


def test_build_report_rejects_a_wrong_folder_before_starting_a_kernel(tmp_path):
    with pytest.raises(UsageError, match="no results.csv"):
        build_report(tmp_path)


@pytest.mark.notebook
def test_build_report_executes_the_notebook_and_writes_every_file(tmp_path):
    plan = {"cifar10": PLAN["cifar10"]}
    baseline = make_results(tmp_path / "baseline", plan=plan, seeds=(0, 1), failed=(), n_test=120)
    out = make_results(tmp_path / "out", plan=plan, seeds=(0, 1), n_test=120,
                       failed=(("timm/vit_tiny_patch16_224", "cifar10", 1),))
    html = build_report(out, baseline)
    assert html == out / "report.html"
    page = ReportPage(html.read_text(encoding="utf-8"))
    assert page.sections == ["verdict", "leaderboards", "figures", "statistics", "baseline", "failures", "time",
                             "provenance"]
    assert len(page.images) == 6
    assert (out / "report.md").is_file() and (out / "summary.csv").is_file()
    executed = nbformat.read(out / "report.ipynb", as_version=4)
    outputs = [o for cell in executed.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any(str(out) in cell.source for cell in executed.cells)  # the injected parameters cell


@pytest.mark.notebook
@pytest.mark.skipif(not forkserver.SUPPORTED, reason="fork servers run on Linux only")
def test_build_report_forks_its_kernel_from_the_fork_server_it_is_given(tmp_path, monkeypatch):
    out = make_results(tmp_path / "out", plan={"cifar10": PLAN["cifar10"]}, seeds=(0,), failed=(), n_test=60)
    forked, request = [], forkserver.request_kernel

    def recorded(address, argv, env, cwd, status_path):
        kernel = request(address, argv, env, cwd, status_path)
        forked.append((psutil.Process(kernel.pid).ppid(), cwd))  # who forked it, and where it works
        return kernel

    monkeypatch.setattr(forkserver, "request_kernel", recorded)
    servers = forkserver.ForkServers(("ipykernel.kernelapp", "pandas"))
    try:
        address = servers.address(dict(os.environ), ())
        [(server, _)] = servers._servers.values()
        assert build_report(out, fork_server=address) == out / "report.html"
        assert forked == [(server.pid, str(out.resolve()))]
    finally:
        servers.close()
    assert build_report(out) == out / "report.html"  # no server named: a fresh kernel, as before
    assert len(forked) == 1
