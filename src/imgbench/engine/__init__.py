"""The one training and evaluation engine every model goes through.

``run_job`` trains, tests and times one model on one dataset and writes its job folder; ``load_dataset``
loads a job's data (``run_job`` and the benchmark notebook both call it); ``resolve_recipe`` checks
parameters without importing a framework (the runner calls it before any job starts).
"""

from typing import Any

from imgbench.engine.loading import load_dataset
from imgbench.engine.recipe import check_parameter, config_hash, resolve_recipe
from imgbench.recipe_fields import RECIPE_FIELDS, Recipe

__all__ = ["JobResult", "RECIPE_FIELDS", "Recipe", "check_parameter", "config_hash", "load_dataset",
           "resolve_recipe", "run_job"]


def __getattr__(name: str) -> Any:
    # Lazy: the launcher resolves recipes without loading pandas or torch, which only a job needs.
    if name in ("JobResult", "run_job"):
        from imgbench.engine import job

        return getattr(job, name)
    raise AttributeError(f"module 'imgbench.engine' has no attribute {name!r}")
