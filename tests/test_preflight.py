"""The preflight refuses every bad grid before the first kernel starts: through the CLI it exits 2, creates no
output folder and starts no job, and names every problem in one message. What it refuses still fails the
same way when a job is run through the Python API (``run_job``)."""

from __future__ import annotations

import gzip
import re
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgbench import cli
from imgbench.datasets import DatasetError
from imgbench.datasets.download import probe as real_probe  # before the autouse fixture replaces it
from imgbench.datasets.idx import MNIST
from imgbench.errors import UsageError
from imgbench.registry import get_registry
from imgbench.runner import execute, executors
from imgbench.runner.preflight import HostProbe, preflight
from imgbench.runner.suite import GridError, load_suite, suite_from_dict

TESTKIT = Path(__file__).parent / "fixtures" / "runner_plugins"
GOOD = ["-m", "testkit/linear", "-d", "tinygray"]


@pytest.fixture(autouse=True)
def no_job_starts(monkeypatch):
    """Any job or kernel start fails the test: the preflight must stop everything before."""
    def refuse(*args, **kwargs):
        raise AssertionError("a job was started although the preflight should have refused the grid")

    monkeypatch.setattr(execute, "execute_job", refuse)
    monkeypatch.setattr(executors, "execute_job", refuse)  # where LocalExecutor looks it up
    monkeypatch.setattr("papermill.execute_notebook", refuse)


@pytest.fixture
def registry():
    return get_registry([TESTKIT], ())


def run_cli(tmp_path, capsys, *argv):
    out = tmp_path / "out"
    code = cli.main(["run", "--plugins-dir", str(TESTKIT), "--out", str(out), "--no-report", *argv])
    err = capsys.readouterr().err
    assert not out.exists(), "the preflight created the output folder"
    return code, err


def refused(tmp_path, capsys, *argv) -> str:
    code, err = run_cli(tmp_path, capsys, *argv)
    assert code == 2, err
    return err


def image_tree(root: Path, classes: dict[str, int]) -> Path:
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


# -- numbers ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("param, problem", [
    ("lr=nan", "lr=nan must be a finite number"),
    ("weight_decay=-inf", "weight_decay=-inf must be a finite number"),
    ("bench_seconds=inf", "bench_seconds=inf must be a finite number"),
    ("bench_seconds=601", "bench_seconds=601.0 must be at most 600"),
    ("epochs=1001", "epochs=1001 must be at most 1000"),
    ("batch_size=65537", "batch_size=65537 must be at most 65536"),
    ("image_size=4097", "image_size=4097 must be at most 4096"),
])
def test_numbers_must_be_finite_and_in_range(tmp_path, capsys, param, problem):
    assert problem in refused(tmp_path, capsys, *GOOD, "-p", param)


def test_nan_and_inf_in_a_suite_file_and_the_timeout_are_refused(tmp_path, capsys):
    suite = tmp_path / "s.toml"
    suite.write_text('models = ["testkit/linear"]\ndatasets = ["tinygray"]\n[params]\nlr = nan\n', encoding="utf-8")
    assert "lr=nan must be a finite number" in refused(tmp_path, capsys, str(suite))
    suite.write_text('models = ["testkit/linear"]\ndatasets = ["tinygray"]\ntimeout = inf\n', encoding="utf-8")
    assert "timeout must be a positive number of seconds, got inf" in refused(tmp_path, capsys, str(suite))
    assert "--timeout must be a positive number of seconds, got inf" in refused(tmp_path, capsys, *GOOD,
                                                                                  "--timeout", "inf")


def test_a_subset_smaller_than_the_classes_is_refused(tmp_path, capsys):
    err = refused(tmp_path, capsys, *GOOD, "-p", "train_samples=2")
    assert "train_samples=2 is fewer than the 3 classes" in err


def test_every_problem_is_named_in_one_message(tmp_path, capsys):
    err = refused(tmp_path, capsys, "-m", "testkit/linaer", "-m", "testkit/linear", "-d", "tinygray", "-d", "tinygrey",
                  "-p", "lr=nan", "-p", "epochs=5000", "--timeout", "-1", "--jobs", "0")
    assert "6 problems; nothing was started" in err
    for problem in ("unknown model 'testkit/linaer'", "unknown dataset 'tinygrey'", "lr=nan must be a finite",
                    "epochs=5000 must be at most 1000", "--timeout must be a positive", "--jobs must be 1 or more"):
        assert err.count(problem) == 1, problem


# -- devices (torch.cuda mocked: the answer must not depend on this machine) ---------------------------------

@pytest.fixture
def gpus(monkeypatch):
    import torch

    def have(count: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)

    return have


def test_cuda_without_cuda_is_refused(tmp_path, capsys, gpus):
    gpus(0)
    err = refused(tmp_path, capsys, *GOOD, "-p", "device=cuda")
    assert "error: -p device=cuda: parameter device='cuda': CUDA is not available here" in err


def test_a_missing_device_set_by_a_grid_of_a_suite_is_refused_naming_it(tmp_path, gpus, registry):
    gpus(0)
    suite = tmp_path / "g.toml"
    suite.write_text('models = ["testkit/linear"]\n[[grids]]\nname = "gpu"\ndatasets = ["tinygray"]\n'
                     '[grids.params]\ndevice = "cuda"\n', encoding="utf-8")
    with pytest.raises(UsageError, match=rf"suite {re.escape(str(suite))} grid 'gpu' \[params\]: parameter "
                                         rf"device='cuda': CUDA is not available here"):
        preflight(load_suite(suite), registry)


def test_a_gpu_index_past_the_last_gpu_is_refused(tmp_path, capsys, gpus):
    gpus(2)
    err = refused(tmp_path, capsys, *GOOD, "-p", 'device="cuda:3"')
    assert "device='cuda:3': only 2 CUDA device(s) here (cuda:0 to cuda:1)" in err


def test_mps_off_macos_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    assert "device='mps': MPS exists only on macOS" in refused(tmp_path, capsys, *GOOD, "-p", "device=mps")


def test_a_device_that_exists_passes(registry, gpus):
    gpus(2)
    suite = suite_from_dict({"models": ["testkit/linear"], "datasets": ["tinygray"], "params": {"device": "cuda:1"}})
    assert len(preflight(suite, registry)) == 1


# -- datasets: offline, damaged ------------------------------------------------------------------------------

def test_an_offline_grid_with_a_missing_dataset_gives_one_message_listing_its_files(tmp_path, capsys):
    err = refused(tmp_path, capsys, "-m", "testkit/linear", "-m", "testkit/exit", "-d", "mnist", "--seeds", "0,1,2")
    assert "problems" not in err  # six jobs, one problem: the dataset
    assert err.count("dataset mnist:") == 1
    for check in MNIST.files:
        assert err.count(check.name) == 1, check.name
    assert "this machine cannot download them (offline (tests never probe))" in err
    assert "$IMGBENCH_DATA_DIR/mnist/" in err and "mnist/downloads/" in err


def test_a_machine_that_can_download_is_not_refused_and_each_host_is_probed_once(registry):
    asked = []

    def reachable(url: str) -> str:
        asked.append(url)
        return ""

    suite = suite_from_dict({"models": ["testkit/linear"], "datasets": ["mnist", "fashion_mnist", "cifar10"]})
    assert len(preflight(suite, registry, probe=reachable)) == 3  # the jobs download, as they always did
    hosts = [url.split("/")[2] for url in asked]
    assert len(hosts) == len(set(hosts)) >= 2


def test_one_reachable_mirror_is_enough(registry):
    mnist = suite_from_dict({"models": ["testkit/linear"], "datasets": ["mnist"]})
    second_mirror = MNIST.mirrors[1].split("/")[2]
    assert preflight(mnist, registry, probe=lambda url: "" if second_mirror in url else "down")
    with pytest.raises(GridError, match=r"cannot download them \(down\)"):
        preflight(mnist, registry, probe=lambda url: "down")


def test_the_probe_answers_fast_and_is_asked_once_per_host():
    with socket.socket() as server:  # a local port: tests never probe a real host
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert real_probe(f"https://127.0.0.1:{server.getsockname()[1]}/x", timeout=2) == ""
        closed = server.getsockname()[1]
    started = time.monotonic()
    assert "cannot reach 127.0.0.1" in real_probe(f"https://127.0.0.1:{closed}/x", timeout=2)
    assert time.monotonic() - started < 2
    asked = []
    host_probe = HostProbe(lambda url: asked.append(url) or "down")
    assert host_probe("https://a.example/1") == host_probe("https://a.example/2") == "down"
    assert asked == ["https://a.example/1"]


def _write_mnist_copy(folder: Path, damaged: str) -> None:
    folder.mkdir(parents=True)
    for check in MNIST.files:
        (folder / check.name).write_bytes(gzip.compress(b"not the official file") if check.name == damaged else b"")


def test_a_local_copy_that_fails_its_checksum_is_refused(tmp_path, capsys):
    data = tmp_path / "data"
    _write_mnist_copy(data / "mnist", damaged="t10k-labels-idx1-ubyte.gz")
    err = refused(tmp_path, capsys, *GOOD[:2], "-d", "mnist", "--data-dir", str(data))
    assert err.count("but the official t10k-labels-idx1-ubyte.gz is 4,542") == 1
    assert "but the official train-images-idx3-ubyte.gz is 9,912,422" in err  # every damaged file is named


def test_a_damaged_cached_download_is_refused_when_it_cannot_be_downloaded_again(tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("IMGBENCH_CACHE_DIR", str(cache))
    folder = cache / "cifar10" / "downloads"
    folder.mkdir(parents=True)
    (folder / "cifar-10-python.tar.gz").write_bytes(b"truncated")
    err = refused(tmp_path, capsys, *GOOD[:2], "-d", "cifar10")
    assert "dataset cifar10: files must be downloaded, but this machine cannot download them" in err
    assert "Put the official cifar-10-python.tar.gz into" in err


# -- image folders ---------------------------------------------------------------------------------------------

def test_an_image_folder_that_does_not_exist_is_refused(tmp_path, capsys):
    err = refused(tmp_path, capsys, *GOOD[:2], "-d", f"imagefolder:{tmp_path / 'nowhere'}")
    assert f"image folder {tmp_path / 'nowhere'} does not exist" in err


def test_an_image_folder_with_one_class_is_refused(tmp_path, capsys):
    root = image_tree(tmp_path / "one", {"cats": 3})
    err = refused(tmp_path, capsys, *GOOD[:2], "-d", f"imagefolder:{root}")
    assert "holds 1 class folder (cats); a classifier needs at least 2" in err


def test_an_image_folder_with_an_empty_class_is_refused(tmp_path, capsys):
    root = image_tree(tmp_path / "tree", {"cats": 3, "dogs": 3})
    (root / "birds").mkdir()
    err = refused(tmp_path, capsys, *GOOD[:2], "-d", f"imagefolder:{root}")
    assert f"class folder(s) {root / 'birds'} hold no images" in err


def test_an_image_folder_without_a_readable_image_is_refused(tmp_path, capsys):
    root = image_tree(tmp_path / "tree", {"cats": 3, "dogs": 0})
    (root / "dogs" / "1.jpg").write_text("not a photo", encoding="utf-8")
    err = refused(tmp_path, capsys, *GOOD[:2], "-d", f"imagefolder:{root}")
    assert f"class folder dogs of {root} holds no readable image" in err


def test_a_good_image_folder_passes(registry, tmp_path):
    root = image_tree(tmp_path / "tree", {"cats": 3, "dogs": 3})
    (root / "dogs" / "broken.jpg").write_text("one bad file among good ones is the loader's to report")
    suite = suite_from_dict({"models": ["testkit/linear"], "datasets": [f"imagefolder:{root}"]})
    assert len(preflight(suite, registry)) == 1


# -- names -------------------------------------------------------------------------------------------------------

def test_a_registered_name_with_glob_characters_is_matched_exactly(registry):
    for name in ("crashkit/odd[1]", "crashkit/star*"):
        [job] = preflight(suite_from_dict({"models": [name], "datasets": ["tinygray"]}), registry)
        assert job.model == name
    globbed = preflight(suite_from_dict({"models": ["crashkit/odd?"], "datasets": ["tinygray"]}), registry)
    assert [job.model for job in globbed] == ["crashkit/odd1"]  # a name that is not registered is still a glob


def test_imgbench_models_matches_a_registered_name_exactly(capsys):
    assert cli.main(["models", "--plugins-dir", str(TESTKIT), "crashkit/odd[1]"]) == 0
    out = capsys.readouterr().out
    assert "crashkit/odd[1]" in out and "crashkit/odd1 " not in out and "\n1 model\n" in out


# -- the Python API refuses the same input ---------------------------------------------------------------------

@pytest.mark.parametrize("params, problem", [
    ({"lr": float("nan")}, "lr=nan must be a finite number"),
    ({"bench_seconds": float("inf")}, "bench_seconds=inf must be a finite number"),
    ({"epochs": 1001}, "epochs=1001 must be at most 1000"),
    ({"batch_size": 65537}, "batch_size=65537 must be at most 65536"),
    ({"image_size": 4097}, "image_size=4097 must be at most 4096"),
    ({"train_samples": 2}, "train_samples=2 is fewer than the 3 classes"),
])
def test_run_job_refuses_what_the_preflight_refuses(registry, params, problem):
    from imgbench.engine import run_job

    with pytest.raises(UsageError, match=problem.replace("[", r"\[").replace("(", r"\(")):
        run_job("testkit/linear", "tinygray", registry=registry, progress=False, **{"epochs": 0, **params})


def test_run_job_refuses_a_missing_device(registry, gpus, monkeypatch):
    from imgbench.engine import run_job

    gpus(0)
    with pytest.raises(UsageError, match="CUDA is not available here"):
        run_job("testkit/linear", "tinygray", registry=registry, progress=False, device="cuda")
    gpus(2)
    with pytest.raises(UsageError, match=r"only 2 CUDA device\(s\) here"):
        run_job("testkit/linear", "tinygray", registry=registry, progress=False, device="cuda:3")
    monkeypatch.setattr(sys, "platform", "linux")
    with pytest.raises(UsageError, match="MPS exists only on macOS"):
        run_job("testkit/linear", "tinygray", registry=registry, progress=False, device="mps")


def test_run_job_refuses_bad_image_folders(registry, tmp_path):
    from imgbench.engine import run_job

    one = image_tree(tmp_path / "one", {"cats": 3})
    with pytest.raises(DatasetError, match="a classifier needs at least 2"):
        run_job("testkit/linear", f"imagefolder:{one}", registry=registry, progress=False)
    unreadable = image_tree(tmp_path / "tree", {"cats": 3, "dogs": 0})
    (unreadable / "dogs" / "1.jpg").write_text("not a photo", encoding="utf-8")
    with pytest.raises(DatasetError, match="class folder dogs of .* holds no readable image"):
        run_job("testkit/linear", f"imagefolder:{unreadable}", registry=registry, progress=False)


def test_run_job_offline_names_the_files_and_where_to_put_them(registry, monkeypatch):
    import urllib.error

    from imgbench.datasets import download
    from imgbench.engine import run_job

    def offline(url, timeout):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(download, "open_url", offline)
    monkeypatch.setattr(download, "BACKOFF_S", 0.0)
    with pytest.raises(UsageError, match=r"No network\? Put the official train-images-idx3-ubyte.gz"):
        run_job("testkit/linear", "mnist", registry=registry, progress=False)


def test_a_verified_cached_download_passes_offline_without_a_probe(registry, real_data, monkeypatch, tmp_path):
    import shutil

    cache = tmp_path / "cache"
    monkeypatch.setenv("IMGBENCH_CACHE_DIR", str(cache))
    shutil.copytree(real_data / "mnist", cache / "mnist" / "downloads")

    def no_probe(url):
        raise AssertionError(f"probed {url} although every file is cached")

    mnist = suite_from_dict({"models": ["testkit/linear"], "datasets": ["mnist"]})
    assert len(preflight(mnist, registry, probe=no_probe)) == 1


def test_jobs_that_run_elsewhere_get_only_the_machine_independent_checks(registry, gpus, tmp_path):
    """A Dask cluster's workers have their own devices and data: only data missing outright is refused here."""
    gpus(0)
    remote = suite_from_dict({"models": ["testkit/linear"], "datasets": ["mnist"], "params": {"device": "cuda"}})
    assert len(preflight(remote, registry, on_this_machine=False)) == 1
    nowhere = suite_from_dict({"models": ["testkit/linear"], "datasets": [f"imagefolder:{tmp_path / 'nowhere'}"]})
    with pytest.raises(GridError, match="no data"):
        preflight(nowhere, registry, on_this_machine=False)
