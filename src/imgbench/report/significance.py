"""The report's statistics applied to a results folder: per leaderboard (a dataset and a test set), every
model's accuracy and macro F1 with an interval over seeds and test images, and every ranked model compared with
the leader, all from one set of resamples of the test images (:mod:`imgbench.report.stats`).

The leaderboard, the verdict and the figures show these same intervals. Models are paired image by image on
predictions.csv ``index``: the images every model and every seed of the leaderboard predicted, with the same
``y_true``. A leaderboard whose models disagree on ``y_true`` (they were not scored on the same images) still gets
each model's own interval, but no comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from imgbench import schema
from imgbench.report.load import Results
from imgbench.report.stats import (Estimate, SeedScores, difference_estimate, resample_scores, score_estimate,
                                   seeds_needed)
from imgbench.report.tables import INTERVALS_FROM_PREDICTIONS, boards, tested_on

# what a leaderboard row's accuracy and F1 intervals count (the board's `interval_covers` column)
SEEDS_AND_IMAGES, IMAGES_ONLY = "seeds and test images", "test images only (one seed)"
# the board's columns from the comparison with the leader (leader minus this model, accuracy as a fraction)
BEHIND_COLUMNS = ("behind_leader", "behind_leader_low", "behind_leader_high", "behind_leader_p")


@dataclass(frozen=True)
class Comparison:
    """A ranked model against its leaderboard's leader: the leader's accuracy minus its, with the interval, or
    ``reason`` why no comparison could be made."""

    dataset: str
    tested_on: str
    leader: str
    other: str
    difference: Estimate | None = None  # leader minus other, accuracy as a fraction
    leader_seeds: int = 0
    other_seeds: int = 0
    n_images: int = 0
    seeds_needed: float | None = None  # per model, for a true difference of this size (stats.seeds_needed)
    reason: str = ""

    @property
    def tested(self) -> bool:
        return self.difference is not None

    @property
    def significant(self) -> bool:
        return self.difference is not None and self.difference.significant


def assess(results: Results, board: pd.DataFrame) -> tuple[pd.DataFrame, list[Comparison]]:
    """The leaderboard with its accuracy and macro F1 intervals filled in, an ``interval_covers`` column and the
    BEHIND_COLUMNS, and the comparisons of every ranked model with its leaderboard's leader (by dataset, test
    set, rank)."""
    board = board.copy()
    board["interval_covers"] = ""
    for column in BEHIND_COLUMNS:
        board[column] = math.nan
    comparisons: list[Comparison] = []
    for dataset, test_set, ranked in boards(board):
        predictions = {model: _predictions(results, dataset, model, test_set) for model in ranked["model"]}
        scores, n_images, problem, paired = _paired_scores(predictions)
        if problem:
            results.note(f"{dataset} ({test_set}): {problem}")
        for index, model in zip(ranked.index, ranked["model"]):
            if model not in scores:
                continue
            for metric in INTERVALS_FROM_PREDICTIONS:
                estimate = score_estimate(scores[model][metric], n_images[model])
                board.loc[index, [f"{metric}_low", f"{metric}_high"]] = estimate.low, estimate.high
            board.loc[index, "interval_covers"] = (SEEDS_AND_IMAGES if scores[model]["accuracy"].n_seeds > 1
                                                   else IMAGES_ONLY)
        comparisons += _compare_with_leader(dataset, test_set, ranked, scores, n_images, "" if paired else problem)
    for c in comparisons:
        if (d := c.difference) is not None:
            where = (board["dataset"] == c.dataset) & (board["tested_on"] == c.tested_on) & (board["model"] == c.other)
            board.loc[where, list(BEHIND_COLUMNS)] = (d.value, d.low, d.high, d.p_value)
    return board, comparisons


def _compare_with_leader(dataset: str, test_set: str, ranked: pd.DataFrame,
                         scores: dict[str, dict[str, SeedScores]], n_images: dict[str, int],
                         unpaired: str) -> list[Comparison]:
    """Every ranked model but the leader against the leader; ``unpaired`` says why none can be (or is '')."""
    learnt = ranked[ranked["rank"].notna()].sort_values("rank")
    if len(learnt) < 2:
        return []
    leader = learnt.iloc[0]["model"]
    out = []
    for other in learnt["model"].iloc[1:]:
        base = Comparison(dataset, test_set, leader, other)
        missing = [m for m in (leader, other) if m not in scores]
        if missing:
            out.append(_untested(base, f"no seed of {' and '.join(missing)} has a readable "
                                       f"{schema.PREDICTIONS_CSV}"))
        elif unpaired:
            out.append(_untested(base, unpaired))
        else:
            a, b = scores[leader]["accuracy"], scores[other]["accuracy"]
            difference = difference_estimate(a, b)
            out.append(Comparison(dataset, test_set, leader, other, difference, a.n_seeds, b.n_seeds,
                                  n_images[leader], seeds_needed(a, b, difference)))
    return out


def _untested(base: Comparison, reason: str) -> Comparison:
    return Comparison(base.dataset, base.tested_on, base.leader, base.other, reason=reason)


def _paired_scores(predictions: dict[str, list[pd.DataFrame]]
                   ) -> tuple[dict[str, dict[str, SeedScores]], dict[str, int], str, bool]:
    """(SeedScores and image count per model, a problem to note or '', whether the models are paired): every
    model on the images all of them predicted, resampled together; when they were not scored on the same
    images, each model on its own."""
    usable = {model: frames for model, frames in predictions.items() if frames}
    if not usable:
        return {}, {}, "", False
    n_classes = max(_n_classes(frame) for frames in usable.values() for frame in frames)
    shared = sorted(set.intersection(*(set(frame.index) for frames in usable.values() for frame in frames)))
    truths = [frame.loc[shared, schema.PREDICTION_TRUE].to_numpy() for frames in usable.values() for frame in frames]
    if shared and all(np.array_equal(truths[0], truth) for truth in truths):
        predicted = {model: np.stack([frame.loc[shared, schema.PREDICTION_PRED].to_numpy() for frame in frames])
                     for model, frames in usable.items()}
        problem = "" if all(len(frame) == len(shared) for frames in usable.values() for frame in frames) else (
            f"the models predicted different test images: intervals and comparisons use the {len(shared):,} "
            f"they share")
        scores = resample_scores(truths[0], predicted, n_classes)
        return scores, {model: len(shared) for model in usable}, problem, True
    problem = ("the models' predictions.csv disagree on y_true for the same index: they were not scored on the same "
               "test images, so they are not compared")
    alone: dict[str, dict[str, SeedScores]] = {}
    sizes = {}
    for model, frames in usable.items():
        own = sorted(set.intersection(*(set(frame.index) for frame in frames)))
        guesses = np.stack([frame.loc[own, schema.PREDICTION_PRED].to_numpy() for frame in frames])
        alone.update(resample_scores(frames[0].loc[own, schema.PREDICTION_TRUE].to_numpy(), {model: guesses},
                                     n_classes))
        sizes[model] = len(own)
    return alone, sizes, problem, False


def _predictions(results: Results, dataset: str, model: str, test_set: str) -> list[pd.DataFrame]:
    """One frame per seed of the model that has a readable predictions.csv, indexed by the test image index."""
    ok = results.ok
    rows = ok[(ok["dataset"] == dataset) & (ok["model"] == model)]
    rows = rows[tested_on(rows) == test_set].sort_values("seed")
    frames = []
    for job_id in rows["job_id"]:
        frame = results.predictions(job_id)
        if frame is not None and len(frame):
            frames.append(frame.drop_duplicates(schema.PREDICTION_INDEX).set_index(schema.PREDICTION_INDEX))
    return frames


def _n_classes(frame: pd.DataFrame) -> int:
    """The class count the engine scored with: one probability column per class, else the largest label seen."""
    probabilities = sum(1 for column in frame.columns if str(column).startswith("p_"))
    labels = int(max(frame[schema.PREDICTION_TRUE].max(), frame[schema.PREDICTION_PRED].max())) + 1
    return max(probabilities, labels)
