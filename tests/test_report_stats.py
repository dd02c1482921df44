"""The report's intervals (imgbench.report.stats) against independent computations and against simulated
benchmarks whose true accuracies are known.

The simulation: a population of images, each with a difficulty b ~ N(0, 1) on the logit scale shared by every
model (hard images are hard for all); a model's seed shifts its logit by a ~ N(0, sigma_seed); each seed gets each
image right with probability expit(mu + a + b), on its own. A benchmark draws N_IMAGES images and the seeds; the
true accuracy of a model is E[expit(mu + a + b)], integrated numerically (scipy.integrate.quad), not simulated.

Each regime runs BENCHMARKS simulated benchmarks. At a true coverage of 95%, the coverage observed over 800 has a
binomial standard error of 0.77 points: the accepted band, 95% +- 2.3 points (3 standard errors), fails a method
whose coverage is 92% or less, and the regime that ignores seed variance (one seed, seeds that matter) shows that
the check is decisive. The random streams are fixed, so the test gives the same numbers on every run.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import integrate, special, stats
from sklearn import metrics as skm

from imgbench.report.stats import (ALPHA, _scores, _seed_image_noise, difference_estimate, resample_scores,
                                   score_estimate, seeds_needed)

BENCHMARKS = 800
N_IMAGES = 300
N_CLASSES = 10
RESAMPLES = 200  # per simulated benchmark (the report uses 2,000): the variance of the image part to ~10%
MU = {"a": 1.5, "b": 1.3}  # logits: true accuracies of about 77% and 74%
BAND = (0.95 - 0.023, 0.95 + 0.023)


def true_accuracy(mu: float, sigma_seed: float) -> float:
    """E over seeds and images of expit(mu + a + b), a + b ~ N(0, sigma_seed^2 + 1)."""
    scale = math.hypot(sigma_seed, 1.0)
    return integrate.quad(lambda z: special.expit(mu + scale * z) * stats.norm.pdf(z), -12, 12)[0]


def simulate(sigma_seed: float, seeds: int, seed: int) -> dict[str, float]:
    """Coverage of the accuracy intervals of models a and b and of the interval of their difference."""
    rng = np.random.default_rng(seed)
    truth = {model: true_accuracy(mu, sigma_seed) for model, mu in MU.items()}
    covered = {"a": 0, "b": 0, "difference": 0}
    for _ in range(BENCHMARKS):
        y_true, predicted = benchmark(rng, sigma_seed, seeds)
        scores = resample_scores(y_true, predicted, N_CLASSES, resamples=RESAMPLES, seed=int(rng.integers(2**31)))
        for model in MU:
            estimate = score_estimate(scores[model]["accuracy"], N_IMAGES)
            covered[model] += estimate.low <= truth[model] <= estimate.high
        difference = difference_estimate(scores["a"]["accuracy"], scores["b"]["accuracy"])
        covered["difference"] += difference.low <= truth["a"] - truth["b"] <= difference.high
    return {key: count / BENCHMARKS for key, count in covered.items()}


def benchmark(rng: np.random.Generator, sigma_seed: float, seeds: int, mu: dict[str, float] = MU
              ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One simulated benchmark: the true classes of N_IMAGES images and each model's predictions per seed."""
    difficulty = rng.normal(0, 1, N_IMAGES)
    y_true = rng.integers(0, N_CLASSES, N_IMAGES)
    predicted = {}
    for model, mu in mu.items():
        offset = rng.normal(0, sigma_seed, (seeds, 1))
        right = rng.random((seeds, N_IMAGES)) < special.expit(mu + offset + difficulty)
        predicted[model] = np.where(right, y_true, (y_true + rng.integers(1, N_CLASSES, right.shape)) % N_CLASSES)
    return y_true, predicted


# ---- coverage --------------------------------------------------------------------------------------------------

def test_intervals_cover_the_true_accuracy_95_percent_of_the_time_when_seeds_matter():
    """Three seeds whose offsets move accuracy by about 4 points, 300 test images: both sources matter."""
    coverage = simulate(sigma_seed=0.3, seeds=3, seed=1)
    for key, value in coverage.items():
        assert BAND[0] <= value <= BAND[1], (key, coverage)


def test_intervals_cover_95_percent_with_one_seed_when_only_the_test_set_varies():
    coverage = simulate(sigma_seed=0.0, seeds=1, seed=2)
    for key, value in coverage.items():
        assert BAND[0] <= value <= BAND[1], (key, coverage)


def test_the_check_is_decisive_one_seed_cannot_cover_seed_variance():
    """One seed per model where seeds matter: the interval counts the test images only (the report says so), and
    the simulation catches it far outside the band."""
    coverage = simulate(sigma_seed=0.3, seeds=1, seed=3)
    assert all(value < 0.80 for value in coverage.values()), coverage


def test_intervals_are_conservative_not_vacuous_when_seeds_differ_only_by_test_noise():
    """Seeds that barely matter (offsets of 0.5 points): three seeds cannot tell this from seeds that matter,
    so the interval keeps Student's t and covers more than 95%; it must not cover everything by being huge."""
    coverage = simulate(sigma_seed=0.03, seeds=3, seed=4)
    for key, value in coverage.items():
        assert BAND[0] <= value <= 0.995, (key, coverage)


# ---- against independent computations --------------------------------------------------------------------------

def test_per_seed_scores_are_scikit_learns_accuracy_and_macro_f1():
    rng = np.random.default_rng(5)
    y_true = rng.integers(0, 4, 200)  # class 4 of 5 never occurs: its F1 counts as 0, as the engine's does
    predicted = np.stack([np.where(rng.random(200) < 0.7, y_true, rng.integers(0, 5, 200)) for _ in range(3)])
    rows = rng.integers(0, 200, (4, 200))  # four resamples of the images, and the images themselves
    rows = np.vstack([np.arange(200), rows])
    scores = _scores(y_true, predicted, rows, 5)
    for r, row in enumerate(rows):
        for s in range(3):
            truth, guess = y_true[row], predicted[s][row]
            assert scores["accuracy"][r, s] == pytest.approx(skm.accuracy_score(truth, guess))
            assert scores["f1_macro"][r, s] == pytest.approx(
                skm.f1_score(truth, guess, labels=range(5), average="macro", zero_division=0))
    observed = resample_scores(y_true, {"m": predicted}, 5, resamples=10)["m"]["f1_macro"].observed
    assert observed == pytest.approx(scores["f1_macro"][0])


def test_variance_matches_the_crossed_anova_estimator():
    """Seeds x images is a crossed design: the unbiased estimator of the seed mean's variance is
    (MS_seeds + MS_images - MS_residual) / (seeds * images), computed here by hand from the 0/1 matrix."""
    rng = np.random.default_rng(6)
    seeds, n = 5, 2000
    y_true, predicted = benchmark_with(rng, sigma_seed=0.25, seeds=seeds, n=n)
    scores = resample_scores(y_true, {"m": predicted}, N_CLASSES, resamples=4000)["m"]["accuracy"]
    right = (predicted == y_true).astype(float)
    grand, by_seed, by_image = right.mean(), right.mean(axis=1), right.mean(axis=0)
    ms_seeds = n * np.sum((by_seed - grand) ** 2) / (seeds - 1)
    ms_images = seeds * np.sum((by_image - grand) ** 2) / (n - 1)
    residual = right - by_seed[:, None] - by_image[None, :] + grand
    ms_residual = np.sum(residual ** 2) / ((seeds - 1) * (n - 1))
    anova = (ms_seeds + ms_images - ms_residual) / (seeds * n)
    estimate = score_estimate(scores, n)
    assert estimate.seed_variance + estimate.image_variance == pytest.approx(anova, rel=0.08)
    assert _seed_image_noise(scores) == pytest.approx(ms_residual / (seeds * n), rel=0.08)


def test_one_seed_agrees_with_wilson_and_with_the_paired_difference_formula():
    """With one seed only the test set varies: a model's interval is close to the Wilson interval of a binomial
    proportion, and the variance of a paired difference is (b + c - (b - c)^2 / n) / n^2 over the b images only
    A gets right and the c only B gets right; the significance agrees with McNemar's exact test."""
    rng = np.random.default_rng(7)
    n = 1000
    y_true, a = benchmark_with(rng, sigma_seed=0.0, seeds=1, n=n)
    b = np.where(rng.random(n) < 0.06, y_true, (a + (rng.random(n) < 0.1)) % N_CLASSES)  # a, some mended, some broken
    scores = resample_scores(y_true, {"a": a, "b": b}, N_CLASSES, resamples=4000)
    a_right, b_right = a[0] == y_true, b[0] == y_true
    wilson = stats.binomtest(int(a_right.sum()), n).proportion_ci(0.95, method="wilson")
    estimate = score_estimate(scores["a"]["accuracy"], n)
    assert (estimate.low, estimate.high) == pytest.approx((wilson.low, wilson.high), abs=0.004)
    only_a, only_b = int(np.sum(a_right & ~b_right)), int(np.sum(~a_right & b_right))
    difference = difference_estimate(scores["a"]["accuracy"], scores["b"]["accuracy"])
    paired = (only_a + only_b - (only_a - only_b) ** 2 / n) / n ** 2
    assert difference.image_variance == pytest.approx(paired, rel=0.08)
    mcnemar = stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
    assert (difference.p_value < ALPHA) == (mcnemar < ALPHA)
    assert difference.p_value == pytest.approx(mcnemar, rel=0.5)


def benchmark_with(rng: np.random.Generator, sigma_seed: float, seeds: int, n: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    difficulty, y_true = rng.normal(0, 1, n), rng.integers(0, N_CLASSES, n)
    right = rng.random((seeds, n)) < special.expit(1.5 + rng.normal(0, sigma_seed, (seeds, 1)) + difficulty)
    return y_true, np.where(right, y_true, (y_true + rng.integers(1, N_CLASSES, right.shape)) % N_CLASSES)


# ---- the seed-count advice -----------------------------------------------------------------------------------------

def test_the_advised_seed_count_gives_the_promised_power():
    """From a pilot of 40 seeds (its spreads well measured) and the true difference, seeds_needed advises n seeds
    per model; benchmarks run with n seeds then find the difference significant about POWER (80%) of the time.
    300 benchmarks: a binomial standard error of 2.3 points, the band is 80% +- 8."""
    rng = np.random.default_rng(9)
    sigma_seed, mu = 0.15, {"a": 1.5, "b": 1.2}
    truth = true_accuracy(mu["a"], sigma_seed) - true_accuracy(mu["b"], sigma_seed)
    pilot = resample_scores(*benchmark(rng, sigma_seed, 40, mu), N_CLASSES, resamples=2000)
    a, b = pilot["a"]["accuracy"], pilot["b"]["accuracy"]
    difference = dataclasses.replace(difference_estimate(a, b), value=truth)
    n = int(seeds_needed(a, b, difference))
    assert 4 <= n <= 20
    significant = 0
    for _ in range(300):
        scores = resample_scores(*benchmark(rng, sigma_seed, n, mu), N_CLASSES, resamples=RESAMPLES,
                                 seed=int(rng.integers(2**31)))
        significant += difference_estimate(scores["a"]["accuracy"], scores["b"]["accuracy"]).significant
    assert 0.72 <= significant / 300 <= 0.88


def test_no_seed_count_without_a_seed_spread_and_none_that_beats_the_test_set():
    rng = np.random.default_rng(10)
    one = resample_scores(*benchmark(rng, 0.1, 1), N_CLASSES, resamples=200)
    assert seeds_needed(one["a"]["accuracy"], one["b"]["accuracy"],
                        difference_estimate(one["a"]["accuracy"], one["b"]["accuracy"])) is None
    three = resample_scores(*benchmark(rng, 0.1, 3), N_CLASSES, resamples=200)
    a, b = three["a"]["accuracy"], three["b"]["accuracy"]
    tiny = dataclasses.replace(difference_estimate(a, b), value=0.001)  # far below the test set's own spread
    assert seeds_needed(a, b, tiny) == math.inf


def test_p_value_and_interval_agree():
    rng = np.random.default_rng(11)
    for seeds in (1, 2, 3, 5):
        scores = resample_scores(*benchmark(rng, 0.2, seeds), N_CLASSES, resamples=300)
        d = difference_estimate(scores["a"]["accuracy"], scores["b"]["accuracy"])
        assert (d.p_value < ALPHA) == d.significant
        assert d.low <= d.value <= d.high
