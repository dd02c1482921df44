"""The command line and the launcher stay light: no pandas, seaborn, Jupyter or framework until a job needs it."""

from __future__ import annotations

import subprocess
import sys

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


def _project_imports() -> dict[str, set[str]]:
    """For every module of src/imgbench, the project modules it imports anywhere (top level or in a function)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "src"
    modules = {}
    for path in (root / "imgbench").rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def owner(name: str) -> str | None:  # the module a dotted name lives in: its longest known prefix
        parts = name.split(".")
        return next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in modules), None)

    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets |= {base} | {f"{base}.{alias.name}" for alias in node.names}
        # a package's own __init__ runs first whatever imports it, so edges to enclosing packages are no circle
        graph[name] = {found for t in targets if (found := owner(t)) and found != name
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
