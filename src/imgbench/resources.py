"""Finding the files imgbench ships: the notebooks papermill executes and the benchmark suites.

Installed from a wheel they are package data (``imgbench.notebooks``, ``imgbench.suites``); in a checkout
they are the top-level ``notebooks/`` and ``benchmarks/suites/`` folders.
"""

from __future__ import annotations

import os
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from imgbench.errors import UsageError
from imgbench.paths import atomic_write_bytes

NOTEBOOK_NAME = "benchmark.ipynb"
DEFAULT_SUITE = "quick"
NO_SUITE = "none"  # `imgbench run none -m ... -d ...`: no suite, the datasets' own default recipes
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


def suite_path(name_or_path: str | os.PathLike[str] | None = None) -> Path:
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


def _shipped_folder(package: str, folder: str, suffix: str) -> dict[str, Traversable]:
    """Every ``*suffix`` file of ``package``'s data by name, else of the checkout's ``folder``.

    The files are walked as importlib resources: ``imgbench.suites`` has no ``__init__.py``, so in a wheel
    it is a namespace package whose ``files()`` is not a plain path.
    """
    try:
        found = {t.name: t for t in resources.files(package).iterdir() if t.name.endswith(suffix) and t.is_file()}
    except (ModuleNotFoundError, TypeError, FileNotFoundError, NotADirectoryError):
        found = {}
    if not found and (CHECKOUT / folder).is_dir():
        found = {p.name: p for p in (CHECKOUT / folder).glob(f"*{suffix}")}
    return dict(sorted(found.items()))


def shipped_suites() -> list[str]:
    """The names of the shipped suites (``demo``, ``quick``, ``standard``)."""
    return [name.removesuffix(".toml") for name in _shipped_folder("imgbench.suites", SUITES_FOLDER, ".toml")]


def shipped_suite_texts() -> dict[str, str]:
    """Each shipped suite's TOML text by name, for ``imgbench suites``."""
    return {name.removesuffix(".toml"): t.read_text(encoding="utf-8")
            for name, t in _shipped_folder("imgbench.suites", SUITES_FOLDER, ".toml").items()}


def copy_notebooks(target: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Copy the shipped notebooks into ``target`` (created); refuses to overwrite unless asked."""
    target = Path(target).expanduser()
    shipped = _shipped_folder("imgbench.notebooks", "notebooks", ".ipynb")
    if not shipped:
        raise UsageError("no shipped notebooks found: neither package data imgbench.notebooks nor "
                         f"{CHECKOUT / 'notebooks'}; reinstall imgbench")
    existing = [name for name in shipped if (target / name).exists()]
    if existing and not overwrite:
        raise UsageError(f"{', '.join(str(target / n) for n in existing)} already exist(s); "
                         f"pass --force to overwrite, or choose another folder")
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, source in shipped.items():
        atomic_write_bytes(target / name, source.read_bytes())
        written.append(target / name)
    return written
