"""The sentences that say what the report's statistics measure, shared by report.html and report.md so that the
two pages, the verdicts and the leaderboards say the same thing in the same words."""

from __future__ import annotations

import math

import pandas as pd

from imgbench.report import fmt
from imgbench.report.significance import Comparison
from imgbench.report.stats import BOOTSTRAP_RESAMPLES, CONFIDENCE, POWER
from imgbench.report.tables import MIN_SPEED_SEEDS

INTERVALS = (
    f"Accuracy and macro F1: mean over seeds, with a {CONFIDENCE:.0%} interval in brackets that counts both "
    "sources of variance, the training seeds (their spread, with Student's t: wide with few seeds) and the finite "
    "test set (its images resampled); with one seed it counts the test images only. The same intervals, paired "
    "image by image, decide the verdicts: 'Behind leader' is the leader's lead over the row in points, with its "
    f"interval. Speeds: geometric mean over seeds, ×/÷ the factor of its {CONFIDENCE:.0%} interval from "
    f"{MIN_SPEED_SEEDS} seeds on; 'noisy' where the figure is too noisy to rank on (see below). Other columns: "
    f"± the half-width of the {CONFIDENCE:.0%} t-interval over seeds.")
METHOD = (
    f"Each model below the leader is compared with the leader on the images both predicted. The lead is the "
    f"difference of their accuracies (mean over seeds); its {CONFIDENCE:.0%} interval adds in quadrature the "
    "seeds' part (each model's seed-to-seed variance over its number of seeds, Student's t with Welch-Satterthwaite "
    f"degrees of freedom) and the test set's part ({BOOTSTRAP_RESAMPLES:,} resamples of the test images, the same "
    "for both models, so the comparison is paired; each seed's own noise on the images is counted once). The lead "
    f"is significant when the interval excludes zero, which is when p < {1 - CONFIDENCE:.2f}. With one seed per "
    "model the interval counts the test images only and says nothing about another seed. 'Seeds to settle it': "
    f"seeds per model with which a true lead of the observed size would come out significant {POWER:.0%} of the "
    "time, given the spread observed so far. See docs/report.md (Reading the report) for the assumptions.")
BEHIND_HEADING = "Behind leader (pt)"
MORE_SEEDS = "Run 3 or more seeds (--seeds 0,1,2) to measure it."


def behind_text(row: pd.Series) -> str:
    """A leaderboard row's 'Behind leader' cell: 'leader', '1.67 [-9.59, +12.93] tied' (the verdict's numbers),
    'not ranked' for a model that did not learn, or '–' when untested."""
    if row["did_not_learn"]:
        return "not ranked"
    if row["rank"] == 1:
        return "leader"
    if pd.isna(row["behind_leader"]):
        return fmt.MISSING
    low, high = row["behind_leader_low"], row["behind_leader_high"]
    verdict = "behind" if low > 0 or high < 0 else "tied"
    return f"{100 * row['behind_leader']:.2f} {fmt.points_interval(low, high, unit='')} {verdict}"


def comparison_verdict(c: Comparison) -> str:
    if not c.tested:
        return f"not tested: {c.reason}"
    return "significant" if c.significant else "tied: the interval includes zero"


def seeds_advice(c: Comparison) -> str:
    """The short form of the seed-count advice, for the statistics table."""
    if not c.tested or c.significant:
        return ""
    if c.seeds_needed is None:
        return "unknown with one seed: run 3 or more"
    if math.isinf(c.seeds_needed):
        return "none would: only more test images"
    return f"about {fmt.plural(int(c.seeds_needed), 'seed')} per model"


def what_one_interval_knows(row: pd.Series) -> str:
    """What a leaderboard row's accuracy interval counts (for a verdict with a single model)."""
    if row["interval_covers"] == "":
        return "No interval: no seed has a readable predictions.csv."
    if row["n_seeds"] == 1:
        return ("With one seed the interval counts the test images only: how far another training seed would move "
                f"the score is unknown. {MORE_SEEDS}")
    return f"The interval counts the spread of its {row['n_seeds']} seeds and of the test images."


def what_the_interval_knows(c: Comparison) -> list[str]:
    """What the intervals of a comparison count, what they cannot know with 1 or 2 seeds, and how many seeds
    would settle a lead that is not significant."""
    d, seeds = c.difference, min(c.leader_seeds, c.other_seeds)
    if d is None:
        return []
    images = fmt.plural(c.n_images, "test image")
    if seeds == 1:
        lines = [f"With one seed per model the intervals count the {images} only: how far another training seed "
                 f"would move each model is unknown, and it can exceed this lead. {MORE_SEEDS}"]
    elif seeds == 2:
        lines = [f"With 2 seeds per model the seeds' spread is estimated from two values each, so the intervals "
                 f"are wide (Student's t with {d.seed_df:.2g} {fmt.noun_form(d.seed_df, 'degree')} of freedom) and "
                 f"that spread is itself uncertain; they also count the {images}."]
    else:
        lines = [f"The intervals count the spread of the seeds ({c.leader_seeds} and {c.other_seeds}) and of the "
                 f"{images}."]
    if c.significant or c.seeds_needed is None:
        return lines
    if math.isinf(c.seeds_needed):
        alone = 100 * 1.96 * math.sqrt(d.image_variance)
        lines.append(f"More seeds would not settle it: the test images alone move the lead by about ±{alone:.2f} "
                     f"points, too much for a lead of {100 * d.value:.2f} points to show; only more test images "
                     "would.")
    else:
        lines.append(f"Given the spread observed so far, about {fmt.plural(int(c.seeds_needed), 'seed')} per model "
                     f"would show a true lead of {100 * d.value:.2f} points as significant {POWER:.0%} of the time.")
    return lines
