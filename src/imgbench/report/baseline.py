"""Against a baseline run: the change of each metric per (dataset, model), regressions beyond noise flagged.

Quality metrics regress when the new mean falls below the baseline's 95% interval, the one its leaderboard shows
(over seeds and test images; over the test images only for a single baseline seed; none without the baseline's
predictions.csv, so nothing is flagged and the row says so). Speed metrics regress when
they are worse by more than SPEED_TOLERANCE, a margin above the run-to-run jitter of timing on one machine.
"""

from __future__ import annotations

import math

import pandas as pd

from imgbench import schema

SPEED_TOLERANCE = 0.05
QUALITY_METRICS = ("accuracy", "f1_macro")
SPEED_METRICS = ("train_throughput", "infer_throughput", "latency_p50_ms")  # which way is faster: imgbench.schema
COMPARED_METRICS = QUALITY_METRICS + SPEED_METRICS + ("params", "flops", "peak_memory_mb")
COLUMNS = ["dataset", "model", "metric", "baseline", "current", "change", "change_pct", "regression", "note"]


def compare_to_baseline(board: pd.DataFrame, baseline_board: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, model, metric) present in both leaderboards, scored on as many test images."""
    merged = board.merge(baseline_board, on=["dataset", "model", "test_samples"], suffixes=("", "_base"))
    rows = []
    for _, row in merged.iterrows():
        for metric in COMPARED_METRICS:
            current, base = row[f"{metric}_mean"], row[f"{metric}_mean_base"]
            if pd.isna(current) or pd.isna(base):
                continue
            regression, note = _judge(metric, current, base, row[f"{metric}_low_base"])
            rows.append({"dataset": row["dataset"], "model": row["model"], "metric": metric, "baseline": base,
                         "current": current, "change": current - base,
                         "change_pct": 100 * (current - base) / base if base else math.nan,
                         "regression": regression, "note": note})
    return pd.DataFrame(rows, columns=COLUMNS)


def unmatched(board: pd.DataFrame, baseline_board: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(pairs only in this run, pairs only in the baseline), as 'model on dataset'."""
    here = {(d, m) for d, m in zip(board["dataset"], board["model"])}
    there = {(d, m) for d, m in zip(baseline_board["dataset"], baseline_board["model"])}
    return ([f"{m} on {d}" for d, m in sorted(here - there)], [f"{m} on {d}" for d, m in sorted(there - here)])


def _judge(metric: str, current: float, base: float, base_low: float) -> tuple[bool, str]:
    if metric in QUALITY_METRICS:
        if pd.isna(base_low):
            return False, "the baseline has no interval to judge against (no predictions.csv)"
        if current < base_low:
            return True, "below the baseline's 95% interval"
        return False, ""
    if metric in SPEED_METRICS:
        slower = (current < base * (1 - SPEED_TOLERANCE) if schema.higher_is_better(metric)
                  else current > base * (1 + SPEED_TOLERANCE))
        if slower:
            return True, f"more than {SPEED_TOLERANCE:.0%} slower"
    return False, ""
