"""The runner without kernels: suites, -p parsing, grid checks (exit 2, nothing started), job ids,
results.csv, executors, the shipped notebook and suites."""

from __future__ import annotations

import ast
import json
from dataclasses import replace
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import papermill
import pytest

from imgbench import cli, schema
from imgbench.engine import RECIPE_FIELDS, config_hash, resolve_recipe
from imgbench.errors import UsageError
from imgbench.registry import get_registry
from imgbench.runner import executors, results
from imgbench.runner.jobs import Job, job_id
from imgbench.resources import notebook_path, suite_path
from imgbench.runner.suite import expand, load_suite, parse_param, parse_seeds, suite_from_dict, with_options

TESTKIT = Path(__file__).parent / "fixtures" / "runner_plugins"


@pytest.fixture(scope="module")
def registry():
    return get_registry([TESTKIT], ())


# -- -p values keep their types ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("epochs=3", ("epochs", 3)),
    ("lr=1e-3", ("lr", 0.001)),
    ("amp=false", ("amp", False)),
    ("deterministic=true", ("deterministic", True)),
    ("sizes=[1, 2]", ("sizes", [1, 2])),
    ("optimizer=sgd", ("optimizer", "sgd")),
    ('device="cuda:1"', ("device", "cuda:1")),
    ("device=cuda:1", ("device", "cuda:1")),
])
def test_param_values_are_toml_literals(text, expected):
    name, value = parse_param(text)
    assert (name, value) == expected
    assert type(value) is type(expected[1])


@pytest.mark.parametrize("text, problem", [
    ("epochs", "key=value"),
    ("=3", "key=value"),
    ("__import__('os').system('x')=1", "not a plain identifier"),
    ("a-b=1", "not a plain identifier"),
    ("class=1", "not a plain identifier"),
    ("seed=3", "set by the grid itself"),
    ("lr=1 2", "is not a value"),
])
def test_bad_params_are_rejected(text, problem):
    with pytest.raises(UsageError, match=problem):
        parse_param(text)


def test_seeds_parse_and_reject_negatives():
    assert parse_seeds("0, 1,2") == (0, 1, 2)
    assert parse_seeds([3, 3, 1]) == (3, 1)
    for bad in ("-1", "a", [1.5], [True], ""):
        with pytest.raises(UsageError, match="seed"):
            parse_seeds(bad)


# -- suites -----------------------------------------------------------------------------------------------

def test_suite_precedence_params_then_dataset_overrides_then_command_line(registry):
    suite = suite_from_dict({"models": ["testkit/linear"], "datasets": ["tinygray", "tinyrgb"],
                             "params": {"epochs": 2, "lr": 0.01},
                             "overrides": {"tinyrgb": {"epochs": 4, "batch_size": 8}}})
    jobs = expand(with_options(suite, params={"batch_size": 16}, seeds=[0, 1]), registry)
    by_dataset = {(j.dataset, j.seed): j.recipe.to_dict() for j in jobs}
    assert len(jobs) == 4
    assert by_dataset["tinygray", 0]["epochs"] == 2 and by_dataset["tinyrgb", 0]["epochs"] == 4
    assert by_dataset["tinyrgb", 1]["batch_size"] == 16 and by_dataset["tinygray", 1]["lr"] == 0.01
    expected = resolve_recipe("tinygray", {"epochs": 2, "lr": 0.01, "batch_size": 16}, registry=registry)
    assert by_dataset["tinygray", 0] == expected.to_dict()


def test_jobs_carry_full_recipe_hash_and_readable_id(registry):
    suite = suite_from_dict({"models": ["testkit/lin*"], "datasets": ["tinygray"], "seeds": [5]})
    [job] = expand(suite, registry)
    assert job.model == "testkit/linear" and job.family == "testkit"
    assert set(job.recipe.to_dict()) == set(RECIPE_FIELDS)
    assert job.config_hash == config_hash("testkit/linear", "tinygray", 5, job.recipe.to_dict())
    assert job.job_id == f"testkit-linear__tinygray__s5__{job.config_hash[:8]}"
    assert Job.from_dict(json.loads(json.dumps(job.to_dict()))) == job


def test_job_ids_are_safe_folder_names():
    ident = job_id("timm/vit_tiny", "imagefolder:/data/my pets/../x", 0, "0123456789ab")
    assert ident.startswith("timm-vit_tiny__imagefolder-data-my-pets-..-x__s0__01234567")
    assert "/" not in ident and " " not in ident


@pytest.mark.parametrize("data, problem", [
    ({"models": ["testkit/linear"], "datasets": ["tinygray"], "epoch": 3}, "unknown key"),
    ({"models": "testkit/linear", "datasets": ["tinygray"]}, "models must be a list"),
    ({"models": ["testkit/linear"], "datasets": ["tinygray"], "seeds": [-1]}, "seed -1"),
    ({"models": ["testkit/linear"], "datasets": ["tinygray"], "timeout": 0}, "timeout"),
    ({"models": ["testkit/linear"], "datasets": ["tinygray"], "params": {"bad name": 1}}, "bad name"),
    ({"models": ["testkit/linear"], "datasets": ["tinygray"], "overrides": {"tinygray": {"model": "x"}}},
     "set by the grid itself"),
])
def test_bad_suites_name_the_problem(data, problem):
    with pytest.raises(UsageError, match=problem):
        suite_from_dict(data, source="bad.toml")


def test_suite_file_errors_name_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("models = [\n", encoding="utf-8")
    with pytest.raises(UsageError, match="broken.toml.*not valid TOML"):
        load_suite(path)


@pytest.mark.parametrize("name", ["quick", "standard"])
def test_shipped_suites_expand_against_the_real_registry(name):
    suite = load_suite(suite_path(name))
    jobs = expand(suite, get_registry())
    assert {j.dataset for j in jobs} == {"mnist", "cifar10", "flowers"}
    assert {j.family for j in jobs} == {"keras", "timm"}
    assert len({j.job_id for j in jobs}) == len(jobs) == len(suite.models) * 3 * len(suite.seeds)


def test_grids_give_the_same_model_and_dataset_different_recipes(registry):
    suite = suite_from_dict({"seeds": [0, 1], "params": {"epochs": 2, "lr": 0.01}, "grids": [
        {"name": "published", "models": ["testkit/linear"], "datasets": ["tinygray"], "params": {"epochs": 7},
         "published": {"metric": "accuracy", "value": 0.9}},
        {"name": "defaults", "models": ["testkit/linear"], "datasets": ["tinygray", "tinyrgb"], "seeds": [3]},
    ]}, source="ref.toml")
    assert [g.name for g in suite.grids] == ["published", "defaults"]
    assert suite.datasets == ("tinygray", "tinyrgb") and suite.seeds == (0, 1, 3)
    jobs = expand(suite, registry)
    recipes = {(j.dataset, j.seed): j.recipe.to_dict() for j in jobs}
    assert len(jobs) == 4 and recipes["tinygray", 0]["epochs"] == 7 and recipes["tinygray", 0]["lr"] == 0.01
    assert recipes["tinygray", 3]["epochs"] == 2 and recipes["tinyrgb", 3]["epochs"] == 2
    # -d picks among each grid's datasets, -p and --seeds reach every grid
    picked = expand(with_options(suite, datasets=["tinyrgb"], seeds=[5], params={"epochs": 1}), registry)
    assert [(j.dataset, j.seed, j.recipe.epochs) for j in picked] == [("tinyrgb", 5, 1)]
    with pytest.raises(UsageError, match="no grid has.*its grids: published"):
        with_options(suite, models=["testkit/other"])
    # two grids that resolve to the same job run it once
    twice = suite_from_dict({"models": ["testkit/linear"], "datasets": ["tinygray"],
                             "grids": [{"name": "a"}, {"name": "b"}]})
    assert len(expand(twice, registry)) == 1


@pytest.mark.parametrize("grids, problem", [
    ([], "one or more"),
    ([{"models": ["testkit/linear"]}], "needs a name"),
    ([{"name": "a", "timeout": 3}], "grid 'a': unknown key"),
    ([{"name": "a"}, {"name": "a"}], "share a name"),
    ([{"name": "a", "published": 0.9}], "published must be a table"),
])
def test_bad_grids_name_the_problem(grids, problem):
    with pytest.raises(UsageError, match=problem):
        suite_from_dict({"models": ["testkit/linear"], "datasets": ["tinygray"], "grids": grids}, source="g.toml")


def test_reference_suite_pairs_each_seed_model_with_its_published_recipe():
    suite = load_suite(suite_path("reference"))
    jobs = expand(suite, get_registry())
    assert len({j.job_id for j in jobs}) == len(jobs) == 4 * 3
    by_grid = {g.name: expand(g, get_registry()) for g in suite.grids}
    keras_io = by_grid["keras-io mnist_convnet"][0].recipe.to_dict()
    assert (keras_io["optimizer"], keras_io["lr"], keras_io["batch_size"], keras_io["epochs"]) == ("adam", 1e-3, 128, 15)
    assert (keras_io["schedule"], keras_io["weight_decay"], keras_io["label_smoothing"]) == ("constant", 0.0, 0.0)
    assert keras_io["val_size"] == 0.1 and keras_io["augment"] == "none" and keras_io["train_samples"] == 0
    tutorial = by_grid["TF flowers tutorial cnn"][0]
    assert tutorial.model == "keras/flowers_cnn" and tutorial.recipe.image_size == 180
    assert tutorial.recipe.augment == "flip_rotate_zoom" and tutorial.recipe.epochs == 15
    assert by_grid["defaults mnist_convnet"][0].recipe.to_dict() == {**resolve_recipe("mnist", {}).to_dict(), "bench_seconds": 1.0}


def test_quick_suite_is_small_and_the_default():
    quick = load_suite(suite_path(None))
    assert Path(quick.source).name == "quick.toml"
    assert quick.models == ("keras/mnist_convnet", "timm/resnet18") and quick.seeds == (0,)
    assert quick.params["train_samples"] > 0 and quick.overrides["flowers"]["image_size"] <= 64


# -- the command line checks the whole grid before anything starts ----------------------------------------

def _run_cli(tmp_path, capsys, *argv):
    out = tmp_path / "out"
    code = cli.main(["run", "--plugins-dir", str(TESTKIT), "--out", str(out), "--no-report", *argv])
    return code, capsys.readouterr().err, out


GOOD = ["-m", "testkit/linear", "-d", "tinygray"]


@pytest.mark.parametrize("argv, problem", [
    (["-m", "testkit/linaer", "-d", "tinygray"], "unknown model 'testkit/linaer'; did you mean testkit/linear"),
    (["-m", "testkit/nothing*", "-d", "tinygray"], "no model matches 'testkit/nothing*'"),
    (["-m", "testkit/linear", "-d", "tinygrey"], "unknown dataset 'tinygrey'"),
    ([*GOOD, "-p", "epoch=3"], "unknown parameter 'epoch'; did you mean epochs"),
    ([*GOOD, "-p", "epochs=-1"], "epochs=-1 must be 0 or more"),
    ([*GOOD, "-p", "batch_size=0"], "batch_size=0 must be 1 or more"),
    ([*GOOD, "-p", "epochs=1.5"], "epochs must be int, got float"),
    ([*GOOD, "-p", "amp=yes"], "amp must be bool, got str"),
    ([*GOOD, "-p", "lr=[1, 2]"], "lr must be float, got list"),
    ([*GOOD, "-p", "os.system=1"], "not a plain identifier"),
    ([*GOOD, "-p", "out_dir=1"], "set by the grid itself"),
    ([*GOOD, "--seeds", "0,-1"], "seed '-1'"),
    ([*GOOD, "--jobs", "0"], "--jobs must be 1 or more"),
    ([*GOOD, "--timeout", "-5"], "--timeout must be a positive number"),
    ([*GOOD, "--executor", "dusk"], "unknown executor 'dusk'"),
    (["-m", "testkit/linear", "-d", "imagefolder:/no/such/folder"], "dataset imagefolder:/no/such/folder: image folder /no/such/folder does not exist"),
    (["no-such-suite.toml"], "suite 'no-such-suite.toml' not found"),
])
def test_bad_grids_exit_2_naming_the_problem_and_start_nothing(tmp_path, capsys, argv, problem):
    code, err, out = _run_cli(tmp_path, capsys, *argv)
    assert code == 2
    assert problem in err
    assert not out.exists()


def test_a_bad_value_for_one_dataset_is_caught_before_any_job(tmp_path, capsys):
    suite = tmp_path / "s.toml"
    suite.write_text('models = ["testkit/linear"]\ndatasets = ["tinygray", "tinyrgb"]\n'
                     '[overrides.tinyrgb]\nlabel_smoothing = 1.5\n', encoding="utf-8")
    code, err, out = _run_cli(tmp_path, capsys, str(suite))
    assert code == 2 and f"suite {suite} [overrides.tinyrgb]: parameter label_smoothing=1.5 must be in [0, 1)" in err
    assert not out.exists()


def test_a_bad_p_value_is_blamed_on_p_not_on_the_default_suite(tmp_path, capsys):
    code, err, out = _run_cli(tmp_path, capsys, *GOOD, "-p", "learnin_rate=0.1")  # no suite: quick's params
    assert code == 2 and "imgbench run: error: -p learnin_rate=0.1: unknown parameter 'learnin_rate'" in err
    assert "quick.toml" not in err.split("error:", 1)[1] and not out.exists()


def test_each_parameter_problem_names_where_it_was_set(tmp_path, capsys):
    suite = tmp_path / "s.toml"
    suite.write_text('models = ["testkit/linear"]\ndatasets = ["tinygray", "tinyrgb"]\n[params]\nepoch = 3\n'
                     '[overrides.tinyrgb]\nlr = -1.0\n', encoding="utf-8")
    code, err, out = _run_cli(tmp_path, capsys, str(suite), "-p", "batch_size=0", "-p", "train_samples=2")
    assert code == 2 and not out.exists()
    problems = [line.removeprefix("  - ") for line in err.splitlines()[1:]]
    assert problems == [
        f"suite {suite} [params]: unknown parameter 'epoch'; did you mean epochs?",
        "-p batch_size=0: parameter batch_size=0 must be 1 or more (batch_size: images per training step; also "
        "the inference-throughput batch)",
        f"suite {suite} [overrides.tinyrgb]: parameter lr=-1.0 must be greater than 0 (lr: peak learning rate)",
    ]
    code, err, _ = _run_cli(tmp_path, capsys, str(suite), "-p", "epoch=1")
    assert "-p epoch=1: unknown parameter 'epoch'" in err  # -p names its own mistakes, the suite its own


def test_a_problem_of_the_inherited_default_suite_names_it_as_such(tmp_path, capsys, monkeypatch):
    default = tmp_path / "default.toml"
    default.write_text('models = ["testkit/linear"]\ndatasets = ["tinygray"]\n[params]\ntrain_samples = 2\n',
                       encoding="utf-8")
    monkeypatch.setattr("imgbench.runner.grid.suite_path", lambda name: default)
    code, err, _ = _run_cli(tmp_path, capsys, *GOOD)
    assert code == 2
    assert (f"error: the default suite 'default' ({default}, inherited: no suite was given) [params]: dataset "
            f"tinygray has 3 classes: train_samples=2 is fewer than the 3 classes") in err
    code, err, _ = _run_cli(tmp_path, capsys, *GOOD, "-p", "train_samples=1")
    assert "error: -p train_samples=1: dataset tinygray has 3 classes: train_samples=1 is fewer" in err


def test_parameters_fine_alone_but_not_together_name_both_sources(tmp_path, capsys):
    from safetensors.numpy import save_file

    weights = tmp_path / "w.safetensors"
    save_file({"weight": np.zeros(3, dtype=np.float32)}, str(weights))
    suite = tmp_path / "s.toml"
    suite.write_text(f'models = ["testkit/linear"]\ndatasets = ["tinygray"]\n[params]\nweights = "{weights}"\n',
                     encoding="utf-8")
    code, err, _ = _run_cli(tmp_path, capsys, str(suite), "-p", "pretrained=true")
    assert code == 2
    assert "dataset tinygray: parameters pretrained=true and weights=... both name starting weights" in err
    assert f"(weights from suite {suite} [params]; pretrained from -p pretrained=true)" in err


# -- results.csv --------------------------------------------------------------------------------------------

def _job(seed: int) -> Job:
    recipe = resolve_recipe("tinygray", {}, registry=get_registry([TESTKIT], ()))
    return Job("testkit/linear", "tinygray", seed, recipe,
               config_hash("testkit/linear", "tinygray", seed, recipe.to_dict()), family="testkit")


def _finish(out: Path, job: Job, status: str, **metrics) -> dict:
    """A finished job as execute_job leaves it: its files, then job.json with their checksums."""
    row = results.make_row(job, status=status, error="", metrics=metrics, duration_s=1.5,
                           notebook=f"jobs/{job.job_id}/notebook.ipynb")
    folder = results.job_dir(out, job)
    folder.mkdir(parents=True, exist_ok=True)
    for name in results.REQUIRED_FILES:
        (folder / name).write_text(f"{name} of {job.job_id}\n", encoding="utf-8")
    results.write_record(folder, job, row)
    return row


def test_results_csv_has_one_row_per_finished_job_in_the_documented_columns(tmp_path):
    jobs = [_job(0), _job(1), _job(2), _job(3)]
    _finish(tmp_path, jobs[0], "ok", accuracy=0.75, params=435, log_loss=float("nan"), per_class={"f1": [1]})
    _finish(tmp_path, jobs[1], "crashed")
    results.job_dir(tmp_path, jobs[2]).mkdir(parents=True)
    (results.job_dir(tmp_path, jobs[2]) / schema.JOB_RECORD).write_text('{"row": {"sta', encoding="utf-8")  # torn
    frame = pd.read_csv(results.write_results(tmp_path, jobs))
    assert list(frame.columns) == list(schema.RESULT_COLUMNS)
    assert list(frame.job_id) == [jobs[0].job_id, jobs[1].job_id]
    assert frame.loc[0, "accuracy"] == 0.75 and frame.loc[0, "params"] == 435
    assert pd.isna(frame.loc[0, "log_loss"]) and frame.loc[1, "status"] == "crashed"
    assert results.check_finished(tmp_path, jobs[0]).skip and not results.check_finished(tmp_path, jobs[1]).skip
    assert not results.check_finished(tmp_path, jobs[2]).skip and not results.check_finished(tmp_path, jobs[3]).skip


def test_a_record_with_another_configuration_is_not_reused(tmp_path):
    job = _job(0)
    _finish(tmp_path, job, "ok")
    changed = Job(job.model, job.dataset, job.seed, replace(job.recipe, epochs=99), "f" * 12, job.family)
    assert results.read_record(tmp_path, changed) is None


# -- executors ---------------------------------------------------------------------------------------------

def test_local_executor_is_registered_and_gives_each_slot_one_gpu():
    spec = get_registry([], ()).executor("local")
    two = spec.create(slots=3, gpus=["0", "1"])
    assert [two.slot_env(slot) for slot in range(3)] == [
        {"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}, {"CUDA_VISIBLE_DEVICES": "0"}]
    assert spec.create(slots=2, gpus=["0"]).slot_env(1) == {}


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert executors.visible_gpus() == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert executors.visible_gpus() == []


# -- the shipped notebook ----------------------------------------------------------------------------------

def test_notebook_is_stripped_and_has_one_parameters_cell():
    nb = nbformat.read(notebook_path(), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1


def test_notebook_parameters_are_the_job_fields_and_every_recipe_field():
    inferred = papermill.inspect_notebook(str(notebook_path()))
    assert set(inferred) == {"model", "dataset", "seed", "out_dir", "data_dir", *RECIPE_FIELDS}
    assert all(p["help"] for p in inferred.values())  # every parameter carries a comment
    # and a recipe field's comment starts with the type the field is declared with
    assert {name: inferred[name]["help"].partition(":")[0] for name in RECIPE_FIELDS} == {
        name: field.kind.__name__ for name, field in RECIPE_FIELDS.items()}


def test_notebook_defaults_are_a_small_valid_run():
    inferred = papermill.inspect_notebook(str(notebook_path()))
    defaults = {name: ast.literal_eval(p["default"]) for name, p in inferred.items()}  # literals only: None, ints, strings
    recipe = resolve_recipe(defaults["dataset"], {k: v for k, v in defaults.items() if k in RECIPE_FIELDS and v is not None})
    assert recipe.epochs <= 2 and 0 < recipe.train_samples <= 5000
    assert get_registry().model(defaults["model"]).family == "keras"


def test_a_second_runner_on_the_same_folder_is_refused(tmp_path, capsys):
    from filelock import FileLock

    from imgbench.runner.grid import LOCK_FILE

    out = tmp_path / "out"
    out.mkdir()
    with FileLock(out / LOCK_FILE):
        code, err, _ = _run_cli(tmp_path, capsys, *GOOD)
    assert code == 2 and "another imgbench run is writing to" in err
    assert not (out / "jobs").exists()
