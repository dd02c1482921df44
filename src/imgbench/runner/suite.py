"""Suites (TOML files in ``benchmarks/suites/``), command-line grid options, and expanding them into checked jobs.

A suite file::

    description = "what this suite compares"
    models = ["keras/mnist_convnet", "timm/resnet18"]   # names or globs ("timm/resnet*")
    datasets = ["mnist", "cifar10", "flowers"]
    seeds = [0, 1, 2]
    timeout = 1800                                        # seconds per job (optional)

    [params]                 # recipe overrides for every job
    epochs = 3

    [overrides.flowers]      # recipe overrides for one dataset, on top of [params]
    image_size = 64

A suite whose jobs need different recipes for the same model and dataset (``reference.toml``: a published
recipe beside the defaults) lists several grids instead, each a ``[[grids]]`` table with a ``name`` and its own
``models``, ``datasets``, ``seeds``, ``params`` and ``overrides``; the top-level ones are every grid's defaults
(a grid's ``params`` go on top of the top-level ones). ``-m``/``-d`` then pick among each grid's own. A grid's
``published`` table (the figure it reproduces, with its source) is read by ``benchmarks/reference_table.py``.

``-p key=value`` from the command line goes on top of both. :func:`expand` checks the whole grid (names,
types, ranges) and raises :class:`~imgbench.errors.UsageError` before anything runs. Every message about a
parameter names where it was set (:meth:`Suite.origin`): ``-p``, a suite file's table, the default suite a
grid without a suite inherits, or the dataset's own default recipe.
"""

from __future__ import annotations

import json
import keyword
import math
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from imgbench.engine import check_parameter, config_hash, resolve_recipe
from imgbench.engine.recipe import subset_problem
from imgbench.errors import UsageError
from imgbench.runner.jobs import Job

if TYPE_CHECKING:  # pragma: no cover
    from imgbench.registry import Registry

SUITE_KEYS = ("description", "models", "datasets", "seeds", "timeout", "params", "overrides", "grids", "infer")
GRID_KEYS = ("name", "models", "datasets", "seeds", "params", "overrides", "published")
RESERVED_PARAMS = ("model", "dataset", "seed", "out_dir")  # notebook parameters the runner sets itself
PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # plain identifiers only: nothing can be injected


@dataclass(frozen=True)
class Suite:
    models: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0,)
    params: Mapping[str, Any] = field(default_factory=dict)
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # dataset -> params
    description: str = ""
    timeout: float | None = None
    source: str = ""  # the file it came from, for messages and run.json
    grids: tuple["Suite", ...] = ()  # [[grids]]: sub-grids, each with its own recipe; the suite is their union
    name: str = ""  # a grid's name
    published: Mapping[str, Any] = field(default_factory=dict)  # a grid's published figure (reference suite)
    origins: Mapping[str, str] = field(default_factory=dict)  # where a [params] value came from, if not this table
    label: str = ""  # how messages name the suite; default "suite <source>"

    @property
    def where(self) -> str:
        """The suite (and grid) as messages name it."""
        text = self.label or (f"suite {self.source}" if self.source else "grid")
        return text + (f" grid {self.name!r}" if self.name else "")

    def origin(self, name: str, dataset: str = "") -> str:
        """Where parameter ``name`` of ``dataset``'s jobs was set: ``-p``, a suite's table, or nowhere (the
        dataset's default recipe)."""
        if dataset and name in self.overrides.get(dataset, {}):
            return f"{self.where} [overrides.{dataset}]"
        if name in self.params:
            return self.origins.get(name) or f"{self.where} [params]"
        return f"the default recipe of dataset {dataset}" if dataset else "the default recipe"
    infer: Mapping[str, Any] = field(default_factory=dict)  # [infer]: an inference suite, for `imgbench infer`

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "source": self.source, "description": self.description, "models": list(self.models),
            "datasets": list(self.datasets), "seeds": list(self.seeds), "timeout": self.timeout,
            "params": dict(self.params), "overrides": {k: dict(v) for k, v in self.overrides.items()}}
        if self.grids:
            data["grids"] = [{"name": g.name, "published": dict(g.published),
                              **{k: v for k, v in g.to_dict().items() if k in GRID_KEYS}} for g in self.grids]
        return data


def load_suite(path: Path | str) -> Suite:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read suite {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"suite {path} is not valid TOML: {exc}") from exc
    return suite_from_dict(data, source=str(path))


def suite_from_dict(data: Mapping[str, Any], source: str = "") -> Suite:
    where = f"suite {source}" if source else "suite"
    unknown = sorted(set(data) - set(SUITE_KEYS))
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {', '.join(unknown)}; a suite may set {', '.join(SUITE_KEYS)}")
    overrides = _table(data.get("overrides", {}), f"{where}: [overrides]")
    timeout = data.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not math.isfinite(timeout) or timeout <= 0):
        raise UsageError(f"{where}: timeout must be a positive number of seconds, got {timeout!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise UsageError(f"{where}: description must be a string")
    if "grids" in data:
        return _with_grids(data, where, description, timeout, source)
    return Suite(
        models=_strings(data.get("models", []), f"{where}: models"),
        datasets=_strings(data.get("datasets", []), f"{where}: datasets"),
        seeds=parse_seeds(data.get("seeds", [0]), f"{where}: seeds"),
        params=_params(data.get("params", {}), f"{where}: [params]"),
        overrides={name: _params(table, f"{where}: [overrides.{name}]") for name, table in overrides.items()},
        description=description,
        timeout=float(timeout) if timeout is not None else None,
        source=source,
        infer=_table(data.get("infer", {}), f"{where}: [infer]"),
    )


def _with_grids(data: Mapping[str, Any], where: str, description: str, timeout: Any, source: str) -> Suite:
    tables = data["grids"]
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise UsageError(f"{where}: grids must be one or more [[grids]] tables")
    top = {k: v for k, v in data.items() if k in GRID_KEYS}
    grids = []
    for number, table in enumerate(tables, 1):
        name = table.get("name")
        if not isinstance(name, str) or not name:
            raise UsageError(f"{where}: [[grids]] number {number} needs a name = \"...\"")
        unknown = sorted(set(table) - set(GRID_KEYS))
        if unknown:
            raise UsageError(f"{where}: grid {name!r}: unknown key(s) {', '.join(unknown)}; a grid may set "
                             f"{', '.join(GRID_KEYS)}")
        merged = {**top, **table, "params": {**_table(top.get("params", {}), f"{where}: [params]"),
                                             **_table(table.get("params", {}), f"{where}: grid {name!r} params")}}
        published = _table(table.get("published", {}), f"{where}: grid {name!r} published")
        grid = suite_from_dict({k: v for k, v in merged.items() if k not in ("name", "published")},
                               source=f"{source} grid {name!r}")
        inherited = {k: f"{where} [params]" for k in merged["params"] if k not in table.get("params", {})}
        grids.append(replace(grid, name=name, source=source, published=dict(published), origins=inherited))
    if len({g.name for g in grids}) < len(grids):
        raise UsageError(f"{where}: two grids share a name; each [[grids]] needs its own name")
    return Suite(models=_union(g.models for g in grids), datasets=_union(g.datasets for g in grids),
                 seeds=_union(g.seeds for g in grids), description=description,
                 timeout=float(timeout) if timeout is not None else None, source=source, grids=tuple(grids))


def _union(items: Iterable[Iterable[Any]]) -> tuple[Any, ...]:
    return tuple(dict.fromkeys(x for part in items for x in part))


def with_options(
    suite: Suite,
    models: Iterable[str] = (),
    datasets: Iterable[str] = (),
    seeds: Iterable[int] | str | None = None,
    params: Mapping[str, Any] | None = None,
) -> Suite:
    """The suite with command-line choices: ``-m``/``-d``/``--seeds`` replace, ``-p`` wins over everything.

    In a suite of grids, ``-m``/``-d`` keep the grids' models and datasets that they name (and grids left with
    none are dropped), ``--seeds`` and ``-p`` apply to every grid.
    """
    if suite.grids:
        return _grids_with_options(suite, tuple(models), tuple(datasets), seeds, params)
    params = _params(dict(params or {}), "-p")
    overrides = {ds: {k: v for k, v in table.items() if k not in params} for ds, table in suite.overrides.items()}
    return replace(
        suite,
        models=tuple(models) or suite.models,
        datasets=tuple(datasets) or suite.datasets,
        seeds=parse_seeds(seeds if isinstance(seeds, str) else list(seeds), "--seeds") if seeds is not None else suite.seeds,
        params={**suite.params, **params},
        overrides=overrides,
        origins={**suite.origins, **{name: f"-p {name}={_literal(value)}" for name, value in params.items()}},
    )


def _literal(value: Any) -> str:
    """A -p value as it was typed: ``true``, ``0.1``, ``adamw``, ``[1, 2]``."""
    if isinstance(value, bool):
        return str(value).lower()
    return value if isinstance(value, str) else json.dumps(value)


def _grids_with_options(suite: Suite, models: tuple[str, ...], datasets: tuple[str, ...],
                        seeds: Iterable[int] | str | None, params: Mapping[str, Any] | None) -> Suite:
    grids = []
    for grid in suite.grids:
        kept_models = tuple(m for m in grid.models if not models or m in models)
        kept_datasets = tuple(d for d in grid.datasets if not datasets or d in datasets)
        if kept_models and kept_datasets:
            grids.append(with_options(replace(grid, models=kept_models, datasets=kept_datasets),
                                      seeds=seeds, params=params))
    if not grids:
        raise UsageError(f"suite {suite.source}: no grid has model(s) {', '.join(models) or 'any'} on "
                         f"dataset(s) {', '.join(datasets) or 'any'}; its grids: "
                         + "; ".join(f"{g.name} ({', '.join(g.models)} on {', '.join(g.datasets)})"
                                     for g in suite.grids))
    return replace(suite, grids=tuple(grids), models=_union(g.models for g in grids),
                   datasets=_union(g.datasets for g in grids), seeds=_union(g.seeds for g in grids))


def parse_param(text: str) -> tuple[str, Any]:
    """``-p key=value``: the value is read as a TOML literal (``1e-3``, ``true``, ``[1, 2]``, ``"x"``).

    A bare word that is not a TOML literal (``adamw``) is taken as a string.
    """
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise UsageError(f"-p {text!r}: expected key=value, e.g. -p epochs=3 or -p lr=1e-3")
    check_param_name(name, "-p")
    raw = raw.strip()
    try:
        return name, tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.:/+-]*", raw):
            return name, raw
        raise UsageError(f"-p {text!r}: {raw!r} is not a value; quote strings (-p 'device=\"cuda:1\"'), "
                         f"write numbers as 3 or 1e-3, booleans as true/false, lists as [1, 2]") from None


def parse_seeds(value: Any, where: str = "--seeds") -> tuple[int, ...]:
    """``"0,1,2"`` or a list of ints -> (0, 1, 2); seeds are non-negative integers."""
    items = [s.strip() for s in value.split(",") if s.strip()] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise UsageError(f"{where}: expected a list of seeds such as 0,1,2, got {value!r}")
    seeds = []
    for item in items:
        if isinstance(item, str) and re.fullmatch(r"\d+", item):
            item = int(item)
        if isinstance(item, bool) or not isinstance(item, int) or item < 0:
            raise UsageError(f"{where}: seed {item!r} is not a non-negative integer (e.g. --seeds 0,1,2)")
        seeds.append(item)
    if not seeds:
        raise UsageError(f"{where}: no seeds given (e.g. --seeds 0,1,2)")
    return tuple(dict.fromkeys(seeds))


def check_param_name(name: Any, where: str) -> None:
    if not isinstance(name, str) or not PARAM_NAME.fullmatch(name) or keyword.iskeyword(name):
        raise UsageError(f"{where}: parameter name {name!r} is not a plain identifier (letters, digits, _)")
    if name in RESERVED_PARAMS:
        raise UsageError(f"{where}: {name!r} is set by the grid itself; use -m/-d/--seeds (or the suite's "
                         f"models/datasets/seeds) instead of a parameter")


class GridError(UsageError):
    """Everything wrong with a grid, found before anything ran: one message, one problem (and its fix) a line."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(dict.fromkeys(problems))
        if len(self.problems) == 1:
            text = self.problems[0]
        else:
            text = f"{len(self.problems)} problems; nothing was started:\n" \
                + "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(text)


def expand(suite: Suite, registry: "Registry") -> list[Job]:
    """Every (model, dataset, seed) job of the suite, checked; raises GridError naming every problem."""
    if suite.grids:  # the union, once per job: two grids may give a job the same recipe
        return list({job.job_id: job for grid in suite.grids for job in expand(grid, registry)}.values())
    where = suite.where
    problems = []
    if suite.infer:
        problems.append(f"{where} is an inference suite ([infer]): run it with `imgbench infer`")
    if not suite.models:
        problems.append(f"{where}: no models; name some with -m MODEL or the suite's models = [...]")
    if not suite.datasets:
        problems.append(f"{where}: no datasets; name some with -d DATASET or the suite's datasets = [...]")
    models = _models(suite.models, registry, problems)
    datasets = {}
    for dataset in dict.fromkeys(suite.datasets):
        try:
            datasets[dataset] = registry.dataset(dataset)[0]
        except UsageError as exc:
            problems.append(str(exc))
    for dataset in suite.overrides:
        try:
            registry.dataset(dataset)
        except UsageError as exc:
            problems.append(f"{where}: [overrides.{dataset}]: {exc}")
    # each parameter on its own, so that every bad one is named where it was set (the same -p once, not once
    # per dataset)
    tables = [("", suite.params), *suite.overrides.items()]
    for dataset, table in tables:
        for name, value in table.items():
            try:
                check_parameter(name, value)
            except UsageError as exc:
                problems.append(f"{suite.origin(name, dataset)}: {exc}")
    if problems:
        raise GridError(problems)
    jobs = []
    for dataset, spec in datasets.items():
        overrides = {**suite.params, **suite.overrides.get(dataset, {})}
        try:
            recipe = resolve_recipe(spec, overrides)  # the only resolution: the job carries it as it is
        except UsageError as exc:  # parameters that are fine alone but not together
            sources = "; ".join(f"{name} from {suite.origin(name, dataset)}" for name in overrides
                                if re.search(rf"\b{name}\b", str(exc)))
            problems.append(f"dataset {dataset}: {exc}" + (f" ({sources})" if sources else ""))
            continue
        for parameter in ("train_samples", "test_samples"):
            problem = subset_problem(parameter, getattr(recipe, parameter), [0] * len(spec.classes))
            if problem:
                problems.append(f"{suite.origin(parameter, dataset)}: dataset {dataset} has {len(spec.classes)} "
                                f"classes: {problem}")
        located = absolute_dataset(dataset, registry)
        for model in models:
            family = registry.model(model).family
            for seed in suite.seeds:
                jobs.append(Job(model, located, seed, recipe, config_hash(model, located, seed, recipe.to_dict()),
                                family=family, overrides=dict(overrides)))
    if problems:
        raise GridError(problems)
    return jobs


def absolute_dataset(dataset: str, registry: "Registry") -> str:
    """``imagefolder:data/pets`` -> ``imagefolder:/abs/data/pets``: jobs run in their own folders."""
    spec, arg = registry.dataset(dataset)
    if not spec.takes_arg or Path(arg).expanduser().is_absolute():
        return dataset
    return f"{spec.name}:{Path(arg).expanduser().resolve()}"


def _models(names: Iterable[str], registry: "Registry", problems: list[str]) -> list[str]:
    """Names as given, globs expanded against the listed models; unknown names become problems.

    A name is first taken exactly, so a registered model whose name holds ``[`` or ``*`` can be selected.
    """
    found = []
    for name in names:
        if registry.has_model(name) or not is_glob(name):
            try:
                registry.model(name)
                found.append(name)
            except UsageError as exc:
                problems.append(str(exc))
            continue
        matched = [s.name for s in registry.models([name])]
        if not matched:
            problems.append(f"no model matches {name!r} (list them with `imgbench models`)")
        found += matched
    return list(dict.fromkeys(found))


def is_glob(name: str) -> bool:
    return any(ch in name for ch in "*?[")


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise UsageError(f"{where} must be a list of names, e.g. [\"mnist\", \"cifar10\"], got {value!r}")
    return tuple(value)


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UsageError(f"{where} must be a table of key = value lines")
    return value


def _params(value: Any, where: str) -> dict[str, Any]:
    table = _table(value, where)
    for name in table:
        check_param_name(name, where)
    return dict(table)

