"""Predictions and classification metrics. Every metric is scikit-learn's except ECE, which it lacks.

A job that learnt nothing is a finding, not a success: :func:`classification_metrics` compares the test
accuracy with always predicting the test set's most frequent class (an exact one-sided binomial test, scipy's),
and :func:`learning_finding` adds the validation curve's verdict. The job's status stays ``ok``; the
``did_not_learn`` column says why it is flagged.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from imgbench import schema
from imgbench.engine.data import ImageBatches

ECE_BINS = 15
TOP_K = 5
CHANCE_ALPHA = 0.05  # a job learnt when its accuracy beats chance at this one-sided significance level


def predict_logits(model: torch.nn.Module, data: ImageBatches, batch_size: int,
                   autocast: Callable[[], AbstractContextManager]) -> torch.Tensor:
    """Float32 logits ``(N, K)`` on the CPU for a whole split, in eval mode."""
    model.eval()
    chunks = []
    with torch.no_grad():
        for x, _y in data.batches(batch_size):
            with autocast():
                chunks.append(model(x).float())
    return torch.cat(chunks).cpu()


def loss_and_accuracy(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Plain cross-entropy (no label smoothing) and top-1 accuracy."""
    y = y.cpu()
    loss = torch.nn.functional.cross_entropy(logits, y).item()
    return loss, (logits.argmax(1) == y).double().mean().item()


def probabilities(logits: torch.Tensor) -> np.ndarray:
    return torch.softmax(logits.double(), dim=1).numpy()


def predictions_frame(indices: np.ndarray, y_true: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    """One row per test image: its index in the test split, true and predicted class, class probabilities."""
    frame = pd.DataFrame(dict(zip(schema.PREDICTION_COLUMNS, (indices, y_true, probs.argmax(1)))))
    columns = pd.DataFrame(probs, columns=[f"p_{k}" for k in range(probs.shape[1])])
    return pd.concat([frame, columns], axis=1)


def classification_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Top-1/top-5, balanced accuracy, macro/weighted/per-class P/R/F1, confusion matrix, log loss, ECE."""
    from sklearn import metrics as skm

    labels = np.arange(probs.shape[1])
    y_pred = probs.argmax(1)
    result: dict[str, Any] = {
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "top5_accuracy": (skm.top_k_accuracy_score(y_true, probs, k=TOP_K, labels=labels)
                          if len(labels) > TOP_K else None),
        "balanced_accuracy": skm.balanced_accuracy_score(y_true, y_pred),
    }
    for average in ("macro", "weighted"):
        precision, recall, f1, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=average, zero_division=0)
        result.update({f"precision_{average}": precision, f"recall_{average}": recall, f"f1_{average}": f1})
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0)
    result["per_class"] = {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
                           "support": support.tolist()}
    result["confusion_matrix"] = skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    result["log_loss"] = skm.log_loss(y_true, probs, labels=labels)
    result["ece"] = expected_calibration_error(y_true, probs)
    result.update(chance_test(y_true, y_pred))
    return {k: float(v) if isinstance(v, (np.floating, float)) else v for k, v in result.items()}


def above_chance(correct: int, n: int, chance: float) -> float:
    """One-sided exact binomial p-value of ``correct`` hits in ``n`` against a hit rate of ``chance``."""
    from scipy.stats import binomtest

    return float(binomtest(int(correct), int(n), float(chance), alternative="greater").pvalue)


def majority_share(y: np.ndarray) -> tuple[int, float]:
    """The most frequent class and its share of ``y``: the accuracy of always predicting it."""
    counts = np.bincount(np.asarray(y, dtype=np.int64))
    return int(counts.argmax()), float(counts.max() / len(y))


def chance_test(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """``chance_accuracy``, ``chance_p_value`` and the test set's ``did_not_learn`` finding ('' when it learnt)."""
    majority, chance = majority_share(y_true)
    correct = int((np.asarray(y_pred) == np.asarray(y_true)).sum())
    p_value = above_chance(correct, len(y_true), chance)
    finding = ""
    if p_value >= CHANCE_ALPHA:
        finding = (f"test accuracy {correct / len(y_true):.4f} is not above chance {chance:.4f} (always class "
                   f"{majority}; binomial p = {p_value:.2g})")
        predicted = np.unique(y_pred)
        if len(predicted) == 1:
            finding += f"; every test image was predicted as class {int(predicted[0])}"
    return {"chance_accuracy": chance, "chance_p_value": p_value, "did_not_learn": finding}


def learning_finding(test_finding: str, history: Sequence[Mapping[str, Any]], val_y: np.ndarray) -> str:
    """The job's ``did_not_learn``: the test set's finding, and a validation curve that never rose above chance.

    Each epoch's validation accuracy is tested as the test accuracy is; the curve rose above chance when any
    epoch's did. A job without a validation split (``val_size=0``) is judged on its test set alone.
    """
    accuracies = [row["val_accuracy"] for row in history if row.get("val_accuracy") is not None]
    if not accuracies or not len(val_y):
        return test_finding
    _, chance = majority_share(val_y)
    best = max(accuracies)
    p_value = above_chance(round(best * len(val_y)), len(val_y), chance)
    if p_value < CHANCE_ALPHA:
        return test_finding
    curve = (f"validation accuracy never rose above chance {chance:.4f} (best {best:.4f} of "
             f"{len(accuracies)} epoch{'s' if len(accuracies) != 1 else ''}; binomial p = {p_value:.2g})")
    return "; ".join(part for part in (test_finding, curve) if part)


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over equal-width confidence bins of |accuracy - mean confidence|, weighted by the bin's share."""
    confidence = probs.max(1)
    correct = (probs.argmax(1) == y_true).astype(np.float64)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)  # bins are (lo, hi]
    gap = np.bincount(which, weights=correct, minlength=bins) - np.bincount(which, weights=confidence, minlength=bins)
    return float(np.abs(gap).sum() / len(y_true))
