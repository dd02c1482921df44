"""The decoded-array cache and the assembly of a :class:`LoadedDataset`.

Decoding happens once per (source content, preprocessing): the images go to ``x.npy`` with labels and
per-image content digests beside them, in ``<cache>/<dataset>/decoded/<key>/``. The folder is built under a
temporary name and renamed into place, under a lock, so concurrent loads decode once and nobody sees half a
cache. Later loads memory-map it (``np.load(mmap_mode="r")``) and gather the three splits from index files
(also cached, keyed by the dataset fingerprint) into plain in-memory uint8 arrays the engine can use as is.
"""

from __future__ import annotations

import hashlib
import io
import json
import numbers
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from filelock import FileLock

from imgbench.datasets import splits
from imgbench.datasets.checksums import fingerprint_of
from imgbench.errors import UsageError
from imgbench.paths import atomic_write_bytes
from imgbench.recipe_fields import MAX_IMAGE_SIZE, RECIPE_FIELDS
from imgbench.specs import LoadedDataset, Split

FORMAT = 1  # bump when the files of a decoded folder change meaning
ARRAYS = ("x", "y", "digests")
LOCK_TIMEOUT_S = 3600


@dataclass(frozen=True)
class Decoded:
    """Every image of a dataset at one resolution: official train first, then official test (if any)."""

    x: np.ndarray  # uint8 (N, H, W, C)
    y: np.ndarray  # int64 (N,)
    digests: np.ndarray  # uint8 (N, 16): content digest per image, for leak-free splits
    n_official_train: int | None  # None: no official test set, one is held out by content
    source: str = ""  # where the files really came from, when only decoding found out (a download)


def load_through_cache(*, name: str, classes: tuple[str, ...], source_fingerprint: str, preprocessing: Mapping[str, object],
                       decode: Callable[[], Decoded], cache_dir: Path, val_size: float, test_fraction: float,
                       source: str) -> LoadedDataset:
    """Decode through the cache (``decode`` runs only on a miss), split, and return the dataset.

    ``source`` says where the files are ("" when they would have to be downloaded); a decode may correct it.
    """
    key = fingerprint_of({"format": FORMAT, "dataset": name, "source": source_fingerprint,
                          "preprocessing": preprocessing})
    folder = Path(cache_dir) / name.split(":")[0] / "decoded" / key
    arrays = _open(folder)
    if arrays is None:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{folder}.lock", timeout=LOCK_TIMEOUT_S):
            arrays = _open(folder)  # another process may have built it while we waited
            if arrays is None:
                decoded = decode()
                _write(folder, decoded, {"dataset": name, "classes": list(classes), "source": source_fingerprint,
                                         "preprocessing": preprocessing})
                source = decoded.source or source
                arrays = _open(folder)
                if arrays is None:  # pragma: no cover - the write just succeeded
                    raise RuntimeError(f"decoded cache {folder} unreadable right after writing it")
    source = source or f"cache: {folder}"  # no source files, but their decoded arrays were cached
    x, y, digests, meta = arrays
    split_params = {"method": splits.METHOD, "seed": splits.SPLIT_SEED, "val_size": val_size,
                    "test": "official" if meta["n_official_train"] is not None else test_fraction}
    fingerprint = fingerprint_of({"decoded": key, "split": split_params})
    index = _split_indices(folder / f"split-{fingerprint}.npz", y, digests, meta["n_official_train"], val_size,
                           test_fraction)
    # np.take gathers from the memory map into ordinary, writable, contiguous arrays.
    def part(rows: np.ndarray) -> Split:
        return Split(x=np.take(x, rows, axis=0), y=np.asarray(y[rows], dtype=np.int64))

    return LoadedDataset(name=name, classes=tuple(classes), train=part(index.train), val=part(index.val),
                         test=part(index.test), fingerprint=fingerprint, source=source)


def decoded_in_cache(cache_dir: Path, name: str, source_fingerprint: str) -> Path | None:
    """A decoded folder of this dataset made from this source (any resolution), for ``locate``."""
    for meta_path in sorted((Path(cache_dir) / name / "decoded").glob("*/meta.json")):
        try:
            if json.loads(meta_path.read_text(encoding="utf-8")).get("source") == source_fingerprint:
                return meta_path.parent
        except (OSError, ValueError):
            continue
    return None


def _split_indices(path: Path, y: np.ndarray, digests: np.ndarray, n_official_train: int | None,
                   val_size: float, test_fraction: float) -> splits.SplitIndices:
    try:
        with np.load(path) as saved:
            return splits.SplitIndices(train=saved["train"], val=saved["val"], test=saved["test"])
    except (OSError, ValueError, KeyError):
        pass
    index = splits.split(np.asarray(y), np.asarray(digests), n_official_train=n_official_train,
                         val_size=val_size, test_fraction=test_fraction)
    buffer = io.BytesIO()
    np.savez(buffer, train=index.train, val=index.val, test=index.test)
    atomic_write_bytes(path, buffer.getvalue())
    return index


def _open(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]] | None:
    """The cached arrays memory-mapped, or None when absent; a damaged folder is removed (and rebuilt)."""
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        loaded = [np.load(folder / f"{a}.npy", mmap_mode="r", allow_pickle=False) for a in ARRAYS]
        for array_name, array in zip(ARRAYS, loaded):
            if list(array.shape) != meta["shapes"][array_name] or str(array.dtype) != meta["dtypes"][array_name]:
                raise ValueError(f"{array_name}.npy is {array.shape} {array.dtype}, meta.json says otherwise")
    except (OSError, ValueError, KeyError) as exc:  # truncated .npy, bad JSON: never use it, rebuild it
        print(f"imgbench: decoded cache {folder} is damaged ({exc}); rebuilding it", file=sys.stderr, flush=True)
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return loaded[0], loaded[1], loaded[2], meta


def _write(folder: Path, decoded: Decoded, meta: dict[str, Any]) -> None:
    arrays = {"x": decoded.x, "y": np.asarray(decoded.y, dtype=np.int64),
              "digests": np.asarray(decoded.digests, dtype=np.uint8)}
    if not (len(arrays["x"]) == len(arrays["y"]) == len(arrays["digests"])) or arrays["x"].dtype != np.uint8:
        raise ValueError("decoded images, labels and digests disagree in length, or images are not uint8")
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".partial"))
    try:
        for array_name, array in arrays.items():
            np.save(staging / f"{array_name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        meta = {**meta, "n_official_train": decoded.n_official_train,
                "shapes": {k: list(v.shape) for k, v in arrays.items()},
                "dtypes": {k: str(v.dtype) for k, v in arrays.items()}}
        (staging / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def row_digests(images: np.ndarray) -> np.ndarray:
    """A 16-byte blake2b digest of each image's raw bytes, as uint8 ``(N, 16)``."""
    flat = np.ascontiguousarray(images).reshape(len(images), -1)
    return np.frombuffer(b"".join(hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat),
                         dtype=np.uint8).reshape(len(images), 16)


def hex_digests(hashes: list[str]) -> np.ndarray:
    """File sha256 hex strings as uint8 ``(N, 16)`` (their first 16 bytes)."""
    return np.frombuffer(bytes.fromhex("".join(h[:32] for h in hashes)), dtype=np.uint8).reshape(len(hashes), 16)


def check_image_size(image_size: int, default: int) -> int:
    """``image_size`` validated; 0 means ``default`` (the native or documented size)."""
    if not isinstance(image_size, numbers.Integral) or isinstance(image_size, bool) \
            or RECIPE_FIELDS["image_size"].problem(image_size):
        raise UsageError(f"image_size={image_size!r} must be an integer in [1, {MAX_IMAGE_SIZE}], "
                         f"or 0 for the dataset's own size")
    return int(image_size) or default

