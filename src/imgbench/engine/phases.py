"""Where a job's wall time goes: the phase names, the engine's phase timer, and the whole job's breakdown as
the launcher sees it.

``run_job`` times its own phases (imports, data, model build, compile, training, evaluation, benchmark...).
Run through a grid, the job is more than ``run_job``: its process and kernel start, the notebook's cells
around the engine (imports, data, figures), the notebook's saves and the shutdown. The supervisor composes
all of it with :func:`launcher_breakdown` from the timestamps the job process records and papermill's cell
times, so that the phases add up to the job's wall time exactly (what nothing measured is ``other``).

Imports no framework: the supervisor and the report read it.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator, Mapping

PROCESS_START = "process_start"
KERNEL_START = "kernel_start"
IMPORTS = "imports"
LOAD_DATA = "load_data"
WAIT = "wait"
BUILD_MODEL = "build_model"
FLOPS = "flops"
COMPILE = "compile"
TRAIN = "train"
SAVE_WEIGHTS = "save_weights"
EVALUATE = "evaluate"
BENCHMARK = "benchmark"
DISPLAY = "display"
WRITE = "write"
OTHER = "other"
MEANINGS = {  # in the order a job runs them
    PROCESS_START: "the launcher starting the job process: its Python, its imports, reading the request",
    KERNEL_START: "papermill preparing the notebook and starting its kernel, up to the first cell (for a grid's "
                  "first job, the fork server's imports)",
    IMPORTS: "imgbench and the frameworks the model needs (torch, Keras or timm, scikit-learn, pandas): already "
             "done in a forked kernel",
    LOAD_DATA: "the dataset (from the cache or the local copy), its subsets, and the data as the model's inputs on "
               "the device",
    WAIT: "a job started early waiting for the job before it to finish (imgbench.engine.handoff)",
    BUILD_MODEL: "building the model, loading its starting weights, moving it to the device",
    FLOPS: "counting FLOPs and the activation dtypes: one forward pass each",
    COMPILE: "torch.compile of every graph the job runs",
    TRAIN: "training, with the validation pass after each epoch",
    BENCHMARK: "timing inference throughput and batch-1 latency: the job's last timed window",
    SAVE_WEIGHTS: "writing model.safetensors",
    EVALUATE: "testing the final model and computing its metrics",
    DISPLAY: "the notebook's tables and figures",
    WRITE: "the job's files, the notebook's saves, the kernel's shutdown",
    OTHER: "what no phase measured",
}
ORDER = tuple(MEANINGS)
COMPUTE = (TRAIN, EVALUATE, BENCHMARK)  # the model at work; every other phase is the harness around it
# The notebook tags each of its code cells with the phase it belongs to; the cell that calls run_job is
# ENGINE_CELL: its time is the engine's own phases, and what they leave over is OTHER.
ENGINE_CELL = "engine"
CELL_PHASES = (IMPORTS, LOAD_DATA, DISPLAY, ENGINE_CELL)


class PhaseTimer:
    """Wall time per phase, in seconds, in the order the phases first ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds


@dataclass(frozen=True)
class Cell:
    """One executed notebook cell: the phase its tags name (or '') and its wall-clock start and end."""

    phase: str
    start: float
    end: float


@dataclass(frozen=True)
class JobTimes:
    """Wall-clock times (``time.time()``) of one job as the launcher and its job process saw them.

    ``notebook_started`` and ``notebook_ended`` bracket papermill's run (kernel start to shutdown); either is
    None when the job process died before recording it.
    """

    launched: float
    ended: float
    notebook_started: float | None = None
    notebook_ended: float | None = None
    cells: tuple[Cell, ...] = field(default_factory=tuple)


def launcher_breakdown(times: JobTimes, engine: Mapping[str, float]) -> dict[str, float]:
    """The job's wall time (``times.ended - times.launched``) as phases that add up to it, in ``ORDER``.

    The engine cell's time is ``engine`` (run_job's own phases, which metrics.json holds); the notebook's
    other cells count under the phase their tag names; gaps between cells (papermill saving the notebook) and
    the end (the last save, the kernel's shutdown, the process's exit) count as ``write``.
    """
    parts: dict[str, float] = {}

    def add(name: str, seconds: float) -> None:
        parts[name] = parts.get(name, 0.0) + max(0.0, seconds)

    wall = max(0.0, times.ended - times.launched)
    if times.notebook_started is None:  # the job process never reached the notebook
        add(PROCESS_START, wall)
        return _ordered(parts)
    add(PROCESS_START, times.notebook_started - times.launched)
    cells = sorted(times.cells, key=lambda cell: cell.start)
    previous = times.notebook_started
    for index, cell in enumerate(cells):
        add(KERNEL_START if index == 0 else WRITE, cell.start - previous)
        if cell.phase == ENGINE_CELL:
            inner = {name: seconds for name, seconds in engine.items() if name in ORDER}
            for name, seconds in inner.items():
                add(name, seconds)
            add(OTHER, (cell.end - cell.start) - sum(inner.values()))
        else:
            add(cell.phase if cell.phase in ORDER else OTHER, cell.end - cell.start)
        previous = max(previous, cell.end)
    add(WRITE if cells else KERNEL_START, times.ended - previous)
    # clock steps and rounding: the residual goes to ``other`` so that the phases add up to the wall time
    measured = sum(parts.values())
    if measured > wall:
        parts = {name: seconds * wall / measured for name, seconds in parts.items()}
    else:
        add(OTHER, wall - measured)
    return _ordered(parts)


def _ordered(parts: Mapping[str, float]) -> dict[str, float]:
    return {name: parts[name] for name in ORDER if parts.get(name)}


def markdown_table() -> str:
    """The phase table of docs/gpu.md, generated from ``MEANINGS``."""
    return "\n".join(["| phase | what it is |", "| --- | --- |",
                      *(f"| `{name}` | {meaning} |" for name, meaning in MEANINGS.items())])


def compute_seconds(phases: Mapping[str, float]) -> float:
    """The seconds the model was at work (``COMPUTE``); the rest of the phases are the harness."""
    return sum(seconds for name, seconds in phases.items() if name in COMPUTE)


def notebook_cells(notebook: Mapping[str, Any]) -> tuple[Cell, ...]:
    """The code cells papermill timed in an executed notebook, each with the phase its tags name."""
    cells = []
    for cell in notebook.get("cells", []):
        timing = cell.get("metadata", {}).get("papermill", {})
        if cell.get("cell_type") != "code" or not timing.get("start_time") or not timing.get("end_time"):
            continue
        tags = cell.get("metadata", {}).get("tags", [])
        phase = next((tag for tag in tags if tag in CELL_PHASES), "")
        cells.append(Cell(phase, _epoch(timing["start_time"]), _epoch(timing["end_time"])))
    return tuple(cells)


def _epoch(stamp: str) -> float:
    """Seconds since the epoch of papermill's ISO time stamp (UTC, with or without its offset)."""
    moment = datetime.fromisoformat(stamp)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def covered(intervals: Iterable[tuple[float, float]]) -> float:
    """The length of the union of ``(start, end)`` intervals: the span the jobs of a grid really took."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total
