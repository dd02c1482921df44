"""Training recipes: one frozen record of every knob, the generic defaults, and strict checking of overrides.

Every model is trained with the recipe of its dataset unless a parameter says otherwise, so differences in
the results come from the architectures. Each dataset's own defaults live with the dataset
(``DatasetSpec.recipe``); ``Recipe()`` is the generic recipe of a dataset that declares none.
``resolve_recipe`` is cheap and imports no framework: the runner calls it to reject a bad grid before any
job starts.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
import sys
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from imgbench.errors import UsageError
from imgbench.specs import DatasetSpec, RecipeDefaults

if TYPE_CHECKING:  # pragma: no cover
    from imgbench.registry import Registry

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "onecycle", "step", "constant")
AUGMENTS = ("none", "crop", "flip_crop", "flip_rotate_zoom")
FINETUNES = ("full", "head")
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
HASH_CHARS = 12
# Upper bounds: far above any sensible run, low enough that a typo (an extra zero or three) is refused.
MAX_EPOCHS = 1000
MAX_BATCH_SIZE = 65_536
MAX_IMAGE_SIZE = 4096  # px a side; a 4096 px RGB image is 50 MB as uint8
MAX_BENCH_SECONDS = 600.0  # per throughput/latency measurement; there are two per job
MAX_THREADS = 1024


@dataclass(frozen=True)
class Recipe:
    """Everything that decides how a job trains and is measured. Defaults are the generic recipe."""

    image_size: int = 0
    epochs: int = 20
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.05
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    augment: str = "flip_crop"
    val_size: float = 0.1
    train_samples: int = 0
    test_samples: int = 0
    deterministic: bool = False
    compile: bool = False
    amp: bool = True
    channels_last: bool = True
    pretrained: bool = False
    target_accuracy: float = 0.0
    device: str = "auto"
    bench_seconds: float = 2.0
    threads: int = 0
    weights: str = ""
    finetune: str = "full"
    save_weights: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Recipe":
        """The recipe that ``to_dict`` gave, exactly: every field, each of its own type and in range.

        Nothing is filled in or resolved (no defaults, no fine-tuning defaults, no weights path), so a recipe
        resolved once, when the grid was expanded, stays what it was on its way to the job, and so does its
        config_hash. Raises ``UsageError`` naming every unknown or missing field, or the first bad value.
        """
        unknown = [name for name in values if name not in RECIPE_FIELDS]
        missing = [name for name in RECIPE_FIELDS if name not in values]
        if unknown or missing:
            problems = [f"{label} {', '.join(names)}" for label, names in (("unknown", unknown), ("missing", missing))
                        if names]
            raise UsageError(f"a recipe holds exactly the fields of Recipe: {'; '.join(problems)}")
        for name, value in values.items():
            kind = RECIPE_FIELDS[name][0]
            if type(value) is not kind:  # exact: True is no int and 1 no float, or the hash would change
                raise UsageError(f"recipe field {name} must be {kind.__name__}, got {type(value).__name__} {value!r}")
            _in_range(name, value)
        return cls(**values)


RECIPE_FIELDS: dict[str, tuple[type, str]] = {
    "image_size": (int, "square side the images are resized to; 0 = the dataset's native/default size"),
    "epochs": (int, "passes over the training split (0 = evaluate the untrained model)"),
    "batch_size": (int, "images per training step; also the inference-throughput batch"),
    "optimizer": (str, "adamw | adam | sgd (weight decay skips biases and norm weights)"),
    "lr": (float, "peak learning rate"),
    "momentum": (float, "SGD momentum, or Adam/AdamW beta1"),
    "weight_decay": (float, "decoupled (AdamW) or L2 (SGD/Adam) weight decay"),
    "schedule": (str, "cosine | onecycle | step (x0.1 at 50% and 75%) | constant, stepped per batch"),
    "warmup_epochs": (float, "linear warm-up length in epochs (fractions allowed)"),
    "label_smoothing": (float, "cross-entropy label smoothing in [0, 1)"),
    "augment": (str, "none | crop (random shifts, 1/8 padding) | flip_crop (plus horizontal flips) | "
                        "flip_rotate_zoom (flips, +-36 degree rotations, 0.9-1.1 zoom: the TF flowers tutorial's)"),
    "val_size": (float, "fraction of train held out for validation (model selection only)"),
    "train_samples": (int, "train on a stratified subset of this many images (0 = all)"),
    "test_samples": (int, "test on a stratified subset of this many images (0 = all)"),
    "deterministic": (bool, "deterministic algorithms (reproducible, can be slower)"),
    "compile": (bool, "torch.compile the model (compile time reported apart)"),
    "amp": (bool, "mixed precision on CUDA: bf16 autocast, fp16 + GradScaler where bf16 is missing"),
    "channels_last": (bool, "channels-last memory format on CUDA"),
    "pretrained": (bool, "start from ImageNet weights where the model has them"),
    "target_accuracy": (float, "val accuracy whose first reach is timed (0 = off)"),
    "device": (str, "auto | cpu | cuda | cuda:N | mps (auto = CUDA, else MPS, else CPU)"),
    "bench_seconds": (float, "minimum seconds per throughput/latency measurement"),
    "threads": (int, "CPU threads per job (0 = auto: the cores divided among the jobs that run at once)"),
    "weights": (str, "start from this checkpoint: .pt/.pth state_dict, .safetensors, Keras .weights.h5"),
    "finetune": (str, "full (train everything) | head (linear probe: backbone frozen in eval mode)"),
    "save_weights": (bool, "write the final model as model.safetensors in the job folder"),
}



@dataclass(frozen=True)
class Bound:
    """The range a numeric recipe field must lie in; ``None`` is unbounded on that side (still finite)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: ``low`` itself is refused
    high_open: bool = False

    def problem(self, value: float) -> str:
        """Why ``value`` is out of range, or ''."""
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if not (too_low or too_high):
            return ""
        if self.low is not None and self.high is not None and self.high <= 1:
            opening, closing = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"must be in {opening}{self.low:g}, {self.high:g}{closing}"
        if too_low:
            return f"must be greater than {self.low:g}" if self.low_open else f"must be {self.low:g} or more"
        return f"must be less than {self.high:g}" if self.high_open else f"must be at most {self.high:g}"


# The one table of numeric bounds: resolve_recipe checks it for the grid's preflight and for run_job alike.
BOUNDS: dict[str, Bound] = {
    "image_size": Bound(0, MAX_IMAGE_SIZE),
    "epochs": Bound(0, MAX_EPOCHS),
    "batch_size": Bound(1, MAX_BATCH_SIZE),
    "lr": Bound(0, low_open=True),
    "momentum": Bound(0, 1, high_open=True),
    "weight_decay": Bound(0),
    "warmup_epochs": Bound(0, MAX_EPOCHS),
    "label_smoothing": Bound(0, 1, high_open=True),
    "val_size": Bound(0, 1, high_open=True),
    "train_samples": Bound(0),
    "test_samples": Bound(0),
    "target_accuracy": Bound(0, 1),
    "bench_seconds": Bound(0, MAX_BENCH_SECONDS, low_open=True),
    "threads": Bound(0, MAX_THREADS),
}

# Jobs that start from trained weights (pretrained=true or weights=...) fine-tune: a tenth of the rate, a
# short warm-up, fewer epochs, and the weights' own input size (image_size=0). A dataset's
# RecipeDefaults.from_weights goes on top of these. A linear probe trains only a freshly initialised head,
# which takes a from-scratch rate. Fields set explicitly win over all of them.
FROM_WEIGHTS_DEFAULTS: dict[str, Any] = dict(image_size=0, epochs=10, lr=1e-4, warmup_epochs=0.5)
HEAD_ONLY_LR = 1e-3


def resolve_recipe(dataset: DatasetSpec | str | None, overrides: Mapping[str, Any], *,
                   registry: Registry | None = None) -> Recipe:
    """The dataset's default recipe with ``overrides`` applied, each checked for name, type and range.

    ``dataset`` is a spec, whose ``recipe`` defaults apply; or a name (``mnist``, ``imagefolder:/x``) looked up
    in ``registry`` (default: the default registry), an unknown one raising ``UsageError``; or None for the
    generic recipe (an in-memory dataset that no spec describes).
    """
    defaults = _dataset_defaults(dataset, registry)
    checked = {name: _checked(name, value) for name, value in overrides.items()}
    recipe = replace(Recipe(**defaults.from_scratch), **checked)
    return _transfer_recipe(defaults, recipe, checked)


def check_parameter(name: str, value: Any) -> None:
    """Raise ``UsageError`` when one parameter is wrong on its own, whatever the dataset: an unknown name, a
    wrong type, a value out of range, or a ``weights`` file that cannot be used."""
    value = _checked(name, value)
    if name == "weights" and value:
        from imgbench.engine.weights import resolve_weights_path

        resolve_weights_path(value)


def _dataset_defaults(dataset: DatasetSpec | str | None, registry: Registry | None) -> RecipeDefaults:
    """The dataset's recipe defaults, each checked and typed as an override is (a plugin declares its own)."""
    if dataset is None:
        return RecipeDefaults()
    if isinstance(dataset, str):
        from imgbench.registry import get_registry

        dataset = (registry or get_registry()).dataset(dataset)[0]

    def checked(part: str, values: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return {name: _checked(name, value) for name, value in values.items()}
        except UsageError as exc:
            raise UsageError(f"dataset {dataset.name!r} declares a bad default in its recipe.{part}: {exc}") from None

    return RecipeDefaults(checked("from_scratch", dataset.recipe.from_scratch),
                          checked("from_weights", dataset.recipe.from_weights))


def _transfer_recipe(defaults: RecipeDefaults, recipe: Recipe, checked: Mapping[str, Any]) -> Recipe:
    """Check weights/finetune and give jobs that start from trained weights the fine-tuning defaults."""
    from imgbench.engine.weights import resolve_weights_path

    if recipe.weights and recipe.pretrained:
        raise UsageError("parameters pretrained=true and weights=... both name starting weights; set one")
    if recipe.weights:
        recipe = replace(recipe, weights=resolve_weights_path(recipe.weights))
    if not (recipe.pretrained or recipe.weights):
        return recipe
    tuned = {**FROM_WEIGHTS_DEFAULTS, **defaults.from_weights}
    if recipe.finetune == "head":
        tuned["lr"] = HEAD_ONLY_LR
    return replace(recipe, **{k: v for k, v in tuned.items() if k not in checked})


def _checked(name: str, value: Any) -> Any:
    if name not in RECIPE_FIELDS:
        close = difflib.get_close_matches(name, RECIPE_FIELDS, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(RECIPE_FIELDS)}"
        raise UsageError(f"unknown parameter {name!r}{hint}")
    return _in_range(name, _typed(name, RECIPE_FIELDS[name][0], value))


def _in_range(name: str, value: Any) -> Any:
    problem = _range_problem(name, value)
    if problem:
        raise UsageError(f"parameter {name}={value!r} {problem} ({name}: {RECIPE_FIELDS[name][1]})")
    return value


def _typed(name: str, kind: type, value: Any) -> Any:
    is_bool = isinstance(value, bool)
    if kind is bool and is_bool:
        return value
    if kind is int and isinstance(value, int) and not is_bool:
        return value
    if kind is float and isinstance(value, (int, float)) and not is_bool:
        return float(value)
    if kind is str and isinstance(value, str):
        return value
    raise UsageError(f"parameter {name} must be {kind.__name__}, got {type(value).__name__} {value!r}")


def _range_problem(name: str, value: Any) -> str:
    choices = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "augment": AUGMENTS, "finetune": FINETUNES}
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if name in BOUNDS:
        return BOUNDS[name].problem(value)
    if name in choices and value not in choices[name]:
        return f"must be one of {', '.join(choices[name])}"
    if name == "device" and not DEVICE_PATTERN.fullmatch(value):
        return "must be auto, cpu, cuda, cuda:N or mps"
    return ""


def device_problem(device: str) -> str:
    """Why ``device`` cannot be used on this machine, or ''. torch is imported only to check cuda (and mps on
    macOS): ``auto`` and ``cpu`` always work, and MPS exists only on macOS."""
    kind, _, index = device.partition(":")
    if kind in ("auto", "cpu"):
        return ""
    if kind == "mps" and sys.platform != "darwin":
        return "MPS exists only on macOS; use device='auto' or 'cpu'"
    import torch

    if kind == "mps":
        return "" if torch.backends.mps.is_available() else "MPS is not available here; use device='auto' or 'cpu'"
    if not torch.cuda.is_available():
        return "CUDA is not available here; use device='auto' or 'cpu'"
    count = torch.cuda.device_count()
    if index and int(index) >= count:
        return f"only {count} CUDA device(s) here (cuda:0 to cuda:{count - 1}); use one of them or device='cuda'"
    return ""


def subset_problem(parameter: str, n: int, class_counts: Sequence[int]) -> str:
    """Why a class-stratified subset of ``n`` images cannot be drawn from a split with these per-class counts
    (``n`` = 0 or at least the split's size takes it all), or ''. Only ``len(class_counts)`` may be known before
    loading: pass ``[0] * classes`` for the checks that need no counts."""
    total, classes = sum(class_counts), len(class_counts)
    if n == 0 or (total and n >= total):
        return ""
    if n < classes:
        return (f"{parameter}={n} is fewer than the {classes} classes, and a stratified subset needs one image per "
                f"class; use 0 for all images or at least {classes}")
    if total and total - n < classes:
        return (f"{parameter}={n} leaves fewer than {classes} of the {total} images out, too few to stratify; "
                f"use 0 for all {total} images or at most {total - classes}")
    if total and min(class_counts) < 2:
        return f"{parameter}={n}: a class holds a single image, too few to stratify; use 0 for all images"
    return ""


def config_hash(model: str, dataset: str, seed: int, recipe_dict: Mapping[str, Any]) -> str:
    """12 hex characters of the sha256 of the job's canonical JSON configuration."""
    config = {"model": model, "dataset": dataset, "seed": seed, "recipe": dict(recipe_dict)}
    if recipe_dict.get("weights"):  # the file's content, not only its name: a changed file reruns the job
        from imgbench.engine.weights import file_sha256

        config["weights_sha256"] = file_sha256(recipe_dict["weights"])
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:HASH_CHARS]


assert {f.name for f in fields(Recipe)} == set(RECIPE_FIELDS), "every Recipe field needs a RECIPE_FIELDS entry"
assert set(BOUNDS) <= set(RECIPE_FIELDS), "every bound is a Recipe field"
