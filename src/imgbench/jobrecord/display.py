"""What the benchmark notebook shows, kept out of its cells: the recipe, sample images, training curves,
the confusion matrix and the metrics table. Also the recipe from the notebook's parameters; the notebook loads
its dataset with the engine's own ``imgbench.engine.load_dataset``.

matplotlib and pandas are imported inside the functions; this module is only used in kernels. The figures are
drawn cheaply (no layout engine: Jupyter's inline backend crops each figure to its contents when it saves it),
because a job's figures are part of its wall time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from imgbench.engine import RECIPE_FIELDS, Recipe, resolve_recipe

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from imgbench.engine import Recipe
    from imgbench.specs import LoadedDataset

SAMPLE_COLUMNS = 8
SAMPLE_ROWS = 2
TITLE_DIGITS = 4  # significant digits of a number in a figure's title
# The scalar results worth a glance in the notebook; the full record is metrics.json.
TABLE_METRICS = (
    "status", "error", "accuracy", "top5_accuracy", "balanced_accuracy", "f1_macro", "log_loss", "ece",
    "train_throughput", "infer_throughput", "latency_p50_ms", "latency_p95_ms", "params", "flops",
    "peak_memory_mb", "train_time_s", "time_to_target_s", "best_val_accuracy", "device",
)


def recipe_from_parameters(dataset: str, values: Mapping[str, Any]) -> "Recipe":
    """The job's recipe from the notebook's parameters.

    With every field given (the runner injects the recipe it resolved when it expanded the grid), that very
    recipe, not resolved again. Run by hand, the dataset's recipe with every parameter that is not None
    applied (None = the dataset's default).
    """
    given = {name: values.get(name) for name in RECIPE_FIELDS}
    if None not in given.values():
        return Recipe.from_dict(given)
    return resolve_recipe(dataset, {name: value for name, value in given.items() if value is not None})


def recipe_table(model: str, dataset: str, seed: int, recipe: "Recipe") -> "pd.DataFrame":
    import pandas as pd

    rows = {"model": model, "dataset": dataset, "seed": seed, **recipe.to_dict()}
    return pd.DataFrame({"value": [str(v) for v in rows.values()]}, index=list(rows))


def sample_grid(data: "LoadedDataset", columns: int = SAMPLE_COLUMNS, rows: int = SAMPLE_ROWS):
    """A grid of training images, evenly spread over the split, labelled with their class.

    One mosaic image on one axes: sixteen separate axes cost more to lay out and draw than the whole job's
    other figures together.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    x, y = data.train.x, data.train.y
    count = min(len(y), columns * rows)
    picks = np.linspace(0, len(y) - 1, count).astype(int) if count else np.array([], dtype=int)
    h, w, c = data.image_shape
    gap = max(1, h // 8)
    mosaic = np.full((rows * (h + gap), columns * (w + gap), c), 255, dtype=np.uint8)
    fig, ax = plt.subplots(figsize=(1.6 * columns, 2.1 * rows))
    ax.axis("off")
    for slot, index in enumerate(picks):
        top, left = (slot // columns) * (h + gap), (slot % columns) * (w + gap)
        mosaic[top:top + h, left:left + w] = x[index]
        ax.text(left + w / 2, top + h, str(data.classes[int(y[index])])[:14], ha="center", va="top", fontsize=8)
    ax.imshow(mosaic[..., 0] if c == 1 else mosaic, cmap="gray" if c == 1 else None, vmin=0, vmax=255)
    ax.set_title(f"{data.name}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test, "
                 f"{h}x{w}x{c}", fontsize=10)
    return fig


def training_curves(history: Sequence[Mapping[str, Any]]):
    """Loss and accuracy per epoch, train against validation; None when nothing was trained."""
    import matplotlib.pyplot as plt
    import pandas as pd
    from matplotlib.ticker import MaxNLocator

    if not history:
        print("no training epochs (epochs=0): nothing to plot")
        return None
    frame = pd.DataFrame(list(history))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    fig.subplots_adjust(wspace=0.25)
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for split in ("train", "val"):
            if frame[f"{split}_{metric}"].notna().any():
                ax.plot(frame["epoch"], frame[f"{split}_{metric}"], marker="o", label=split)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no 1.5
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.legend(title="split")
    return fig


def confusion_matrix(metrics: Mapping[str, Any]):
    """The test confusion matrix, rows normalised to recall so that class sizes do not dominate."""
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.asarray(metrics.get("confusion_matrix") or [], dtype=float)
    if counts.size == 0:
        print(f"no confusion matrix (status {metrics.get('status')})")
        return None
    classes = [str(c) for c in (metrics.get("classes") or range(len(counts)))]
    recall = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = max(4.0, 0.45 * len(classes))
    fig, ax = plt.subplots(figsize=(side + 1, side))
    image = ax.imshow(recall, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if len(classes) <= 12:
        for (i, j), value in np.ndenumerate(recall):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if value > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=90)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{metrics.get('model')} on {metrics.get('dataset')}: accuracy {_rounded(metrics.get('accuracy'))}")
    return fig


def _rounded(value: Any) -> str:
    """A number as a title shows it: ``TITLE_DIGITS`` significant digits; anything else as it is."""
    return f"{value:.{TITLE_DIGITS}g}" if isinstance(value, float) else str(value)


def metrics_table(metrics: Mapping[str, Any]) -> "pd.DataFrame":
    import pandas as pd

    shown = {name: metrics.get(name) for name in TABLE_METRICS if metrics.get(name) not in (None, "")}
    return pd.DataFrame({"value": list(shown.values())}, index=list(shown), dtype=object)
