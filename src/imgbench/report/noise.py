"""Speed figures the report must qualify: jobs that shared a CPU, and figures too noisy within their job.

Each speed figure in results.csv comes with its spread within the job (``*_rel_iqr``: the interquartile range
of its timed chunks, windows or samples over their median). A spread above ``NOISY_REL_IQR`` is larger than
the gaps a leaderboard ranks on: another process took the CPU, or the device throttled (heat, power).
"""

from __future__ import annotations

import pandas as pd

from imgbench.schema import SPREADS

NOISY_REL_IQR = 0.10
# how the report names each speed figure that has a spread (the schema says which column holds it)
FIGURE_NAMES = {"train_throughput": "train speed", "infer_throughput": "inference speed", "latency_p50_ms": "latency"}


def shared_cpu_note(ok: pd.DataFrame) -> str:
    """A sentence when CPU jobs ran beside other jobs on the same machine ('' when none did)."""
    if "concurrency" not in ok or ok.empty:
        return ""
    shared = ok[(ok["device"] == "cpu") & (ok["concurrency"] > 1)]
    if shared.empty:
        return ""
    threads = ", ".join(str(int(t)) for t in sorted(shared["threads"].dropna().unique()))
    return (f"Speed figures of {len(shared)} of {len(ok)} jobs come from CPU jobs that shared the machine "
            f"({int(shared['concurrency'].max())} jobs at once, {threads or '?'} thread(s) each): they are lower "
            f"than a job alone gets, and compare fairly only with jobs run the same way. For speed figures of "
            f"the machine alone, rerun with --jobs 1.")


def noisy_figures(ok: pd.DataFrame) -> list[str]:
    """'model on dataset, seed s: inference speed spread 23%' for every figure above the threshold."""
    found = []
    for _, row in ok.sort_values(["dataset", "model", "seed"]).iterrows():
        spreads = [f"{FIGURE_NAMES[figure]} {row[column]:.0%}" for figure, column in SPREADS.items()
                   if column in row and pd.notna(row[column]) and row[column] > NOISY_REL_IQR]
        if spreads:
            found.append(f"{row['model']} on {row['dataset']}, seed {int(row['seed'])}: {', '.join(spreads)}")
    return found


def noise_note(ok: pd.DataFrame) -> str:
    """A sentence naming the figures too noisy to rank on ('' when every spread is within the threshold)."""
    noisy = noisy_figures(ok)
    if not noisy:
        return ""
    return (f"Too noisy to rank on (spread within the job, relative IQR of its timed chunks, above "
            f"{NOISY_REL_IQR:.0%}): {'; '.join(noisy)}. Another process took the CPU, or the device throttled "
            f"(heat, power limits); rerun these on a quiet machine before comparing their speed.")


def speed_notes(ok: pd.DataFrame) -> list[str]:
    """What the report says beside its speed columns and verdicts, in order; empty when the figures are clean."""
    return [note for note in (shared_cpu_note(ok), noise_note(ok)) if note]
