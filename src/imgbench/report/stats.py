"""Is the leader really better? McNemar's exact test and a bootstrap interval on paired test predictions.

The top two models of a leaderboard (a dataset and one test set) are paired image by image: seed s of one against seed s of the other, rows
matched on ``index`` of predictions.csv. The discordant pairs of all shared seeds are pooled into one exact
McNemar test (a binomial test of "only A right" against "only B right"). The bootstrap resamples test images
(each image's correctness averaged over the shared seeds) for an interval of the accuracy difference, so it
does not treat the same image seen under several seeds as independent evidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from imgbench.report.load import Results
from imgbench.report.tables import BOARD_KEYS, tested_on

ALPHA = 0.05
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_BATCH = 200  # resamples held in memory at once: keeps 10k-image test sets small in RAM
BOOTSTRAP_SEED = 0
PAIRING = ("McNemar exact test (binomial on discordant pairs), seed s of one model paired with seed s of "
           "the other on predictions.csv `index`, discordant pairs pooled over the shared seeds; "
           "bootstrap 95% interval of the accuracy difference resampling test images")


@dataclass(frozen=True)
class Comparison:
    """The leader against the runner-up on one dataset. ``reason`` is set when no test could be made."""

    dataset: str
    winner: str
    runner_up: str
    margin_points: float  # difference of mean accuracy (results.csv), in percentage points
    seeds: tuple[int, ...] = ()
    n_images: int = 0
    winner_only: int = 0  # images only the winner got right, summed over seeds
    runner_up_only: int = 0
    p_value: float = math.nan
    diff_low: float = math.nan  # bootstrap interval of the accuracy difference, points
    diff_high: float = math.nan
    reason: str = ""
    tested_on: str = ""  # the leaderboard's test set (tables.tested_on)

    @property
    def tested(self) -> bool:
        return not self.reason

    @property
    def significant(self) -> bool:
        return self.tested and self.p_value < ALPHA

    @property
    def tests_disagree(self) -> bool:
        """McNemar and the bootstrap interval point different ways: the case is borderline."""
        if not self.tested or np.isnan(self.diff_low):
            return False
        excludes_zero = self.diff_low > 0 or self.diff_high < 0
        return excludes_zero != self.significant


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[int, int, float]:
    """(only A right, only B right, two-sided exact p) for paired boolean correctness arrays."""
    correct_a, correct_b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    only_a = int(np.sum(correct_a & ~correct_b))
    only_b = int(np.sum(~correct_a & correct_b))
    if only_a + only_b == 0:  # the models agree everywhere: no evidence of any difference
        return 0, 0, 1.0
    return only_a, only_b, float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def bootstrap_difference(correct_a: np.ndarray, correct_b: np.ndarray,
                         confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval (in points) of mean(A) - mean(B) over paired per-image correctness."""
    difference = np.asarray(correct_a, float) - np.asarray(correct_b, float)
    if difference.size < 2 or np.all(difference == difference[0]):
        return 100 * float(difference.mean()), 100 * float(difference.mean())
    result = stats.bootstrap((difference,), np.mean, n_resamples=BOOTSTRAP_RESAMPLES, batch=BOOTSTRAP_BATCH,
                             confidence_level=confidence, method="percentile",
                             rng=np.random.default_rng(BOOTSTRAP_SEED))
    return 100 * float(result.confidence_interval.low), 100 * float(result.confidence_interval.high)


def compare_top_two(results: Results, board: pd.DataFrame) -> list[Comparison]:
    """One Comparison per leaderboard (dataset and test set) that has at least two models."""
    comparisons = []
    for (dataset, test_set), ranked in board.groupby(BOARD_KEYS, sort=True):
        if len(ranked) < 2:
            continue
        first, second = ranked.iloc[0], ranked.iloc[1]
        margin = 100 * (first["accuracy_mean"] - second["accuracy_mean"])
        comparisons.append(_compare(results, dataset, first["model"], second["model"], margin, test_set))  # type: ignore[arg-type]  # until the report's rewrite (issue 25)
    return comparisons


def _compare(results: Results, dataset: str, winner: str, runner_up: str, margin: float,
             test_set: str = "") -> Comparison:
    base = Comparison(dataset, winner, runner_up, margin, tested_on=test_set)
    correct_a = _correctness(results, dataset, winner, test_set)
    correct_b = _correctness(results, dataset, runner_up, test_set)
    seeds = sorted(set(correct_a) & set(correct_b))
    if not seeds:
        return _skip(base, "no seed has predictions.csv for both models")
    paired = [correct_a[s].merge(correct_b[s], left_index=True, right_index=True, suffixes=("_a", "_b"))
              for s in seeds]
    if any(frame.empty for frame in paired):
        return _skip(base, "the two models' predictions share no test image index")
    if any((frame["y_true_a"] != frame["y_true_b"]).any() for frame in paired):
        return _skip(base, "the two models' predictions.csv disagree on y_true for the same index: "
                           "they were not scored on the same test images")
    paired = [frame[["correct_a", "correct_b"]].set_axis(["a", "b"], axis=1) for frame in paired]
    if any(len(frame) != min(len(correct_a[s]), len(correct_b[s])) for frame, s in zip(paired, seeds)):
        results.note(f"{dataset}: {winner} and {runner_up} predicted different test images; "
                     "only the shared indices are compared")
    pooled = pd.concat(paired)
    only_a, only_b, p_value = mcnemar_exact(pooled["a"].to_numpy(), pooled["b"].to_numpy())
    per_image = pd.concat(paired, keys=seeds).groupby(level=1).mean()  # correctness averaged over seeds
    low, high = bootstrap_difference(per_image["a"].to_numpy(), per_image["b"].to_numpy())
    return Comparison(dataset, winner, runner_up, margin, tuple(seeds), len(per_image), only_a, only_b,
                      p_value, low, high, tested_on=test_set)


def _correctness(results: Results, dataset: str, model: str, test_set: str = "") -> dict[int, pd.DataFrame]:
    """seed -> frame (index = test image index) of y_true and whether the prediction was correct."""
    ok = results.ok
    same = (ok["dataset"] == dataset) & (ok["model"] == model)
    if test_set:
        same &= tested_on(ok) == test_set
    rows = ok[same]
    by_seed = {}
    for job_id, seed in zip(rows["job_id"], rows["seed"]):
        predictions = results.predictions(job_id)
        if predictions is not None:
            frame = predictions.drop_duplicates("index").set_index("index")
            by_seed[int(seed)] = pd.DataFrame({"y_true": frame["y_true"],
                                               "correct": frame["y_pred"] == frame["y_true"]})
    return by_seed


def _skip(base: Comparison, reason: str) -> Comparison:
    return Comparison(base.dataset, base.winner, base.runner_up, base.margin_points, reason=reason,
                      tested_on=base.tested_on)
