"""Downloading official files: https only, verified before use, locked, retried.

A download goes to a temporary file beside its destination and is renamed into place only after its
checksum matches, so a cache never holds half a file or the wrong one. A lock file makes concurrent
processes that start cold download once: the second waits, then finds the verified file.
"""

from __future__ import annotations

import http.client
import os
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import IO, Sequence
from urllib.parse import urlsplit

from filelock import FileLock
from tqdm.auto import tqdm

from imgbench.datasets.checksums import CHUNK_BYTES, FileCheck, verify_file
from imgbench.datasets.errors import ChecksumError, DownloadError

ATTEMPTS = 4  # per URL, for dropped connections and timeouts
BACKOFF_S = 1.0  # doubled after each failed attempt
TIMEOUT_S = 60.0  # per socket operation
LOCK_TIMEOUT_S = 3 * 3600  # a slow link may take long for flowers; never wait forever on a stale lock holder
USER_AGENT = "imgbench (dataset download)"
PROBE_TIMEOUT_S = 3.0  # a reachable host answers a TCP connect well within this; an offline machine fails at once
# Failures worth another attempt: the connection dropped or stalled mid-transfer.
TRANSIENT = (ConnectionError, TimeoutError, socket.timeout, http.client.IncompleteRead, http.client.RemoteDisconnected)


class _HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but never from https down to http (or anything else)."""

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
                         headers: http.client.HTTPMessage, newurl: str) -> urllib.request.Request | None:
        if urlsplit(newurl).scheme != "https":
            raise DownloadError(f"refusing the redirect from {req.full_url} to {newurl}: downloads must stay on https")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpsOnlyRedirects)


def open_url(url: str, timeout: float) -> http.client.HTTPResponse:
    """Open ``url`` for reading; tests replace this (with a double of the response) to serve bytes without a
    network."""
    return _OPENER.open(urllib.request.Request(url, headers={"User-Agent": USER_AGENT}), timeout=timeout)


def probe(url: str, timeout: float = PROBE_TIMEOUT_S) -> str:
    """'' when this machine can open a connection to ``url``'s host, else why not (quickly: the grid's
    preflight asks once per host). Name resolution runs in a thread so that a hanging resolver cannot stall it."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    pool = ThreadPoolExecutor(max_workers=1)
    attempt = pool.submit(lambda: socket.create_connection((host, port), timeout=timeout).close())
    try:
        attempt.result(timeout=timeout)
        return ""
    except FutureTimeout:
        return f"no answer from {host} within {timeout:g} s"
    except OSError as exc:
        return f"cannot reach {host}: {exc.strerror or exc}"
    finally:
        pool.shutdown(wait=False)


def fetch(check: FileCheck, urls: Sequence[str], dest: Path, *, where_to_put: str = "") -> Path:
    """Make ``dest`` hold the verified official file, downloading it from the first URL that works.

    A file already at ``dest`` that fails its checksum is deleted and fetched again. ``where_to_put`` is
    added to the error raised when every URL fails (say where a manual copy goes).
    """
    for url in urls:
        if urlsplit(url).scheme != "https":
            raise DownloadError(f"refusing to download {check.name} from {url}: only https URLs are allowed")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{dest}.lock", timeout=LOCK_TIMEOUT_S):
        if dest.exists():
            try:
                verify_file(dest, check, trust_memo=False)
                return dest
            except ChecksumError as exc:  # a damaged cache entry: drop it and fetch a good copy
                print(f"imgbench: {exc} Downloading it again.", file=sys.stderr, flush=True)
                dest.unlink()
        failures = []
        for url in urls:
            try:
                _download_verified(url, check, dest)
                return dest
            except (DownloadError, ChecksumError) as exc:
                failures.append(f"{url}: {exc}")
        raise DownloadError(f"could not download {check.name}:\n  " + "\n  ".join(failures)
                            + (f"\n{where_to_put}" if where_to_put else ""))


def _download_verified(url: str, check: FileCheck, dest: Path) -> None:
    delay = BACKOFF_S
    for attempt in range(1, ATTEMPTS + 1):
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as handle:
                _stream(url, check, handle)
                handle.flush()
                os.fsync(handle.fileno())
            verify_file(tmp, check, trust_memo=False)  # a mismatch is final: another try gets the same bytes
            os.replace(tmp, dest)
            return
        except TRANSIENT as exc:
            if attempt == ATTEMPTS:
                raise DownloadError(f"connection failed {ATTEMPTS} times (last: {type(exc).__name__}: {exc})") from exc
            time.sleep(delay)
            delay *= 2
        except urllib.error.HTTPError as exc:
            raise DownloadError(f"the server answered HTTP {exc.code} {exc.reason}") from exc
        except urllib.error.URLError as exc:  # DNS failure, refused connection: offline, retrying will not help
            if isinstance(exc.reason, TRANSIENT) and attempt < ATTEMPTS:
                time.sleep(delay)
                delay *= 2
                continue
            raise DownloadError(f"no connection ({exc.reason}); is this machine offline?") from exc
        finally:
            tmp.unlink(missing_ok=True)


def _stream(url: str, check: FileCheck, handle: IO[bytes]) -> None:
    with open_url(url, TIMEOUT_S) as response:
        total = int(response.headers.get("Content-Length") or 0) or check.size
        with tqdm(total=total, unit="B", unit_scale=True, desc=check.name, disable=None, leave=False) as bar:
            received = 0
            while chunk := response.read(CHUNK_BYTES):
                received += len(chunk)
                if check.size is not None and received > check.size:
                    raise ChecksumError(f"{url} sent more than the {check.size:,} bytes of the official {check.name}")
                handle.write(chunk)
                bar.update(len(chunk))
