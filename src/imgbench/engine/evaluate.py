"""Predictions and classification metrics. Every metric is scikit-learn's except ECE, which it lacks."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from imgbench import schema
from imgbench.engine.data import ImageBatches

ECE_BINS = 15
TOP_K = 5


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
    return {k: float(v) if isinstance(v, (np.floating, float)) else v for k, v in result.items()}


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over equal-width confidence bins of |accuracy - mean confidence|, weighted by the bin's share."""
    confidence = probs.max(1)
    correct = (probs.argmax(1) == y_true).astype(np.float64)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)  # bins are (lo, hi]
    gap = np.bincount(which, weights=correct, minlength=bins) - np.bincount(which, weights=confidence, minlength=bins)
    return float(np.abs(gap).sum() / len(y_true))
