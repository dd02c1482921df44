"""Resolving a job's recipe: its dataset's defaults, the fine-tuning defaults, the overrides, all checked.

Every model is trained with the recipe of its dataset unless a parameter says otherwise, so differences in
the results come from the architectures. The fields themselves, with their types, generic defaults, ranges
and help, are declared once in :mod:`imgbench.recipe_fields` (``Recipe()`` is the generic recipe of a
dataset that declares none); each dataset's own defaults live with the dataset (``DatasetSpec.recipe``).
``resolve_recipe`` is cheap and imports no framework: the runner calls it to reject a bad grid before any
job starts.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Mapping, Sequence

from imgbench.engine.weights import file_sha256, resolve_weights_path
from imgbench.errors import UsageError
from imgbench.recipe_fields import Recipe, RecipeValue, checked_value
from imgbench.registry import get_registry
from imgbench.specs import DatasetSpec, RecipeDefaults

if TYPE_CHECKING:  # pragma: no cover
    from imgbench.registry import Registry

HASH_CHARS = 12

# Jobs that start from trained weights (pretrained=true or weights=...) fine-tune: a tenth of the rate, a
# short warm-up, fewer epochs, and the weights' own input size (image_size=0). A dataset's
# RecipeDefaults.from_weights goes on top of these. A linear probe trains only a freshly initialised head,
# which takes a from-scratch rate. Fields set explicitly win over all of them.
FROM_WEIGHTS_DEFAULTS: dict[str, object] = dict(image_size=0, epochs=10, lr=1e-4, warmup_epochs=0.5)
HEAD_ONLY_LR = 1e-3


def resolve_recipe(dataset: DatasetSpec | str | None, overrides: Mapping[str, object], *,
                   registry: Registry | None = None) -> Recipe:
    """The dataset's default recipe with ``overrides`` applied, each checked for name, type and range.

    ``dataset`` is a spec, whose ``recipe`` defaults apply; or a name (``mnist``, ``imagefolder:/x``) looked up
    in ``registry`` (default: the default registry), an unknown one raising ``UsageError``; or None for the
    generic recipe (an in-memory dataset that no spec describes).
    """
    defaults = _dataset_defaults(dataset, registry)
    checked = {name: checked_value(name, value) for name, value in overrides.items()}
    recipe = Recipe().updated({**defaults.from_scratch, **checked})
    return _transfer_recipe(defaults, recipe, checked)


def check_parameter(name: str, value: object) -> None:
    """Raise ``UsageError`` when one parameter is wrong on its own, whatever the dataset: an unknown name, a
    wrong type, a value out of range, or a ``weights`` file that cannot be used."""
    value = checked_value(name, value)
    if name == "weights" and isinstance(value, str) and value:
        resolve_weights_path(value)


def _dataset_defaults(dataset: DatasetSpec | str | None, registry: Registry | None) -> RecipeDefaults:
    """The dataset's recipe defaults, each checked and typed as an override is (a plugin declares its own)."""
    if dataset is None:
        return RecipeDefaults()
    if isinstance(dataset, str):
        dataset = (registry or get_registry()).dataset(dataset)[0]

    def checked(part: str, values: Mapping[str, object]) -> dict[str, RecipeValue]:
        try:
            return {name: checked_value(name, value) for name, value in values.items()}
        except UsageError as exc:
            raise UsageError(f"dataset {dataset.name!r} declares a bad default in its recipe.{part}: {exc}") from None

    return RecipeDefaults(checked("from_scratch", dataset.recipe.from_scratch),
                          checked("from_weights", dataset.recipe.from_weights))


def _transfer_recipe(defaults: RecipeDefaults, recipe: Recipe, checked: Mapping[str, RecipeValue]) -> Recipe:
    """Check weights/finetune and give jobs that start from trained weights the fine-tuning defaults."""
    if recipe.weights and recipe.pretrained:
        raise UsageError("parameters pretrained=true and weights=... both name starting weights; set one")
    if recipe.weights:
        recipe = replace(recipe, weights=resolve_weights_path(recipe.weights))
    if not (recipe.pretrained or recipe.weights):
        return recipe
    tuned = {**FROM_WEIGHTS_DEFAULTS, **defaults.from_weights}
    if recipe.finetune == "head":
        tuned["lr"] = HEAD_ONLY_LR
    return recipe.updated({k: v for k, v in tuned.items() if k not in checked})


def device_problem(device: str) -> str:
    """Why ``device`` cannot be used on this machine, or ''. torch is imported only to check cuda (and mps on
    macOS): ``auto`` and ``cpu`` always work, and MPS exists only on macOS."""
    kind, _, index = device.partition(":")
    if kind in ("auto", "cpu"):
        return ""
    if kind == "mps" and sys.platform != "darwin":
        return "MPS exists only on macOS; use device='auto' or 'cpu'"
    import torch

    if kind == "mps":
        return "" if torch.backends.mps.is_available() else "MPS is not available here; use device='auto' or 'cpu'"
    if not torch.cuda.is_available():
        return "CUDA is not available here; use device='auto' or 'cpu'"
    count = torch.cuda.device_count()
    if index and int(index) >= count:
        return f"only {count} CUDA device(s) here (cuda:0 to cuda:{count - 1}); use one of them or device='cuda'"
    return ""


def subset_problem(parameter: str, n: int, class_counts: Sequence[int]) -> str:
    """Why a class-stratified subset of ``n`` images cannot be drawn from a split with these per-class counts
    (``n`` = 0 or at least the split's size takes it all), or ''. Only ``len(class_counts)`` may be known before
    loading: pass ``[0] * classes`` for the checks that need no counts."""
    total, classes = sum(class_counts), len(class_counts)
    if n == 0 or (total and n >= total):
        return ""
    if n < classes:
        return (f"{parameter}={n} is fewer than the {classes} classes, and a stratified subset needs one image per "
                f"class; use 0 for all images or at least {classes}")
    if total and total - n < classes:
        return (f"{parameter}={n} leaves fewer than {classes} of the {total} images out, too few to stratify; "
                f"use 0 for all {total} images or at most {total - classes}")
    if total and min(class_counts) < 2:
        return f"{parameter}={n}: a class holds a single image, too few to stratify; use 0 for all images"
    return ""


def config_hash(model: str, dataset: str, seed: int, recipe_dict: Mapping[str, object]) -> str:
    """12 hex characters of the sha256 of the job's canonical JSON configuration."""
    config = {"model": model, "dataset": dataset, "seed": seed, "recipe": dict(recipe_dict)}
    if recipe_dict.get("weights"):  # the file's content, not only its name: a changed file reruns the job

        config["weights_sha256"] = file_sha256(str(recipe_dict["weights"]))
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:HASH_CHARS]

