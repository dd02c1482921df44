"""Reading untrusted containers safely: tar archives and pickled CIFAR batches.

Extraction uses tarfile's ``data`` filter (no absolute paths, no ``..``, no links or devices leading outside)
and refuses the whole archive on the first bad member rather than skipping it: an archive that tries to
escape is not the official one. Unpickling goes through an allow-list that admits only what a CIFAR batch
holds (a dict of numpy uint8 arrays, lists of ints and byte strings); anything else is refused before it runs.
"""

from __future__ import annotations

import io
import pickle
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from imgbench.datasets.errors import DatasetError, UnsafeArchiveError, UnsafePickleError

try:  # numpy >= 2 moved the pickling helpers to numpy._core; old pickles still name numpy.core
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct  # type: ignore[no-redef]



def _latin1_bytes(text: str, encoding: str) -> bytes:
    """What Python 3 pickles at protocol 2 name to rebuild a bytes object; only that use is allowed."""
    if encoding != "latin1" or not isinstance(text, str):
        raise UnsafePickleError(f"the pickle calls _codecs.encode with {encoding!r}; only latin1 rebuilds bytes")
    return text.encode("latin1")


# The only globals a CIFAR batch's pickle may name: how numpy rebuilds an array and its dtype, and how
# Python 3 writes bytes at protocol 2 (a batch re-saved by Python 3).
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"): _latin1_bytes,
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
_ALLOWED_DTYPES = {np.dtype(np.uint8), np.dtype(np.int32), np.dtype(np.int64)}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"the pickle asks for {module}.{name}, which a dataset batch never holds; "
                                    f"refusing to load it (it may carry code)") from None


def safe_unpickle(data: bytes, what: str) -> Any:
    """Unpickle ``data`` allowing only numpy arrays of plain integer dtypes, dicts, lists, bytes and numbers."""
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{what}: {exc}") from None
    except Exception as exc:  # truncated or garbled: pickle raises many types
        raise DatasetError(f"{what} is not a readable pickle ({type(exc).__name__}: {exc}); "
                           f"it is damaged: delete it and fetch the official file again") from exc
    _check_plain(obj, what)
    return obj


def _check_plain(obj: Any, what: str) -> None:
    if isinstance(obj, dict):
        for key, value in obj.items():
            _check_plain(key, what)
            _check_plain(value, what)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _check_plain(value, what)
    elif isinstance(obj, np.ndarray):
        if obj.dtype not in _ALLOWED_DTYPES:
            raise UnsafePickleError(f"{what}: holds an array of dtype {obj.dtype}; a batch holds only integers")
    elif not isinstance(obj, (bytes, str, int, float, type(None))):
        raise UnsafePickleError(f"{what}: holds a {type(obj).__name__}; a batch holds only arrays, lists and strings")


def open_tar(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path} is not a readable tar archive ({exc}); it is damaged or truncated: "
                           f"delete it and fetch it again") from exc


def safe_extract(archive: Path, dest: Path) -> Path:
    """Extract ``archive`` into ``dest`` (created; must not exist yet) and return ``dest``.

    Everything goes into a temporary folder beside ``dest`` that is renamed into place only when the whole
    archive extracted cleanly, so an interrupted or refused extraction leaves nothing behind.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".extracting"))
    try:
        with open_tar(archive) as tar:
            try:
                for member in tar:
                    _refuse_unsafe(member, staging, archive)
                    tar.extract(member, staging, filter="data")
            except tarfile.FilterError as exc:
                raise UnsafeArchiveError(f"{archive}: member {exc.tarinfo.name!r} would escape the target folder "
                                         f"({exc}); refusing the archive, it is not the official one") from exc
            except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
                raise DatasetError(f"{archive} is truncated or damaged ({type(exc).__name__}: {exc}); "
                                   f"delete it and fetch it again") from exc
        staging.rename(dest)
        return dest
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _refuse_unsafe(member: tarfile.TarInfo, staging: Path, archive: Path) -> None:
    # The data filter already rejects these; checking first gives one plain message for every case and
    # also refuses links that stay inside, which no dataset archive needs.
    name = member.name
    if name.startswith(("/", "\\")) or ".." in Path(name).parts or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"{archive}: member {name!r} points outside the target folder; "
                                 f"refusing the archive, it is not the official one")
    if member.issym() or member.islnk() or member.isdev() or member.isfifo():
        raise UnsafeArchiveError(f"{archive}: member {name!r} is a link or device; a dataset archive holds only "
                                 f"files and folders, so refusing it")
