"""Both shipped notebooks execute as they are, through nbclient and a kernel of this Python: the benchmark
notebook with its own defaults (the bundled digits, so no data and no network), copied out by
``imgbench notebooks DIR`` as a pip user would get them, and the report notebook on a results folder."""

from __future__ import annotations

import json

import nbformat
import pytest
from nbclient import NotebookClient
import papermill

from imgbench.cli import main
from imgbench.kernel import CurrentPythonKernelManager
from imgbench.resources import notebook_path
from report_synthetic import PLAN, make_results

NO_WIDGETS_WARNING = "IProgress not found"  # tqdm's message when ipywidgets is missing
CELL_TIMEOUT_S = 600


def execute(nb: nbformat.NotebookNode, cwd) -> nbformat.NotebookNode:
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            kernel_manager_class=CurrentPythonKernelManager, resources={"metadata": {"path": str(cwd)}})
    return client.execute()


def output_texts(nb: nbformat.NotebookNode) -> list[str]:
    texts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", "") if output.output_type == "stream" else json.dumps(output))
    return texts


def test_notebooks_command_copies_the_shipped_notebooks_and_refuses_to_overwrite(tmp_path, capsys):
    target = tmp_path / "nb"
    assert main(["notebooks", str(target)]) == 0
    for name in ("benchmark.ipynb", "report.ipynb"):
        assert (target / name).read_bytes() == notebook_path(name).read_bytes()
    capsys.readouterr()
    assert main(["notebooks", str(target)]) == 2
    err = capsys.readouterr().err
    assert "already exist" in err and "--force" in err
    (target / "report.ipynb").write_text("changed", encoding="utf-8")
    assert main(["notebooks", str(target), "--force"]) == 0
    assert (target / "report.ipynb").read_bytes() == notebook_path("report.ipynb").read_bytes()


@pytest.mark.notebook
@pytest.mark.slow
def test_copied_benchmark_notebook_runs_with_its_defaults_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # any download attempt would fail loudly
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    assert main(["notebooks", str(tmp_path)]) == 0
    nb = execute(nbformat.read(tmp_path / "benchmark.ipynb", as_version=4), tmp_path)
    errors = [o for cell in nb.cells for o in cell.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    texts = output_texts(nb)
    assert any("status: ok" in text for text in texts)
    training = next(c for c in nb.cells if "run_job(" in c.source)  # its final state, as saved text
    assert "epoch 2/2" in "".join(output.get("text", "") for output in training.outputs)
    assert not any(NO_WIDGETS_WARNING in text for text in texts)
    figures = [o for cell in nb.cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(figures) == 3  # samples, training curves, confusion matrix
    recipe_table = next(c for c in nb.cells if c.cell_type == "code" and "recipe_table" in c.source)
    assert "digits" in recipe_table.outputs[0]["data"]["text/plain"]
    metrics_table = nb.cells[-1].outputs[0]["data"]["text/plain"]
    accuracy = float(metrics_table.split("accuracy", 1)[1].split()[0])
    assert accuracy > 0.5  # two epochs on 1,000 digits: far above the 0.1 of chance


@pytest.mark.notebook
def test_report_notebook_runs_on_a_results_folder(tmp_path):
    out = make_results(tmp_path / "out", plan={"mnist": PLAN["mnist"]}, seeds=(0, 1), failed=(), n_test=120)
    # papermill only injects the parameters cell here (prepare_only); nbclient runs the notebook.
    nb = papermill.execute_notebook(str(notebook_path("report.ipynb")), str(tmp_path / "injected.ipynb"),
                                    parameters={"out_dir": str(out)}, prepare_only=True, progress_bar=False)
    executed = execute(nb, out)
    errors = [o for cell in executed.cells for o in cell.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    assert (out / "report.html").is_file() and (out / "figures").is_dir()
    assert any("mnist" in text for text in output_texts(executed))
