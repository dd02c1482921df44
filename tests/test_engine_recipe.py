"""Recipes: per-dataset defaults, strict checking of overrides, and the configuration hash."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields

import pytest

from imgbench.engine import RECIPE_FIELDS, Recipe, config_hash, resolve_recipe
from imgbench.engine.recipe import DATASET_DEFAULTS
from imgbench.errors import UsageError


def test_each_builtin_dataset_has_its_own_defaults_and_others_get_the_generic_one():
    mnist, cifar, flowers = (resolve_recipe(name, {}) for name in ("mnist", "cifar10", "flowers"))
    assert mnist.augment == "none" and cifar.augment == "flip_crop"
    assert flowers.image_size == DATASET_DEFAULTS["flowers"]["image_size"]
    assert resolve_recipe("imagefolder:/data/pets", {}) == Recipe()
    assert resolve_recipe("someplugin_set", {}) == Recipe()
    assert mnist != cifar != flowers


def test_overrides_apply_and_ints_are_accepted_for_floats():
    recipe = resolve_recipe("cifar10", {"epochs": 2, "lr": 1, "train_samples": 500, "deterministic": True})
    assert (recipe.epochs, recipe.lr, recipe.train_samples, recipe.deterministic) == (2, 1.0, 500, True)
    assert isinstance(recipe.lr, float)
    assert recipe.to_dict()["epochs"] == 2


def test_unknown_parameter_names_itself_and_suggests_the_close_one():
    with pytest.raises(UsageError, match=r"'epoch'.*did you mean epochs"):
        resolve_recipe("mnist", {"epoch": 3})


@pytest.mark.parametrize("name, value, words", [
    ("epochs", "3", ["epochs", "int"]),
    ("epochs", 2.0, ["epochs", "int"]),
    ("deterministic", 1, ["deterministic", "bool"]),
    ("lr", True, ["lr", "float"]),
    ("epochs", -1, ["epochs", "0 or more"]),
    ("batch_size", 0, ["batch_size", "1 or more"]),
    ("lr", 0.0, ["lr", "greater than 0"]),
    ("val_size", 1.0, ["val_size", "[0, 1)"]),
    ("optimizer", "rmsprop", ["optimizer", "adamw"]),
    ("augment", "mixup", ["augment", "flip_crop"]),
    ("device", "tpu", ["device", "cuda:N"]),
    ("target_accuracy", 1.5, ["target_accuracy", "[0, 1]"]),
    ("lr", float("nan"), ["lr=nan", "finite"]),
    ("warmup_epochs", float("inf"), ["warmup_epochs=inf", "finite"]),
    ("momentum", float("-inf"), ["momentum=-inf", "finite"]),
    ("epochs", 1001, ["epochs=1001", "at most 1000"]),
    ("batch_size", 65_537, ["batch_size=65537", "at most 65536"]),
    ("image_size", 4097, ["image_size=4097", "at most 4096"]),
    ("bench_seconds", 600.5, ["bench_seconds=600.5", "at most 600"]),
    ("bench_seconds", 0, ["bench_seconds=0.0", "greater than 0"]),
])
def test_bad_values_raise_usage_error_naming_the_parameter(name, value, words):
    with pytest.raises(UsageError) as caught:
        resolve_recipe("mnist", {name: value})
    for word in words:
        assert word in str(caught.value)


def test_recipe_fields_describe_every_field_with_its_type():
    assert list(RECIPE_FIELDS) == [f.name for f in fields(Recipe)]
    defaults = Recipe()
    for name, (kind, help_text) in RECIPE_FIELDS.items():
        assert isinstance(getattr(defaults, name), kind) and help_text


def test_config_hash_is_short_stable_and_sensitive_to_every_input():
    recipe = resolve_recipe("mnist", {}).to_dict()
    first = config_hash("keras/mnist_convnet", "mnist", 0, recipe)
    assert len(first) == 12 and int(first, 16) >= 0
    assert first == config_hash("keras/mnist_convnet", "mnist", 0, dict(reversed(list(recipe.items()))))
    others = {config_hash("keras/mnist_convnet", "mnist", 1, recipe),
              config_hash("timm/resnet18", "mnist", 0, recipe),
              config_hash("keras/mnist_convnet", "cifar10", 0, recipe),
              config_hash("keras/mnist_convnet", "mnist", 0, recipe | {"epochs": 1})}
    assert first not in others and len(others) == 4


def test_importing_the_engine_and_resolving_a_recipe_imports_no_framework():
    code = ("import sys, imgbench.engine as e; e.resolve_recipe('mnist', {'epochs': 1}); "
            "print(sorted(m for m in ('torch', 'keras', 'timm', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("dataset", ["mnist", "cifar10", "flowers"])
def test_listed_split_sizes_are_those_the_default_recipe_loads(dataset):
    """`imgbench datasets` states split sizes at the datasets' default val share; jobs use the recipe's."""
    from imgbench.datasets import cifar, idx, imagefolder

    listing_val_size = {"mnist": idx.DEFAULT_VAL_SIZE, "cifar10": cifar.DEFAULT_VAL_SIZE,
                        "flowers": imagefolder.DEFAULT_VAL_SIZE}[dataset]
    assert resolve_recipe(dataset, {}).val_size == pytest.approx(listing_val_size)


def test_the_upper_bounds_themselves_are_accepted():
    from imgbench.engine.recipe import MAX_BATCH_SIZE, MAX_BENCH_SECONDS, MAX_EPOCHS, MAX_IMAGE_SIZE

    recipe = resolve_recipe("mnist", {"epochs": MAX_EPOCHS, "batch_size": MAX_BATCH_SIZE, "image_size": MAX_IMAGE_SIZE,
                                      "bench_seconds": MAX_BENCH_SECONDS})
    assert (recipe.epochs, recipe.batch_size, recipe.image_size) == (1000, 65_536, 4096)


@pytest.mark.parametrize("n, counts, problem", [
    (0, [5, 5], ""),
    (10, [5, 5], ""),  # all of them
    (2, [5, 5], ""),
    (1, [5, 5], "train_samples=1 is fewer than the 2 classes"),
    (2, [0, 0, 0], "train_samples=2 is fewer than the 3 classes"),  # class count known, sizes not yet
    (9, [5, 5], "train_samples=9 leaves fewer than 2 of the 10 images out"),
    (4, [1, 9], "a class holds a single image"),
])
def test_subset_problem_is_the_rule_sklearn_enforces(n, counts, problem):
    """Where the rule says a subset is possible, scikit-learn's stratified split draws it; where not, it refuses."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    from imgbench.engine.recipe import subset_problem

    found = subset_problem("train_samples", n, counts)
    assert (problem in found) if problem else found == ""
    labels = np.repeat(np.arange(len(counts)), counts)
    if sum(counts) and 0 < n < sum(counts):
        if problem:
            with pytest.raises(ValueError):
                train_test_split(labels, train_size=n, stratify=labels, random_state=0)
        else:
            train_test_split(labels, train_size=n, stratify=labels, random_state=0)
