"""A realistic synthetic results folder for the report's tests and its screenshot script.

It follows the contracts exactly (results.csv columns, metrics.json keys, predictions.csv, history.csv,
OUT/run.json). Predictions are drawn so each model reaches a planned accuracy, with correlated errors
(hard images are hard for every model) as real classifiers have; every metric is then computed from those
predictions with scikit-learn, so results.csv, metrics.json and predictions.csv agree with each other.
"""

from __future__ import annotations

import hashlib
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from imgbench.schema import RESULT_COLUMNS

CLASSES = {
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    "mnist": [str(d) for d in range(10)],
}
# dataset -> model -> planned accuracy. cifar10: a clear leader; mnist: the top two are tied.
PLAN = {
    "cifar10": {"timm/resnet18": 0.86, "keras/mobilenet_v3_small": 0.74, "timm/vit_tiny_patch16_224": 0.66},
    "mnist": {"timm/resnet18": 0.988, "keras/mobilenet_v3_small": 0.982, "timm/vit_tiny_patch16_224": 0.95},
}
# model -> (train img/s, infer img/s, latency ms, params, flops per image, peak MB)
COSTS = {
    "timm/resnet18": (2100.0, 9800.0, 3.1, 11.18e6, 0.56e9, 1450.0),
    "keras/mobilenet_v3_small": (3900.0, 21500.0, 4.6, 1.53e6, 0.06e9, 820.0),
    "timm/vit_tiny_patch16_224": (640.0, 2900.0, 5.2, 5.53e6, 1.26e9, 2210.0),
}
FAILED = (("timm/vit_tiny_patch16_224", "mnist", 2),)
FAILED_ERROR = ("RuntimeError: mat1 and mat2 shapes cannot be multiplied (64x192 and 768x10)\n"
                "  in cell 4: result = run_job(model, dataset, seed=seed, out_dir=job_dir, **params)")
RESULTS_COLUMNS = list(RESULT_COLUMNS)  # the public schema


def make_results(out: Path, *, plan: dict = PLAN, seeds=(0, 1, 2), failed=FAILED, n_test: int = 300,
                 epochs: int = 4, speed: dict[str, float] | None = None, accuracy_shift: float = 0.0,
                 seed_jitter: float = 0.05, split_sizes: tuple[int, int] | None = None) -> Path:
    """Write a results folder at ``out``. ``speed`` scales a model's throughput (1.0 = as in COSTS);
    ``seed_jitter`` times the planned error rate is the seed-to-seed spread of accuracy; ``split_sizes``
    (train, test) are the whole splits the 5,000 training and ``n_test`` test images came from (unrecorded,
    as in results written before they were, when None)."""
    out = Path(out)
    rows = []
    for dataset, models in plan.items():
        classes = CLASSES[dataset]
        data_rng = np.random.default_rng(_stable(dataset))
        y_true = data_rng.integers(0, len(classes), n_test)
        difficulty = data_rng.random(n_test)  # hard images are hard for every model
        for model, planned in models.items():
            for seed in seeds:
                rng = np.random.default_rng(_stable(dataset, model, seed))
                job_id = f"{model.replace('/', '-')}__{dataset}__s{seed}__{_hash(dataset, model, seed)[:8]}"
                job_dir = out / "jobs" / job_id
                job_dir.mkdir(parents=True, exist_ok=True)
                if (model, dataset, seed) in failed:
                    rows.append(_failed_row(job_id, model, dataset, seed))
                    continue
                accuracy = min(0.999, planned + accuracy_shift + rng.normal(0, seed_jitter * (1 - planned)))
                metrics = _job(job_dir, rng, model, dataset, seed, classes, y_true, difficulty, accuracy, epochs,
                               (speed or {}).get(model, 1.0), split_sizes)
                rows.append({**{c: metrics.get(c) for c in RESULTS_COLUMNS}, "job_id": job_id,
                             "duration_s": metrics["train_time_s"] + 4.0,
                             "notebook": f"jobs/{job_id}/notebook.ipynb"})
    pd.DataFrame(rows, columns=RESULTS_COLUMNS).to_csv(out / "results.csv", index=False)
    (out / "run.json").write_text(json.dumps({
        "command": "imgbench run --suite quick --seeds " + " ".join(map(str, seeds)), "suite": "quick",
        "grid": {"models": sorted({m for ms in plan.values() for m in ms}), "datasets": list(plan),
                 "seeds": list(seeds)}}, indent=2))
    return out


def _job(job_dir, rng, model, dataset, seed, classes, y_true, difficulty, accuracy, epochs, speed,
         split_sizes) -> dict:
    k, n = len(classes), len(y_true)
    score = difficulty + rng.normal(0, 0.12, n)
    correct = np.argsort(np.argsort(score)) < round(accuracy * n)
    confused = np.where(rng.random(n) < 0.6, (y_true + 1) % k, rng.integers(0, k, n))  # a neighbour class
    confused = np.where(confused == y_true, (y_true + 2) % k, confused)
    y_pred = np.where(correct, y_true, confused)
    probs = rng.dirichlet(np.ones(k), n) * 0.3
    probs[np.arange(n), y_pred] += 0.7
    pd.DataFrame({"index": np.arange(n), "y_true": y_true, "y_pred": y_pred,
                  **{f"p_{i}": probs[:, i] for i in range(k)}}).to_csv(job_dir / "predictions.csv", index=False)
    final_val = accuracy - 0.01
    history = pd.DataFrame({
        "epoch": np.arange(1, epochs + 1),
        "train_loss": [2.0 * 0.55 ** e for e in range(epochs)],
        "train_accuracy": [min(1.0, final_val * (1 - 0.5 * 0.45 ** e) + 0.02) for e in range(epochs)],
        "val_loss": [2.1 * 0.6 ** e for e in range(epochs)],
        "val_accuracy": [final_val * (1 - 0.5 * 0.3 ** (2 * e)) + rng.normal(0, 0.004) for e in range(epochs)],
        "lr": [0.1 * 0.5 * (1 + np.cos(np.pi * e / epochs)) for e in range(epochs)],
        "epoch_time_s": rng.normal(12.0, 0.3, epochs)})
    history.to_csv(job_dir / "history.csv", index=False)
    precision, recall, f1, support = skm.precision_recall_fscore_support(y_true, y_pred, labels=range(k),
                                                                          zero_division=0)
    train_ips, infer_ips, latency, params, flops, memory = COSTS[model]
    jitter = lambda: 1 + rng.normal(0, 0.01)  # noqa: E731 - run-to-run timing noise
    recipe = {"image_size": 0, "epochs": epochs, "batch_size": 128, "optimizer": "sgd", "lr": 0.1,
              "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine", "augment": "flip_crop",
              "val_size": 0.1, "train_samples": 5000, "test_samples": n, "device": "auto"}
    metrics = {
        "model": model, "family": model.split("/")[0], "plugin": model.split("/")[0], "dataset": dataset,
        "seed": seed, "status": "ok", "error": None,
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "top5_accuracy": skm.top_k_accuracy_score(y_true, probs, k=5, labels=range(k)),
        "balanced_accuracy": skm.balanced_accuracy_score(y_true, y_pred),
        "f1_macro": skm.f1_score(y_true, y_pred, average="macro", zero_division=0),
        "precision_macro": skm.precision_score(y_true, y_pred, average="macro", zero_division=0),
        "recall_macro": skm.recall_score(y_true, y_pred, average="macro", zero_division=0),
        "f1_weighted": skm.f1_score(y_true, y_pred, average="weighted", zero_division=0),
        "precision_weighted": skm.precision_score(y_true, y_pred, average="weighted", zero_division=0),
        "recall_weighted": skm.recall_score(y_true, y_pred, average="weighted", zero_division=0),
        "log_loss": skm.log_loss(y_true, probs, labels=range(k)),
        "ece": float(abs(probs.max(axis=1).mean() - (y_pred == y_true).mean())),
        "train_throughput": train_ips * speed * jitter(), "infer_throughput": infer_ips * speed * jitter(),
        "latency_p50_ms": latency / speed * jitter(), "latency_p95_ms": latency * 1.2 / speed,
        "latency_p99_ms": latency * 1.5 / speed, "params": params, "flops": flops,
        "peak_memory_mb": memory * jitter(), "epochs": epochs, "batch_size": 128,
        "image_size": 32 if dataset == "cifar10" else 28, "model_input_size": 32, "train_samples": 5000,
        "test_samples": n, "device": "cpu", "train_time_s": 5000 * epochs / (train_ips * speed),
        "compile_time_s": 0.0, "time_to_target_s": None, "best_val_accuracy": float(history["val_accuracy"].max()),
        "dataset_fingerprint": _hash(dataset)[:16], "config_hash": _hash(dataset, model, seed)[:12],
        "train_split_samples": split_sizes and split_sizes[0], "test_split_samples": split_sizes and split_sizes[1],
        "recipe": recipe, "classes": classes,
        "per_class": {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
                      "support": support.tolist()},
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=range(k)).tolist(),
        "phases": {"data": 1.2, "build": 0.4, "train": 5000 * epochs / train_ips, "evaluate": 0.8, "bench": 6.0},
        "provenance": {"versions": {"python": "3.11.7", "torch": "2.14.0", "keras": "3.8.0", "timm": "1.0.15",
                                    "imgbench": "0.1.0", "plugin": model.split("/")[0]},
                       "device": {"name": "cpu (2 cores)", "cuda": None, "cudnn": None},
                       "git": {"commit": "0123abcd", "dirty": False}, "deterministic": True},
    }
    (job_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    return metrics


def _failed_row(job_id: str, model: str, dataset: str, seed: int) -> dict:
    return {"job_id": job_id, "model": model, "family": model.split("/")[0], "dataset": dataset, "seed": seed,
            "status": "failed", "error": FAILED_ERROR, "duration_s": 3.2,
            "notebook": f"jobs/{job_id}/notebook.ipynb"}


def _stable(*parts) -> int:
    return int(_hash(*parts)[:8], 16)


def _hash(*parts) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


class ReportPage(HTMLParser):
    """What the tests read from report.html: section ids, embedded images, leaderboard cells, verdict kinds,
    significance rows and baseline cells (all from the data-* attributes the page carries)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[str] = []
        self.leaderboard: dict[tuple[str, str, str], tuple[float | None, str]] = {}
        self.verdict_kinds: dict[str, str] = {}
        self.significance: dict[tuple[str, str], dict[str, str]] = {}  # (dataset, model against the leader)
        self.baseline: dict[tuple[str, str, str], bool] = {}
        self._table: dict[str, str] = {}
        self._row: dict[str, str] = {}
        self._cell: dict[str, str] | None = None
        self._text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = {k: v or "" for k, v in attrs}
        if tag == "section":
            self.sections.append(attrs.get("id", ""))
        elif tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag == "table":
            self._table = attrs
        elif tag == "tr":
            self._row = attrs
            if self._table.get("id") == "significance" and "data-dataset" in attrs:
                self.significance[(attrs["data-dataset"], attrs["data-model"])] = attrs
        elif tag == "div" and "data-kind" in attrs:
            self.verdict_kinds[attrs["data-dataset"]] = attrs["data-kind"]
        elif tag == "td" and "data-metric" in attrs:
            self._cell, self._text = attrs, []
            if self._table.get("id") == "baseline-changes":
                key = (self._row["data-dataset"], self._row["data-model"], attrs["data-metric"])
                self.baseline[key] = attrs["data-regression"] == "true"

    def handle_data(self, data):
        if self._cell is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            if "leaderboard" in self._table.get("class", ""):
                key = (self._table["data-dataset"], self._row["data-model"], self._cell["data-metric"])
                value = self._cell.get("data-value")
                self.leaderboard[key] = (float(value) if value else None, "".join(self._text).strip())
            self._cell = None
