"""The bundled digits dataset: scikit-learn's copy, scaled exactly, split by content, refused if it changes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import load_digits

from imgbench import paths
from imgbench.cli import main
from imgbench.datasets import digits
from imgbench.datasets.errors import DatasetError
from imgbench.engine.recipe import resolve_recipe
from imgbench.registry import get_registry

# The UCI optdigits test set's class distribution, as its optdigits.names file publishes it.
UCI_CLASS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def load(tmp_path, image_size=0, val_size=0.1):
    spec, _ = get_registry().dataset("digits")
    return spec.load(image_size=image_size, val_size=val_size, data_dir=None, cache_dir=tmp_path, arg="")


def test_scaling_to_uint8_is_exact_and_reversible():
    counts = np.arange(digits.MAX_COUNT + 1)
    scaled = digits.to_uint8(counts)
    assert scaled.dtype == np.uint8
    assert scaled[[0, 1, 8, 15, 16]].tolist() == [0, 16, 128, 239, 255]  # floor(v * 255 / 16 + 0.5) by hand
    assert np.array_equal(np.round(scaled.astype(float) * 16 / 255).astype(int), counts)


def test_the_pins_match_scikit_learn_and_uci():
    bunch = load_digits()
    assert list(digits.CLASS_COUNTS) == UCI_CLASS_COUNTS == np.bincount(bunch.target).tolist()
    assert digits.content_sha256(bunch.images.astype(np.uint8), bunch.target) == digits.CONTENT_SHA256


def test_load_is_every_image_scaled_and_a_stratified_content_split(tmp_path):
    data = load(tmp_path)
    assert data.image_shape == (8, 8, 1) and data.classes == tuple("0123456789")
    parts = [data.train, data.val, data.test]
    assert sum(len(p) for p in parts) == 1797
    assert [len(p) for p in parts] == [digits.DIGITS.spec().split_sizes[k] for k in ("train", "val", "test")]
    expected_test = np.floor(np.array(UCI_CLASS_COUNTS) * digits.TEST_FRACTION + 0.5)
    assert np.bincount(data.test.y, minlength=10).tolist() == expected_test.astype(int).tolist()
    # Every image is scikit-learn's, scaled: compare the multisets of (image bytes, label).
    bunch = load_digits()
    reference = sorted(digits.to_uint8(img).tobytes() + bytes([label]) for img, label in zip(bunch.images, bunch.target))
    loaded = sorted(x[..., 0].tobytes() + bytes([int(y)]) for p in parts for x, y in zip(p.x, p.y))
    assert loaded == reference
    again = load(tmp_path / "elsewhere")
    assert again.fingerprint == data.fingerprint and np.array_equal(again.test.x, data.test.x)


def test_a_larger_image_size_resizes(tmp_path):
    data = load(tmp_path, image_size=16)
    assert data.train.x.shape[1:] == (16, 16, 1)


def test_a_changed_copy_is_refused(tmp_path, monkeypatch):
    bunch = load_digits()
    bunch.images[0, 0, 0] = 16 - bunch.images[0, 0, 0]
    monkeypatch.setattr("sklearn.datasets.load_digits", lambda: bunch)
    with pytest.raises(DatasetError, match="differ from the copy imgbench pins"):
        load(tmp_path)


def test_listed_as_bundled_and_local_with_its_own_recipe(capsys):
    assert main(["datasets", "digits", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["source"] == "local" and "bundled" in row["from"] and row["shape"] == "8x8x1"
    assert resolve_recipe("digits", {}) != resolve_recipe("imagefolder:/x", {})
    assert paths.DataFolders.resolve().data_dir is None  # nothing local was needed


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.timeout(2400)  # about a minute on a quiet laptop; far more on a loaded shared machine
def test_the_demo_suite_runs_offline_with_no_data(tmp_path):
    """`imgbench run demo` as a first-time user runs it: no data folder, no network, every job ok, a report."""
    import os
    import subprocess
    import sys

    import nbformat
    import pandas as pd

    env = {key: value for key, value in os.environ.items() if key not in (paths.DATA_DIR_ENV, "IMGBENCH_TEST_DATA")}
    env.update(HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")  # a download would fail
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "imgbench", "run", "demo", "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=2300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 4 and set(results["status"]) == {"ok"} and set(results["dataset"]) == {"digits"}
    assert (results["accuracy"] > 0.5).all()  # ten classes: chance is 0.1
    assert (out / "report.html").is_file()
    for notebook in results["notebook"]:
        executed = nbformat.read(out / notebook, as_version=4)
        assert "IProgress not found" not in nbformat.writes(executed)
