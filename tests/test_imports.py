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
