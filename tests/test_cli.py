"""The command line as a user meets it: listings, help texts, hints, progress lines, the suite a grid inherits."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from imgbench import cli, resources
from imgbench.engine.recipe import resolve_recipe
from imgbench.recipe_fields import RECIPE_FIELDS
from imgbench.errors import UsageError
from imgbench.registry import get_registry
from imgbench.runner.grid import grid_suite
from imgbench.runner.progress import GridProgress
from imgbench.runner.suite import expand

REPO = Path(__file__).resolve().parents[1]
TESTKIT = Path(__file__).parent / "fixtures" / "runner_plugins"
SHIPPED = {path.stem for path in (REPO / "benchmarks" / "suites").glob("*.toml")}  # the checkout's own
REST_MARKUP = re.compile(r"``|:(func|class|mod|data|meth|attr):`")


def run_module(*argv: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imgbench", *argv], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


@pytest.fixture
def package_data_only(monkeypatch, tmp_path):
    """As in an installed wheel: the checkout's folders are out of reach, only package data is left."""
    monkeypatch.setattr(resources, "CHECKOUT", tmp_path / "no-checkout")


def test_suites_lists_the_shipped_suites_from_package_data(package_data_only, capsys):
    assert cli.main(["suites", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) == SHIPPED
    for name, row in rows.items():
        declared = tomllib.loads((REPO / "benchmarks" / "suites" / f"{name}.toml").read_text(encoding="utf-8"))
        models = declared.get("models") or {m for grid in declared.get("grids", []) for m in grid["models"]}
        assert row["description"] == declared["description"] and row["models"] == len(models)


def test_an_unknown_suite_names_the_shipped_ones_from_package_data(package_data_only):
    with pytest.raises(UsageError, match=r"\(demo, inference-gpu, inference, quick, reference, standard, transfer\)"):
        resources.suite_path("quik")


def test_python_m_imgbench_runs_the_command():
    done = run_module("suites")
    assert done.returncode == 0, done.stderr
    assert all(re.search(rf"^{name}\s", done.stdout, re.M) for name in SHIPPED)
    assert run_module("--version").stdout.strip().startswith("imgbench ")


def test_params_lists_every_field_with_the_datasets_default_and_imports_no_framework():
    code = ("import json, sys; from imgbench.cli import main; main(['params', 'digits', '--json']); "
            "print(json.dumps(sorted(m for m in ('torch', 'keras', 'timm') if m in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    *listing, imported = done.stdout.strip().splitlines()
    assert json.loads(imported) == []
    rows = {row["name"]: row for row in json.loads("\n".join(listing))}
    assert list(rows) == list(RECIPE_FIELDS)
    digits = resolve_recipe("digits", {}).to_dict()
    for name, field in RECIPE_FIELDS.items():
        assert rows[name] == {"name": name, "type": field.kind.__name__, "default": digits[name], "help": field.help}
    assert rows["epochs"]["default"] != resolve_recipe("cifar10", {}).epochs


def test_params_rejects_an_unknown_dataset_with_a_suggestion(capsys):
    assert cli.main(["params", "digit"]) == 2
    assert "did you mean digits" in capsys.readouterr().err


def test_every_command_describes_itself_without_rest_markup():
    parser = cli.build_parser()
    assert not REST_MARKUP.search(parser.format_help())
    [commands] = [a for a in parser._actions if a.dest == "command"]
    assert set(commands.choices) >= {"models", "datasets", "plugins", "suites", "params", "notebooks", "run",
                                     "report"}
    for name, command in commands.choices.items():
        assert command.description, name
        assert not REST_MARKUP.search(command.format_help()), name


def test_the_report_hint_uses_the_real_seeds_syntax():
    sources = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "src" / "imgbench").rglob("*.py"))
    assert "--seeds 0 1 2" not in sources
    assert "--seeds 0,1,2" in (REPO / "src" / "imgbench" / "report" / "explain.py").read_text(encoding="utf-8")


# -- progress ------------------------------------------------------------------------------------------------

def test_progress_into_a_pipe_is_one_plain_line_per_job(monkeypatch):
    stream = io.StringIO()  # not a tty, like `2> run.log` or a CI log
    monkeypatch.setattr(sys, "stderr", stream)
    bar = GridProgress(2, enabled=True, slots=1)
    for seed in (0, 1):
        bar.started(None)
        bar.finished({"status": "ok", "job_id": f"job-{seed}", "duration_s": 3.0, "accuracy": 0.5})
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert [line.split()[:3] for line in lines] == [["[1/2]", "ok", "job-0"], ["[2/2]", "ok", "job-1"]]


def test_running_never_shows_more_than_the_slots():
    bar = GridProgress(3, enabled=False, slots=1)
    bar.started(None)
    bar.started(None)  # the executor freed job 1's slot before its row reached this thread
    assert bar.shown_running == 1 and bar.bar.postfix and "running=1" in bar.bar.postfix
    bar.finished({"status": "ok", "job_id": "a", "duration_s": 1, "accuracy": 1.0})
    assert bar.shown_running == 1


# -- which parameters a grid without a suite gets ----------------------------------------------------------

def test_models_and_datasets_without_a_suite_inherit_the_default_suites_parameters():
    quick = tomllib.loads((REPO / "benchmarks" / "suites" / "quick.toml").read_text(encoding="utf-8"))
    grid, inherited = grid_suite(None, models=["keras/mnist_convnet"], datasets=["mnist"])
    assert inherited["suite"] == "quick" and inherited["params"] == quick["params"] == dict(grid.params)
    assert "epochs=3" in inherited["message"] and "train_samples=8000" in inherited["message"]
    assert "`none`" in inherited["message"]
    named, nothing = grid_suite("quick", models=["keras/mnist_convnet"], datasets=["mnist"])
    assert nothing is None and dict(named.params) == quick["params"]


def test_the_suite_none_gives_the_datasets_full_default_recipes():
    grid, inherited = grid_suite("none", models=["keras/mnist_convnet"], datasets=["mnist", "digits"])
    assert inherited is None and not grid.params and grid.timeout is None
    jobs = expand(grid, get_registry())
    defaults = {d: resolve_recipe(d, {}).to_dict() for d in ("mnist", "digits")}
    assert {job.dataset: job.recipe.to_dict() for job in jobs} == defaults


@pytest.mark.notebook
@pytest.mark.slow
def test_log_output_streams_cell_output_prefixed_and_run_json_says_what_was_inherited(tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["run", "--plugins-dir", str(TESTKIT), "-m", "testkit/linear", "-d", "tinygray", "--out", str(out),
                     "--no-report", "--log-output", "-p", "epochs=1", "-p", "bench_seconds=0.05", "-p", "amp=false"])
    err = capsys.readouterr().err
    assert code == 0, err
    [job_id] = [p.name for p in (out / "jobs").iterdir()]
    assert "inherits the parameters of the default suite 'quick'" in err
    assert f"[{job_id}] status: ok" in err  # the training cell's print, forwarded live
    assert re.search(r"^\[1/1\] ok\s+" + re.escape(job_id), err, re.M) and "\r" not in err
    inherited = json.loads((out / "run.json").read_text(encoding="utf-8"))["inherited"]
    assert inherited["suite"] == "quick" and inherited["params"]["train_samples"] == 8000


# -- the terminal's width, plurals --------------------------------------------------------------------------------

def test_params_fits_the_terminal_and_loses_no_word(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    assert cli.main(["params"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= 80
    table = lines[:next(i for i, line in enumerate(lines) if line.startswith("defaults for "))]
    start = table[0].index("HELP")
    helps, current = [], ""
    for line in table[1:]:
        if line[:start].strip():  # a new parameter's row
            helps.append(current)
            current = line[start:]
        else:
            current += " " + line[start:]
    helps = [h.strip() for h in [*helps, current][1:]]
    assert helps == [field.help for field in RECIPE_FIELDS.values()]


def test_without_a_terminal_lines_are_left_whole(monkeypatch, capsys):
    monkeypatch.delenv("COLUMNS", raising=False)
    assert cli.main(["params"]) == 0  # capsys is no terminal
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(RECIPE_FIELDS) + 2


def test_the_inherited_suite_notice_and_errors_wrap_to_the_terminal(monkeypatch, capsys):
    from imgbench.terminal import wrap

    _, inherited = grid_suite(None, models=["keras/mnist_convnet"], datasets=["mnist"])
    assert len(inherited["message"]) > 300  # the notice of the issue
    wrapped = wrap(inherited["message"], 60)
    assert max(map(len, wrapped.splitlines())) <= 60 and " ".join(wrapped.split()) == inherited["message"]
    monkeypatch.setenv("COLUMNS", "60")
    assert cli.main(["params", "no-such-dataset-at-all"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) > 1 and max(map(len, err.splitlines())) <= 60


def test_a_failed_jobs_line_is_cut_to_the_terminal(monkeypatch):
    from imgbench.runner.progress import job_line

    row = {"status": "failed", "job_id": "testkit-linear__tinygray__s0__6d97e449", "duration_s": 3.0,
           "error": "RuntimeError: " + "x " * 200}
    monkeypatch.setenv("COLUMNS", "200")
    assert len(job_line(row, "[1/1] ")) == 200 and job_line(row).endswith("...")
    monkeypatch.setenv("COLUMNS", "100")  # too narrow to hold the error beside the job: it goes below
    head, error = job_line(row, "[1/1] ").splitlines()
    assert head.endswith("3 s") and error.startswith("    RuntimeError: x x") and len(error) == 100
    monkeypatch.delenv("COLUMNS")
    assert len(job_line(row)) < 200  # no terminal: a readable prefix; the summary has it whole


def test_counts_are_singular_for_one():
    from imgbench.runner.grid import GridResult

    row = {"status": "ok", "job_id": "a", "did_not_learn": "", "error": ""}
    assert GridResult(Path("/out"), [row], jobs=["a"]).summary().startswith("1 job: 1 ok\n")
    assert GridResult(Path("/out"), [row, row], jobs=["a", "b"]).summary().startswith("2 jobs: 2 ok\n")


def test_a_pattern_that_matches_nothing_names_the_plugin_folders_searched(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)  # not a checkout: its plugins/ is not searched
    assert cli.main(["models", "tinycnn/*"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "no model matches 'tinycnn/*'" in err and "Drop-in plugin folders searched: none" in err
    assert f"searched only when imgbench runs inside that checkout, and {tmp_path} is not inside one" in err
    assert "--plugins-dir DIR or IMGBENCH_PLUGINS_DIR=DIR" in err
    assert cli.main(["models", "--plugins-dir", str(REPO / "plugins"), "tinycnn/*"]) == 0
    assert "tinycnn/small" in capsys.readouterr().out
    monkeypatch.chdir(REPO)
    assert cli.main(["models", "tinycnn/*"]) == 0 and "\n2 models\n" in capsys.readouterr().out
