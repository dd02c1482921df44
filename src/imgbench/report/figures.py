"""The report's figures, drawn with seaborn on matplotlib Figure objects (no pyplot state, no display needed).

Every function returns a Figure or None when there is nothing to draw; ``save_figure`` writes it as PNG and
SVG. Colours are fixed per model across all figures so a reader can follow one model from plot to plot.
"""

from __future__ import annotations

import io
import math
import re
from typing import Any
from dataclasses import dataclass
from collections.abc import Set as AbstractSet
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

from imgbench.paths import atomic_write_bytes
from imgbench.report import fmt
from imgbench.report.load import Results
from imgbench.report.tables import pareto_front

PNG_DPI = 110
ROW_INCHES = 0.42  # height per model row in bar charts and heatmaps
WIDTH_INCHES = 7.5
MAX_ANNOTATED_CELLS = 15  # confusion matrices up to 15x15 get numbers in their cells
MAX_HEATMAP_CLASSES = 60  # beyond this, per-class heatmaps show the worst classes only
THEME: dict[str, Any] = {"style": "whitegrid", "context": "notebook", "font_scale": 0.9}
# an accuracy axis without intervals to show spans at least this much, so that no gap looks larger than it is
MIN_ACCURACY_SPAN = 0.05
NOT_LEARNT = " (did not learn)"


@dataclass(frozen=True)
class FigureFile:
    key: str  # e.g. "scores", "pareto"
    dataset: str
    title: str
    caption: str
    png: Path
    svg: Path


def model_palette(models: list[str]) -> dict[str, tuple[float, float, float]]:
    colours = sns.color_palette("tab10" if len(models) <= 10 else "husl", len(models))
    return dict(zip(sorted(models), colours))


def save_figure(figure: Figure, directory: Path, stem: str) -> tuple[Path, Path]:
    """Write ``stem.png`` and ``stem.svg`` atomically; returns their paths."""
    written = []
    for image_format, options in (("png", {"dpi": PNG_DPI}), ("svg", {"metadata": {"Date": None}})):
        buffer = io.BytesIO()
        figure.savefig(buffer, format=image_format, bbox_inches="tight", facecolor="white", **options)
        path = directory / f"{stem}.{image_format}"
        atomic_write_bytes(path, buffer.getvalue())
        written.append(path)
    return written[0], written[1]


def slug(text: str) -> str:
    """A file-name-safe form of a dataset or model name ('imagefolder:/x/y' -> 'imagefolder-x-y')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "dataset"


def scores(board: pd.DataFrame, ok_rows: pd.DataFrame, dataset: str, palette: dict) -> Figure:
    """Accuracy and macro F1 per model: a diamond at the mean, whiskers for the interval over seeds and test
    images (inside [0, 1]), one dot per seed; a model that did not learn is labelled so.

    Points rather than bars, because the axis is zoomed to the models' range and a cut bar would mislead; the
    zoom always takes in every whisker, so two models whose intervals overlap never look far apart.
    """
    ranked = board[board["dataset"] == dataset]
    seeds = ok_rows[ok_rows["dataset"] == dataset]
    order = list(ranked["model"])
    positions = np.arange(len(order))
    figure = _figure(WIDTH_INCHES * 1.3, 1.3 + ROW_INCHES * len(order), ncols=2)
    for ax, metric, label in zip(figure.axes, ("accuracy", "f1_macro"), ("Accuracy", "Macro F1")):
        means = ranked[f"{metric}_mean"].to_numpy(float)
        low, high = ranked[f"{metric}_low"].to_numpy(float), ranked[f"{metric}_high"].to_numpy(float)
        sns.stripplot(data=seeds, x=metric, y="model", order=order, ax=ax, color="0.35", size=4, jitter=0.12,
                      alpha=0.8, zorder=2)
        has_interval = ~np.isnan(low)
        if has_interval.any():
            ax.errorbar(means[has_interval], positions[has_interval], fmt="none", ecolor="black", capsize=4,
                        linewidth=1.2, zorder=3,
                        xerr=[means[has_interval] - low[has_interval], high[has_interval] - means[has_interval]])
        ax.scatter(means, positions, marker="D", s=70, color=[palette[m] for m in order], edgecolor="black",
                   zorder=4)
        finite = np.concatenate([means, low[has_interval], high[has_interval], seeds[metric].to_numpy(float)])
        ax.set_xlim(_zoomed_limits(finite))
        ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0 if np.nanmax(finite) - np.nanmin(finite)
                                                      > 0.05 else 1))
        ax.set(xlabel="", ylabel="", title=label)
        if ax is figure.axes[1]:
            ax.tick_params(axis="y", labelleft=False)
    flagged = set(ranked.loc[ranked["did_not_learn"] != "", "model"])
    figure.axes[0].set_yticks(positions, [m + NOT_LEARNT if m in flagged else m for m in order])
    return figure


def pareto(board: pd.DataFrame, dataset: str, palette: dict) -> Figure | None:
    """Accuracy against inference throughput (log scale) with the Pareto front drawn as a step line."""
    ranked = board[board["dataset"] == dataset].dropna(subset=["infer_throughput_mean", "accuracy_mean"])
    if ranked.empty:
        return None
    figure = _figure(WIDTH_INCHES, 4.2)
    ax = figure.axes[0]
    learnt = ranked[ranked["did_not_learn"] == ""]
    front = learnt[pareto_front(learnt, "infer_throughput_mean", "accuracy_mean")]
    front = front.sort_values("infer_throughput_mean")
    ax.step(front["infer_throughput_mean"], front["accuracy_mean"], where="post", color="grey",
            linestyle="--", linewidth=1, label="Pareto front", zorder=1)
    noisy = ranked.get("infer_throughput_noisy", pd.Series(False, index=ranked.index))
    _scatter_models(ax, ranked, "infer_throughput_mean", palette, highlight=set(front["model"]),
                    hollow=set(ranked.loc[noisy, "model"]))
    _log_axis(ax, lambda value: f"{value:,.0f}")
    ax.set(xlabel="Inference throughput (img/s, log scale)", ylabel="Accuracy",
           title=f"Accuracy vs. inference speed on {dataset}")
    ax.legend(loc="lower left", fontsize="small")
    return figure


def accuracy_vs_params(board: pd.DataFrame, dataset: str, palette: dict) -> Figure | None:
    ranked = board[board["dataset"] == dataset].dropna(subset=["params_mean", "accuracy_mean"])
    if ranked.empty:
        return None
    figure = _figure(WIDTH_INCHES, 4.2)
    ax = figure.axes[0]
    _scatter_models(ax, ranked, "params_mean", palette)
    _log_axis(ax, lambda value: fmt.number("params", value))
    ax.set(xlabel="Parameters (log scale)", ylabel="Accuracy", title=f"Accuracy vs. model size on {dataset}")
    return figure


def history(results: Results, dataset: str, palette: dict) -> Figure | None:
    """Validation accuracy per epoch; the line is the mean over seeds, the band spans min to max."""
    rows = results.ok[results.ok["dataset"] == dataset]
    frames = []
    for job_id, model, seed in zip(rows["job_id"], rows["model"], rows["seed"]):
        history = results.history(job_id)
        if history is not None and {"epoch", "val_accuracy"} <= set(history.columns):
            frames.append(history.assign(model=model, seed=seed))
    data = pd.concat(frames, ignore_index=True).dropna(subset=["val_accuracy"]) if frames else None
    if data is None or data.empty:
        return None
    figure = _figure(WIDTH_INCHES, 4.2)
    ax = figure.axes[0]
    sns.lineplot(data=data, x="epoch", y="val_accuracy", hue="model", palette=palette, errorbar=("pi", 100),
                 marker="o", markersize=4, ax=ax)
    epochs = sorted(int(epoch) for epoch in data["epoch"].unique())
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs only: no tick at 1.2
    if len(epochs) <= 20:  # every epoch, also when there is just one
        ax.set_xticks(epochs)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.0f}"))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=None))
    ax.set(xlabel="Epoch", ylabel="Validation accuracy", title=f"Validation accuracy per epoch on {dataset}")
    ax.legend(fontsize="small", title=None)
    return figure


def confusion(results: Results, dataset: str, model: str) -> Figure | None:
    """Row-normalised confusion matrix of ``model``, summed over its seeds (rows: true class)."""
    matrices, classes = _job_metrics(results, dataset, model, "confusion_matrix")
    if not matrices:
        return None
    total = np.sum([np.asarray(m, float) for m in matrices], axis=0)
    rates = total / np.clip(total.sum(axis=1, keepdims=True), 1, None)
    labels = classes if classes and len(classes) == len(total) else [str(i) for i in range(len(total))]
    side = min(9.0, 2.5 + 0.45 * len(labels))
    figure = _figure(side + 1.2, side)
    annotate = len(labels) <= MAX_ANNOTATED_CELLS
    sns.heatmap(pd.DataFrame(rates, index=labels, columns=labels), ax=figure.axes[0], cmap="Blues",
                vmin=0, vmax=1, square=True, annot=annotate, fmt=".0%" if annotate else "",
                annot_kws={"fontsize": 7}, cbar_kws={"label": "share of the true class", "shrink": 0.7},
                xticklabels=True, yticklabels=True)
    figure.axes[0].set(xlabel="Predicted", ylabel="True",
                       title=f"{model} on {dataset} ({fmt.plural(len(matrices), 'seed')})")
    return figure


def per_class_f1(results: Results, board: pd.DataFrame, dataset: str) -> Figure | None:
    """Heatmap of per-class F1 (mean over seeds): models (best first) down, classes across."""
    rows, classes = {}, None
    for model in board.loc[board["dataset"] == dataset, "model"]:
        per_class, names = _job_metrics(results, dataset, model, "per_class")
        f1s = [p["f1"] for p in per_class if isinstance(p, dict) and "f1" in p]
        if f1s:
            rows[model] = np.mean(np.asarray(f1s, float), axis=0)
            classes = classes or names
    if not rows:
        return None
    width = len(next(iter(rows.values())))
    table = pd.DataFrame(rows, index=classes if classes and len(classes) == width else range(width)).T
    if table.shape[1] > MAX_HEATMAP_CLASSES:  # keep the classes where models struggle most
        table = table[table.mean().nsmallest(MAX_HEATMAP_CLASSES).index]
    figure = _figure(min(16.0, 3.0 + 0.45 * table.shape[1]), 1.6 + ROW_INCHES * len(table))
    annotate = table.shape[1] <= 20
    # colour from the worst score up: on easy datasets a 0..1 scale would paint every cell the same
    floor = max(0.0, np.floor(np.nanmin(table.to_numpy()) * 20) / 20 - 0.05)
    sns.heatmap(table, ax=figure.axes[0], cmap="viridis", vmin=floor, vmax=1, annot=annotate, fmt=".2f",
                annot_kws={"fontsize": 7}, cbar_kws={"label": "F1"}, xticklabels=True, yticklabels=True)
    figure.axes[0].set(xlabel="Class", ylabel="", title=f"Per-class F1 on {dataset}")
    figure.axes[0].tick_params(axis="x", labelrotation=45)
    return figure


def _job_metrics(results: Results, dataset: str, model: str, key: str) -> tuple[list, list[str] | None]:
    """The ``key`` entry of metrics.json for every ok job of (dataset, model), and the class names."""
    rows = results.ok[(results.ok["dataset"] == dataset) & (results.ok["model"] == model)]
    values, classes = [], None
    for job_id in rows["job_id"]:
        metrics = results.metrics(job_id)
        if metrics and metrics.get(key) is not None:
            names = [str(c) for c in metrics.get("classes") or []]
            if classes is not None and names != classes:  # a seed scored on other classes cannot be averaged in
                results.note(f"jobs/{job_id}/metrics.json: classes differ from the other seeds; left out of {key}")
                continue
            values.append(metrics[key])
            classes = names
    return values, classes


def _scatter_models(ax: Axes, ranked: pd.DataFrame, x: str, palette: dict,
                    highlight: AbstractSet[str] = frozenset(), hollow: AbstractSet[str] = frozenset()) -> None:
    """One point per model at (x, accuracy) with its accuracy interval; ``highlight`` outlined, ``hollow`` drawn
    open (its x is too noisy to rank on), a model that did not learn as a cross."""
    for _, row in ranked.iterrows():
        on_front, colour, flagged = row["model"] in highlight, palette[row["model"]], bool(row["did_not_learn"])
        style = ({"marker": "x", "color": colour} if flagged else
                 {"facecolor": "white" if row["model"] in hollow else colour,
                  "edgecolor": "black" if on_front else colour})
        ax.scatter(row[x], row["accuracy_mean"], s=70 if on_front else 40, linewidth=1.2, zorder=3, **style)
        if not math.isnan(row["accuracy_low"]):
            ax.errorbar(row[x], row["accuracy_mean"], color=colour, zorder=2, capsize=2,
                        yerr=[[row["accuracy_mean"] - row["accuracy_low"]],
                              [row["accuracy_high"] - row["accuracy_mean"]]], linewidth=1)
        ax.annotate(row["model"] + (NOT_LEARNT if flagged else ""), (row[x], row["accuracy_mean"]),
                    textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=None))
    ax.margins(x=0.25)
    ax.set_ylim(_accuracy_limits(ranked))


def _accuracy_limits(ranked: pd.DataFrame) -> tuple[float, float]:
    """y limits that hold every point and every interval, padded: an axis zoomed to the points alone would
    stretch a gap their intervals show to be noise across the whole height."""
    values = ranked[["accuracy_mean", "accuracy_low", "accuracy_high"]].to_numpy(float)
    values = values[np.isfinite(values)]
    low, high = float(values.min()), float(values.max())
    if ranked["accuracy_low"].isna().all() and high - low < MIN_ACCURACY_SPAN:
        middle = (low + high) / 2
        low, high = middle - MIN_ACCURACY_SPAN / 2, middle + MIN_ACCURACY_SPAN / 2
    pad = max(0.005, (high - low) * 0.12)
    return max(-pad / 2, low - pad), min(1.0 + pad / 2, high + pad)  # room for a whisker's cap at 0 or 100%


def _log_axis(ax, label) -> None:
    """A log x axis with plain labels; within one decade matplotlib labels minor ticks too, so both get them."""
    ax.set_xscale("log")
    formatter = FuncFormatter(lambda value, _: label(value))
    ax.xaxis.set_major_formatter(formatter)
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda value, _: label(value) if _few_decades(ax) else ""))
    ax.tick_params(axis="x", which="minor", labelsize=7)


def _few_decades(ax) -> bool:
    low, high = ax.get_xlim()
    return low > 0 and high / low < 10


def _zoomed_limits(values: np.ndarray) -> tuple[float, float]:
    """x limits that show the differences between models instead of bars that all reach 95%."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = float(values.min()), float(values.max())
    pad = max(0.01, (high - low) * 0.15)
    return max(0.0, low - pad), min(1.0 + pad / 2, high + pad)


def _figure(width: float, height: float, ncols: int = 1) -> Figure:
    sns.set_theme(**THEME)
    figure = Figure(figsize=(width, height), layout="constrained")
    figure.subplots(1, ncols, squeeze=False)
    return figure
