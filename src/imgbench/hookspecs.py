"""Every hook imgbench calls. Plugins implement them with ``@imgbench.hookimpl``.

Registration hooks return data (lists of frozen specs from :mod:`imgbench.specs`); they never mutate shared
state, so a plugin that raises only loses its own contribution.
"""

from __future__ import annotations

import pluggy

from imgbench.specs import DatasetSpec, ExecutorSpec, ModelSpec

PROJECT = "imgbench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def imgbench_models() -> list[ModelSpec]:
    """Called once per plugin when the registry is first built (``imgbench models``, ``run``, the API).

    Return the model architectures this plugin offers. Names are namespaced (``<plugin>/<arch>``) and must
    be unique across all plugins; a name two plugins claim is reported as an error of the later one.
    Do not import a deep-learning framework here: do that inside ``ModelSpec.build``.
    """


@hookspec(firstresult=True)
def imgbench_resolve_model(name: str) -> ModelSpec | None:
    """Called when a model name is asked for that no plugin listed in ``imgbench_models``.

    Return a spec for open-ended families (``timm/<any timm architecture>``), or None to pass. The first
    non-None answer wins. This hook may import its framework, since it runs only for unlisted names.
    """


@hookspec
def imgbench_datasets() -> list[DatasetSpec]:
    """Called once per plugin when the registry is first built.

    Return the datasets this plugin offers. Names are plain (``mnist``, ``flowers``) and unique across
    plugins. Loading happens later, through ``DatasetSpec.load``. ``DatasetSpec.recipe`` carries the
    dataset's own recipe defaults (none: its jobs take the generic recipe).
    """


@hookspec
def imgbench_executors() -> list[ExecutorSpec]:
    """Called once per plugin when ``imgbench run`` chooses how to execute its grid (``--executor``).

    Return the executors this plugin offers (``local`` is built in; ``dask`` comes with the dask extra).
    """
