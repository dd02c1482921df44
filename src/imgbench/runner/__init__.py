"""The grid runner: suites and ``-m/-d/--seeds/-p`` become checked jobs, papermill runs one notebook per job.

From Python (a notebook, a script)::

    import imgbench
    result = imgbench.run_grid(models=["timm/resnet18"], datasets=["mnist"], seeds=[0, 1], params={"epochs": 2})
    print(result.summary()); result.frame()

Modules: :mod:`.suite` (TOML suites, grid expansion, checks), :mod:`.jobs` (job ids), :mod:`.execute` (one
job), :mod:`.kernel` (the kernel a job runs in), :mod:`.executors` (the executor protocol, ``local``),
:mod:`.results` (results.csv), :mod:`.grid` (``run_grid``), :mod:`.progress`, :mod:`.display` (what the
notebook shows), :mod:`.resources` (finding the notebook and suites), :mod:`.cli`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GridResult", "run_grid"]


def __getattr__(name: str) -> Any:
    # Lazy, so that a job's kernel importing .display (or the job process running .execute) loads no more.
    if name in __all__:
        from imgbench.runner import grid

        return getattr(grid, name)
    raise AttributeError(f"module 'imgbench.runner' has no attribute {name!r}")
