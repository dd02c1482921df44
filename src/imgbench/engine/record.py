"""What a job leaves behind: metrics.json (results + provenance), predictions.csv and history.csv.

Every file is written atomically, so a folder never holds half a file; metrics.json is written last, so its
presence means the job finished.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence

import pandas as pd

from imgbench import schema
from imgbench.engine.phases import WRITE
from imgbench.forkserver import FORKED_KERNEL_ENV
from imgbench.paths import atomic_write_json, atomic_write_text

if TYPE_CHECKING:  # pragma: no cover
    from imgbench.engine.phases import PhaseTimer

VERSIONED = ("torch", "keras", "timm", "imgbench", "numpy", "scikit-learn")
GIT_TIMEOUT_S = 5


class Recorded(Protocol):
    """A phase's result: what it adds to the job's record."""

    def record(self) -> Mapping[str, Any]: ...


def empty_metrics() -> dict[str, Any]:
    """Every flat key metrics.json carries (``schema.METRICS_KEYS``), None until measured."""
    return dict.fromkeys(schema.METRICS_KEYS)


def merge_record(*parts: Recorded | Mapping[str, Any]) -> dict[str, Any]:
    """The job's record (metrics.json): every flat key, then each part's values in order, a later part's
    winning; a nested record two parts contribute to (``provenance``, ``weights``) is merged key by key."""
    merged = empty_metrics()
    for part in parts:
        values = part if isinstance(part, Mapping) else part.record()
        for key, value in values.items():
            known = merged.get(key)
            merged[key] = {**known, **value} if isinstance(known, dict) and isinstance(value, Mapping) else value
    return merged


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _device_name(device: Any) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def git_state() -> dict[str, Any]:
    """Commit and dirty flag of the imgbench checkout this code runs from; empty when it is not one."""
    package = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(package), *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, check=True).stdout.strip()

    try:
        top = Path(git("rev-parse", "--show-toplevel"))
        if (top / "src" / "imgbench").resolve() != package:  # a git repo that merely contains an install
            return {}
        return {"git_commit": git("rev-parse", "HEAD"),
                "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {}


def provenance(device: Any, precision: str, flags: Mapping[str, Any], plugin: str, plugin_version: str | None,
               plugin_location: str | None) -> dict[str, Any]:
    import torch

    return {
        "python": platform.python_version(),
        **{name: _version(name) for name in VERSIONED},
        "plugin": plugin,
        "plugin_version": plugin_version,
        "plugin_location": plugin_location,
        "platform": platform.platform(),
        "device_name": _device_name(device),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "torch_threads": torch.get_num_threads(),
        "forked_kernel": os.environ.get(FORKED_KERNEL_ENV) == "1",  # imgbench.forkserver: imports done before
        "precision": precision,
        **dict(flags),
        **git_state(),
    }


def history_frame(history: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(list(history), columns=list(schema.HISTORY_COLUMNS))


def write_job(out_dir: Path, metrics: dict[str, Any], history: Sequence[Mapping[str, Any]],
              predictions: pd.DataFrame, phases: PhaseTimer | None = None) -> None:
    """history.csv and predictions.csv first, metrics.json last; with ``phases``, the time the tables took
    goes into metrics.json's ``phases`` as ``write``."""
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / schema.HISTORY_CSV, history_frame(history).to_csv(index=False))
    atomic_write_text(out_dir / schema.PREDICTIONS_CSV, predictions.to_csv(index=False, float_format="%.6g"))
    if phases is not None:
        phases.add(WRITE, time.perf_counter() - start)
        metrics["phases"] = phases.seconds
    atomic_write_json(out_dir / schema.METRICS_JSON, metrics)
