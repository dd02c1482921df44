"""What a job imports before it loads its data: the modules every job needs, and its model family's framework.

A job's engine imports them in its ``imports`` phase (:func:`imgbench.engine.job.import_frameworks`); a grid's
fork server (:mod:`imgbench.forkserver`) imports them once, ahead of its kernels, for the model families of
that grid only (:func:`of_grid`): a grid of timm models never loads Keras. Imports nothing itself.
"""

from __future__ import annotations

from typing import Iterable

COMMON = ("sklearn.metrics", "sklearn.model_selection", "imgbench.engine.train")  # the last: torch, the engine
BY_FAMILY = {"keras": "keras", "timm": "timm"}  # a plugin's family imports what it needs when its model is built


def of_family(family: str) -> tuple[str, ...]:
    """What a job of a ``family`` model imports ahead of its data."""
    return (*COMMON, *([BY_FAMILY[family]] if family in BY_FAMILY else []))


def of_grid(families: Iterable[str]) -> tuple[str, ...]:
    """What the jobs of a grid of these model families import ahead of their data, each module once."""
    return tuple(dict.fromkeys(name for family in sorted(set(families)) for name in of_family(family)))
