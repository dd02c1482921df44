"""The typed facade over the plugin hooks: list, glob, resolve and build models, datasets and executors.

Every hook is called per plugin, so one plugin whose hook raises or returns junk loses only its own
contribution; duplicate names are errors of the later plugin. Nothing here imports a framework until
``build_model`` is called.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Iterable, Literal, Sequence, TypeVar

from imgbench.errors import UsageError
from imgbench.plugins import (
    PluginError,
    PluginSource,
    blocked_from_env,
    default_plugin_dirs,
    make_plugin_manager,
)
from imgbench.specs import DatasetSpec, ExecutorSpec, ModelSpec, TrackerSpec

if TYPE_CHECKING:  # pragma: no cover
    import importlib.metadata

    import torch

Spec = TypeVar("Spec", ModelSpec, DatasetSpec, ExecutorSpec, TrackerSpec)
PluginStatus = Literal["ok", "PARTIAL", "FAILED"]


class UnknownNameError(UsageError, LookupError):
    """An unknown model, dataset or executor name; the message suggests close matches."""

    def __init__(self, kind: str, name: str, known: Sequence[str]) -> None:
        # Same architecture in another namespace first ("resnet18" -> "timm/resnet18"), then spelling.
        same_arch = [k for k in known if k.rpartition("/")[2] == name.rpartition("/")[2]]
        close = list(dict.fromkeys(same_arch + difflib.get_close_matches(name, known, n=5, cutoff=0.6)))[:5]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        super().__init__(f"unknown {kind} {name!r}{hint} (list them with `imgbench {kind}s`)")
        self.name = name
        self.suggestions = close


class PluginsFailedError(UsageError):
    """Raised in strict mode when any plugin failed to load or register."""


@dataclass(frozen=True)
class PluginInfo:
    """One plugin as ``imgbench plugins`` lists it: where it came from, what it registered, what went wrong."""

    name: str
    source: PluginSource
    models: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    executors: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()

    @property
    def status(self) -> PluginStatus:
        """``ok``; ``PARTIAL`` when something it offers was left out (a clashing name, a raising hook) but the
        rest registered; ``FAILED`` when nothing of it registered."""
        if not self.errors:
            return "ok"
        return "PARTIAL" if self.models or self.datasets or self.executors else "FAILED"


@dataclass
class _Collected(Generic[Spec]):
    by_name: dict[str, Spec] = field(default_factory=dict)
    owner: dict[str, str] = field(default_factory=dict)


class Registry:
    """What the plugins offer. Build one with :func:`get_registry`."""

    def __init__(
        self,
        plugin_dirs: Iterable[Path | str] = (),
        blocked: Iterable[str] = (),
        strict: bool = False,
        entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
    ) -> None:
        self.plugin_dirs = tuple(Path(d) for d in plugin_dirs)
        self.blocked = tuple(sorted(set(blocked)))
        self.pm, self.sources, self.errors = make_plugin_manager(self.plugin_dirs, self.blocked, entry_points)
        self._models = self._collect("imgbench_models", ModelSpec, "model")
        self._resolved: _Collected[ModelSpec] = _Collected()  # open-ended names (timm/<any>) asked for: usable, never listed
        self._datasets = self._collect("imgbench_datasets", DatasetSpec, "dataset")
        self._executors: _Collected[ExecutorSpec] | None = None
        if strict and self.errors:
            raise PluginsFailedError("plugin errors (strict mode):\n  " + "\n  ".join(map(str, self.errors)))

    def _collect(self, hook_name: str, spec_type: type[Spec], kind: str) -> _Collected[Spec]:
        collected: _Collected[Spec] = _Collected()
        hook = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():  # registration order: built-ins, entry points, files
            plugin = impl.plugin_name
            location = self.sources[plugin].location if plugin in self.sources else plugin
            try:
                specs = impl.function()
            except Exception as exc:  # isolate a raising hook to its own plugin
                self.errors.append(PluginError(plugin, location, f"{hook_name} raised {type(exc).__name__}: {exc}"))
                continue
            if not isinstance(specs, (list, tuple)) or not all(isinstance(s, spec_type) for s in specs):
                self.errors.append(PluginError(plugin, location, f"{hook_name} must return a list of {spec_type.__name__}"))
                continue
            for spec in specs:
                if spec.name in collected.by_name:
                    other = collected.owner[spec.name]
                    self.errors.append(PluginError(plugin, location, f"{kind} {spec.name!r} is already registered by plugin {other!r}"))
                    continue
                collected.by_name[spec.name] = spec
                collected.owner[spec.name] = plugin
        return collected

    # -- models ---------------------------------------------------------------------------------------
    def models(self, patterns: Sequence[str] = ()) -> list[ModelSpec]:
        """Listed models whose names match any glob (``keras/*``, ``timm/resnet*``); all when none given."""
        names = sorted(self._models.by_name)
        if patterns:
            names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
        return [self._models.by_name[n] for n in names]

    def has_model(self, name: str) -> bool:
        """Whether ``name`` is a listed model, taken literally (``[`` and ``*`` are not globs here)."""
        return name in self._models.by_name

    def model(self, name: str) -> ModelSpec:
        """The spec for one model name; unlisted names are offered to ``imgbench_resolve_model``."""
        for collected in (self._models, self._resolved):
            if name in collected.by_name:
                return collected.by_name[name]
        spec, owner = self._resolve(name) if "/" in name else (None, "")
        if spec is None:
            raise UnknownNameError("model", name, list(self._models.by_name))
        self._resolved.by_name[name], self._resolved.owner[name] = spec, owner
        return spec

    def _resolve(self, name: str) -> tuple[ModelSpec | None, str]:
        """Ask each plugin's ``imgbench_resolve_model`` in pluggy's call order; the first answer and its plugin."""
        for impl in reversed(self.pm.hook.imgbench_resolve_model.get_hookimpls()):
            try:
                spec = impl.function(name=name)
            except Exception as exc:
                raise UnknownNameError("model", name, list(self._models.by_name)) from exc
            if isinstance(spec, ModelSpec):
                return spec, impl.plugin_name
        return None, ""

    def model_plugin(self, name: str) -> tuple[str, PluginSource | None]:
        """The plugin that provides ``name`` and where it came from (for provenance)."""
        self.model(name)
        owner = self._models.owner.get(name) or self._resolved.owner[name]
        return owner, self.sources.get(owner)

    def build_model(
        self, name: str, *, num_classes: int, in_chans: int, image_size: int, pretrained: bool = False
    ) -> "torch.nn.Module":
        """Build one model for inputs ``(N, in_chans, image_size, image_size)``.

        Inputs smaller than the architecture's minimum are resized up inside the returned module; the
        size it really sees is ``input_size(spec, image_size)``.
        """
        import torch

        spec = self.model(name)
        if in_chans not in spec.channels:
            raise UsageError(f"model {name!r} takes {spec.channels} input channels, not {in_chans}")
        if pretrained and not spec.pretrained:
            raise UsageError(f"model {name!r} has no pretrained weights; drop pretrained=True")
        size = input_size(spec, image_size)
        module = spec.build(num_classes=num_classes, in_chans=in_chans, image_size=size, pretrained=pretrained)
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"model {name!r} built a {type(module).__name__}, not a torch.nn.Module; "
                            f"every imgbench model must be one (Keras 3 on the torch backend is)")
        if size != image_size:
            from imgbench.wrappers import ResizeInput

            module = ResizeInput(module, size)
        return module

    # -- datasets -------------------------------------------------------------------------------------
    def datasets(self, patterns: Sequence[str] = ()) -> list[DatasetSpec]:
        """Datasets whose names match any glob; all when none given."""
        names = sorted(self._datasets.by_name)
        if patterns:
            names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
        return [self._datasets.by_name[n] for n in names]

    def dataset(self, name: str) -> tuple[DatasetSpec, str]:
        """The spec for ``name`` or ``name:arg`` (``imagefolder:/data/pets``) and the argument."""
        base, sep, arg = name.partition(":")
        spec = self._datasets.by_name.get(base)
        if spec is None:
            raise UnknownNameError("dataset", base, list(self._datasets.by_name))
        if spec.takes_arg and not arg:
            raise UsageError(f"dataset {base!r} needs an argument: {base}:/path/to/root")
        if arg and not spec.takes_arg:
            raise UsageError(f"dataset {base!r} takes no argument; use {base!r} alone")
        return spec, arg

    # -- executors ------------------------------------------------------------------------------------
    def executors(self) -> list[ExecutorSpec]:
        """Every executor, collected on first use (only ``imgbench run`` needs them)."""
        if self._executors is None:
            self._executors = self._collect("imgbench_executors", ExecutorSpec, "executor")
        return [self._executors.by_name[n] for n in sorted(self._executors.by_name)]

    def executor(self, name: str) -> ExecutorSpec:
        """The spec of one executor; an unknown name suggests close ones."""
        specs = {s.name: s for s in self.executors()}
        if name not in specs:
            raise UnknownNameError("executor", name, list(specs))
        return specs[name]

    # -- trackers -------------------------------------------------------------------------------------
    @cached_property
    def _trackers(self) -> _Collected[TrackerSpec]:
        return self._collect("imgbench_trackers", TrackerSpec, "tracker")

    def trackers(self) -> list[TrackerSpec]:
        """The experiment trackers plugins offer (``imgbench run --track NAME``)."""
        return [self._trackers.by_name[n] for n in sorted(self._trackers.by_name)]

    # -- plugins --------------------------------------------------------------------------------------
    @cached_property
    def plugins(self) -> list[PluginInfo]:
        """Every plugin, loaded or not, with what it registered and what went wrong."""
        executors = self.executors()
        infos = []
        names = list(self.sources) + [e.plugin for e in self.errors if e.plugin not in self.sources]
        for name in dict.fromkeys(names):
            source = self.sources.get(name) or PluginSource("failed", next(e.location for e in self.errors if e.plugin == name))
            infos.append(PluginInfo(
                name=name,
                source=source,
                models=tuple(sorted(n for n, o in self._models.owner.items() if o == name)),
                datasets=tuple(sorted(n for n, o in self._datasets.owner.items() if o == name)),
                executors=tuple(sorted(e.name for e in executors if self._executors and self._executors.owner[e.name] == name)),
                errors=tuple(e.message for e in self.errors if e.plugin == name),
            ))
        return infos


def input_size(spec: ModelSpec, image_size: int) -> int:
    """The square input size a model really sees for data at ``image_size``."""
    return max(image_size, spec.min_size)


def registry_with(plugin_dirs: Iterable[Path | str] = (), blocked: Iterable[str] = (), strict: bool = False) -> Registry:
    """The default registry plus these plugin folders and blocked names (``--plugins-dir``, ``--block-plugin``)."""
    return get_registry(default_plugin_dirs() + list(map(Path, plugin_dirs)), blocked_from_env() | set(blocked),
                        strict=strict)


_CACHE: dict[tuple[tuple[Path, ...], tuple[str, ...], bool], Registry] = {}


def get_registry(
    plugin_dirs: Iterable[Path | str] | None = None,
    blocked: Iterable[str] | None = None,
    strict: bool = False,
) -> Registry:
    """The registry for these settings (cached per process).

    Defaults: the repo's ``plugins/`` plus ``IMGBENCH_PLUGINS_DIR``; blocked names from
    ``IMGBENCH_BLOCK_PLUGINS``.
    """
    dirs = tuple(Path(d).resolve() for d in (default_plugin_dirs() if plugin_dirs is None else plugin_dirs))
    block = tuple(sorted(blocked_from_env() if blocked is None else set(blocked)))
    key = (dirs, block, strict)
    if key not in _CACHE:
        _CACHE[key] = Registry(dirs, block, strict)
    return _CACHE[key]
