"""A job's plan: everything one job needs, decided and checked before any work starts.

``plan_job`` turns ``run_job``'s arguments into a frozen :class:`JobPlan` (the model's spec and plugin, the
resolved recipe, where its weights start, the device and precision) and raises ``UsageError`` for anything
wrong with them. Each phase of the job then reads the plan and returns a typed result; ``run_job`` merges the
results into the record once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from imgbench import schema
from imgbench.engine.recipe import Recipe, config_hash, resolve_recipe
from imgbench.engine.weights import Start, plan_start
from imgbench.errors import UsageError
from imgbench.registry import UnknownNameError
from imgbench.specs import DatasetSpec, LoadedDataset, ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from imgbench.engine.train import Precision
    from imgbench.registry import Registry

EVALUATED_MODEL = "final"  # the model after the last epoch is tested; val only picks best_val_accuracy


@dataclass(frozen=True)
class JobPlan:
    """One job, fully decided: what runs, on what, from where, how it trains and where it is written."""

    model: str
    spec: ModelSpec
    plugin: str  # the plugin that registered the model
    plugin_version: str | None
    plugin_location: str | None
    dataset: str  # the dataset's name as given (``mnist``, ``imagefolder:/data/pets``)
    seed: int
    recipe: Recipe
    start: Start  # the starting weights and the preprocessing they expect
    device: torch.device
    precision: Precision
    out_dir: Path | None  # the job folder; None keeps the results in memory only
    progress: bool  # one line per epoch on stdout

    @property
    def config_hash(self) -> str:
        return config_hash(self.model, self.dataset, self.seed, self.recipe.to_dict())

    def record(self) -> dict[str, Any]:
        """The record's identity: what was asked for, before anything was measured."""
        recipe = self.recipe
        return {
            "model": self.model, "family": self.spec.family, "plugin": self.plugin, "dataset": self.dataset,
            "seed": self.seed, "status": schema.Status.OK, "epochs": recipe.epochs, "batch_size": recipe.batch_size,
            "device": str(self.device), "precision_requested": self.precision.name, "evaluated_model": EVALUATED_MODEL,
            "config_hash": self.config_hash, "recipe": recipe.to_dict(), "finetune": recipe.finetune,
            "weights": {"pretrained": recipe.pretrained, **self.start.record()},
        }


def plan_job(model: str, dataset: str | LoadedDataset, *, seed: int, out_dir: Path | str | None,
             registry: Registry, progress: bool, recipe: Recipe | None, params: Mapping[str, Any]) -> JobPlan:
    """Check ``run_job``'s arguments and decide everything the job needs; ``UsageError`` names what is wrong."""
    from imgbench.engine.train import choose_precision, select_device

    dataset_name = dataset.name if isinstance(dataset, LoadedDataset) else dataset
    if not isinstance(dataset_name, str):
        raise UsageError(f"dataset must be a name or a LoadedDataset, not {type(dataset).__name__}")
    recipe = _job_recipe(dataset, registry, recipe, params)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"seed must be a non-negative int, got {seed!r}")
    spec = registry.model(model)
    plugin, source = registry.model_plugin(model)
    if recipe.save_weights and out_dir is None:
        raise UsageError(f"save_weights=true writes {schema.MODEL_CHECKPOINT} into the job folder; give out_dir")
    start = plan_start(spec, recipe.pretrained, recipe.weights)
    device = select_device(recipe.device)
    return JobPlan(model, spec, plugin, source.version if source else None, source.location if source else None,
                   dataset_name, seed, recipe, start, device, choose_precision(device, recipe.amp),
                   Path(out_dir) if out_dir is not None else None, progress)


def _job_recipe(dataset: str | LoadedDataset, registry: Registry, recipe: Recipe | None,
                params: Mapping[str, Any]) -> Recipe:
    """``recipe`` as it is, or else the dataset's recipe resolved with ``params``; never both."""
    if recipe is None:
        return resolve_recipe(_defaults_from(dataset, registry), params)
    if params:
        raise UsageError(f"run_job takes recipe=... or recipe parameters ({', '.join(params)}), not both")
    if not isinstance(recipe, Recipe):
        raise UsageError(f"recipe must be an imgbench.engine.Recipe, not {type(recipe).__name__}")
    return recipe


def _defaults_from(dataset: str | LoadedDataset, registry: Registry) -> DatasetSpec | None:
    """The spec whose recipe defaults the job takes: the named dataset's, or for a ``LoadedDataset`` the one
    registered under its name; None (the generic recipe) for an in-memory dataset nothing registers."""
    if not isinstance(dataset, LoadedDataset):
        return registry.dataset(dataset)[0]
    try:
        return registry.dataset(dataset.name)[0]
    except UnknownNameError:
        return None
