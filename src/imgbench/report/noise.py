"""Speed figures the report must qualify: jobs that shared a CPU, and figures too noisy to rank on, with the
cause the job's own record points to.

Each speed figure in results.csv comes with its spread within the job (``*_rel_iqr``: the interquartile range
of its timed chunks, windows or samples over their median). A figure is noisy when that spread, or the spread of
one model's figure between its seeds (their range over their median), is above ``NOISY_REL_IQR``: larger than
the gaps a leaderboard ranks on. The leaderboard then shows it as noisy, without an interval. Why it was noisy
is read from the job's record, first cause first:

- on CUDA, a GPU that ran kernels less than ``GPU_BUSY_LOW`` of the time (``train_gpu_busy``,
  ``infer_gpu_busy``) waited on the CPU launching them: the figure measures the launching, not the GPU;
- a machine already loaded when the job started: fewer ``free_cores`` than the job's threads (one for a GPU
  job), from the ``load_average`` the runner recorded;
- otherwise, on a machine that was quiet at the start (or whose load was not recorded), another process took
  the CPU during the job, or the device throttled (heat, power limits).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from imgbench.report import fmt
from imgbench.report.tables import tested_on
from imgbench.schema import SPREADS

NOISY_REL_IQR = 0.10  # a speed figure's spread within its job above this is noise, not a difference
NOISY_SEED_SPREAD = NOISY_REL_IQR  # between a model's seeds (range over median), the same bar
GPU_BUSY_LOW = 0.5  # a GPU busy less than this share of the timed wall time was waiting on the CPU
# how the report names each speed figure that has a spread (the schema says which column holds it)
FIGURE_NAMES = {"train_throughput": "train speed", "infer_throughput": "inference speed", "latency_p50_ms": "latency"}
BUSY_COLUMNS = {"train_throughput": "train_gpu_busy", "infer_throughput": "infer_gpu_busy",
                "latency_p50_ms": "infer_gpu_busy"}
SEED_GROUP = ["dataset", "tested_on", "model"]  # one model's figures on one leaderboard

LAUNCH_BOUND, LOADED, QUIET, UNRECORDED = "launch-bound", "loaded", "quiet", "unrecorded"
CAUSES = {  # in the order the notes give them
    LAUNCH_BOUND: "Bound by the CPU launching kernels, the GPU idle in between (its busy share is given): a bigger "
                  "batch or compile would help; until then the figure measures the launching, not the GPU",
    LOADED: "The machine was already loaded when the job started (its load average and free cores then are "
            "given): rerun on a quiet machine before comparing these speeds",
    QUIET: "The machine was quiet when the job started: another process took the CPU during the job, or the "
           "device throttled (heat, power limits); rerun before comparing these speeds",
    UNRECORDED: "The machine's load when the job started was not recorded: another process took the CPU, or the "
                "device throttled (heat, power limits); rerun on a quiet machine before comparing these speeds",
}


@dataclass(frozen=True)
class NoisyFigure:
    """One noisy speed figure: of one job (``seed`` set) or of one model's seeds together (``seed`` None)."""

    model: str
    dataset: str
    tested_on: str  # the leaderboard's test set (tables.tested_on)
    figure: str  # a SPREADS key
    detail: str  # e.g. 'inference speed 31%' or 'train speed 2.6x'
    cause: str  # a CAUSES key
    evidence: str = ""  # e.g. 'GPU busy 23%', 'load average 4.1, 0.0 free cores for 2 threads'
    seed: int | None = None  # None: the model's seeds disagree with each other


def seed_spread(values: pd.Series) -> float:
    """How far one model's seeds disagree on a speed figure: (max - min) / median, NaN with fewer than two."""
    values = pd.Series(values, dtype=float).dropna()
    values = values[values > 0]
    if len(values) < 2:
        return float("nan")
    return float((values.max() - values.min()) / values.median())


def mark_noisy(board: pd.DataFrame, ok: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard with a ``<figure>_noisy`` column per speed figure, True where one of the model's jobs or
    its seeds together were too noisy; a noisy figure's interval is blanked: it would only measure the noise."""
    noisy = {(f.dataset, f.tested_on, f.model, f.figure) for f in noisy_figures(ok)}
    board = board.copy()
    for figure in SPREADS:
        flags = [(d, t, m, figure) in noisy for d, t, m in zip(board["dataset"], board["tested_on"], board["model"])]
        board[f"{figure}_noisy"] = pd.Series(flags, index=board.index, dtype=bool)
        for part in ("low", "high"):
            if f"{figure}_{part}" in board:
                board.loc[board[f"{figure}_noisy"], f"{figure}_{part}"] = float("nan")
    return board


def noisy_figures(ok: pd.DataFrame) -> list[NoisyFigure]:
    """Every noisy figure of the ``ok`` rows: each job's own, then each model's disagreeing seeds."""
    found = []
    ordered = ok.assign(tested_on=tested_on(ok)).sort_values(["dataset", "model", "seed"])
    for _, row in ordered.iterrows():
        for figure, spread in SPREADS.items():
            if spread in row and pd.notna(row[spread]) and row[spread] > NOISY_REL_IQR:
                cause, evidence = diagnose([row], figure)
                found.append(NoisyFigure(row["model"], row["dataset"], row["tested_on"], figure,
                                         f"{FIGURE_NAMES[figure]} {row[spread]:.0%}", cause, evidence,
                                         int(row["seed"])))
    for _, group in ordered.groupby(SEED_GROUP, sort=True) if len(ordered) else ():
        for figure in SPREADS:
            values = group[figure].dropna() if figure in group else pd.Series(dtype=float)
            if seed_spread(values) > NOISY_SEED_SPREAD:
                cause, evidence = diagnose([row for _, row in group.iterrows()], figure)
                detail = f"{FIGURE_NAMES[figure]} {values.max() / values.min():.1f}x"
                first = group.iloc[0]
                found.append(NoisyFigure(first["model"], first["dataset"], first["tested_on"], figure, detail, cause,
                                         evidence))
    return found


def diagnose(rows: list[pd.Series], figure: str) -> tuple[str, str]:
    """(cause, evidence) of a noisy figure measured in these job rows: launch-bound on CUDA, a loaded machine at
    the start, or neither (see the module's docstring)."""
    busy = [row[BUSY_COLUMNS[figure]] for row in rows if _on_cuda(row) and pd.notna(row.get(BUSY_COLUMNS[figure]))]
    if busy and min(busy) < GPU_BUSY_LOW:
        return LAUNCH_BOUND, f"GPU busy {min(busy):.0%}"
    loaded = [row for row in rows if was_loaded(row)]
    if loaded:
        row = max(loaded, key=lambda r: r["load_average"])
        return LOADED, (f"load average {row['load_average']:.1f}, {row['free_cores']:.1f} free "
                        f"{fmt.noun_form(row['free_cores'], 'core')} for {fmt.plural(_cores_needed(row), 'thread')}")
    loads = [row["load_average"] for row in rows if pd.notna(row.get("load_average"))]
    return (QUIET, f"load average {max(loads):.1f}") if loads else (UNRECORDED, "")


def was_loaded(row: pd.Series) -> bool:
    """The job started on a machine with fewer free cores than it needed (its threads; one for a GPU job)."""
    free = row.get("free_cores")
    return free is not None and pd.notna(free) and free < _cores_needed(row)


def _cores_needed(row: pd.Series) -> int:
    threads = row.get("threads")
    return 1 if _on_cuda(row) or threads is None or pd.isna(threads) else max(1, int(threads))


def _on_cuda(row: pd.Series) -> bool:
    return str(row.get("device") or "").startswith("cuda")


def shared_cpu_note(ok: pd.DataFrame) -> str:
    """A sentence when CPU jobs ran beside other jobs on the same machine ('' when none did)."""
    if "concurrency" not in ok or ok.empty:
        return ""
    shared = ok[(ok["device"] == "cpu") & (ok["concurrency"] > 1)]
    if shared.empty:
        return ""
    threads = sorted(int(t) for t in shared["threads"].dropna().unique())
    each = fmt.plural(threads[0], "thread") if len(threads) == 1 else f"{', '.join(map(str, threads))} threads"
    return (f"Speed figures of {len(shared)} of {fmt.plural(len(ok), 'job')} come from CPU jobs that shared the "
            f"machine ({int(shared['concurrency'].max())} jobs at once, {each} each): they are lower than a job "
            f"alone gets, and compare fairly only with jobs run the same way. For speed figures of the machine "
            f"alone, rerun with --jobs 1.")


def noise_notes(ok: pd.DataFrame) -> list[str]:
    """A first paragraph saying what noisy means, then one per cause naming its figures ([] when all are steady):
    'm on d, seed 0: inference speed 31% (evidence); seeds apart: train speed 2.6x'."""
    found = noisy_figures(ok)
    if not found:
        return []
    jobs = {(f.model, f.dataset, f.seed) for f in found if f.seed is not None}
    notes = [f"Too noisy to rank on: speed figures that spread more than {NOISY_REL_IQR:.0%} within their job "
             f"(relative IQR of its timed chunks; {fmt.plural(len(jobs), 'job')}) or more than "
             f"{NOISY_SEED_SPREAD:.0%} between a model's seeds (range over median). The leaderboards mark them "
             "noisy and give them no interval."]
    for cause, advice in CAUSES.items():
        mine = [f for f in found if f.cause == cause]
        places = dict.fromkeys((f.model, f.dataset) for f in mine)
        if places:
            notes.append(f"{advice}: {'. '.join(_place_text(model, dataset, mine) for model, dataset in places)}.")
    return notes


def _place_text(model: str, dataset: str, found: list[NoisyFigure]) -> str:
    """'m on d, seed 0: train speed 206%, latency 61%; seed 1: ...; seeds apart: train speed 2.6x'."""
    here = [f for f in found if (f.model, f.dataset) == (model, dataset)]
    parts = []
    for seed in dict.fromkeys(f.seed for f in here):
        figures = [f for f in here if f.seed == seed]
        evidence = "; ".join(dict.fromkeys(f.evidence for f in figures if f.evidence))
        label = "seeds apart" if seed is None else f"seed {seed}"
        parts.append(f"{label}: {', '.join(f.detail for f in figures)}" + (f" ({evidence})" if evidence else ""))
    return f"{model} on {dataset}, {'; '.join(parts)}"


def speed_notes(ok: pd.DataFrame) -> list[str]:
    """What the report says once, beside its speed columns, in order; empty when the figures are clean."""
    return [note for note in (shared_cpu_note(ok), *noise_notes(ok)) if note]
