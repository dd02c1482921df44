"""Every hook imgbench calls. Plugins implement them with ``@imgbench.hookimpl``.

Registration hooks return data (lists of frozen specs from :mod:`imgbench.specs`); they never mutate shared
state, so a plugin that raises only loses its own contribution. Each hook is typed: an implementation takes
the parameters of its hookspec (any subset, by name) and returns its type. ``hookimpl`` keeps the decorated
function's own type, so a type checker holds an implementation annotated as its hookspec is
(``-> list[ModelSpec]``) to that type, and every spec it builds to the :mod:`imgbench.specs` protocols of
its callables. An implementation whose name matches no hookspec fails its plugin at registration.

Lifecycle hooks (``imgbench_grid_started``, ``imgbench_job_finished``, ``imgbench_grid_finished``) are called in
the launcher, the one process that writes the results folder, also when the jobs run on Dask workers. They get
read-only records (:mod:`imgbench.specs`) and are called one implementation at a time: one that
raises is reported once, in the launcher's output and in run.json's ``hook_errors``, and is not called again
for that grid; the others still run, and no row, file or exit status changes.
"""

from __future__ import annotations

import pluggy

from imgbench.specs import (DatasetSpec, ExecutorSpec, GridInfo, GridOutcome, JobInfo, JobOutcome, ModelSpec, RunLink,
                            TrackerSpec)

PROJECT = "imgbench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def imgbench_models() -> list[ModelSpec]:
    """Called once per plugin when the registry is first built (``imgbench models``, ``run``, the API).

    Returns:
        The model architectures this plugin offers, as :class:`~imgbench.specs.ModelSpec` records. Names are
        namespaced (``<plugin>/<arch>``) and must be unique across all plugins; a name two plugins claim is
        reported as an error of the later one (built-ins, then entry points, then plugin files), which keeps
        its other models.

    Do not import a deep-learning framework here: do that inside ``ModelSpec.build``
    (:class:`~imgbench.specs.ModelBuilder`). A hook that raises, or returns anything but a list of
    ``ModelSpec``, loses only this plugin's models, and ``imgbench plugins`` reports it.
    """
    return []


@hookspec(firstresult=True)
def imgbench_resolve_model(name: str) -> ModelSpec | None:
    """Called when a model name is asked for that no plugin listed in ``imgbench_models``.

    Args:
        name: the full name asked for, with its namespace (``timm/resnet26d``).

    Returns:
        A spec for open-ended families (``timm/<any timm architecture>``), or None to pass. The first non-None
        answer wins; the name is usable from then on (and records the plugin that answered) but is never
        added to the listing. A hook that raises makes the name unknown.

    This hook may import its framework, since it runs only for unlisted names.
    """
    return None


@hookspec
def imgbench_datasets() -> list[DatasetSpec]:
    """Called once per plugin when the registry is first built.

    Returns:
        The datasets this plugin offers, as :class:`~imgbench.specs.DatasetSpec` records. Names are plain
        (``mnist``, ``flowers``) and unique across plugins; a spec with ``takes_arg=True`` is asked for as
        ``name:arg``. Loading happens later, through ``DatasetSpec.load``
        (:class:`~imgbench.specs.DatasetLoader`); ``DatasetSpec.recipe`` carries the dataset's own recipe
        defaults (none: its jobs take the generic recipe). Folder-per-class trees need no code of their
        own: return :func:`imgbench.datasets.imagefolder_dataset`.
    """
    return []


@hookspec
def imgbench_executors() -> list[ExecutorSpec]:
    """Called once per plugin when ``imgbench run`` chooses how to execute its grid (``--executor``).

    Returns:
        The executors this plugin offers, as :class:`~imgbench.specs.ExecutorSpec` records (``local`` is
        built in; ``dask`` comes with the dask extra). ``ExecutorSpec.create``
        (:class:`~imgbench.specs.ExecutorFactory`) returns an :class:`~imgbench.specs.Executor`; each of the
        spec's ``options`` becomes an ``imgbench run`` option.
    """
    return []


@hookspec
def imgbench_trackers() -> list[TrackerSpec]:
    """Called once per plugin when ``imgbench run`` is asked for trackers (``--track``, ``IMGBENCH_TRACK``).

    Return the experiment trackers this plugin offers (``mlflow`` is built in; it needs the mlflow extra).
    A tracker is created only when named, before any job starts; the object ``TrackerSpec.create`` returns
    implements the lifecycle hooks below and is registered as a plugin for that one grid.
    """
    return []


@hookspec
def imgbench_grid_started(grid: GridInfo) -> list[RunLink] | None:
    """Called once per grid, after every check has passed and before the first job starts (also when a resume
    finds every job already done).

    ``grid`` is the whole grid: its folder, every job, and the recorded outcome of the jobs a resume skips.
    Return links to where the grid (``RunLink.job_id`` empty) and any of its jobs are recorded, or None.
    """
    return None


@hookspec
def imgbench_job_finished(job: JobInfo, record: JobOutcome) -> RunLink | None:
    """Called once per job this invocation ran, whatever its status (ok, failed, timeout, crashed, ...), as
    soon as its row is in results.csv; never for the jobs a resume skips.

    ``record`` holds the job's results.csv row and its folder. Return a link to where the job is recorded, or
    None.
    """
    return None


@hookspec
def imgbench_grid_finished(grid: GridInfo, results: GridOutcome) -> None:
    """Called once per grid, after the last job and the report (also when a job or the report failed; not
    when the run is interrupted).

    ``results`` holds every row of results.csv, the report's path and the exit status. Return None.
    """
    return None
