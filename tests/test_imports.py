"""The command line and the launcher stay light (no pandas, seaborn, Jupyter or framework until a job needs
it), and the import graph is layered: no circles, and no module importing a layer above its own."""

from __future__ import annotations

import ast
import subprocess
import sys
from typing import Container, Mapping

# The layers of src/imgbench, bottom first, by the name under ``imgbench`` (a top-level module or a package).
# A module may import its own layer and those below it, never one above. The bottom holds the contracts and
# leaf helpers everything shares. The report sits below the runner because ``run_grid`` builds the report
# when its jobs are done (the report reads only results files); the job record sits above it because the
# runner starts the job process by name (``python -m imgbench.jobrecord.child``) and never imports it, while
# the job process reads its task from the runner. `imgbench infer` sits above the runner, whose suites and
# checks it shares. Tools that nothing imports are at the top.
# A name not listed here yet counts as the top layer: it may import anything, and a lower layer that
# imports it fails this test until it is placed.
LAYERS = (
    ("schema", "specs", "errors", "paths", "recipe_fields", "kernel", "forkserver", "resources", "wrappers", "energy",
     "terminal"),
    ("hookspecs", "plugins", "registry"),
    ("datasets",),
    ("families",),
    ("engine",),
    ("report", "tracking"),
    ("runner",),
    ("inference",),
    ("jobrecord",),
    ("cli", "conformance", "__main__"),
)
HEAVY = ("pandas", "seaborn", "matplotlib", "torch", "keras", "timm", "papermill", "jupyter_client", "sklearn")


def _loaded_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return [m for m in done.stdout.strip().split(",") if m]


def test_building_the_command_line_parser_imports_nothing_heavy():
    assert _loaded_after("from imgbench.cli import build_parser; build_parser()") == []


def test_the_launcher_resolves_recipes_and_imports_the_grid_without_pandas_or_torch():
    code = ("from imgbench.engine import resolve_recipe, config_hash; import imgbench.runner.grid\n"
            "recipe = resolve_recipe('mnist', {'epochs': 2}); config_hash('m/x', 'mnist', 0, recipe.to_dict())")
    assert _loaded_after(code) == []


def _sources() -> dict[str, str]:
    """Every module of src/imgbench by its dotted name (a package by its own name), with its source text."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "src"
    sources = {}
    for path in (root / "imgbench").rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        sources[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path.read_text(encoding="utf-8")
    return sources


def _owner(name: str, modules: Container[str]) -> str | None:
    """The module a dotted name lives in: its longest prefix among ``modules``."""
    parts = name.split(".")
    return next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in modules), None)


def _imported(node: ast.Import | ast.ImportFrom, module: str, sources: Mapping[str, str]) -> list[str]:
    """The dotted names an import statement of ``module`` reaches: its modules, and for ``from X import y`` both X
    and X.y (y may be a submodule); relative imports resolved against the module's package."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    is_package = any(other.startswith(module + ".") for other in sources)
    package = module if is_package else module.rpartition(".")[0]
    base = node.module or ""
    if node.level:
        up = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*up, base] if base else up)
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def _project_imports() -> dict[str, set[str]]:
    """For every module of src/imgbench, the project modules it imports anywhere (top level or in a function)."""
    sources = _sources()
    graph = {}
    for name, text in sources.items():
        targets = {target for node in ast.walk(ast.parse(text)) if isinstance(node, (ast.Import, ast.ImportFrom))
                   for target in _imported(node, name, sources)}
        # a package's own __init__ runs first whatever imports it, so edges to enclosing packages are no circle
        graph[name] = {found for t in targets if (found := _owner(t, sources)) and found != name
                       and not name.startswith(found + ".")}
    return graph


def test_no_import_circles_between_the_project_s_modules():
    graph = _project_imports()
    circles = []
    for start in graph:  # a depth-first walk from every module back to itself
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    circles.append(" -> ".join(path + [start]))
                elif nxt not in path and len(path) < 12:
                    stack.append((nxt, path + [nxt]))
    assert not circles, "import circles:\n" + "\n".join(sorted(set(circles))[:10])


def layer_of(module: str) -> int:
    """The index in LAYERS of ``imgbench.<name>...``; a name not listed counts as the top layer."""
    name = module.split(".")[1] if "." in module else ""
    return next((rank for rank, names in enumerate(LAYERS) if name in names), len(LAYERS) - 1)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{module} -> {target}" for module, targets in graph.items() for target in targets
                  if layer_of(target) > layer_of(module))


def test_no_module_imports_a_layer_above_its_own():
    upward = upward_imports(_project_imports())
    assert not upward, ("imports of a higher layer (move the shared piece down, or place a new module in "
                        "tests/test_imports.py LAYERS):\n" + "\n".join(upward))


def test_the_layer_check_catches_an_upward_import_and_places_new_modules_at_the_top():
    graph = _project_imports()
    graph["imgbench.datasets.splits"].add("imgbench.engine.recipe")  # the import issue 21 removed
    graph["imgbench.registry"].add("imgbench.someday")  # a module the layers do not know yet
    graph["imgbench.someday"] = {"imgbench.report.load", "imgbench.schema"}
    assert upward_imports(graph) == ["imgbench.datasets.splits -> imgbench.engine.recipe",
                                     "imgbench.registry -> imgbench.someday"]
    assert len({name for names in LAYERS for name in names}) == sum(map(len, LAYERS))  # each named once


# The one idiom for a deferred import: ``from X import y`` as the first lines of the function that needs it,
# where X is one of these libraries (expensive to load, or optional), an imgbench module that imports one of
# them when it loads, or a name a package's ``__getattr__`` loads lazily (``from imgbench.report import
# build_report``). Every other import sits at the top of its module.
DEFERRED = HEAVY + ("torchvision", "scipy", "numpy", "PIL", "nbformat", "nbclient", "ipykernel", "IPython",
                    "distributed", "mlflow", "onnx", "onnxscript", "onnxruntime", "safetensors", "huggingface_hub",
                    "dask", "pynvml", "pytest", "h5py")


def needless_local_imports(sources: Mapping[str, str]) -> list[str]:
    """``module:line: target`` for each function-local import of ``sources`` (module name -> source text) that
    defers nothing listed in DEFERRED."""
    trees = {name: ast.parse(text) for name, text in sources.items()}
    lazy_packages = {name for name, tree in trees.items()
                     if any(isinstance(node, ast.FunctionDef) and node.name == "__getattr__" for node in tree.body)}

    def module_level(name: str) -> list[str]:  # outside functions and `if TYPE_CHECKING:`
        found, todo = [], list(trees[name].body)
        while todo:
            node = todo.pop()
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found += _imported(node, name, sources)
            elif isinstance(node, (ast.If, ast.Try)) and "TYPE_CHECKING" not in ast.unparse(getattr(node, "test", "")):
                todo += [*node.body, *getattr(node, "orelse", []), *getattr(node, "handlers", [])]
        return found

    heavy: dict[str, bool] = {}

    def is_heavy(module: str) -> bool:
        if module not in heavy:
            heavy[module] = False  # a cycle adds nothing
            parents = [".".join(module.split(".")[:n]) for n in range(1, module.count(".") + 1)]
            heavy[module] = any(is_heavy(p) for p in parents if p in trees) or any(
                target.split(".")[0] in DEFERRED or ((found := _owner(target, trees)) is not None and found != module
                                                     and is_heavy(found))
                for target in module_level(module))
        return heavy[module]

    def defers(target: str) -> bool:
        if target.split(".")[0] in DEFERRED:
            return True
        found = _owner(target, trees)
        return found is not None and (is_heavy(found) or (found in lazy_packages and found != target))

    needless: list[tuple[str, int, str]] = []
    for name, tree in trees.items():
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)) or function.name == "__getattr__":
                continue
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    targets = _imported(node, name, sources)
                    if not any(map(defers, targets)):
                        needless.append((name, node.lineno, targets[0]))
    return [f"{name}:{line}: {target}" for name, line, target in sorted(set(needless))]


def test_function_local_imports_defer_only_what_is_expensive_or_optional():
    needless = needless_local_imports(_sources())
    assert not needless, ("function-local imports that defer nothing expensive or optional (move them to the top "
                          "of the module):\n" + "\n".join(needless))


def test_the_local_import_check_tells_a_needless_import_from_a_deferred_one():
    sources = {
        "pkg": "def __getattr__(name):\n    from pkg import heavy\n    return heavy\n",
        "pkg.light": "import json\n",
        "pkg.heavy": "import torch\n",
        "pkg.user": ("def a():\n    from pkg.light import json\n"  # needless
                     "def b():\n    from pkg.heavy import torch\n"  # defers torch
                     "def c():\n    import numpy\n"  # a deferred library
                     "def d():\n    from pkg import run\n"  # a lazy name
                     "def e():\n    import textwrap\n"),  # needless
    }
    assert needless_local_imports(sources) == ["pkg.user:2: pkg.light", "pkg.user:10: textwrap"]
