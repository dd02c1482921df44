"""Leaderboards: per (dataset, model), the mean over seeds of each metric and its 95% t-interval.

Throughputs are rates, positive and spread multiplicatively: their mean is the geometric mean and their
interval the t-interval of the logarithms, mapped back, so it never reaches zero or below.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95

# metric -> (heading, larger is better); the order is the leaderboard's column order
LEADERBOARD_METRICS: dict[str, tuple[str, bool]] = {
    "accuracy": ("Accuracy", True),
    "f1_macro": ("Macro F1", True),
    "train_throughput": ("Train speed", True),
    "infer_throughput": ("Inference speed", True),
    "latency_p50_ms": ("Latency bs=1 p50", False),
    "params": ("Params", False),
    "flops": ("FLOPs", False),
    "peak_memory_mb": ("Peak memory", False),
}
RANK_METRIC = "accuracy"
LOG_SCALE_METRICS = ("train_throughput", "infer_throughput")  # geometric mean, interval on a log scale


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


def log_t_interval(values: "np.ndarray | pd.Series | list[float]",
                   confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(geometric mean, low, high): ``t_interval`` of the logarithms, exponentiated; non-positive values dropped."""
    data = pd.Series(values, dtype=float)
    mean, low, high = t_interval(np.log(data[data > 0]), confidence)
    return math.exp(mean) if not math.isnan(mean) else math.nan, math.exp(low), math.exp(high)


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
            interval = log_t_interval if metric in LOG_SCALE_METRICS else t_interval
            row[f"{metric}_mean"], row[f"{metric}_low"], row[f"{metric}_high"] = interval(values)
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
