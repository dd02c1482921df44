"""The grid runner: suites and ``-m/-d/--seeds/-p`` become checked jobs, papermill runs one notebook per job.

From Python (a notebook, a script)::

    import imgbench
    result = imgbench.run_grid(models=["timm/resnet18"], datasets=["mnist"], seeds=[0, 1], params={"epochs": 2})
    print(result.summary()); result.frame()

Modules: :mod:`.suite` (TOML suites, grid expansion, checks), :mod:`.jobs` (job ids), :mod:`.preflight`
(every check before anything starts), :mod:`.execute` (one job, supervised), :mod:`.executors` (the
executor protocol, ``local``), :mod:`.dask_executor`, :mod:`.results` (results.csv), :mod:`.grid`
(``run_grid``), :mod:`.progress`, :mod:`.cli`. The job itself, its process, kernel and notebook, is
:mod:`imgbench.jobrecord`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GridResult", "run_grid"]


def __getattr__(name: str) -> Any:
    # Lazy, so that the job process importing .execute (for JobTask) loads no more.
    if name in __all__:
        from imgbench.runner import grid

        return getattr(grid, name)
    raise AttributeError(f"module 'imgbench.runner' has no attribute {name!r}")
