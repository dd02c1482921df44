"""Where data, caches and results live, and how to write files so that a crash never leaves half of one."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import platformdirs

DATA_DIR_ENV = "IMGBENCH_DATA_DIR"  # local copies: <dir>/mnist, <dir>/cifar10, <dir>/flowers
CACHE_DIR_ENV = "IMGBENCH_CACHE_DIR"  # downloads and decoded arrays
_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: the umask can only be read by setting it


class FolderKwargs(TypedDict):
    """``data_dir`` and ``cache_dir``, as every ``DatasetSpec.load``/``locate``/``check`` takes them."""

    data_dir: Path | None
    cache_dir: Path


@dataclass(frozen=True)
class DataFolders:
    """Where datasets are read from: the folder of local copies (None: none) and the cache of downloads and
    decoded arrays. Every ``DatasetSpec.load``/``locate``/``check`` takes both (:meth:`as_kwargs`)."""

    data_dir: Path | None
    cache_dir: Path

    @classmethod
    def resolve(cls, data_dir: str | os.PathLike | None = None) -> "DataFolders":
        """Local copies: ``data_dir`` (``--data-dir``), else ``IMGBENCH_DATA_DIR``, else none. The cache:
        ``IMGBENCH_CACHE_DIR``, else the platform's per-user cache folder."""
        local = data_dir or os.environ.get(DATA_DIR_ENV)
        cache = os.environ.get(CACHE_DIR_ENV)
        return cls(Path(local).expanduser().resolve() if local else None,
                   Path(cache).expanduser().resolve() if cache else Path(platformdirs.user_cache_dir("imgbench")))

    def as_kwargs(self) -> FolderKwargs:
        return {"data_dir": self.data_dir, "cache_dir": self.cache_dir}

    def env(self) -> dict[str, str]:
        """The environment another process (a job's kernel) needs to resolve the same folders."""
        return {CACHE_DIR_ENV: str(self.cache_dir), **({DATA_DIR_ENV: str(self.data_dir)} if self.data_dir else {})}


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it into place.

    An ``OSError`` of the write itself (a full disk fails at write or fsync, where Python knows no file name)
    is raised again naming ``path``, so that whoever reports it can say which file could not be written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes files owner-only; results are meant to be shared
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays, paths: the common non-JSON types in results
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
