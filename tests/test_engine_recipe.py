"""Recipes: each dataset's own defaults, strict checking of overrides, and the configuration hash."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, fields
from typing import Literal

import pytest

from imgbench import RecipeDefaults
from imgbench.datasets import imagefolder_dataset
from imgbench.datasets.flowers import FLOWERS_RECIPE
from imgbench.engine import RECIPE_FIELDS, Recipe, check_parameter, config_hash, resolve_recipe
from imgbench.engine.recipe import FROM_WEIGHTS_DEFAULTS, HEAD_ONLY_LR
from imgbench.errors import UsageError
from imgbench.registry import Registry, get_registry

BUILTIN_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100", "flowers", "digits")


def test_each_builtin_dataset_has_its_own_defaults_and_others_get_the_generic_one():
    mnist, cifar, flowers = (resolve_recipe(name, {}) for name in ("mnist", "cifar10", "flowers"))
    assert mnist.augment == "none" and cifar.augment == "flip_crop"
    assert flowers.image_size == FLOWERS_RECIPE.from_scratch["image_size"]
    assert resolve_recipe("imagefolder:/data/pets", {}) == Recipe()
    assert resolve_recipe(None, {}) == Recipe()  # an in-memory dataset no spec describes
    assert mnist != cifar != flowers


def test_an_unknown_dataset_is_refused_not_given_the_generic_recipe():
    with pytest.raises(UsageError, match=r"unknown dataset 'someplugin_set'"):
        resolve_recipe("someplugin_set", {})
    with pytest.raises(UsageError, match=r"unknown dataset 'mnst'; did you mean mnist"):
        resolve_recipe("mnst", {"epochs": 1})


def test_fashion_mnist_and_cifar100_get_defaults_of_their_own():
    """Before, only mnist, cifar10, flowers and digits were keyed by name; these two fell to the generic recipe."""
    fashion, mnist = resolve_recipe("fashion_mnist", {}), resolve_recipe("mnist", {})
    cifar100, cifar10 = resolve_recipe("cifar100", {}), resolve_recipe("cifar10", {})
    assert Recipe() not in (fashion, cifar100)
    assert fashion.epochs > mnist.epochs and fashion.augment == "flip_crop" and fashion.lr == mnist.lr
    assert cifar100 == cifar10
    for name in ("fashion_mnist", "cifar100"):
        spec = get_registry().dataset(name)[0]
        assert resolve_recipe(name, {}) == Recipe(**spec.recipe.from_scratch)
        tuned = resolve_recipe(name, {"pretrained": True})
        assert {k: getattr(tuned, k) for k in spec.recipe.from_weights} == dict(spec.recipe.from_weights)


@pytest.mark.parametrize("name", [*BUILTIN_DATASETS, "imagefolder"])
def test_every_builtin_default_is_a_valid_recipe_value(name):
    """resolve_recipe checks a spec's defaults as it checks overrides; the built-ins' pass as they are."""
    spec = get_registry().dataset(f"{name}:/x" if name == "imagefolder" else name)[0]
    for values in (spec.recipe.from_scratch, spec.recipe.from_weights):
        assert set(values) <= set(RECIPE_FIELDS)
        for field_name, value in values.items():
            check_parameter(field_name, value)
            assert type(value) is RECIPE_FIELDS[field_name].kind  # typed as the field, so config hashes stay put


def test_a_plugin_dataset_brings_its_own_defaults(tmp_path):
    spec = imagefolder_dataset("pets", tmp_path, recipe=RecipeDefaults(
        from_scratch={"epochs": 7, "augment": "flip_rotate_zoom", "lr": 1},
        from_weights={"epochs": 3}))
    scratch = resolve_recipe(spec, {"batch_size": 16})
    assert (scratch.epochs, scratch.augment, scratch.batch_size, scratch.lr) == (7, "flip_rotate_zoom", 16, 1.0)
    assert isinstance(scratch.lr, float)
    tuned = resolve_recipe(spec, {"pretrained": True})
    assert (tuned.epochs, tuned.lr, tuned.image_size) == (3, FROM_WEIGHTS_DEFAULTS["lr"], 0)  # the rest generic
    assert resolve_recipe(spec, {"pretrained": True, "finetune": "head"}).lr == HEAD_ONLY_LR
    assert resolve_recipe(imagefolder_dataset("plain", tmp_path), {}) == Recipe()


def test_a_plugin_file_s_dataset_defaults_reach_its_jobs_through_the_registry(tmp_path):
    from imgbench.runner.suite import expand, suite_from_dict

    (tmp_path / "pets_plugin.py").write_text(
        "import imgbench\n"
        "from imgbench.datasets import imagefolder_dataset\n\n"
        "@imgbench.hookimpl\n"
        "def imgbench_datasets():\n"
        f"    return [imagefolder_dataset('pets', {str(tmp_path)!r}, recipe=imgbench.RecipeDefaults("
        "from_scratch={'epochs': 9, 'val_size': 0.25}))]\n", encoding="utf-8")
    registry = Registry([tmp_path])
    assert not registry.errors
    assert resolve_recipe("pets", {}, registry=registry).epochs == 9
    [job] = expand(suite_from_dict({"models": ["timm/resnet18"], "datasets": ["pets"]}), registry)
    assert job.recipe == Recipe(epochs=9, val_size=0.25)


def test_a_bad_plugin_default_names_the_dataset(tmp_path):
    spec = imagefolder_dataset("pets", tmp_path, recipe=RecipeDefaults(from_scratch={"epoch": 3}))
    with pytest.raises(UsageError, match=r"dataset 'pets' declares a bad default in its recipe.from_scratch: "
                                         r"unknown parameter 'epoch'; did you mean epochs"):
        resolve_recipe(spec, {})


def test_check_parameter_checks_one_parameter_alone(tmp_path):
    check_parameter("epochs", 3)
    check_parameter("weights", "")
    with pytest.raises(UsageError, match="did you mean epochs"):
        check_parameter("epoch", 3)
    with pytest.raises(UsageError, match="0 or more"):
        check_parameter("epochs", -1)
    with pytest.raises(UsageError, match="no such file"):
        check_parameter("weights", str(tmp_path / "missing.safetensors"))


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
    for name, field in RECIPE_FIELDS.items():
        assert isinstance(getattr(defaults, name), field.kind) and field.help


def test_each_field_is_declared_once_with_its_choices_range_and_help():
    """Choices come from the Literal annotation, ranges from the declaration; both reach the checks, the help
    and the generated table (the README's own table lists the same optimizers and shares)."""
    from imgbench.engine.recipe_tables import fields_table

    assert RECIPE_FIELDS["optimizer"].choices == ("adamw", "adam", "sgd")
    assert RECIPE_FIELDS["finetune"].help.startswith("full (train everything) | head (linear probe")
    assert RECIPE_FIELDS["device"].help.startswith("auto | cpu | cuda | cuda:N | mps: ")
    assert RECIPE_FIELDS["epochs"].bound is not None and RECIPE_FIELDS["epochs"].bound.interval == "[0, 1000]"
    assert {name for name, f in RECIPE_FIELDS.items() if f.kind is str and not (f.choices or f.forms)} == {"weights"}
    table = fields_table()
    assert "| `momentum` | float | `0.9` | [0, 1) |" in table
    assert "| `schedule` | str | `\"cosine\"` | `cosine`, `onecycle`, `step`, `constant` |" in table
    assert "| `lr` | float | `0.001` | (0, inf) |" in table
    assert len(table.splitlines()) == 2 + len(fields(Recipe))


def test_notes_on_a_value_that_is_not_a_choice_are_refused():
    from imgbench.recipe_fields import declare, read_declarations

    @dataclass(frozen=True)
    class Declared:
        mode: Literal["a", "b"] = declare("a", "a mode", notes={"c": "no such mode"})

    with pytest.raises(TypeError, match=r"Declared.mode has notes on \['c'\]"):
        read_declarations(Declared)


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


def test_the_builtin_recipes_hash_as_they_did_when_the_engine_kept_them():
    """Pinned from before the defaults moved into the dataset modules: results keep their config hashes. The
    mnist default then changed on purpose (5 -> 12 epochs); at 5 epochs it hashes as before the move."""
    hashes = {name: config_hash("m/x", name, 0, resolve_recipe(name, {}).to_dict())
              for name in ("mnist", "cifar10", "flowers", "digits")}
    assert hashes == {"mnist": "2eafb2bca147", "cifar10": "1afc957e4b68", "flowers": "59898eaf4be7",
                      "digits": "9330cf47bf74"}
    assert config_hash("m/x", "mnist", 0, resolve_recipe("mnist", {"epochs": 5}).to_dict()) == "9c4f2d0b683a"


def test_importing_the_engine_and_resolving_a_recipe_imports_no_framework():
    code = ("import sys, imgbench.engine as e; e.resolve_recipe('mnist', {'epochs': 1}); "
            "print(sorted(m for m in ('torch', 'keras', 'timm', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("dataset", BUILTIN_DATASETS)
def test_listed_split_sizes_are_those_the_default_recipe_loads(dataset):
    """`imgbench datasets` states split sizes at the datasets' default val share; jobs use the recipe's."""
    from imgbench.datasets import splits
    from imgbench.datasets.plugin import imgbench_datasets

    [spec] = [s for s in imgbench_datasets() if s.name == dataset]
    [source] = [d for d in _file_datasets() if d.name == dataset]
    test_counts = list(source.test_counts) if source.test_counts is not None else None
    assert dict(spec.split_sizes) == splits.split_sizes(
        list(source.train_counts), test_counts=test_counts, val_size=resolve_recipe(dataset, {}).val_size,
        test_fraction=source.test_fraction)


@pytest.mark.parametrize("make", ["tiny_mnist", "tiny_cifar", "tiny_flowers"])
def test_a_default_recipe_loads_the_split_sizes_its_listing_states(tmp_path, make):
    from imgbench.datasets import fixtures

    variant = getattr(fixtures, make)(tmp_path)
    spec = variant.spec()
    recipe = resolve_recipe(spec, {"image_size": 16} if make == "tiny_flowers" else {})
    data = spec.load(image_size=recipe.image_size, val_size=recipe.val_size, data_dir=tmp_path,
                     cache_dir=tmp_path / "cache", arg="")
    assert {"train": len(data.train), "val": len(data.val), "test": len(data.test)} == dict(spec.split_sizes)


def _file_datasets():
    from imgbench.datasets.cifar import CIFAR10, CIFAR100
    from imgbench.datasets.digits import DIGITS
    from imgbench.datasets.flowers import FLOWERS
    from imgbench.datasets.idx import FASHION_MNIST, MNIST

    return [MNIST, FASHION_MNIST, CIFAR10, CIFAR100, FLOWERS, DIGITS]


def test_the_upper_bounds_themselves_are_accepted():
    from imgbench.recipe_fields import MAX_BATCH_SIZE, MAX_BENCH_SECONDS, MAX_EPOCHS, MAX_IMAGE_SIZE

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
