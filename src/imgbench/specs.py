"""The plugin contracts: the frozen records plugins return from their hooks and get in the lifecycle hooks,
and the callables they carry.

A plugin module imports these (and ``hookimpl``) from ``imgbench`` and nothing else. Each callable a spec
carries has a :class:`typing.Protocol` here (:class:`ModelBuilder`, :class:`DatasetLoader`,
:class:`Executor`, ...), so a plugin author's type checker holds a builder, a loader or an executor to its
contract; each value of a fixed set is a ``Literal`` (:data:`Where`, :data:`ChannelOrder`). Nothing here
imports a deep-learning framework: a spec carries a *builder* that does the heavy imports when it is
called, so listing names stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Protocol, Sequence, TypeVar, cast

from imgbench import schema
from imgbench.errors import UsageError
from imgbench.recipe_fields import RecipeValue

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

Where = Literal["local", "cache", "download", "missing"]
"""Where a dataset load would read from (``DatasetSpec.locate``): a local copy, the cache, a download, or
nowhere (the grid refuses a dataset that is ``missing``)."""

ChannelOrder = Literal["RGB", "BGR"]
"""The channel order a model's inputs take (``DataConfig.channel_order``); ``BGR`` for Keras' caffe-style
weights."""

CanDownload = Callable[[str], str]
"""``can_download(url)``: ``''`` when this machine can download from the URL's host, else why not."""

Task = TypeVar("Task")
"""The task an executor runs: :class:`imgbench.runner.execute.JobTask` (the runner's, named there)."""


class ModelBuilder(Protocol):
    """``ModelSpec.build``: builds the model for one input shape and class count.

    Returns a ``torch.nn.Module`` that maps a float tensor ``(N, in_chans, image_size, image_size)`` to
    logits ``(N, num_classes)``. Keras 3 models on the torch backend are torch modules
    (wrap them in :class:`imgbench.wrappers.KerasModule`). Import the framework inside the builder, not at
    the top of the plugin module. The registry always passes all four keywords, and never an
    ``image_size`` below ``ModelSpec.min_size``.
    """

    def __call__(self, *, num_classes: int, in_chans: int, image_size: int, pretrained: bool) -> torch.nn.Module:
        ...


class DataConfigSource(Protocol):
    """``ModelSpec.data_config``: the preprocessing the model's trained weights expect, or None if unknown."""

    def __call__(self) -> DataConfig | None:
        ...


class ClassifierFinder(Protocol):
    """``ModelSpec.classifier``: the classification head inside a built module (the ``build`` result).

    The head is re-initialised for a new class count when a job starts from trained weights, and it is the
    only part trained with ``finetune=head``.
    """

    def __call__(self, module: torch.nn.Module, /) -> torch.nn.Module:
        ...


class DatasetLoader(Protocol):
    """``DatasetSpec.load``: the three splits at the requested size.

    ``image_size=0`` keeps the native resolution (or the loader's documented default where images vary);
    ``val_size`` is the share of the training set held out for validation; ``data_dir`` is the folder of
    local copies (None: none) and ``cache_dir`` the cache of downloads and decoded arrays
    (:class:`imgbench.paths.DataFolders`); ``arg`` is the text after ``name:`` (``imagefolder:/path``), or
    ``''``. Raise :class:`imgbench.errors.UsageError` for a bad argument.
    """

    def __call__(self, *, image_size: int, val_size: float, data_dir: Path | None, cache_dir: Path,
                 arg: str) -> LoadedDataset:
        ...


class DatasetLocator(Protocol):
    """``DatasetSpec.locate``: where a load would read from, without loading: ``(where, detail)``.

    ``detail`` is a path, a URL or why the dataset is missing, for ``imgbench datasets`` and the preflight.
    """

    def __call__(self, *, data_dir: Path | None, cache_dir: Path, arg: str) -> tuple[Where, str]:
        ...


class DatasetChecker(Protocol):
    """``DatasetSpec.check``: every problem a load would hit, found cheaply before any job starts.

    Returns one line per problem (empty: none). ``can_download`` says whether a URL's host can be reached.
    """

    def __call__(self, *, data_dir: Path | None, cache_dir: Path, arg: str,
                 can_download: CanDownload) -> list[str]:
        ...


class Executor(Protocol[Task]):
    """What ``ExecutorSpec.create`` returns: runs the jobs of one grid, once.

    The runner calls :meth:`check` before it writes anything, :meth:`prepare` with the jobs it will run, then
    :meth:`run` once with the same jobs. Each task is run by
    calling :func:`imgbench.runner.execute.execute_job` ``(task, extra_env=..., stop=...)`` wherever the
    executor likes (a thread, a process, a Dask worker); it needs nothing from the launcher but the same
    Python environment, and either the task's ``out_dir`` on a shared filesystem or an executor that ships
    the job folder back. ``extra_env`` carries per-slot settings (``CUDA_VISIBLE_DEVICES``, and
    :func:`imgbench.engine.threads.thread_env`: each job's share of the CPU cores). Job faults (a crashed
    kernel, a timeout, a raising cell) are rows with a status, never exceptions. On KeyboardInterrupt the
    executor stops the running jobs and re-raises; unfinished jobs have no ``job.json`` and run again on
    resume.
    """

    def check(self, tasks: Sequence[Task]) -> None:
        """Raise :class:`imgbench.errors.UsageError` for a grid this executor cannot run fairly (``local``
        refuses to share one GPU between jobs); return None to accept it."""
        ...

    def prepare(self, tasks: Sequence[Task]) -> None:
        """Start, without waiting, what the first jobs will need, so that it overlaps the runner's remaining
        preparation (``local`` starts the fork servers of their kernels, :mod:`imgbench.forkserver`); what it
        starts, :meth:`close` stops, or the launcher's exit. An executor that subclasses this one may leave it
        as it is: it does nothing."""
        return None

    def close(self) -> None:
        """Stop what :meth:`prepare` started and :meth:`run` kept for the rest of the grid (``local``: the fork
        servers, which also give the report its kernel). The runner calls it once, when the grid is over and
        its report built, or stopped by an error or Ctrl-C. An executor that subclasses this one may leave it
        as it is: it does nothing."""
        return None

    def run(self, tasks: Sequence[Task], on_result: Callable[[Task, dict[str, Any]], None],
            on_start: Callable[[Task], None] | None = None) -> None:
        """Run every task. Call ``on_result(task, row)`` in the thread that called ``run``, once per finished
        job, as soon as it finishes (the runner rewrites results.csv there); call ``on_start(task)``, when
        given, when a job really starts, from any thread."""
        ...


class ExecutorFactory(Protocol):
    """``ExecutorSpec.create``: ``create(slots=N, **options)`` makes the executor of one grid.

    ``jobs`` is ``imgbench run --jobs``; the other keywords are the spec's declared ``options`` that were
    given (as strings), and nothing else. A factory takes its tasks as the runner's ``JobTask``; this
    bottom layer cannot name that type, hence ``Executor[Any]``.
    """

    def __call__(self, *, slots: int) -> Executor[Any]:
        ...


@dataclass(frozen=True)
class ModelSpec:
    """One model architecture a plugin offers (returned by ``imgbench_models`` or ``imgbench_resolve_model``).

    ``build`` (:class:`ModelBuilder`) makes it for one input shape; the registry never calls it with
    ``image_size < min_size``: smaller inputs are resized up first (``imgbench.registry.input_size``).
    """

    name: str  # namespaced: "keras/resnet50", "timm/resnet18", "<plugin>/<arch>"
    build: ModelBuilder
    description: str
    family: str = ""  # defaults to the namespace
    style: str = "cnn"  # cnn, resnet, densenet, inception, mobile, efficient, convnext, transformer, ...
    min_size: int = 1  # smallest square input the architecture accepts
    channels: tuple[int, ...] = (1, 3)  # input channel counts it can be built for
    pretrained: bool = False  # whether ImageNet weights can be requested (downloaded on first use)
    # the inputs its pretrained weights expect; None: no known preprocessing
    data_config: DataConfigSource | None = None
    # the classification head of a built module; None: the last submodule that holds parameters
    classifier: ClassifierFinder | None = None

    def __post_init__(self) -> None:
        namespace, sep, arch = self.name.partition("/")
        if not sep or not namespace or not arch or "/" in arch:
            raise ValueError(f"model name {self.name!r} must look like '<namespace>/<arch>'")
        if not self.family:
            object.__setattr__(self, "family", namespace)


@dataclass(frozen=True)
class DataConfig:
    """How images are turned into a model's inputs: per-channel normalisation and the size it expects.

    ``mean`` and ``std`` are on the 0-1 pixel scale, in the channel order the model takes; ``BGR`` means
    channels are reversed before normalising (Keras' caffe-style weights).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: int = 0  # square side the weights were trained at; 0 = no preference
    channel_order: ChannelOrder = "RGB"
    interpolation: str = "bilinear"  # what the weights' own pipeline resizes with (recorded)
    crop_pct: float = 1.0  # its centre-crop share at evaluation (recorded)
    source: str = ""  # where the configuration came from, for the record

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values, as ``metrics.json`` and ``model.safetensors`` record them."""
        return {"mean": list(self.mean), "std": list(self.std), "input_size": self.input_size,
                "channel_order": self.channel_order, "interpolation": self.interpolation,
                "crop_pct": self.crop_pct, "source": self.source}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DataConfig:
        """What :meth:`to_dict` wrote (fields it lacks take their defaults)."""
        return cls(tuple(values["mean"]), tuple(values["std"]), int(values.get("input_size", 0)),
                   values.get("channel_order", "RGB"), values.get("interpolation", "bilinear"),
                   float(values.get("crop_pct", 1.0)), values.get("source", ""))


@dataclass(frozen=True)
class Split:
    """Images as uint8 ``(N, H, W, C)`` and labels as int64 ``(N,)``."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class LoadedDataset:
    """What a dataset loader returns: three splits at the requested resolution, with provenance."""

    name: str
    classes: tuple[str, ...]
    train: Split
    val: Split
    test: Split
    fingerprint: str  # source checksums + split + preprocessing; recorded by every result
    source: str  # where it was loaded from, for the record

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of the loaded images."""
        return cast("tuple[int, int, int]", tuple(self.train.x.shape[1:]))


@dataclass(frozen=True)
class RecipeDefaults:
    """A dataset's own recipe defaults: recipe field values over the generic ``Recipe()``.

    ``from_scratch`` applies to every job; ``from_weights`` goes on top for jobs that start from trained weights
    (``pretrained=true`` or ``weights=...``), over the engine's generic fine-tuning defaults. Fields a job sets
    explicitly win over both. Plain values, keyed by the field names of :mod:`imgbench.recipe_fields`, so a
    dataset declares them without importing the engine; each is checked as an override is.
    """

    from_scratch: Mapping[str, RecipeValue] = field(default_factory=dict)
    from_weights: Mapping[str, RecipeValue] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset a plugin offers (returned by ``imgbench_datasets``).

    ``load`` (:class:`DatasetLoader`) loads it; ``locate`` (:class:`DatasetLocator`) says where a load would
    come from without loading; ``check`` (:class:`DatasetChecker`, optional) lists what would stop a load.
    ``recipe`` holds the dataset's own recipe defaults (``resolve_recipe`` applies them); ``split_sizes`` are
    stated at its default ``val_size``.
    """

    name: str
    load: DatasetLoader
    locate: DatasetLocator
    description: str
    classes: tuple[str, ...] = ()
    image_shape: tuple[int, int, int] = (0, 0, 0)  # native (H, W, C); 0 where it varies
    split_sizes: Mapping[str, int] = field(default_factory=dict)  # train/val/test image counts
    takes_arg: bool = False  # True for parameterised datasets such as imagefolder:/path
    # None: the grid only refuses a locate() of "missing"
    check: DatasetChecker | None = None
    recipe: RecipeDefaults = field(default_factory=RecipeDefaults)  # its jobs' defaults (none: the generic recipe)


@dataclass(frozen=True)
class ExecutorOption:
    """A setting an executor takes: ``imgbench run --NAME VALUE`` (``_`` spelt ``-``), else ``$ENV``.

    The value reaches ``create`` as the keyword ``name``, as a string; it is left out when neither is given.
    """

    name: str  # a Python identifier: the keyword create() takes
    help: str
    env: str = ""  # an environment variable that supplies the value when the option is not given
    metavar: str = "VALUE"

    @property
    def flag(self) -> str:
        """The command-line option: ``--local-directory`` for ``local_directory``."""
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class ExecutorSpec:
    """One way to run a grid of jobs (``local``, ``dask``, ...), returned by ``imgbench_executors``.

    ``create`` (:class:`ExecutorFactory`) is called as ``create(slots=N, **options)`` and returns an
    :class:`Executor`. ``options`` are the only other keywords ``create`` is given; each becomes a
    command-line option of ``imgbench run``.
    """

    name: str
    create: ExecutorFactory
    description: str
    options: tuple[ExecutorOption, ...] = ()

    def resolve_options(self, given: Mapping[str, object], environ: Mapping[str, str]) -> dict[str, object]:
        """``given`` checked against ``options``, with declared environment variables filling the gaps."""
        known = {option.name: option for option in self.options}
        unknown = [key for key in given if key not in known]
        if unknown:
            takes = ", ".join(o.name for o in self.options) or "none"
            raise UsageError(f"executor {self.name!r} takes no option {unknown[0]!r} (its options: {takes})")
        resolved = {key: value for key, value in given.items() if value not in (None, "")}
        for option in self.options:
            if option.name not in resolved and option.env and environ.get(option.env, "").strip():
                resolved[option.name] = environ[option.env].strip()
        return resolved


# -- the lifecycle hooks' records (imgbench_grid_started, imgbench_job_finished, imgbench_grid_finished) --------
# The launcher builds them from its own state (imgbench.runner.lifecycle); every mapping in them is a read-only
# view of a copy, so an implementation cannot change a row or the grid by writing to its arguments.


def frozen_mapping(values: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only view of a copy of ``values``."""
    return MappingProxyType(dict(values))


@dataclass(frozen=True)
class JobInfo:
    """One job of the grid: what it runs. ``params`` holds model, dataset, seed and every recipe field, as the
    notebook receives them."""

    job_id: str
    model: str
    dataset: str
    seed: int
    config_hash: str
    family: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class JobOutcome:
    """How one job ended: its results.csv row (every column of :data:`imgbench.schema.RESULT_COLUMNS`), its
    folder (``OUT/jobs/<job-id>/``: metrics.json, predictions.csv, history.csv, the executed notebook) and
    when it finished (ISO 8601, UTC)."""

    row: Mapping[str, Any]
    job_dir: Path
    finished_at: str

    @property
    def status(self) -> str:
        return str(self.row["status"])

    @property
    def ok(self) -> bool:
        return self.status == schema.Status.OK


@dataclass(frozen=True)
class GridInfo:
    """The grid this invocation runs. ``jobs`` is every job in grid order; ``done`` holds the outcome of each
    job a resume skips because it already succeeded here (``imgbench_job_finished`` is not called for them)."""

    out_dir: Path
    jobs: tuple[JobInfo, ...]
    done: Mapping[str, JobOutcome]
    suite: str  # the suite's file or shipped name; "none" for no suite
    executor: str
    command: tuple[str, ...]
    started_at: str
    trackers: tuple[str, ...] = ()  # the --track names switched on for this grid


@dataclass(frozen=True)
class GridOutcome:
    """What the grid left: every row of results.csv (grid order, skipped jobs included), the report (None
    when it was not built) and the exit status ``imgbench run`` returns."""

    rows: tuple[Mapping[str, Any], ...]
    results_csv: Path
    report: Path | None
    report_error: str
    exit_code: int


@dataclass(frozen=True)
class RunLink:
    """Where a tracker recorded the grid (``job_id`` empty) or one job: shown in the launcher's output and
    linked from the report. ``note`` says how to open it when the URL needs a server started first."""

    url: str
    job_id: str = ""
    note: str = ""


@dataclass(frozen=True)
class TrackerSpec:
    """An experiment tracker, switched on by ``imgbench run --track NAME`` (or ``IMGBENCH_TRACK``).

    ``create(uri)`` is called before any job starts, with ``--track-uri`` or None; it raises
    :class:`imgbench.errors.UsageError` when something it needs is missing (say how to install it), and
    returns an object whose ``@hookimpl`` methods implement the lifecycle hooks. That object is registered as
    a plugin for the one grid, then unregistered.
    """

    name: str
    create: Callable[[str | None], object]
    description: str
