"""The recipe tables of docs/reference/recipes.md: the built-in datasets' own defaults, and every field as
declared.

``python -m imgbench.engine.recipe_tables`` prints the two default tables and the fields table;
``tests/test_docs.py`` fails when the page's copies differ (``python tests/doc_regions.py`` rewrites them).
Datasets whose rows read the same share one row.
"""

from __future__ import annotations

import json
import sys
from fractions import Fraction

from imgbench.engine.recipe import resolve_recipe
from imgbench.recipe_fields import RECIPE_FIELDS, Optimizer, Recipe
from imgbench.specs import DatasetSpec

OTHERS = "any other dataset (plugins without their own)"
OPTIMIZER_NAMES: dict[Optimizer, str] = {"adamw": "AdamW", "adam": "Adam", "sgd": "SGD"}


def from_scratch_table() -> str:
    """The defaults of jobs that train from scratch, one row per dataset."""
    return _table(["dataset", "image size", "epochs", "batch", "optimizer", "peak lr, schedule", "weight decay",
                   "label smoothing", "augmentation", "val size"], [(s, _scratch_cells(s)) for s in _specs()])


def from_weights_table() -> str:
    """The defaults of jobs that start from trained weights, where they differ from the from-scratch ones."""
    return _table(["dataset", "image size", "epochs", "peak lr (`finetune=full`)", "peak lr (`finetune=head`)",
                   "warm-up"], [(s, _from_weights_cells(s)) for s in _specs()])


def fields_table() -> str:
    """Every recipe field as declared: its type, generic default, range or choices, and what it does."""
    rows = [(f"`{f.name}`", f.kind.__name__, f"`{json.dumps(f.default)}`",
             f.bound.interval if f.bound else ", ".join(f"`{c}`" for c in f.choices or f.forms),
             f.description + "".join(f"; `{c}`: {note}" for c, note in f.notes.items()))
            for f in RECIPE_FIELDS.values()]
    header = ["field", "type", "generic default", "range or choices", "what it does"]
    return "\n".join(["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
                     + ["| " + " | ".join(row) + " |" for row in rows])


def _specs() -> list[DatasetSpec | None]:
    """The built-in datasets in their registration order, then None: any other dataset's generic recipe."""
    from imgbench.datasets.plugin import imgbench_datasets

    return [*imgbench_datasets(), None]


def _scratch_cells(spec: DatasetSpec | None) -> tuple[str, ...]:
    r = resolve_recipe(spec, {})
    return (_image_size(r, spec), str(r.epochs), str(r.batch_size), _optimizer(r),
            f"{_rate(r.lr)}, {r.schedule}, {r.warmup_epochs:g}-epoch warm-up", f"{r.weight_decay:g}",
            f"{r.label_smoothing:g}", r.augment, _share(r.val_size))


def _from_weights_cells(spec: DatasetSpec | None) -> tuple[str, ...]:
    full = resolve_recipe(spec, {"pretrained": True})
    head = resolve_recipe(spec, {"pretrained": True, "finetune": "head"})
    size = "the weights' own (0)" if not full.image_size else str(full.image_size)
    return size, str(full.epochs), _rate(full.lr), _rate(head.lr), f"{full.warmup_epochs:g} epochs"


def _table(header: list[str], rows: list[tuple[DatasetSpec | None, tuple[str, ...]]]) -> str:
    grouped: dict[tuple[str, ...], list[str]] = {}
    for spec, cells in rows:
        grouped.setdefault(cells, []).append(f"`{spec.name}`" if spec is not None else OTHERS)
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += [f"| {', '.join(names)} | " + " | ".join(cells) + " |" for cells, names in grouped.items()]
    return "\n".join(lines)


def _image_size(recipe: Recipe, spec: DatasetSpec | None) -> str:
    if recipe.image_size:
        return str(recipe.image_size)
    native = spec.image_shape[0] if spec is not None else 0
    return f"native ({native})" if native else "the loader's default"


def _optimizer(recipe: Recipe) -> str:
    momentum = "momentum" if recipe.optimizer == "sgd" else "β1"
    return f"{OPTIMIZER_NAMES[recipe.optimizer]} ({momentum} {recipe.momentum:g})"


def _rate(value: float) -> str:
    """2e-3, not 0.002: learning rates are read by their exponent."""
    mantissa, exponent = f"{value:e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def _share(value: float) -> str:
    """0.1 as is; a share no short decimal states exactly (1/9) as the fraction it is."""
    fraction = Fraction(value).limit_denominator(100)
    return f"{value:g}" if len(f"{value:g}") <= 5 else f"{fraction.numerator}/{fraction.denominator}"


if __name__ == "__main__":  # python -m imgbench.engine.recipe_tables: print them
    sys.stdout.write(f"{from_scratch_table()}\n\n{from_weights_table()}\n\n{fields_table()}\n")
