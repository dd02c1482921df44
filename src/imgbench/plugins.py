"""Finding and loading plugins: the one place a plugin manager is built.

Sources, in order: installed distributions' ``imgbench`` entry points (imgbench's own built-in families are
registered there too, exactly like a third party's), then every ``*.py`` file in the plugin folders. A
plugin that fails to import is recorded as an error and left out; it never takes the others down.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
import traceback
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterable, Literal

import pluggy

from imgbench import hookspecs
from imgbench.errors import UsageError

ENTRY_POINT_GROUP = "imgbench"
PLUGINS_DIR_ENV = "IMGBENCH_PLUGINS_DIR"  # os.pathsep-separated folders of drop-in plugin files
BLOCK_ENV = "IMGBENCH_BLOCK_PLUGINS"  # comma-separated plugin names to leave out
OWN_DISTRIBUTION = "imgbench"


PluginKind = Literal["built-in", "entry point", "file", "failed"]


@dataclass(frozen=True)
class PluginSource:
    """Where a plugin came from: ``built-in``, ``entry point`` or ``file`` (``failed``: it never loaded), and
    the details to find it."""

    kind: PluginKind
    location: str  # module path, "dist==version: module", or a file path
    distribution: str = ""
    version: str = ""


@dataclass(frozen=True)
class PluginError:
    plugin: str
    location: str
    message: str

    def __str__(self) -> str:
        return f"plugin {self.plugin!r} ({self.location}): {self.message}"


class MissingBuiltinsError(UsageError):
    """imgbench's own entry points are not installed, so not even the built-in families would be listed."""


def repo_plugins_dir(start: Path | None = None) -> Path | None:
    """The repository's top-level ``plugins/`` when run from inside an imgbench checkout."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        pyproject = folder / "pyproject.toml"
        if (folder / "plugins").is_dir() and pyproject.is_file():
            if 'name = "imgbench"' in pyproject.read_text(encoding="utf-8", errors="replace"):
                return folder / "plugins"
    return None


def plugin_dirs_from_env() -> list[Path]:
    return [Path(p) for p in os.environ.get(PLUGINS_DIR_ENV, "").split(os.pathsep) if p]


def blocked_from_env() -> set[str]:
    return {name.strip() for name in os.environ.get(BLOCK_ENV, "").split(",") if name.strip()}


def default_plugin_dirs() -> list[Path]:
    """The repo's ``plugins/`` (when run from a checkout) followed by ``IMGBENCH_PLUGINS_DIR``."""
    dirs = [d for d in [repo_plugins_dir()] if d is not None]
    return dirs + plugin_dirs_from_env()


def _load_file(path: Path) -> ModuleType:
    module_name = f"imgbench_plugins.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def _describe_exception(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" at {Path(last[0].filename).name}:{last[0].lineno}" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"


def make_plugin_manager(
    plugin_dirs: Iterable[Path | str] = (),
    blocked: Iterable[str] = (),
    entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
) -> tuple[pluggy.PluginManager, dict[str, PluginSource], list[PluginError]]:
    """Build the plugin manager: register every plugin found, record every one that failed to load.

    Returns the manager, each registered plugin's source keyed by plugin name, and the load errors.
    ``entry_points`` defaults to the installed ``imgbench`` group; tests may pass their own.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    blocked = set(blocked)
    for name in blocked:
        pm.set_blocked(name)
    sources: dict[str, PluginSource] = {}
    errors: list[PluginError] = []

    def register(name: str, load: Callable[[], object], source: PluginSource) -> None:
        if name in blocked:
            return
        if name in sources:
            errors.append(PluginError(name, source.location, f"a plugin named {name!r} is already loaded "
                                      f"from {sources[name].location}; rename one of them"))
            return
        try:
            module = load()
            pm.register(module, name=name)
        except Exception as exc:  # a broken plugin must not take the others down
            errors.append(PluginError(name, source.location, _describe_exception(exc)))
            return
        try:
            pm.check_pending()  # the plugins before this one passed, so a failure is this one's
        except pluggy.PluginValidationError as exc:
            pm.unregister(name=name)
            errors.append(PluginError(name, source.location, _unknown_hook_message(exc)))
            return
        sources[name] = source

    if entry_points is None:
        entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        if not any(_dist_name(ep) == OWN_DISTRIBUTION for ep in entry_points):
            raise MissingBuiltinsError(
                f"imgbench's built-in plugins (the keras and timm families, the datasets, the executors) are not "
                f"registered: no {ENTRY_POINT_GROUP!r} entry points of the {OWN_DISTRIBUTION} distribution are "
                f"installed. Install imgbench (`pip install .`, or `pip install -e .` in a checkout) instead of "
                f"running it from a bare source tree.")
    # Built-ins first so that a third party cannot shadow them by accident.
    ordered = sorted(entry_points, key=lambda ep: (_dist_name(ep) != OWN_DISTRIBUTION, ep.name))
    for ep in ordered:
        dist, version = _dist_name(ep), _dist_version(ep)
        kind: PluginKind = "built-in" if dist == OWN_DISTRIBUTION else "entry point"
        location = f"{dist}=={version}: {ep.value}" if dist else ep.value
        register(ep.name, ep.load, PluginSource(kind, location, dist, version))

    seen_dirs: set[Path] = set()
    for folder in map(Path, plugin_dirs):
        folder = folder.resolve()
        if folder in seen_dirs:
            continue
        seen_dirs.add(folder)
        if not folder.is_dir():
            errors.append(PluginError(folder.name, str(folder), "plugin folder does not exist"))
            continue
        for path in sorted(folder.glob("*.py")):
            if path.name.startswith("_"):
                continue
            register(path.stem, partial(_load_file, path), PluginSource("file", str(path)))
    return pm, sources, errors


def _unknown_hook_message(exc: pluggy.PluginValidationError) -> str:
    """Name the misspelt hook and the closest real one: ``imgbench_model`` -> ``imgbench_models``."""
    known = [name for name in dir(hookspecs) if name.startswith(f"{hookspecs.PROJECT}_")]
    words = str(exc).replace("'", " ").replace('"', " ").split()
    unknown = next((w for w in words if w.startswith(f"{hookspecs.PROJECT}_") and w not in known), "")
    close = difflib.get_close_matches(unknown, known, n=1) if unknown else []
    hint = f"; did you mean {close[0]}?" if close else f"; the hooks are {', '.join(known)}"
    return f"unknown hook {unknown or '(see pluggy)'}: {exc}{hint}"


def _dist_name(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.metadata["Name"] if dist is not None else ""


def _dist_version(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.version if dist is not None else ""
