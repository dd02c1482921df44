"""The preflight: everything that can be known about a grid before its first kernel starts, checked at once.

:func:`run_grid` calls :func:`preflight` before it writes anything. Every problem found goes into one
:class:`~imgbench.runner.suite.GridError` (the CLI prints it and exits 2), so a large grid never pays a kernel
start per job to learn that its input was wrong, and a user fixes everything in one round:

- the grid itself (:func:`~imgbench.runner.suite.expand`): names, parameter types and ranges, subset sizes;
- the run's options: timeout, executor, notebook;
- when the jobs run on this machine: every device asked for, and every dataset, once for the grid (a local
  copy is complete and matches its checksums, an image folder can be loaded, and a dataset that must be
  downloaded can be: its host is probed once, quickly). Jobs that run elsewhere (a Dask cluster) load
  data and pick devices there, so only data that is missing outright is refused here.

A machine that can download still downloads inside the job, as a load always does.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Callable, Iterable
from urllib.parse import urlsplit

from imgbench.engine.recipe import device_problem
from imgbench.errors import UsageError
from imgbench.paths import DataFolders
from imgbench.recipe_fields import DEVICE_PATTERN
from imgbench.runner.jobs import Job
from imgbench.runner.suite import GridError, Suite, expand

if TYPE_CHECKING:  # pragma: no cover
    from imgbench.registry import Registry


class HostProbe:
    """``can_download(url)`` for dataset checks: asks ``probe`` once per host and remembers the answer."""

    def __init__(self, probe: Callable[[str], str] | None = None) -> None:
        self.probe = probe
        self.answers: dict[str, str] = {}

    def __call__(self, url: str) -> str:
        host = urlsplit(url).netloc
        if host not in self.answers:
            from imgbench.datasets import download

            self.answers[host] = (self.probe or download.probe)(url)
        return self.answers[host]


def preflight(grid: Suite, registry: "Registry", *, data_dir: str | os.PathLike[str] | None = None,
              on_this_machine: bool = True,
              problems: Iterable[str] = (), probe: Callable[[str], str] | None = None) -> list[Job]:
    """The grid's jobs, or a GridError naming every problem (``problems``: those the caller found already)."""
    found = list(problems)
    try:
        jobs = expand(grid, registry)
    except GridError as exc:
        found += exc.problems
        jobs = []
    if on_this_machine:
        found += device_problems(grid)
    found += data_problems(grid.datasets, registry, data_dir, HostProbe(probe) if on_this_machine else None)
    if found:
        raise GridError(found)
    return jobs


def timeout_problem(timeout: object) -> str:
    if timeout is None:
        return ""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) \
            or timeout <= 0:
        return f"--timeout must be a positive number of seconds, got {timeout!r}"
    return ""


def device_problems(grid: Suite) -> list[str]:
    """Each device the grid asks for that this machine lacks (``cuda`` without CUDA, ``cuda:3`` with two GPUs,
    ``mps`` off macOS), named where it was set. Malformed names are the recipe's to report."""
    problems: dict[str, str] = {}  # device -> why not: asked for in several places, checked once
    found = []
    for part in grid.grids or (grid,):
        for dataset, table in [("", part.params), *part.overrides.items()]:
            device = table.get("device")
            if not isinstance(device, str) or not DEVICE_PATTERN.fullmatch(device):
                continue
            if device not in problems:
                problems[device] = device_problem(device)
            if problems[device]:
                found.append(f"{part.origin('device', dataset)}: parameter device={device!r}: {problems[device]}")
    return found


def data_problems(datasets: Iterable[str], registry: "Registry", data_dir: str | os.PathLike[str] | None = None,
                  can_download: Callable[[str], str] | None = None) -> list[str]:
    """What stops each dataset from loading, once per dataset. Without ``can_download`` (the jobs load their data
    elsewhere) only data that is missing outright counts."""
    folders = DataFolders.resolve(data_dir)
    problems = []
    for dataset in dict.fromkeys(datasets):
        try:
            spec, arg = registry.dataset(dataset)
        except UsageError:
            continue  # expand reported it
        if can_download is not None and spec.check is not None:
            found = spec.check(arg=arg, can_download=can_download, **folders.as_kwargs())
            problems += [f"dataset {dataset}: {problem}" for problem in found]
            continue
        where, detail = spec.locate(arg=arg, **folders.as_kwargs())
        if where == "missing":
            problems.append(f"dataset {dataset}: no data ({detail}); fix --data-dir / IMGBENCH_DATA_DIR "
                            f"or the path, see `imgbench datasets`")
    return problems
