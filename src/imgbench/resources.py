"""Finding the files imgbench ships: the notebooks papermill executes and the benchmark suites.

Installed from a wheel they are package data (``imgbench.notebooks``, ``imgbench.suites``); in a checkout
they are the top-level ``notebooks/`` and ``benchmarks/suites/`` folders.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from imgbench.errors import UsageError

NOTEBOOK_NAME = "benchmark.ipynb"
DEFAULT_SUITE = "quick"
CHECKOUT = Path(__file__).resolve().parents[2]  # src/imgbench/resources.py -> the checkout root
SUITES_FOLDER = "benchmarks/suites"


def _shipped(package: str, folder: str, name: str) -> Path | None:
    """``name`` from package data when installed, else from the checkout's ``folder``."""
    try:
        candidate = resources.files(package).joinpath(name)
        if candidate.is_file():
            return Path(str(candidate))
    except (ModuleNotFoundError, TypeError):
        pass
    candidate = CHECKOUT / folder / name
    return candidate if candidate.is_file() else None


def notebook_path(name: str = NOTEBOOK_NAME) -> Path:
    """A shipped notebook: ``benchmark.ipynb`` (one per job) or ``report.ipynb``."""
    found = _shipped("imgbench.notebooks", "notebooks", name)
    if found is None:
        raise UsageError(f"cannot find {name}: neither package data imgbench.notebooks nor "
                         f"{CHECKOUT / 'notebooks'} has it; reinstall imgbench")
    return found


def suite_path(name_or_path: str | Path | None = None) -> Path:
    """A suite file: a path, or the name of a shipped suite (``quick``, ``standard``); default ``quick``."""
    name = str(name_or_path or DEFAULT_SUITE)
    path = Path(name).expanduser()
    if path.is_file():
        return path.resolve()
    stem = path.name.removesuffix(".toml")
    if path.parent == Path(".") and (found := _shipped("imgbench.suites", SUITES_FOLDER, f"{stem}.toml")):
        return found
    raise UsageError(f"suite {name!r} not found: give a TOML file path or a shipped suite name "
                     f"({', '.join(shipped_suites()) or 'none found'})")


def shipped_suites() -> list[str]:
    folders = [CHECKOUT / SUITES_FOLDER]
    try:
        folders.insert(0, Path(str(resources.files("imgbench.suites"))))
    except (ModuleNotFoundError, TypeError):
        pass
    return sorted({p.stem for folder in folders if folder.is_dir() for p in folder.glob("*.toml")})
