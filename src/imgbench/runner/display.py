"""What the benchmark notebook shows, kept out of its cells: the recipe, sample images, training curves,
the confusion matrix and the metrics table. Also the two steps the notebook needs before training: the
recipe from its parameters, and the dataset loaded exactly as the engine would load it.

matplotlib, seaborn and pandas are imported inside the functions; this module is only used in kernels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from imgbench.engine import Recipe
    from imgbench.specs import LoadedDataset

SAMPLE_COLUMNS = 8
SAMPLE_ROWS = 2
# The scalar results worth a glance in the notebook; the full record is metrics.json.
TABLE_METRICS = (
    "status", "error", "accuracy", "top5_accuracy", "balanced_accuracy", "f1_macro", "log_loss", "ece",
    "train_throughput", "infer_throughput", "latency_p50_ms", "latency_p95_ms", "params", "flops",
    "peak_memory_mb", "train_time_s", "time_to_target_s", "best_val_accuracy", "device",
)


def recipe_from_parameters(dataset: str, values: Mapping[str, Any]) -> "Recipe":
    """The dataset's recipe with every parameter that is not None applied (None = the dataset's default)."""
    from imgbench.engine import RECIPE_FIELDS, resolve_recipe

    return resolve_recipe(dataset, {k: values[k] for k in RECIPE_FIELDS if values.get(k) is not None})


def load_dataset(dataset: str, recipe: "Recipe", data_dir: str | None = None,
                 model: str | None = None) -> "LoadedDataset":
    """Load ``dataset`` at the recipe's image size and validation share, as ``run_job`` would (with
    ``model``: at its weights' own size when the recipe starts from weights and leaves ``image_size`` 0)."""
    from imgbench import paths
    from imgbench.engine.job import start_image_size
    from imgbench.registry import get_registry

    registry = get_registry()
    spec, arg = registry.dataset(dataset)
    size = start_image_size(registry.model(model), recipe) if model else recipe.image_size
    return spec.load(image_size=size, val_size=recipe.val_size, data_dir=paths.data_dir(data_dir),
                     cache_dir=paths.cache_dir(), arg=arg)


def recipe_table(model: str, dataset: str, seed: int, recipe: "Recipe") -> "pd.DataFrame":
    import pandas as pd

    rows = {"model": model, "dataset": dataset, "seed": seed, **recipe.to_dict()}
    return pd.DataFrame({"value": [str(v) for v in rows.values()]}, index=list(rows))


def sample_grid(data: "LoadedDataset", columns: int = SAMPLE_COLUMNS, rows: int = SAMPLE_ROWS):
    """A grid of training images, evenly spread over the split, titled with their class."""
    import matplotlib.pyplot as plt
    import numpy as np

    x, y = data.train.x, data.train.y
    count = min(len(y), columns * rows)
    picks = np.linspace(0, len(y) - 1, count).astype(int) if count else []
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 2.1 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, index in zip(axes.flat, picks):
        image = x[index]
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None)
        ax.set_title(str(data.classes[int(y[index])])[:14], fontsize=8)
    h, w, c = data.image_shape
    fig.suptitle(f"{data.name}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test, "
                 f"{h}x{w}x{c}", fontsize=10)
    fig.tight_layout()
    return fig


def training_curves(history: Sequence[Mapping[str, Any]]):
    """Loss and accuracy per epoch, train against validation; None when nothing was trained."""
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    if not history:
        print("no training epochs (epochs=0): nothing to plot")
        return None
    frame = pd.DataFrame(list(history))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        long = frame.melt(id_vars="epoch", value_vars=[f"train_{metric}", f"val_{metric}"], var_name="split")
        long["split"] = long["split"].str.removesuffix(f"_{metric}")
        sns.lineplot(data=long, x="epoch", y="value", hue="split", marker="o", ax=ax)
        ax.set_ylabel(metric)
    fig.tight_layout()
    return fig


def confusion_matrix(metrics: Mapping[str, Any]):
    """The test confusion matrix, rows normalised to recall so that class sizes do not dominate."""
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    counts = np.asarray(metrics.get("confusion_matrix") or [], dtype=float)
    if counts.size == 0:
        print(f"no confusion matrix (status {metrics.get('status')})")
        return None
    classes = metrics.get("classes") or list(range(len(counts)))
    recall = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = max(4.0, 0.45 * len(classes))
    fig, ax = plt.subplots(figsize=(side + 1, side))
    sns.heatmap(recall, annot=len(classes) <= 12, fmt=".2f", cmap="Blues", vmin=0, vmax=1, square=True,
                xticklabels=classes, yticklabels=classes, ax=ax)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{metrics.get('model')} on {metrics.get('dataset')}: accuracy {metrics.get('accuracy')}")
    fig.tight_layout()
    return fig


def metrics_table(metrics: Mapping[str, Any]) -> "pd.DataFrame":
    import pandas as pd

    shown = {name: metrics.get(name) for name in TABLE_METRICS if metrics.get(name) not in (None, "")}
    return pd.DataFrame({"value": list(shown.values())}, index=list(shown), dtype=object)
