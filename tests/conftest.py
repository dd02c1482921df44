"""Shared fixtures. Real-data tests find the datasets through IMGBENCH_TEST_DATA (set by .ci/run) or a
``shared/data`` folder beside the checkout, and skip cleanly when neither exists."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _real_data_dir() -> Path | None:
    candidates = [os.environ.get("IMGBENCH_TEST_DATA"), REPO.parent / "shared" / "data"]
    for candidate in candidates:
        if candidate and Path(candidate, "README.md").is_file():
            return Path(candidate).resolve()
    return None


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The folder of real MNIST / CIFAR-10 / flowers copies; skips the test when it is absent."""
    found = _real_data_dir()
    if found is None:
        pytest.skip("real datasets not found: set IMGBENCH_TEST_DATA to a folder like ../shared/data")
    return found


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    """A cache shared by the whole session, for tests that decode the real datasets once."""
    return tmp_path_factory.mktemp("session-cache")


@pytest.fixture(scope="session")
def example_package_site(tmp_path_factory) -> Path:
    """plugins/example-package really pip-installed (no dependencies) into a folder of its own: put the folder on
    sys.path and its entry points are found as any installed package's."""
    import shutil
    import subprocess
    import sys

    source = tmp_path_factory.mktemp("example-package") / "src-tree"  # pip builds in the tree: not the repo's
    shutil.copytree(REPO / "plugins" / "example-package", source)
    site = tmp_path_factory.mktemp("example-site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(source)], check=True, capture_output=True, timeout=300)
    return site


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own cache and no ambient data dir, so nothing leaks between tests or from ~."""
    monkeypatch.setenv("IMGBENCH_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("IMGBENCH_DATA_DIR", raising=False)
    monkeypatch.delenv("IMGBENCH_PLUGINS_DIR", raising=False)
    monkeypatch.delenv("IMGBENCH_BLOCK_PLUGINS", raising=False)
    monkeypatch.delenv("IMGBENCH_TRACK", raising=False)  # a developer's tracker must not log the tests' grids
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    # the grid's preflight probes dataset hosts; tests never touch the network, so every host is unreachable
    monkeypatch.setattr("imgbench.datasets.download.probe", lambda url, timeout=0: "offline (tests never probe)")


def pytest_collection_modifyitems(config, items):
    import importlib.util

    has_cuda = False
    if importlib.util.find_spec("torch") is not None:
        import torch

        has_cuda = torch.cuda.is_available()
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))
