"""The small frozen records that plugins return from their hooks.

A plugin module imports these (and ``hookimpl``) from ``imgbench`` and nothing else. Nothing here imports a
deep-learning framework: a spec carries a *builder* callable that does the heavy imports when it is called,
so listing names stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True)
class ModelSpec:
    """One model architecture a plugin offers.

    ``build(num_classes=..., in_chans=..., image_size=..., pretrained=...)`` returns a ``torch.nn.Module``
    that maps a float tensor ``(N, in_chans, image_size, image_size)`` to logits ``(N, num_classes)``.
    The registry never calls it with ``image_size < min_size``: smaller inputs are resized up first.
    """

    name: str  # namespaced: "keras/resnet50", "timm/resnet18", "<plugin>/<arch>"
    build: Callable[..., "torch.nn.Module"]
    description: str
    family: str = ""  # defaults to the namespace
    style: str = "cnn"  # cnn, resnet, densenet, inception, mobile, efficient, convnext, transformer, ...
    min_size: int = 1  # smallest square input the architecture accepts
    channels: tuple[int, ...] = (1, 3)  # input channel counts it can be built for
    pretrained: bool = False  # whether ImageNet weights can be requested (downloaded on first use)
    # (in_chans=) -> DataConfig: the inputs its pretrained weights expect; None = no known preprocessing
    data_config: Callable[..., "DataConfig | None"] | None = None
    # (built module) -> the classification head inside it (re-initialised for a new class count, the only
    # part trained with finetune=head); None = the last submodule that holds parameters
    classifier: Callable[[Any], Any] | None = None

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
    channel_order: str = "RGB"
    interpolation: str = "bilinear"  # what the weights' own pipeline resizes with (recorded)
    crop_pct: float = 1.0  # its centre-crop share at evaluation (recorded)
    source: str = ""  # where the configuration came from, for the record

    def to_dict(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std), "input_size": self.input_size,
                "channel_order": self.channel_order, "interpolation": self.interpolation,
                "crop_pct": self.crop_pct, "source": self.source}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "DataConfig":
        return cls(tuple(values["mean"]), tuple(values["std"]), int(values.get("input_size", 0)),
                   values.get("channel_order", "RGB"), values.get("interpolation", "bilinear"),
                   float(values.get("crop_pct", 1.0)), values.get("source", ""))


@dataclass(frozen=True)
class Split:
    """Images as uint8 ``(N, H, W, C)`` and labels as int64 ``(N,)``."""

    x: Any  # numpy.ndarray
    y: Any  # numpy.ndarray

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
        return tuple(self.train.x.shape[1:])  # type: ignore[return-value]


@dataclass(frozen=True)
class RecipeDefaults:
    """A dataset's own recipe defaults: recipe field values over the generic ``Recipe()``.

    ``from_scratch`` applies to every job; ``from_weights`` goes on top for jobs that start from trained weights
    (``pretrained=true`` or ``weights=...``), over the engine's generic fine-tuning defaults. Fields a job sets
    explicitly win over both. Plain values, so a dataset declares them without importing the engine.
    """

    from_scratch: Mapping[str, Any] = field(default_factory=dict)
    from_weights: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset a plugin offers.

    ``load(*, image_size, val_size, data_dir, cache_dir, arg)`` returns a :class:`LoadedDataset`;
    ``image_size=0`` keeps the native resolution, ``arg`` is the text after ``name:`` (``imagefolder:/path``).
    ``locate(*, data_dir, cache_dir, arg)`` says where a load would come from without loading:
    ``("local" | "cache" | "download" | "missing", detail)``. ``recipe`` holds the dataset's own recipe
    defaults (``resolve_recipe`` applies them); ``split_sizes`` are stated at its default ``val_size``.
    """

    name: str
    load: Callable[..., LoadedDataset]
    locate: Callable[..., tuple[str, str]]
    description: str
    classes: tuple[str, ...] = ()
    image_shape: tuple[int, int, int] = (0, 0, 0)  # native (H, W, C); 0 where it varies
    split_sizes: Mapping[str, int] = field(default_factory=dict)  # train/val/test image counts
    takes_arg: bool = False  # True for parameterised datasets such as imagefolder:/path
    # check(*, data_dir, cache_dir, arg, can_download) -> list of problems a load would hit, found cheaply
    # before any job starts (None: the grid only refuses a locate() of "missing"); can_download(url) -> '' or why not
    check: Callable[..., list[str]] | None = None
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
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class ExecutorSpec:
    """One way to run a grid of jobs (``local``, ``dask``, ...).

    ``create(jobs=N, **options)`` returns an object with ``run(tasks, on_result, on_start=None)``; the protocol
    is in :mod:`imgbench.runner.executors`. ``options`` are the only other keywords ``create`` is given; each
    becomes a command-line option of ``imgbench run``.
    """

    name: str
    create: Callable[..., Any]
    description: str
    options: tuple[ExecutorOption, ...] = ()

    def resolve_options(self, given: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
        """``given`` checked against ``options``, with declared environment variables filling the gaps."""
        from imgbench.errors import UsageError

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
