"""The one way a job's dataset is loaded, for ``run_job`` and the benchmark notebook alike.

A dataset loads at the recipe's ``image_size`` and ``val_size``. A job that starts from trained weights with
``image_size=0`` loads at the weights' own input size (224 px for most ImageNet weights), so the model sees
images the size it was trained on. Nothing here imports a framework until a model's weights are planned.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from imgbench.engine.recipe import Recipe
from imgbench.engine.weights import Start, plan_start
from imgbench.paths import DataFolders
from imgbench.registry import get_registry
from imgbench.specs import LoadedDataset, ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    from imgbench.registry import Registry


def load_dataset(dataset: str, recipe: Recipe, *, model: str | ModelSpec | None = None,
                 data_dir: str | os.PathLike | None = None, registry: Registry | None = None,
                 start: Start | None = None) -> LoadedDataset:
    """Load ``dataset`` (a registered name, ``imagefolder:/path``) for a job with ``recipe``.

    With ``model`` the size follows its starting weights (see :func:`start_image_size`; ``start`` is the
    job's plan when the caller made it already); without, the recipe's ``image_size`` (0: the dataset's own).
    ``data_dir`` is where local copies live (``--data-dir``; default ``IMGBENCH_DATA_DIR``).
    """
    registry = registry or get_registry()
    spec, arg = registry.dataset(dataset)
    model_spec = registry.model(model) if isinstance(model, str) else model
    size = start_image_size(model_spec, recipe, start) if model_spec is not None else recipe.image_size
    return spec.load(image_size=size, val_size=recipe.val_size, arg=arg, **DataFolders.resolve(data_dir).as_kwargs())


def start_image_size(model_spec: Any, recipe: Recipe, start: Start | None = None) -> int:
    """The size to load the data at: the recipe's, or with ``image_size=0`` and trained weights, theirs."""
    start = start or plan_start(model_spec, recipe.pretrained, recipe.weights)
    if not recipe.image_size and start.data_config is not None:
        return start.data_config.input_size
    return recipe.image_size
