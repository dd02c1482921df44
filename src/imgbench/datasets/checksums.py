"""Pinned checksums and verifying files against them.

Hashing a 170 MB archive on every warm load would cost more than the load itself, so a verified file is
remembered by (size, mtime): an unchanged file is trusted, a file whose size or mtime changed (truncated,
rewritten) is hashed again. Code that is about to *parse* a file (unpickle, decompress) asks for a full hash.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgbench.datasets.errors import ChecksumError
from imgbench.paths import atomic_write_json

CHUNK_BYTES = 1 << 20
MEMO_DIR = "verified"  # under the cache: one small JSON per verified file


@dataclass(frozen=True)
class FileCheck:
    """An official file: its name and every fact about it that we could pin (None where unknown)."""

    name: str
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None

    def __post_init__(self) -> None:
        if not (self.sha256 or self.md5):
            raise ValueError(f"{self.name}: pin at least one of sha256 and md5")

    @property
    def digest(self) -> str:
        """The strongest pinned hash, as ``algo:hex`` (what fingerprints record)."""
        return f"sha256:{self.sha256}" if self.sha256 else f"md5:{self.md5}"


def hash_file(path: Path, algorithms: tuple[str, ...] = ("sha256",)) -> dict[str, str]:
    hashers = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            for hasher in hashers.values():
                hasher.update(chunk)
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def verify_file(path: Path, check: FileCheck, cache_dir: Path | None = None, *, trust_memo: bool = True) -> None:
    """Raise :class:`ChecksumError` unless ``path`` has the pinned size and hashes.

    With ``cache_dir`` and ``trust_memo`` a file verified before, unchanged in size and mtime, is not hashed
    again; ``trust_memo=False`` always hashes (use it right before parsing the bytes).
    """
    path = Path(path)
    stat = path.stat()
    if check.size is not None and stat.st_size != check.size:
        raise ChecksumError(f"{path} is {stat.st_size:,} bytes, but the official {check.name} is "
                            f"{check.size:,}: it is truncated or not the official file. {_fix(path)}")
    memo_path = _memo_path(path, cache_dir) if cache_dir is not None else None
    stamp = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "digest": check.digest}
    if trust_memo and memo_path is not None and _read_memo(memo_path) == stamp:
        return
    algorithms = tuple(a for a in ("sha256", "md5") if getattr(check, a))
    actual = hash_file(path, algorithms)
    for algorithm in algorithms:
        expected = getattr(check, algorithm)
        if actual[algorithm] != expected:
            raise ChecksumError(f"{path} has {algorithm} {actual[algorithm]}, but the official {check.name} has "
                                f"{expected}: it is corrupted, truncated or not the official file. {_fix(path)}")
    if memo_path is not None:
        atomic_write_json(memo_path, stamp)


def _fix(path: Path) -> str:
    return f"Delete {path} and load again (it is downloaded afresh), or replace it with the official file."


def _memo_path(path: Path, cache_dir: Path) -> Path:
    return cache_record(cache_dir, MEMO_DIR, path)


def cache_record(cache_dir: Path, folder: str, path: Path) -> Path:
    """The small JSON under ``cache_dir/folder`` that remembers facts about ``path`` (keyed by its full path)."""
    key = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:24]
    return Path(cache_dir) / folder / f"{key}.json"


def _read_memo(memo_path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(memo_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def fingerprint_of(parts: object) -> str:
    """16 hex characters of the sha256 of ``parts`` as canonical JSON: the form every fingerprint takes."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=os.fspath)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
