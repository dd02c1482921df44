"""The download path, against a fake opener: verified, atomic, retried, https only, locked, clear offline."""

from __future__ import annotations

import multiprocessing
import socket
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from imgbench.datasets import ChecksumError, DownloadError
from imgbench.datasets import download
from imgbench.datasets.checksums import verify_file
from imgbench.datasets.fixtures import tiny_mnist


class _Response:
    def __init__(self, data: bytes, drop_after: int | None = None):
        self.data, self.pos, self.drop_after = data, 0, drop_after
        self.headers = {"Content-Length": str(len(data))}

    def read(self, n: int) -> bytes:
        if self.drop_after is not None and self.pos >= self.drop_after:
            raise ConnectionResetError("connection reset by peer")
        limit = len(self.data) if self.drop_after is None else self.drop_after
        chunk = self.data[self.pos: min(self.pos + n, limit) if self.drop_after else self.pos + n]
        self.pos += len(chunk)
        return chunk

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class FakeServer:
    """Serves ``files`` by URL; ``drops`` maps a URL to how many requests drop mid-transfer first."""

    def __init__(self, files: dict[str, bytes], drops: dict[str, int] | None = None, log: Path | None = None,
                 delay_s: float = 0.0):
        self.files, self.drops, self.log, self.delay_s = files, dict(drops or {}), log, delay_s
        self.requests: list[str] = []

    def __call__(self, url: str, timeout: float):
        self.requests.append(url)
        if self.log is not None:
            with open(self.log, "a") as handle:
                handle.write(url + "\n")
        time.sleep(self.delay_s)
        if url not in self.files:
            raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)
        if self.drops.get(url, 0) > 0:
            self.drops[url] -= 1
            return _Response(self.files[url], drop_after=len(self.files[url]) // 2)
        return _Response(self.files[url])


def _served_mnist(tmp_path):
    """A tiny MNIST variant whose files exist only on the fake server."""
    variant = tiny_mnist(tmp_path / "origin")
    files = {variant.mirrors[0] + f.name: (tmp_path / "origin" / "mnist" / f.name).read_bytes() for f in variant.files}
    return variant, files


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch):
    monkeypatch.setattr(download, "BACKOFF_S", 0.0)


def test_cold_load_downloads_verifies_and_caches(tmp_path, monkeypatch):
    variant, files = _served_mnist(tmp_path)
    server = FakeServer(files)
    monkeypatch.setattr(download, "open_url", server)
    cache = tmp_path / "cache"
    assert variant.locate(data_dir=None, cache_dir=cache)[0] == "download"
    data = variant.load(image_size=0, val_size=0.1, data_dir=None, cache_dir=cache)
    assert len(data.test) == 20 and data.source.startswith("downloaded into")
    assert sorted(server.requests) == sorted(files)
    assert variant.locate(data_dir=None, cache_dir=cache)[0] == "cache"
    assert not list((cache / "mnist" / "downloads").glob("*.part"))


def test_checksum_mismatch_leaves_nothing_in_the_cache(tmp_path, monkeypatch):
    variant, files = _served_mnist(tmp_path)
    url = variant.mirrors[0] + variant.files[1].name
    files[url] = files[url][:-3] + b"bad"  # same size, wrong bytes
    monkeypatch.setattr(download, "open_url", FakeServer(files))
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="sha256"):
        variant.load(image_size=0, val_size=0.1, data_dir=None, cache_dir=cache)
    left = [p.name for p in (cache / "mnist" / "downloads").iterdir() if not p.name.endswith(".lock")]
    assert variant.files[1].name not in left and not [n for n in left if n.endswith(".part")]
    assert not (cache / "mnist" / "decoded").exists() or not list((cache / "mnist" / "decoded").glob("*/x.npy"))


def test_oversized_download_is_cut_off(tmp_path, monkeypatch):
    variant, files = _served_mnist(tmp_path)
    check = variant.files[1]
    monkeypatch.setattr(download, "open_url", FakeServer({"https://x.test/f": b"\0" * (check.size + 10)}))
    with pytest.raises(DownloadError, match="more than"):
        download.fetch(check, ["https://x.test/f"], tmp_path / "dl" / check.name)
    assert not (tmp_path / "dl" / check.name).exists()


def test_dropped_connection_is_retried(tmp_path, monkeypatch):
    variant, files = _served_mnist(tmp_path)
    url = variant.mirrors[0] + variant.files[0].name
    server = FakeServer(files, drops={url: 2})
    monkeypatch.setattr(download, "open_url", server)
    data = variant.load(image_size=0, val_size=0.1, data_dir=None, cache_dir=tmp_path / "cache")
    assert server.requests.count(url) == 3 and len(data.train) + len(data.val) == 60


def test_connection_that_keeps_dropping_gives_up_with_a_clear_error(tmp_path, monkeypatch):
    variant, files = _served_mnist(tmp_path)
    url = variant.mirrors[0] + variant.files[0].name
    monkeypatch.setattr(download, "open_url", FakeServer(files, drops={url: 99}))
    with pytest.raises(DownloadError, match=f"connection failed {download.ATTEMPTS} times"):
        variant.load(image_size=0, val_size=0.1, data_dir=None, cache_dir=tmp_path / "cache")


def test_next_mirror_is_tried(tmp_path, monkeypatch):
    variant, files = _served_mnist(tmp_path)
    mirrored = {url.replace(variant.mirrors[0], "https://mirror2.test/"): data for url, data in files.items()}
    monkeypatch.setattr(download, "open_url", FakeServer(mirrored))
    variant = replace(variant, mirrors=(variant.mirrors[0], "https://mirror2.test/"))
    assert len(variant.load(image_size=0, val_size=0.1, data_dir=None, cache_dir=tmp_path / "c").test) == 20


def test_damaged_cached_download_is_fetched_again(tmp_path, monkeypatch):
    variant, files = _served_mnist(tmp_path)
    server = FakeServer(files)
    monkeypatch.setattr(download, "open_url", server)
    cache = tmp_path / "cache"
    check = variant.files[0]
    dest = cache / "mnist" / "downloads" / check.name
    download.fetch(check, [variant.mirrors[0] + check.name], dest)
    dest.write_bytes(dest.read_bytes()[:100])
    download.fetch(check, [variant.mirrors[0] + check.name], dest)
    assert dest.read_bytes() == files[variant.mirrors[0] + check.name] and len(server.requests) == 2


def test_http_urls_are_refused(tmp_path, monkeypatch):
    variant, _ = _served_mnist(tmp_path)
    monkeypatch.setattr(download, "open_url", lambda url, timeout: pytest.fail("an http URL was opened"))
    with pytest.raises(DownloadError, match="only https"):
        download.fetch(variant.files[0], ["http://yann.lecun.com/exdb/mnist/x.gz"], tmp_path / "x.gz")


def test_redirect_from_https_to_http_is_refused():
    handler = download._HttpsOnlyRedirects()
    request = urllib.request.Request("https://example.test/file.gz")
    with pytest.raises(DownloadError, match="must stay on https"):
        handler.redirect_request(request, None, 302, "Found", {}, "http://example.test/file.gz")
    followed = handler.redirect_request(request, None, 302, "Found", {}, "https://cdn.example.test/file.gz")
    assert followed.full_url == "https://cdn.example.test/file.gz"


def test_offline_error_names_the_files_and_where_to_put_them(tmp_path, monkeypatch):
    variant, _ = _served_mnist(tmp_path)

    def offline(url, timeout):
        raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(download, "open_url", offline)
    with pytest.raises(DownloadError) as caught:
        variant.load(image_size=0, val_size=0.1, data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    message = str(caught.value)
    assert "offline" in message and str(tmp_path / "data" / "mnist") in message
    assert all(f.name in message for f in variant.files)
    assert str(tmp_path / "cache" / "mnist" / "downloads") in message


def _cold_load_in_child(variant, files, cache, log):
    download.BACKOFF_S = 0.0
    download.open_url = FakeServer(files, log=log, delay_s=0.3)
    data = variant.load(image_size=0, val_size=0.1, data_dir=None, cache_dir=cache)
    np.save(Path(log).with_suffix(f".{multiprocessing.current_process().pid}.npy"), data.test.y)


def test_two_concurrent_cold_loads_download_once(tmp_path):
    variant, files = _served_mnist(tmp_path)
    cache, log = tmp_path / "cache", tmp_path / "requests.log"
    context = multiprocessing.get_context("fork")
    children = [context.Process(target=_cold_load_in_child, args=(variant, files, cache, log)) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
    assert [child.exitcode for child in children] == [0, 0]
    assert sorted(log.read_text().split()) == sorted(files)  # each file requested exactly once
    results = [np.load(p) for p in tmp_path.glob("requests.*.npy")]
    assert len(results) == 2 and np.array_equal(results[0], results[1])


def test_checksum_error_is_raised_for_wrong_local_bytes(tmp_path):
    variant, _ = _served_mnist(tmp_path)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"x" * variant.files[1].size)
    with pytest.raises(ChecksumError, match="not the official file"):
        verify_file(bad, variant.files[1])
