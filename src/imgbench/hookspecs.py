"""Every hook imgbench calls. Plugins implement them with ``@imgbench.hookimpl``.

Registration hooks return data (lists of frozen specs from :mod:`imgbench.specs`); they never mutate shared
state, so a plugin that raises only loses its own contribution.

Lifecycle hooks (``imgbench_grid_started``, ``imgbench_job_finished``, ``imgbench_grid_finished``) are called in
the launcher, the one process that writes the results folder, also when the jobs run on Dask workers. They get
read-only records (:mod:`imgbench.tracking.records`) and are called one implementation at a time: one that
raises is reported once, in the launcher's output and in run.json's ``hook_errors``, and is not called again
for that grid; the others still run, and no row, file or exit status changes.
"""

from __future__ import annotations

import pluggy

from imgbench.specs import DatasetSpec, ExecutorSpec, ModelSpec
from imgbench.tracking.records import GridInfo, GridOutcome, JobInfo, JobOutcome, RunLink, TrackerSpec

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


@hookspec
def imgbench_trackers() -> list[TrackerSpec]:
    """Called once per plugin when ``imgbench run`` is asked for trackers (``--track``, ``IMGBENCH_TRACK``).

    Return the experiment trackers this plugin offers (``mlflow`` is built in; it needs the mlflow extra).
    A tracker is created only when named, before any job starts; the object ``TrackerSpec.create`` returns
    implements the lifecycle hooks below and is registered as a plugin for that one grid.
    """


@hookspec
def imgbench_grid_started(grid: GridInfo) -> list[RunLink] | None:
    """Called once per grid, after every check has passed and before the first job starts (also when a resume
    finds every job already done).

    ``grid`` is the whole grid: its folder, every job, and the recorded outcome of the jobs a resume skips.
    Return links to where the grid (``RunLink.job_id`` empty) and any of its jobs are recorded, or None.
    """


@hookspec
def imgbench_job_finished(job: JobInfo, record: JobOutcome) -> RunLink | None:
    """Called once per job this invocation ran, whatever its status (ok, failed, timeout, crashed, ...), as
    soon as its row is in results.csv; never for the jobs a resume skips.

    ``record`` holds the job's results.csv row and its folder. Return a link to where the job is recorded, or
    None.
    """


@hookspec
def imgbench_grid_finished(grid: GridInfo, results: GridOutcome) -> None:
    """Called once per grid, after the last job and the report (also when a job or the report failed; not
    when the run is interrupted).

    ``results`` holds every row of results.csv, the report's path and the exit status. Return None.
    """
