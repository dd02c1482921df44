"""The job record without papermill: a grid job's recipe travels typed, through JSON and the notebook's
parameters, to ``run_job`` unchanged and never resolved again; each notebook run's kernel handle records the
manager of its own run."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import pytest

import imgbench.engine
import imgbench.engine.plan
import imgbench.engine.recipe
from imgbench import schema
from imgbench.engine import RECIPE_FIELDS, Recipe, resolve_recipe, run_job
from imgbench.errors import UsageError
from imgbench.jobrecord import display
from imgbench.kernel import CurrentPythonKernelManager, KernelHandle
from imgbench.registry import get_registry
from imgbench.runner import suite
from imgbench.runner.jobs import Job
from imgbench.runner.suite import expand, suite_from_dict

TESTKIT = Path(__file__).parent / "fixtures" / "runner_plugins"
FAST = {"epochs": 1, "batch_size": 32, "bench_seconds": 0.05, "amp": False}


@pytest.fixture(scope="module")
def registry():
    return get_registry([TESTKIT], ())


# -- Recipe.from_dict: what to_dict wrote, exactly -----------------------------------------------------------

def test_from_dict_gives_back_the_resolved_recipe_as_it_was(tmp_path):
    weights = tmp_path / "w.pt"
    with zipfile.ZipFile(weights, "w") as archive:  # all a torch.save file must be before a job loads it
        archive.writestr("data.pkl", b"")
    for recipe in (Recipe(), resolve_recipe("flowers", {"weights": str(weights), "val_size": 0.2}),
                   resolve_recipe("mnist", {"pretrained": True, "finetune": "head", "lr": 3e-3})):
        assert Recipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe


def test_from_dict_applies_no_defaults_and_resolves_no_path():
    # resolve_recipe would give pretrained jobs the fine-tuning rate and refuse a weights file that is not there
    given = {**Recipe().to_dict(), "pretrained": True, "lr": 0.5, "epochs": 40, "weights": "relative/none.pt"}
    recipe = Recipe.from_dict(given)
    assert recipe.to_dict() == given and recipe.weights == "relative/none.pt"


@pytest.mark.parametrize("change, words", [
    ({"lr": 1}, ["lr", "float", "int"]),  # an int where a float belongs would change the hash
    ({"epochs": 2.0}, ["epochs", "int", "float"]),
    ({"epochs": True}, ["epochs", "int", "bool"]),
    ({"amp": 1}, ["amp", "bool", "int"]),
    ({"device": None}, ["device", "str", "NoneType"]),
    ({"epochs": -1}, ["epochs=-1", "0 or more"]),
    ({"optimizer": "lion"}, ["optimizer", "adamw"]),
])
def test_from_dict_refuses_a_mistyped_or_out_of_range_field(change, words):
    with pytest.raises(UsageError) as caught:
        Recipe.from_dict({**Recipe().to_dict(), **change})
    assert all(word in str(caught.value) for word in words), str(caught.value)


def test_from_dict_refuses_unknown_and_missing_fields_naming_each():
    values = Recipe().to_dict()
    with pytest.raises(UsageError, match="unknown epoch$"):
        Recipe.from_dict({**values, "epoch": 3})
    with pytest.raises(UsageError, match="missing lr$"):
        Recipe.from_dict({k: v for k, v in values.items() if k != "lr"})
    with pytest.raises(UsageError, match="unknown sead, epoch; missing lr, amp$"):
        Recipe.from_dict({k: v for k, v in values.items() if k not in ("lr", "amp")} | {"sead": 1, "epoch": 2})


# -- a grid job's recipe reaches run_job as it is ----------------------------------------------------------

@pytest.fixture
def no_resolving(monkeypatch):
    """Every name resolve_recipe is reached by, counting the calls (each still resolves)."""
    calls = []
    real = imgbench.engine.recipe.resolve_recipe

    def counted(dataset, overrides, **kwargs):
        calls.append((dataset, dict(overrides)))
        return real(dataset, overrides, **kwargs)

    for module in (imgbench.engine, imgbench.engine.plan, imgbench.engine.recipe, suite, display):
        monkeypatch.setattr(module, "resolve_recipe", counted)  # wherever it is looked up
    return calls


@pytest.mark.slow
def test_a_grid_job_s_recipe_reaches_run_job_unchanged_and_is_not_resolved_again(registry, tmp_path, no_resolving):
    import torch

    from imgbench.engine.weights import core_module

    start = tmp_path / "start.pt"  # a start from weights: the job gets the fine-tuning defaults at expansion
    torch.save(core_module(registry.build_model("testkit/linear", num_classes=3, in_chans=1, image_size=12))
               .state_dict(), start)
    params = {**FAST, "weights": str(start), "val_size": 0.25}
    [job] = expand(suite_from_dict({"models": ["testkit/linear"], "datasets": ["tinygray"], "params": params}),
                   registry)
    assert len(no_resolving) > 0 and job.recipe == resolve_recipe("tinygray", params, registry=registry)
    assert job.recipe != resolve_recipe("tinygray", {**FAST, "val_size": 0.25}, registry=registry)  # fine-tuning
    no_resolving.clear()

    # what the job process reads from request.json, and the notebook's parameters the runner injects
    travelled = Job.from_dict(json.loads(json.dumps(job.to_dict())))
    assert travelled == job and isinstance(travelled.recipe, Recipe)
    recipe = display.recipe_from_parameters(travelled.dataset, {**travelled.parameters, "out_dir": "x"})
    result = run_job(travelled.model, travelled.dataset, seed=travelled.seed, out_dir=tmp_path / "job",
                     registry=registry, progress=False, recipe=recipe)
    assert no_resolving == []  # neither the notebook nor run_job resolved it again
    assert result.status == "ok" and recipe == job.recipe
    metrics = json.loads((tmp_path / "job" / schema.METRICS_JSON).read_text(encoding="utf-8"))
    assert metrics["recipe"] == job.recipe.to_dict() and metrics["config_hash"] == job.config_hash
    assert metrics["val_samples"] == round(0.25 * 180)  # tinygray: 180 training images, a quarter held out


def test_the_notebook_run_by_hand_resolves_the_fields_it_was_given(no_resolving):
    values = {name: None for name in RECIPE_FIELDS} | {"epochs": 2, "lr": 0.01, "model": "m/x", "seed": 0}
    assert display.recipe_from_parameters("mnist", values) == resolve_recipe("mnist", {"epochs": 2, "lr": 0.01})
    assert no_resolving[0] == ("mnist", {"epochs": 2, "lr": 0.01})


def test_run_job_takes_a_recipe_or_parameters_not_both(registry):
    with pytest.raises(UsageError, match=r"recipe=\.\.\. or recipe parameters \(epochs\), not both"):
        run_job("testkit/linear", "tinygray", registry=registry, recipe=Recipe(), epochs=1)
    with pytest.raises(UsageError, match="recipe must be an imgbench.engine.Recipe, not dict"):
        run_job("testkit/linear", "tinygray", registry=registry, recipe=Recipe().to_dict())


# -- the kernel handle: one per notebook run, no shared state ----------------------------------------------

def test_each_kernel_handle_records_the_manager_of_its_own_run():
    first, second = KernelHandle(), KernelHandle()
    assert first.manager_class is not second.manager_class
    assert issubclass(first.manager_class, CurrentPythonKernelManager)
    assert first.manager is None and first.exit_code(0) is None  # papermill has made no manager yet
    made = first.manager_class(kernel_name="python3")  # what papermill does with kernel_manager_class
    try:
        assert first.manager is made and second.manager is None
        other = second.manager_class(kernel_name="python3")
        assert second.manager is other and first.manager is made
        assert made.kernel_spec.argv[0] == sys.executable and made.socket_dir != other.socket_dir
        assert first.exit_code(0) is None  # no kernel launched: no status to wait for
    finally:
        first.remove_socket_dir()
        second.remove_socket_dir()
    assert not made.socket_dir.exists() and not other.socket_dir.exists()
