"""Leaderboards: per (dataset, model), the mean over seeds of each metric and its 95% t-interval."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95

# metric -> heading, in the leaderboard's column order; which way is better comes from imgbench.schema
LEADERBOARD_METRICS: dict[str, str] = {
    "accuracy": "Accuracy",
    "f1_macro": "Macro F1",
    "train_throughput": "Train speed",
    "infer_throughput": "Inference speed",
    "latency_p50_ms": "Latency bs=1 p50",
    "params": "Params",
    "flops": "FLOPs",
    "peak_memory_mb": "Peak memory",
}
RANK_METRIC = "accuracy"


def t_interval(values: "np.ndarray | pd.Series | list[float]",
               confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, low, high) of the Student-t interval of the mean; low/high are NaN with fewer than two values."""
    data = np.asarray(pd.Series(values, dtype=float).dropna())
    if data.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(data.mean())
    if data.size < 2:
        return mean, math.nan, math.nan
    sem = float(stats.sem(data))
    if sem == 0.0:  # identical seeds: scipy returns NaN for a zero scale, but the interval is a point
        return mean, mean, mean
    low, high = stats.t.interval(confidence, df=data.size - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)


def leaderboard(ok_rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, model) of successful jobs, best accuracy first within each dataset.

    Columns: dataset, rank, model, family, n_seeds, seeds, then ``<metric>_mean``, ``_low``, ``_high`` for each
    of LEADERBOARD_METRICS (low/high NaN when there is a single seed).
    """
    columns = ["dataset", "rank", "model", "family", "n_seeds", "seeds"] + [
        f"{metric}_{part}" for metric in LEADERBOARD_METRICS for part in ("mean", "low", "high")]
    rows = []
    for (dataset, model), group in ok_rows.groupby(["dataset", "model"], sort=True):
        row = {"dataset": dataset, "model": model, "family": _first(group.get("family")),
               "n_seeds": int(group["seed"].nunique()),
               "seeds": " ".join(str(int(s)) for s in sorted(group["seed"].dropna().unique()))}
        for metric in LEADERBOARD_METRICS:
            values = group[metric] if metric in group else pd.Series(dtype=float)
            row[f"{metric}_mean"], row[f"{metric}_low"], row[f"{metric}_high"] = t_interval(values)
        rows.append(row)
    if not rows:
        return pd.DataFrame(columns=columns)
    board = pd.DataFrame(rows)
    board = board.sort_values(["dataset", f"{RANK_METRIC}_mean", "model"], ascending=[True, False, True],
                              na_position="last")
    board["rank"] = board.groupby("dataset").cumcount() + 1
    return board[columns].reset_index(drop=True)


def pareto_front(frame: pd.DataFrame, x: str, y: str) -> pd.Series:
    """True for rows no other row beats on both ``x`` and ``y`` (both larger-is-better)."""
    points = frame[[x, y]].to_numpy(dtype=float)
    on_front = []
    for px, py in points:
        if math.isnan(px) or math.isnan(py):
            on_front.append(False)
            continue
        dominated = np.any((points[:, 0] >= px) & (points[:, 1] >= py)
                           & ((points[:, 0] > px) | (points[:, 1] > py)))
        on_front.append(not bool(dominated))
    return pd.Series(on_front, index=frame.index, dtype=bool)


def _first(column: pd.Series | None) -> str:
    if column is None:
        return ""
    values = column.dropna()
    return str(values.iloc[0]) if len(values) else ""
