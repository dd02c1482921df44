"""Leaderboards: per (dataset, test set, model), the mean over seeds of each metric and its 95% t-interval.

Rows tested on different test subsets (``test_samples``) are different leaderboards: their accuracies come
from different images and are not ranked against each other. Each leaderboard says what it was tested on,
"tested on N of M images" when ``test_samples`` took a subset of the test split's M images.

Throughputs are rates, positive and spread multiplicatively: their mean is the geometric mean and their
interval the t-interval of the logarithms, mapped back, so it never reaches zero or below.
"""

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
BOARD_KEYS = ["dataset", "tested_on"]  # one ranking per dataset and test set


def subset_label(verb: str, used: float, total: float) -> str:
    """``tested on 2,000 of 10,000 images`` / ``tested on all 10,000 images`` / ``tested on 300 images``
    (the split's size unknown, as in results written before it was recorded)."""
    if pd.isna(used):
        return f"{verb} on an unrecorded number of images"
    if pd.isna(total):
        return f"{verb} on {int(used):,} images"
    if int(used) >= int(total):
        return f"{verb} on all {int(total):,} images"
    return f"{verb} on {int(used):,} of {int(total):,} images"


def tested_on(rows: pd.DataFrame) -> pd.Series:
    """Each row's test-set label: rows with equal labels were scored on the same test images."""
    return _labels(rows, "tested", "test_samples", "test_split_samples")


def trained_on(rows: pd.DataFrame) -> pd.Series:
    return _labels(rows, "trained", "train_samples", "train_split_samples")


def is_subset(label: str) -> bool:
    return " of " in label


def _labels(rows: pd.DataFrame, verb: str, used: str, total: str) -> pd.Series:
    nan = pd.Series(float("nan"), index=rows.index)
    pairs = zip(rows[used] if used in rows else nan, rows[total] if total in rows else nan)
    return pd.Series([subset_label(verb, u, t) for u, t in pairs], index=rows.index, dtype=object)
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
    """One row per (dataset, test set, model) of successful jobs, best accuracy first within each dataset and
    test set (BOARD_KEYS).

    Columns: dataset, tested_on, rank, model, family, n_seeds, seeds, trained_on, test_samples (the number of
    test images), then ``<metric>_mean``,
    ``_low``, ``_high`` for each of LEADERBOARD_METRICS (low/high NaN when there is a single seed).
    """
    columns = ["dataset", "tested_on", "rank", "model", "family", "n_seeds", "seeds", "trained_on",
               "test_samples"] + [
        f"{metric}_{part}" for metric in LEADERBOARD_METRICS for part in ("mean", "low", "high")]
    rows = []
    labelled = ok_rows.assign(tested_on=tested_on(ok_rows), trained_on=trained_on(ok_rows))
    for (dataset, test_set, model), group in labelled.groupby(["dataset", "tested_on", "model"], sort=True):
        trained = sorted(set(group["trained_on"]))
        row = {"dataset": dataset, "tested_on": test_set, "model": model, "family": _first(group.get("family")),
               "n_seeds": int(group["seed"].nunique()),
               "seeds": " ".join(str(int(s)) for s in sorted(group["seed"].dropna().unique())),
               "trained_on": "; ".join(trained),
               "test_samples": group["test_samples"].iloc[0] if "test_samples" in group else float("nan")}
        for metric in LEADERBOARD_METRICS:
            values = group[metric] if metric in group else pd.Series(dtype=float)
            interval = log_t_interval if metric in LOG_SCALE_METRICS else t_interval
            row[f"{metric}_mean"], row[f"{metric}_low"], row[f"{metric}_high"] = interval(values)
        rows.append(row)
    if not rows:
        return pd.DataFrame(columns=columns)
    board = pd.DataFrame(rows)
    board = board.sort_values([*BOARD_KEYS, f"{RANK_METRIC}_mean", "model"], ascending=[True, True, False, True],
                              na_position="last")
    board["rank"] = board.groupby(BOARD_KEYS).cumcount() + 1
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
