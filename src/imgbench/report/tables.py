"""Leaderboards: per (dataset, test set, model), the mean over seeds of each metric, ranked by accuracy.

Rows tested on different test subsets (``test_samples``) are different leaderboards: their accuracies come
from different images and are not ranked against each other. Each leaderboard says what it was tested on,
"tested on N of M images" when ``test_samples`` took a subset of the test split's M images.

Accuracy and macro F1 get their intervals from the test predictions, over seeds and test images
(:mod:`imgbench.report.significance`); here they are left empty. The other metrics get a 95% t-interval over
seeds. Throughputs are rates, positive and spread multiplicatively: their mean is the geometric mean and their
interval the t-interval of the logarithms, mapped back, so it never reaches zero or below. A speed figure (one
with a spread column, ``schema.SPREADS``) gets an interval only from ``MIN_SPEED_SEEDS`` seeds (from two,
Student's t with one degree of freedom makes any spread a factor of tens) and only when it is steady
(:func:`imgbench.report.noise.mark_noisy` blanks it otherwise).

A model with a job that did not learn (``did_not_learn`` non-empty) stays on its leaderboard, flagged, below the
ranked models and without a rank: it is never a leaderboard's winner.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import pandas as pd
from scipy import stats

from imgbench.report.stats import CONFIDENCE
from imgbench.schema import SPREADS

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
INTERVALS_FROM_PREDICTIONS = ("accuracy", "f1_macro")  # over seeds and test images: significance.assess
MIN_SPEED_SEEDS = 3
BOARD_KEYS = ["dataset", "tested_on"]  # one ranking per dataset and test set


def boards(board: pd.DataFrame) -> Iterator[tuple[str, str, pd.DataFrame]]:
    """Each leaderboard in order: its dataset, what it was tested on, and its rows."""
    for (dataset, test_set), ranked in board.groupby(BOARD_KEYS, sort=True):
        yield str(dataset), str(test_set), ranked


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
    """One row per (dataset, test set, model) of successful jobs: within each dataset and test set
    (BOARD_KEYS) the models that learnt, best accuracy first and ranked 1, 2, ...; then those that did not,
    unranked.

    Columns: dataset, tested_on, rank (empty for a model that did not learn), model, family, n_seeds, seeds,
    trained_on, test_samples (the number of test images), did_not_learn ('' when every seed learnt, else
    'seed s: why' per seed that did not), then ``<metric>_mean``, ``_low``, ``_high`` for each of
    LEADERBOARD_METRICS (see the module's docstring for which intervals are filled here).
    """
    columns = ["dataset", "tested_on", "rank", "model", "family", "n_seeds", "seeds", "trained_on",
               "test_samples", "did_not_learn"] + [
        f"{metric}_{part}" for metric in LEADERBOARD_METRICS for part in ("mean", "low", "high")]
    rows = []
    labelled = ok_rows.assign(tested_on=tested_on(ok_rows), trained_on=trained_on(ok_rows))
    for (dataset, test_set, model), group in labelled.groupby(["dataset", "tested_on", "model"], sort=True):
        trained = sorted(set(group["trained_on"]))
        row = {"dataset": dataset, "tested_on": test_set, "model": model, "family": _first(group.get("family")),
               "n_seeds": int(group["seed"].nunique()),
               "seeds": " ".join(str(int(s)) for s in sorted(group["seed"].dropna().unique())),
               "trained_on": "; ".join(trained),
               "test_samples": group["test_samples"].iloc[0] if "test_samples" in group else float("nan"),
               "did_not_learn": _did_not_learn(group)}
        for metric in LEADERBOARD_METRICS:
            values = group[metric] if metric in group else pd.Series(dtype=float)
            if metric in INTERVALS_FROM_PREDICTIONS:
                row[f"{metric}_mean"], row[f"{metric}_low"], row[f"{metric}_high"] = values.mean(), math.nan, math.nan
            else:
                mean, low, high = (log_t_interval if metric in LOG_SCALE_METRICS else t_interval)(values)
                if metric in SPREADS and values.dropna().size < MIN_SPEED_SEEDS:
                    low = high = math.nan
                row[f"{metric}_mean"], row[f"{metric}_low"], row[f"{metric}_high"] = mean, low, high
        rows.append(row)
    if not rows:
        return pd.DataFrame(columns=columns)
    board = pd.DataFrame(rows)
    board["learnt"] = board["did_not_learn"] == ""
    board = board.sort_values([*BOARD_KEYS, "learnt", f"{RANK_METRIC}_mean", "model"],
                              ascending=[True, True, False, False, True], na_position="last")
    ranks = board[board["learnt"]].groupby(BOARD_KEYS).cumcount() + 1
    board["rank"] = pd.array([pd.NA] * len(board), dtype="Int64")
    board.loc[ranks.index, "rank"] = ranks
    return board[columns].reset_index(drop=True)


def _did_not_learn(group: pd.DataFrame) -> str:
    """'seed 1: why' for each of the model's jobs whose ``did_not_learn`` cell is set ('' when none is)."""
    if "did_not_learn" not in group:
        return ""
    flagged = group[group["did_not_learn"].fillna("").astype(str) != ""].sort_values("seed")
    return "; ".join(f"seed {int(seed)}: {why}" for seed, why in zip(flagged["seed"], flagged["did_not_learn"]))


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
