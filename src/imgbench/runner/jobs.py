"""One job of a grid: a model, a dataset, a seed and the fully resolved recipe, with a readable id.

A :class:`Job` is plain data (it round-trips through JSON), so it can be handed to an executor that runs it
in another process or on another machine.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from imgbench.engine.recipe import Recipe

HASH_IN_ID = 8  # hex characters of the configuration hash kept in the job id
MAX_PART_CHARS = 60  # a long imagefolder path must not make the folder name unusable
UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Job:
    """What one notebook execution runs. ``recipe`` was resolved once, when the grid was expanded; the
    notebook and ``run_job`` use it as it is."""

    model: str
    dataset: str
    seed: int
    recipe: Recipe
    config_hash: str
    family: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)  # what the suite/CLI set, for the record

    @property
    def job_id(self) -> str:
        return job_id(self.model, self.dataset, self.seed, self.config_hash)

    @property
    def parameters(self) -> dict[str, Any]:
        """The notebook parameters, minus ``out_dir`` (which depends on where the grid writes)."""
        return {"model": self.model, "dataset": self.dataset, "seed": self.seed, **self.recipe.to_dict()}

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, **asdict(self)}  # asdict makes the recipe a dict too

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Job":
        data = {k: v for k, v in data.items() if k != "job_id"}
        return cls(**{**data, "recipe": Recipe.from_dict(data["recipe"])})


def safe_part(text: str) -> str:
    """``timm/resnet18`` -> ``timm-resnet18``; ``imagefolder:/data/pets`` -> ``imagefolder-data-pets``."""
    return UNSAFE_CHARS.sub("-", text).strip("-")[:MAX_PART_CHARS] or "x"


def job_id(model: str, dataset: str, seed: int, config_hash: str) -> str:
    """``<model>__<dataset>__s<seed>__<hash8>`` with every character a folder name can hold."""
    return f"{safe_part(model)}__{safe_part(dataset)}__s{seed}__{config_hash[:HASH_IN_ID]}"
