"""The documentation is checked like code: a command, a table or an example that drifts from imgbench fails here.

What is checked, in README.md, plugins/README.md and every page under docs/ (docs/development.md says the same
for writers):

- every ``imgbench ...`` command, in a code block or inline, parses with imgbench's own parser; in a code block
  not marked illustrative the models, datasets, suites, parameters and executors it names must exist, as
  ``imgbench run`` checks them before it starts anything, and listing commands and the conformance check are run;
- ``python benchmarks/X.py`` and ``python -m imgbench.conformance`` commands parse with their own parsers,
  ``tox -e ENV -- ARGS`` names an environment of tox.ini (ARGS are checked as the command it runs), ``pip
  install`` names declared extras or existing folders; the quickstart's setup commands are those .ci/run runs;
- any other command stands in a block marked ``<!-- illustrative: why -->`` on the line before it;
- Python blocks compile, their imgbench imports resolve and their keywords fit the functions they call; TOML
  blocks parse, and suites among them expand;
- the generated regions are what their functions return now (``python tests/doc_regions.py`` rewrites them);
- the README's families and datasets tables, and the options table of running-grids.md, match the registry
  and the parser.
"""

from __future__ import annotations

import argparse
import ast
import configparser
import contextlib
import importlib
import importlib.util
import inspect
import io
import re
import shlex
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from doc_regions import REPO, generated, pages, regions

DOC_FILES = [REPO / "README.md", REPO / "plugins" / "README.md", *pages()]
ILLUSTRATIVE = re.compile(r"<!--\s*illustrative:\s*(?P<why>\S.*?)\s*-->")
FENCE = re.compile(r"^(?P<indent>[ ]*)(?P<fence>```+)(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)(?P=fence)[ ]*$",
                   re.M | re.S)
INLINE = re.compile(r"`((?:python -m )?imgbench [^`]+|python benchmarks/[^`]+|python -m imgbench\.conformance [^`]+)`")
SHELL = {"bash", "sh", "shell", "console"}
IMGBENCH = {"imgbench", ".venv/bin/imgbench", ".tox/bench/bin/imgbench"}
PYTHON = {"python", "python3", ".venv/bin/python"}
TOX = {"tox", ".venv/bin/tox"}
PIP = {"pip", ".venv/bin/pip"}
LISTINGS = {"models", "datasets", "plugins", "suites", "params"}  # cheap and side-effect free: run them
SHELL_VALUES = {"$(nproc)": "2"}  # what a shell would substitute, for parsers that want a number


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    text: str
    illustrative: str  # why the block is only an illustration; "" when it is checked in full

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def _blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    found = []
    for m in FENCE.finditer(text):
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marked = ILLUSTRATIVE.search(before)
        indent = len(m["indent"])
        body = "\n".join(line[indent:] for line in m["body"].splitlines())
        found.append(Block(path, text.count("\n", 0, m.start()) + 1, m["info"].strip().split(" ")[0].lower(), body,
                           marked["why"] if marked else ""))
    return found


BLOCKS = [block for path in DOC_FILES for block in _blocks(path)]
CI_COMMANDS = {part.strip() for line in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
               for part in line.split("&&") if part.strip() and not line.startswith("#")}


def shell_commands(text: str) -> list[list[str]]:
    """Each simple command of a shell snippet as its words: continuations joined, comments dropped, lists split."""
    commands = []
    for line in text.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        words: list[str] = []
        for token in lexer:
            if token and set(token) <= set(";&|"):
                commands.append(words)
                words = []
            else:
                words.append(SHELL_VALUES.get(token, token))
        commands.append(words)
    return [c for c in commands if c]


def without_assignments(words: list[str]) -> list[str]:
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        words = words[1:]
    return words


class Parsed(Exception):
    def __init__(self, namespace: argparse.Namespace):
        self.namespace = namespace


def parse_with_script(main: Callable[..., Any], argv: list[str], prog: str,
                      monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    """Parse ``argv`` with the parser a script's ``main`` builds, stopping right after parsing."""
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise Parsed(original(self, argv, namespace))

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
        patch.setattr(sys, "argv", [prog, *argv])
        try:
            _quiet(lambda: main(argv) if inspect.signature(main).parameters else main())
        except Parsed as parsed:
            return parsed.namespace
        except SystemExit as exc:
            raise AssertionError(f"`{prog} {shlex.join(argv)}` does not parse: {exc.__context__ or exc}") from None
    raise AssertionError(f"{prog}'s main() returned without parsing its arguments")


def _quiet(call: Callable[[], Any]) -> tuple[Any, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        result = call()
    return result, out.getvalue(), err.getvalue()


def parse_imgbench(argv: list[str]) -> argparse.Namespace:
    from imgbench.cli import build_parser

    try:
        return _quiet(lambda: build_parser().parse_args(argv))[0]
    except SystemExit:
        _, _, err = _quiet(lambda: _try(lambda: build_parser().parse_args(argv)))
        raise AssertionError(f"`imgbench {shlex.join(argv)}` does not parse with imgbench.cli.build_parser: "
                             f"{err.strip().splitlines()[-1] if err.strip() else 'exit'}") from None


def _try(call: Callable[[], Any]) -> None:
    try:
        call()
    except SystemExit:
        pass


def check_imgbench(argv: list[str], resolve: bool) -> None:
    """Parse; with ``resolve``, also check every name as the command itself would, or run a listing."""
    args = parse_imgbench(argv)
    if not resolve:
        return
    from imgbench import cli

    if args.command in LISTINGS:
        code, out, err = _quiet(lambda: cli.main(argv))
        assert code == 0 and "plugin error" not in err, f"`imgbench {shlex.join(argv)}` exited {code}: {err}"
        assert out.strip(), f"`imgbench {shlex.join(argv)}` printed nothing"
    elif args.command == "run":
        check_run(args)


def check_run(args: argparse.Namespace) -> None:
    """Everything ``imgbench run`` checks before a job starts, except this machine's data and devices."""
    from imgbench.registry import registry_with
    from imgbench.runner.cli import _executor_options
    from imgbench.runner.grid import grid_suite
    from imgbench.runner.suite import expand, parse_param

    registry = registry_with(args.plugins_dir, args.block_plugin, strict=args.strict)
    params = dict(parse_param(text) for text in args.params)
    grid, _ = grid_suite(args.suite, args.models, args.datasets, args.seeds, params)
    assert expand(grid, registry)
    executor = registry.executor(args.executor)
    executor.resolve_options(_executor_options(args, registry.executors()), {})


def _script_main(path: Path) -> Callable[..., Any]:
    spec = importlib.util.spec_from_file_location(f"docs_check_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    sys.path.insert(0, str(path.parent))  # as `python benchmarks/X.py` runs it: its sibling scripts import
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module.main


def check_command(words: list[str], block: Block, monkeypatch: pytest.MonkeyPatch) -> None:
    from imgbench.errors import UsageError

    try:
        _check_command(words, block, monkeypatch)
    except (AssertionError, UsageError) as exc:
        if str(exc).startswith(block.where):
            raise
        raise AssertionError(f"{block.where}: `{shlex.join(words)}`: {exc}") from None


def _check_command(words: list[str], block: Block, monkeypatch: pytest.MonkeyPatch) -> None:
    command = shlex.join(words)
    words = without_assignments(words)
    resolve = not block.illustrative
    head = words[0]
    if head in IMGBENCH:
        check_imgbench(words[1:], resolve)
    elif head in PYTHON and words[1:3] == ["-m", "imgbench"]:
        check_imgbench(words[3:], resolve)
    elif head in PYTHON and words[1:3] == ["-m", "imgbench.conformance"]:
        from imgbench import conformance

        parse_with_script(conformance.main, words[3:], "python -m imgbench.conformance", monkeypatch)
        if resolve:
            code, out, err = _quiet(lambda: conformance.main(words[3:]))
            assert code == 0, f"{block.where}: `{command}` exited {code}: {out}{err}"
    elif head in PYTHON and len(words) > 1 and words[1].startswith("benchmarks/"):
        script = REPO / words[1]
        assert script.is_file(), f"{block.where}: `{command}`: {words[1]} does not exist"
        parse_with_script(_script_main(script), words[2:], words[1], monkeypatch)
    elif head in TOX:
        check_tox(words[1:], block, monkeypatch)
    elif head in PIP and words[1:2] == ["install"]:
        check_pip_install(words[2:], block)
    elif command in CI_COMMANDS:
        pass  # .ci/run executes it
    else:
        assert block.illustrative, (f"{block.where}: `{command}` is neither checked nor marked illustrative: put "
                                    f"`<!-- illustrative: why -->` on the line before the block, or a checked command")


def check_tox(argv: list[str], block: Block, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment exists; arguments after ``--`` are checked as the command(s) its {posargs} feed."""
    config = configparser.ConfigParser(interpolation=None)
    config.read(REPO / "tox.ini", encoding="utf-8")
    own = argv[:argv.index("--")] if "--" in argv else argv
    posargs = argv[argv.index("--") + 1:] if "--" in argv else []
    envs = own[own.index("-e") + 1].split(",") if "-e" in own else [
        e.strip() for e in config["tox"]["env_list"].split(",")]
    for env in envs:
        section = f"testenv:{env}"
        assert section in config or env == "py", f"{block.where}: tox.ini has no environment {env!r}"
        for line in config[section if section in config else "testenv"]["commands"].splitlines():
            words = shlex.split(line.replace("{posargs}", ""))
            if words and words[0] in IMGBENCH:  # e.g. bench: `imgbench run {posargs}`
                check_command(words + posargs, block, monkeypatch)


def check_pip_install(argv: list[str], block: Block) -> None:
    with open(REPO / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    for target in (a for a in argv if not a.startswith("-")):
        name, _, extras = target.partition("[")
        if name in (".", project["name"]) or name.startswith("./"):
            assert name in (".", project["name"]) or (REPO / name).is_dir(), f"{block.where}: no folder {name}"
            for extra in filter(None, extras.rstrip("]").split(",")):
                assert extra in project["optional-dependencies"], (
                    f"{block.where}: `pip install {target}`: pyproject.toml declares no extra {extra!r}")
        else:
            assert block.illustrative or target == "tox", (
                f"{block.where}: `pip install {target}` installs something else than imgbench: mark the block "
                f"illustrative")


def check_python(block: Block) -> None:
    tree = ast.parse(block.text, filename=block.where)
    if block.illustrative:
        return
    names: dict[str, Any] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "imgbench":
                    module = importlib.import_module(alias.name)
                    names[alias.asname or alias.name.split(".")[0]] = module if alias.asname else \
                        importlib.import_module("imgbench")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "imgbench":
            module = importlib.import_module(node.module)
            for alias in node.names:
                found = getattr(module, alias.name, None)
                if found is None:
                    found = importlib.import_module(f"{node.module}.{alias.name}")
                names[alias.asname or alias.name] = found
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            target = _resolve(node.func, names)
            if callable(target) and getattr(target, "__module__", "").startswith("imgbench"):
                _check_keywords(target, node, block)


def _resolve(node: ast.expr, names: dict[str, Any]) -> Any:
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.Attribute):
        owner = _resolve(node.value, names)
        if owner is not None and inspect.ismodule(owner):
            found = getattr(owner, node.attr, None)
            assert found is not None, f"{owner.__name__} has no attribute {node.attr!r}"
            return found
    return None


def _check_keywords(function: Callable[..., Any], call: ast.Call, block: Block) -> None:
    from imgbench.engine.job import run_job
    from imgbench.recipe_fields import RECIPE_FIELDS

    parameters = inspect.signature(function).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    for keyword in (k.arg for k in call.keywords if k.arg):
        if keyword in parameters:
            continue
        if function is run_job:
            assert keyword in RECIPE_FIELDS, f"{block.where}: run_job has no parameter or recipe field {keyword!r}"
        else:
            assert takes_any, f"{block.where}: {function.__qualname__}() takes no keyword {keyword!r}"


def check_toml(block: Block) -> None:
    data = tomllib.loads(block.text)
    if block.illustrative or not ({"models", "datasets", "grids"} & set(data)):
        return
    from imgbench.registry import get_registry
    from imgbench.runner.suite import expand, suite_from_dict

    assert expand(suite_from_dict(data, source=block.where), get_registry())


def _subcommands() -> set[str]:
    from imgbench.cli import build_parser

    return set(build_parser()._subparsers._group_actions[0].choices)


SUBCOMMANDS = _subcommands()


@pytest.fixture
def in_repo(monkeypatch):
    """Commands in the docs are run from the checkout's root, as the pages say."""
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("IMGBENCH_PLUGINS_DIR", raising=False)
    monkeypatch.delenv("IMGBENCH_BLOCK_PLUGINS", raising=False)


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang in SHELL], ids=lambda b: b.where)
def test_every_shell_command_is_checked_or_marked_illustrative(block, in_repo, monkeypatch):
    for words in shell_commands(block.text):
        check_command(words, block, monkeypatch)


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "python"], ids=lambda b: b.where)
def test_python_blocks_compile_and_call_imgbench_as_it_is(block, in_repo):
    check_python(block)


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "toml"], ids=lambda b: b.where)
def test_toml_blocks_parse_and_suites_expand(block, in_repo):
    check_toml(block)


def test_every_code_block_says_its_language():
    unnamed = [b.where for b in BLOCKS if not b.lang]
    assert not unnamed, f"code blocks without a language (bash, python, toml...): {unnamed}"


def test_inline_commands_parse(in_repo, monkeypatch):
    for path in DOC_FILES:
        text = path.read_text(encoding="utf-8")
        for m in INLINE.finditer(text):
            block = Block(path, text.count("\n", 0, m.start()) + 1, "bash", m[1].replace("\n", " "), "inline")
            for words in shell_commands(block.text):
                if len(words) == 2 and words[0] in IMGBENCH:  # the command's name, as in "`imgbench report` writes"
                    assert words[1] in SUBCOMMANDS, f"{block.where}: imgbench has no command {words[1]!r}"
                else:
                    check_command(words, block, monkeypatch)


def test_the_drift_check_fails_on_a_command_that_no_longer_parses_or_names_an_unknown_model(in_repo, monkeypatch):
    block = Block(REPO / "README.md", 1, "bash", "", "")
    check_command(["imgbench", "run", "-m", "keras/mnist_convnet", "-d", "digits", "--seeds", "0,1"], block,
                  monkeypatch)
    with pytest.raises(AssertionError, match="does not parse"):
        check_command(["imgbench", "run", "--gpus", "2"], block, monkeypatch)  # no such option: --jobs is
    with pytest.raises(AssertionError, match="README.md:1: .*keras/mnist_convnett"):
        check_command(["imgbench", "run", "-m", "keras/mnist_convnett", "-d", "digits"], block, monkeypatch)
    with pytest.raises(AssertionError, match="suite"):
        check_command(["imgbench", "run", "quik"], block, monkeypatch)
    with pytest.raises(AssertionError, match="does not parse"):
        check_command(["python", "benchmarks/bench_peers.py", "--repeats", "5"], block, monkeypatch)
    with pytest.raises(AssertionError, match="no environment"):
        check_command([".venv/bin/tox", "-e", "benchmark"], block, monkeypatch)
    with pytest.raises(AssertionError, match="neither checked nor marked illustrative"):
        check_command(["dask", "scheduler"], block, monkeypatch)


@pytest.mark.parametrize("page, source", [(p, s) for p in pages() for s, _ in regions(p.read_text("utf-8"))],
                         ids=lambda x: x if isinstance(x, str) else x.name)
def test_generated_regions_are_what_their_functions_return_now(page, source):
    held = dict(regions(page.read_text(encoding="utf-8")))[source]
    assert held == generated(source), (f"{page.relative_to(REPO)}: the table generated by {source} is out of date: "
                                       f"run `python tests/doc_regions.py`")


def test_the_generated_tables_have_a_home():
    sources = {s for p in pages() for s, _ in regions(p.read_text("utf-8"))}
    assert {"imgbench.schema:markdown_table", "imgbench.engine.recipe_tables:from_scratch_table",
            "imgbench.engine.recipe_tables:from_weights_table"} <= sources


def _table(text: str, header: str) -> list[list[str]]:
    lines = text[text.index(header):].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def test_the_readme_families_table_lists_the_registered_built_in_models(in_repo):
    from imgbench.registry import get_registry

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    rows = {row[0].strip("`/"): row[1] for row in _table(readme, "| family | models |")}
    registry = get_registry()
    for family in ("keras", "timm"):
        documented = set(re.findall(r"`([\w.]+)`", rows[family])) - {"keras.applications"}
        registered = {spec.name.split("/", 1)[1] for spec in registry.models([f"{family}/*"])}
        assert documented == registered, f"README's {family}/ row differs from the registry: {documented ^ registered}"


def test_the_readme_datasets_table_matches_the_registered_datasets():
    from imgbench.registry import get_registry

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    rows = {row[0].strip("`").split(":")[0]: row for row in _table(readme, "| dataset | classes |")}
    specs = {spec.name: spec for spec in get_registry().datasets()}
    assert set(rows) == set(specs)
    for name, spec in specs.items():
        if spec.takes_arg:
            continue
        counts = [int(n.replace(",", "")) for n in re.findall(r"[\d,]+", rows[name][3].split("(")[0])]
        assert counts == [spec.split_sizes[k] for k in ("train", "val", "test")], name


def test_the_run_options_table_names_only_options_imgbench_run_has():
    from imgbench.cli import build_parser

    run = build_parser()._subparsers._group_actions[0].choices["run"]
    known = {flag for action in run._actions for flag in action.option_strings}
    page = (REPO / "docs" / "running-grids.md").read_text(encoding="utf-8")
    documented = {flag for row in _table(page, "| option | meaning |") for flag in re.findall(r"`(-[-\w]+)", row[0])}
    assert documented and documented <= known, f"not options of imgbench run: {documented - known}"


def test_the_plugin_guides_example_loads_as_a_drop_in_plugin_and_conforms(tmp_path):
    from imgbench.conformance import check_model
    from imgbench.registry import registry_with

    example = next(b for b in BLOCKS if b.path.name == "models.md" and "def imgbench_models" in b.text)
    (tmp_path / "mine.py").write_text(example.text, encoding="utf-8")
    registry = registry_with([tmp_path], strict=True)
    assert [spec.name for spec in registry.models(["mine/*"])] == ["mine/tiny"]
    assert len(check_model("mine/tiny", registry=registry)) == 3  # MNIST-, CIFAR- and flowers-shaped inputs


def test_the_readme_stays_short_and_keeps_the_quickstart():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    ci = "python3 -m venv .venv && .venv/bin/pip install tox && .venv/bin/tox"
    assert ci in (REPO / ".ci" / "run").read_text(encoding="utf-8")
    for command in (f"{ci} -e bench -- demo", f"{ci} -e bench", ci):
        assert f"\n{command}\n" in readme, f"the README's quickstart lost `{command}`"


def test_the_defaults_every_recipe_shares_are_the_recipes_own():
    from imgbench.engine.recipe import resolve_recipe
    from imgbench.registry import get_registry
    from imgbench.runner.suite import parse_param

    page = (REPO / "docs" / "reference" / "recipes.md").read_text(encoding="utf-8")
    shared = page[page.index("Shared by every recipe:"):].split("\n\n", 1)[0]
    stated = dict(parse_param(text) for text in re.findall(r"`(\w+=[^`]*)`", shared))
    assert len(stated) >= 10
    for spec in [None, *get_registry().datasets()]:
        recipe = resolve_recipe(spec, {}).to_dict()
        assert {name: recipe[name] for name in stated} == stated, spec and spec.name
