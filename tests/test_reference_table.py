"""benchmarks/reference_table.py: docs/reproducing.md's published-vs-measured table comes from a results folder, row by
row matched on the jobs' configuration hashes; every published figure carries its source."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

from imgbench.registry import get_registry
from imgbench.resources import suite_path
from imgbench.schema import RESULT_COLUMNS as COLUMNS
from imgbench.runner.suite import expand, load_suite

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("reference_table", REPO / "benchmarks" / "reference_table.py")
reference_table = importlib.util.module_from_spec(_spec)
sys.modules["reference_table"] = reference_table  # its dataclasses look their module up
_spec.loader.exec_module(reference_table)


@pytest.fixture(scope="module")
def suite():
    return load_suite(suite_path("reference"))


def write_results(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True)
    pd.DataFrame([{c: row.get(c) for c in COLUMNS} for row in rows], columns=list(COLUMNS)).to_csv(
        folder / "results.csv", index=False)
    return folder


def result_row(job, accuracy: float, status: str = "ok", device: str = "cpu") -> dict:
    return {"job_id": job.job_id, "model": job.model, "dataset": job.dataset, "seed": job.seed, "status": status,
            "accuracy": accuracy, "device": device, "config_hash": job.config_hash}


def test_every_grid_reproduces_a_published_figure_with_its_source(suite):
    assert [g.name for g in suite.grids] == ["keras-io mnist_convnet", "TF flowers tutorial cnn",
                                              "defaults mnist_convnet", "defaults flowers_cnn"]
    for grid in suite.grids:
        published = grid.published
        assert published["metric"] == "accuracy" and 0.5 < published["value"] <= 1
        assert re.fullmatch(r"https://(keras\.io|www\.tensorflow\.org)/\S+", published["source"])
        assert published["quote"]
        if "low" in published:
            assert published["low"] <= published["value"] <= published["high"]


def test_the_table_is_read_from_results_folders_by_configuration_hash(suite, tmp_path):
    by_grid = {g.name: expand(g, get_registry()) for g in suite.grids}
    keras_io, defaults = by_grid["keras-io mnist_convnet"], by_grid["defaults mnist_convnet"]
    cpu = write_results(tmp_path / "cpu", [
        result_row(keras_io[0], 0.9910), result_row(keras_io[1], 0.9930),
        result_row(keras_io[2], 0.10, status="diverged"),  # not ok: left out
        result_row(defaults[0], 0.9880),
        # same model, dataset and seed as a keras-io job, another recipe: belongs to no grid
        {**result_row(keras_io[0], 0.50), "config_hash": "0" * 12},
    ])
    gpu = write_results(tmp_path / "gpu", [result_row(by_grid["TF flowers tutorial cnn"][0], 0.7300, device="cuda:0"),
                                           result_row(keras_io[0], 0.9910)])  # seen twice: counted once
    rows = {row.grid: row for row in reference_table.collect(suite, [cpu, gpu])}
    assert rows["keras-io mnist_convnet"].seeds == [0, 1]
    assert rows["keras-io mnist_convnet"].mean == pytest.approx((0.9910 + 0.9930) / 2)
    assert rows["defaults mnist_convnet"].measured == [0.9880]
    assert rows["TF flowers tutorial cnn"].devices == ["cuda:0"]
    assert rows["defaults flowers_cnn"].mean is None

    table = reference_table.markdown(list(rows.values()))
    lines = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()[2:]}
    assert "**99.20%** (seeds 99.10% to 99.30%), -0.02 pt | 2 of 3: 0 1 | cpu" in lines["keras-io mnist_convnet"]
    assert "99.22% [source](https://keras.io/examples/vision/mnist_convnet/)" in lines["keras-io mnist_convnet"]
    assert "about 70%-75% [source](https://www.tensorflow.org/tutorials/images/classification)" in lines[
        "TF flowers tutorial cnn"]
    assert "**73.00%**, within the range | 1 of 3: 0 | cuda:0" in lines["TF flowers tutorial cnn"]
    assert "not run yet | 0 of 3" in lines["defaults flowers_cnn"]
    assert "`imgbench run reference -m keras/mnist_convnet -d mnist --out results/reference`" in table
    assert "180 px, 15 epochs, batch 32, adam 0.001 constant" in lines["TF flowers tutorial cnn"]


def test_the_page_section_is_replaced_and_nothing_else(tmp_path):
    page = tmp_path / "page.md"
    start, end = reference_table.START, reference_table.END
    page.write_text(f"# Title\n\nbefore\n{start}\nold table\n{end}\nafter\n", encoding="utf-8")
    reference_table.fill_page(page, "| new |")
    reference_table.fill_page(page, "| newer |")
    assert page.read_text(encoding="utf-8") == f"# Title\n\nbefore\n{start}\n| newer |\n{end}\nafter\n"
    (tmp_path / "plain.md").write_text("no markers", encoding="utf-8")
    with pytest.raises(SystemExit, match="no .*reference-table:start"):
        reference_table.fill_page(tmp_path / "plain.md", "| x |")


PAGE = REPO / "docs" / "reproducing.md"


def test_the_page_has_the_generated_section():
    text = PAGE.read_text(encoding="utf-8")
    section = text.split(reference_table.START, 1)[1].split(reference_table.END, 1)[0]
    assert section.strip().startswith(reference_table.HEADER)


def test_distance_from_a_published_range_is_measured_from_its_nearer_end():
    published = {"value": 0.725, "low": 0.70, "high": 0.75}
    assert reference_table._against(0.68, published) == "-2.00 pt from the range"
    assert reference_table._against(0.76, published) == "+1.00 pt from the range"
    assert reference_table._against(0.9900, {"value": 0.9922}) == "-0.22 pt"


def test_rows_without_results_keep_the_page_line_of_the_same_grid_model_and_recipe(suite, tmp_path):
    by_grid = {g.name: expand(g, get_registry()) for g in suite.grids}
    earlier = reference_table.markdown(reference_table.collect(suite, [write_results(tmp_path / "cpu", [
        result_row(by_grid["keras-io mnist_convnet"][0], 0.9925),
        result_row(by_grid["defaults mnist_convnet"][0], 0.9915)])]))
    # the defaults' recipe changed since that line was written: its figure is stale and must not be kept
    earlier = earlier.replace("12 epochs, batch 128, adamw", "5 epochs, batch 128, adamw")
    kept = reference_table.measured_lines(earlier)
    assert [key[0] for key in kept] == ["keras-io mnist_convnet", "defaults mnist_convnet"]

    gpu = write_results(tmp_path / "gpu", [result_row(by_grid["TF flowers tutorial cnn"][0], 0.7200, "ok", "cuda:0")])
    lines = {line.split(" | ")[0].strip("| "): line
             for line in reference_table.markdown(reference_table.collect(suite, [gpu]), kept).splitlines()[2:]}
    assert "**99.25%**, +0.03 pt | 1 of 3: 0 | cpu" in lines["keras-io mnist_convnet"]
    assert "**72.00%**, within the range | 1 of 3: 0 | cuda:0" in lines["TF flowers tutorial cnn"]
    assert "not run yet | 0 of 3" in lines["defaults mnist_convnet"]
    assert "not run yet | 0 of 3" in lines["defaults flowers_cnn"]


def test_the_page_table_survives_a_run_that_measured_none_of_its_rows(tmp_path):
    page = tmp_path / "reproducing.md"
    page.write_text(PAGE.read_text(encoding="utf-8"), encoding="utf-8")
    assert reference_table.main([str(write_results(tmp_path / "empty", [])), "--page", str(page)]) == 0
    assert page.read_text(encoding="utf-8") == PAGE.read_text(encoding="utf-8")
