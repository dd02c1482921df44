"""How sure is a score? Intervals that count both sources of variance in a benchmark: the training seeds and
the finite test set (Bouthillier et al. 2021, "Accounting for Variance in Machine Learning Benchmarks").

A model's score is the mean over its seeds of each seed's score on the test images. Run again with other seeds
and another test set drawn like this one, it would move for two reasons, each with its own part of the variance:

- the seeds: their sample variance over their number (Welch-Satterthwaite degrees of freedom across models). It
  holds each seed's own noise on the test images (seed x image), which the resamples below measure well, so it is
  never taken smaller than that noise: two or three seeds can agree by chance;
- the test images: resampled with replacement (``BOOTSTRAP_RESAMPLES`` times, the same resamples for every seed
  and every model of a leaderboard, so comparisons are paired image by image), the variance of the seed-mean
  score, less the seed x image noise already counted with the seeds. More seeds do not shrink this part.

The interval adds the parts in quadrature, each with its own quantile: Student's t for the seeds, so that with few
of them it widens as it must (a plain bootstrap over 2 or 3 seeds would not), the normal for the images. For a
score in [0, 1] (accuracy, F1) a side that would cross 0 or 1 is taken from the same interval on the logit scale;
a difference of two scores may range over [-1, 1]. With one seed per model only the test images count: the seeds'
spread is unknown and the interval says nothing about it. In simulated benchmarks with a known truth
(tests/test_report_stats.py) the intervals cover it 95-96% of the time where seeds matter and 97-99% where seeds
differ only by their noise on the test images (conservative: three seeds cannot tell these cases apart).

Everything here takes numbers and returns numbers; :mod:`imgbench.report.significance` applies it to a results
folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, NamedTuple

import numpy as np
from scipy import optimize, special, stats

CONFIDENCE = 0.95  # of every interval the report shows
ALPHA = 1 - CONFIDENCE  # a difference is significant when its interval excludes zero: p < ALPHA
BOOTSTRAP_RESAMPLES = 2000  # resamples of the test images
BOOTSTRAP_BATCH = 200  # resamples held in memory at once: a 10k-image test set stays small in RAM
BOOTSTRAP_SEED = 0  # the report is reproducible: the same folder gives the same intervals
POWER = 0.80  # the seed-count advice: seeds that would show the observed difference this often


@dataclass(frozen=True)
class SeedScores:
    """One model's score on one test set: per seed on all its images, and per seed on each resample of them."""

    observed: np.ndarray  # (seeds,)
    resampled: np.ndarray  # (resamples, seeds): the same image resamples for every model compared

    @property
    def n_seeds(self) -> int:
        return int(self.observed.size)


@dataclass(frozen=True)
class Estimate:
    """A score or a difference of scores with its interval, and where its variance comes from."""

    value: float
    low: float
    high: float
    seed_variance: float  # of ``value``, what more seeds would shrink (0 with one seed: unknown, not zero)
    seed_df: float  # Welch-Satterthwaite degrees of freedom of the seeds' spread (inf: none or one seed)
    image_variance: float  # of ``value``, from the test images alone (what more seeds would not shrink)
    p_value: float = math.nan  # of "the true value is zero", for a difference: below ALPHA when significant

    @property
    def significant(self) -> bool:
        """The interval excludes zero (for a difference: the two models differ)."""
        return self.low > 0 or self.high < 0


def resample_scores(y_true: np.ndarray, predicted: Mapping[str, np.ndarray], n_classes: int,
                    resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
                    ) -> dict[str, dict[str, SeedScores]]:
    """Accuracy and macro F1 of each model's seeds, on the test images and on resamples of them.

    ``y_true`` (n,) are the true classes of the shared test images; ``predicted[model]`` (seeds, n) each seed's
    predicted classes for the same images. Returns ``{model: {"accuracy": SeedScores, "f1_macro": SeedScores}}``.
    Macro F1 is scikit-learn's with ``labels=range(n_classes)`` and ``zero_division=0``, as the engine computes it.
    Every model is scored on the same resamples, so differences between models are paired.
    """
    y_true = np.asarray(y_true, np.int64)
    predicted = {model: np.atleast_2d(np.asarray(p, np.int64)) for model, p in predicted.items()}
    everything = np.arange(y_true.size)[None, :]
    observed = {model: _scores(y_true, p, everything, n_classes) for model, p in predicted.items()}
    rng = np.random.default_rng(seed)
    batches: dict[str, list[dict[str, np.ndarray]]] = {model: [] for model in predicted}
    for start in range(0, resamples, BOOTSTRAP_BATCH):
        rows = rng.integers(0, y_true.size, (min(BOOTSTRAP_BATCH, resamples - start), y_true.size))
        for model, p in predicted.items():
            batches[model].append(_scores(y_true, p, rows, n_classes))
    return {model: {metric: SeedScores(observed[model][metric][0],
                                       np.concatenate([batch[metric] for batch in batches[model]]))
                    for metric in ("accuracy", "f1_macro")} for model in predicted}


def _scores(y_true: np.ndarray, predicted: np.ndarray, rows: np.ndarray, n_classes: int) -> dict[str, np.ndarray]:
    """Accuracy and macro F1, (resamples, seeds), of each seed on each row of image indices ``rows``."""
    n_rows, n_seeds = rows.shape[0], predicted.shape[0]
    truth = y_true[rows]
    offset = np.arange(n_rows)[:, None] * n_classes  # one block of class counts per resample

    def per_class(labels: np.ndarray) -> np.ndarray:
        return np.bincount(labels.ravel(), minlength=n_rows * n_classes).reshape(n_rows, n_classes)

    true_counts = per_class(offset + truth)
    accuracy, f1 = np.empty((n_rows, n_seeds)), np.empty((n_rows, n_seeds))
    for s in range(n_seeds):
        guess = predicted[s][rows]
        hit = guess == truth
        accuracy[:, s] = hit.mean(axis=1)
        both = true_counts + per_class(offset + guess)  # 2 TP + FP + FN of each class
        true_positives = per_class((offset + truth)[hit])
        f1[:, s] = np.divide(2 * true_positives, both, out=np.zeros(both.shape), where=both > 0).mean(axis=1)
    return {"accuracy": accuracy, "f1_macro": f1}


def score_estimate(scores: SeedScores, n_images: int, confidence: float = CONFIDENCE) -> Estimate:
    """The mean score over seeds with its interval, inside [0, 1]: a side that would cross 0 or 1 is taken from
    the same interval on the logit scale (delta method), which never does."""
    value = float(scores.observed.mean())
    parts = _parts([scores], scores.resampled.mean(axis=1))
    # the logit is unbounded at 0 and 1: move half an image inwards, and give a perfect score the variance
    # of a binomial there rather than none (a test set of n images cannot prove a score of exactly 1)
    inner = min(max(value, 0.5 / n_images), 1 - 0.5 / n_images)
    if parts.seed_variance + parts.image_variance == 0:
        parts = _Parts(0.0, math.inf, 0.0, inner * (1 - inner) / n_images)
    half = parts.half_width(confidence)
    low, high = value - half, value + half
    if low < 0 or high > 1:
        logit_half = half / (inner * (1 - inner))
        low = low if low >= 0 else float(special.expit(special.logit(inner) - logit_half))
        high = high if high <= 1 else float(special.expit(special.logit(inner) + logit_half))
    return parts.estimate(value, min(low, value), max(high, value))


def difference_estimate(a: SeedScores, b: SeedScores, confidence: float = CONFIDENCE) -> Estimate:
    """Score of A minus score of B, paired on the test images (the same resamples), seeds independent."""
    if a.resampled.shape[0] != b.resampled.shape[0]:
        raise ValueError("a difference needs both models scored on the same resamples (resample_scores)")
    value = float(a.observed.mean() - b.observed.mean())
    parts = _parts([a, b], a.resampled.mean(axis=1) - b.resampled.mean(axis=1))
    half = parts.half_width(confidence)
    return parts.estimate(value, max(-1.0, value - half), min(1.0, value + half), parts.p_value(value))


def seeds_needed(a: SeedScores, b: SeedScores, difference: Estimate, power: float = POWER,
                 confidence: float = CONFIDENCE) -> float | None:
    """Seeds per model with which a true difference of ``difference.value`` would come out significant with
    probability ``power``, given the seeds' and the test images' spread observed so far: the fewest n with
    (t + z_power) * sqrt(per-seed variance / n + image variance) <= |difference|, t the quantile at Welch's
    2 (n - 1) degrees of freedom. None when a model has one seed (its seeds' spread is unknown); ``math.inf``
    when no number of seeds would do: the test images' own share (``difference.image_variance``), which more
    seeds do not shrink, is too large for the difference.
    """
    if min(a.n_seeds, b.n_seeds) < 2:
        return None
    # one seed's share of the variance: its offset and its noise on the images, both shrinking as 1 / seeds
    per_seed = sum(max(float(s.observed.var(ddof=1)), s.n_seeds * _seed_image_noise(s)) for s in (a, b))
    z_power = stats.norm.ppf(power)
    if abs(difference.value) <= (_quantile(confidence, math.inf) + z_power) * math.sqrt(difference.image_variance):
        return math.inf
    n = 2
    while (_quantile(confidence, 2 * (n - 1)) + z_power) * math.sqrt(per_seed / n + difference.image_variance) \
            > abs(difference.value):
        n = n + 1 if n < 64 else math.ceil(n * 1.1)  # about right is enough far out
    return float(n)


class _Parts(NamedTuple):
    """Where an estimate's variance comes from: the seeds, known only roughly from few of them (Student's t); the
    share of that which is each seed's noise on the test images, and the test images' own share, both known
    well from hundreds of images (normal)."""

    seed_variance: float
    seed_df: float
    seed_noise: float
    image_variance: float

    def half_width(self, confidence: float) -> float:
        """Each source with its own quantile, added in quadrature: the seeds' part widens with few seeds as
        Student's t says, but is never less than their noise on the images must give (few seeds can agree by
        chance); the images' part does not pay for the seeds' t."""
        z = _quantile(confidence, math.inf)
        seeds = max(_quantile(confidence, self.seed_df) ** 2 * self.seed_variance, z ** 2 * self.seed_noise)
        return math.sqrt(seeds + z ** 2 * self.image_variance)

    def estimate(self, value: float, low: float, high: float, p_value: float = math.nan) -> Estimate:
        return Estimate(value, low, high, max(self.seed_variance, self.seed_noise), self.seed_df,
                        self.image_variance, p_value)

    def p_value(self, value: float) -> float:
        """The 1 - confidence at which the interval of ``value`` just reaches zero: p < ALPHA exactly when the
        CONFIDENCE interval excludes zero (1e-12 stands for anything smaller)."""
        def excess(p: float) -> float:
            return self.half_width(1 - p) - abs(value)

        smallest, largest = 1e-12, 1 - 1e-12
        if excess(largest) >= 0:  # no difference, or none beyond rounding
            return 1.0
        if excess(smallest) <= 0:
            return smallest
        return float(optimize.brentq(excess, smallest, largest))


def _parts(models: list[SeedScores], resampled_estimate: np.ndarray) -> _Parts:
    """The estimate's variance from the seeds (each model's seeds' sample variance over their number, with
    Welch-Satterthwaite degrees of freedom), the part of it that is each seed's own noise on the test images
    (measured by the resamples), and the test images' own share (the bootstrap variance of the estimate less
    that noise, which the seeds' spread already holds)."""
    noises = [_seed_image_noise(s) for s in models]
    spreads = [(float(s.observed.var(ddof=1)) / s.n_seeds, s.n_seeds - 1) for s in models if s.n_seeds > 1]
    seed_variance = sum(v for v, _ in spreads)
    welch = sum(v ** 2 / df for v, df in spreads)
    seed_df = seed_variance ** 2 / welch if welch > 0 else math.inf
    images = max(0.0, float(resampled_estimate.var(ddof=1)) - sum(noises))
    return _Parts(seed_variance, seed_df, sum(noises), images)


def _seed_image_noise(scores: SeedScores) -> float:
    """The seed x image term of the seed mean's variance: each seed errs on its own images, which both the seeds'
    spread and the image resamples hold. A seed's own resampled variance exceeds the seed mean's by (seeds - 1)
    times it."""
    if scores.n_seeds < 2:
        return 0.0
    each = float(scores.resampled.var(axis=0, ddof=1).mean())
    of_mean = float(scores.resampled.mean(axis=1).var(ddof=1))
    return max(0.0, (each - of_mean) / (scores.n_seeds - 1))


def _quantile(confidence: float, df: float) -> float:
    upper = (1 + confidence) / 2
    return float(stats.norm.ppf(upper) if math.isinf(df) else stats.t.ppf(upper, df))
