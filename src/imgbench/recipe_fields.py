"""The training recipe's fields, each declared once: its type, default, range or choices, and help.

``Recipe`` is a frozen dataclass whose fields carry their whole declaration. The annotation is the type (a
``Literal`` is the list of choices), the default is the generic recipe's value, and :func:`declare` adds the
help and the range. ``RECIPE_FIELDS`` reads the declarations back, one :class:`RecipeField` per field, in
declaration order; everything else reads that: checking a value (here), ``Recipe.from_dict``, resolving a
job's recipe (:mod:`imgbench.engine.recipe`), ``imgbench params``, the notebook's parameters and the
generated tables (:mod:`imgbench.engine.recipe_tables`). This module sits with the specs at the bottom of
the layers, so that the datasets check their ``val_size`` and ``image_size`` against the same fields.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Literal, Mapping, TypeVar, cast, get_args, get_origin, get_type_hints

from imgbench.errors import UsageError

# Upper bounds: far above any sensible run, low enough that a typo (an extra zero or three) is refused.
MAX_EPOCHS = 1000
MAX_BATCH_SIZE = 65_536
MAX_IMAGE_SIZE = 4096  # px a side; a 4096 px RGB image is 50 MB as uint8
MAX_BENCH_SECONDS = 600.0  # per throughput/latency measurement; there are two per job
MAX_THREADS = 1024

Optimizer = Literal["adamw", "adam", "sgd"]
Schedule = Literal["cosine", "onecycle", "step", "constant"]
Augment = Literal["none", "crop", "flip_crop", "flip_rotate_zoom"]
Finetune = Literal["full", "head"]
RecipeValue = bool | int | float | str  # what a recipe field holds; ``RecipeField.kind`` says which, exactly

DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
DEVICE_FORMS = ("auto", "cpu", "cuda", "cuda:N", "mps")  # how DEVICE_PATTERN is spelt out to people

_DECLARATION = "imgbench.recipe"  # the key of a declaration in its dataclass field's metadata
T = TypeVar("T")


@dataclass(frozen=True)
class Bound:
    """The range a numeric recipe field must lie in; ``None`` is unbounded on that side (still finite)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: ``low`` itself is refused
    high_open: bool = False

    @property
    def interval(self) -> str:
        """The range in interval notation: ``[0, 1)``, ``(0, inf)``."""
        low = "(-inf" if self.low is None else f"{'(' if self.low_open else '['}{self.low:g}"
        high = "inf)" if self.high is None else f"{self.high:g}{')' if self.high_open else ']'}"
        return f"{low}, {high}"

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


@dataclass(frozen=True)
class _Declared:
    """What :func:`declare` attaches to a field, beside the type and default that the dataclass holds."""

    help: str
    bound: Bound | None
    notes: Mapping[str, str]
    pattern: re.Pattern[str] | None
    forms: tuple[str, ...]


def declare(default: T, help: str, bound: Bound | None = None, *, notes: Mapping[str, str] | None = None,
            pattern: re.Pattern[str] | None = None, forms: tuple[str, ...] = ()) -> T:
    """A ``Recipe`` field: its generic default, what it does (``help``) and, for a number, its ``bound``.

    A ``Literal`` field may add ``notes`` on some of its choices; a free-form text field may give the
    ``pattern`` its values must match and the ``forms`` that spell the pattern out. Typed as the default, so
    that a type checker holds the default to the field's annotation.
    """
    declared = _Declared(help, bound, dict(notes or {}), pattern, forms)
    return field(default=default, metadata={_DECLARATION: declared})


@dataclass(frozen=True)
class Recipe:
    """Everything that decides how a job trains and is measured. Defaults are the generic recipe."""

    image_size: int = declare(0, "square side the images are resized to; 0 = the dataset's native/default size",
                              Bound(0, MAX_IMAGE_SIZE))
    epochs: int = declare(20, "passes over the training split (0 = evaluate the untrained model)",
                          Bound(0, MAX_EPOCHS))
    batch_size: int = declare(64, "images per training step; also the inference-throughput batch",
                              Bound(1, MAX_BATCH_SIZE))
    optimizer: Optimizer = declare("adamw", "weight decay skips biases and norm weights")
    lr: float = declare(1e-3, "peak learning rate", Bound(0, low_open=True))
    momentum: float = declare(0.9, "SGD momentum, or Adam/AdamW beta1", Bound(0, 1, high_open=True))
    weight_decay: float = declare(0.05, "decoupled (AdamW) or L2 (SGD/Adam) weight decay", Bound(0))
    schedule: Schedule = declare("cosine", "stepped per batch", notes={"step": "x0.1 at 50% and 75%"})
    warmup_epochs: float = declare(1.0, "linear warm-up length in epochs (fractions allowed)", Bound(0, MAX_EPOCHS))
    label_smoothing: float = declare(0.1, "cross-entropy label smoothing (0 = off)", Bound(0, 1, high_open=True))
    augment: Augment = declare("flip_crop", "how training images are varied, on the device", notes={
        "crop": "random shifts, 1/8 padding", "flip_crop": "plus horizontal flips",
        "flip_rotate_zoom": "flips, +-36 degree rotations, 0.9-1.1 zoom: the TF flowers tutorial's"})
    val_size: float = declare(0.1, "fraction of train held out for validation (model selection only)",
                              Bound(0, 1, high_open=True))
    train_samples: int = declare(0, "train on a stratified subset of this many images (0 = all)", Bound(0))
    test_samples: int = declare(0, "test on a stratified subset of this many images (0 = all)", Bound(0))
    deterministic: bool = declare(False, "deterministic algorithms (reproducible, can be slower)")
    compile: bool = declare(False, "torch.compile the model (compile time reported apart)")
    amp: bool = declare(True, "mixed precision on CUDA: bf16 autocast, fp16 + GradScaler where bf16 is missing")
    channels_last: bool = declare(True, "channels-last memory format on CUDA")
    pretrained: bool = declare(False, "start from ImageNet weights where the model has them")
    target_accuracy: float = declare(0.0, "val accuracy whose first reach is timed (0 = off)", Bound(0, 1))
    device: str = declare("auto", "where the job computes; auto = CUDA, else MPS, else CPU",
                          pattern=DEVICE_PATTERN, forms=DEVICE_FORMS)
    bench_seconds: float = declare(2.0, "minimum seconds per throughput/latency measurement",
                                   Bound(0, MAX_BENCH_SECONDS, low_open=True))
    threads: int = declare(0, "CPU threads per job (0 = auto: the cores divided among the jobs that run at once)",
                           Bound(0, MAX_THREADS))
    weights: str = declare("", "start from this checkpoint: .pt/.pth state_dict, .safetensors, Keras .weights.h5")
    finetune: Finetune = declare("full", "what trains", notes={
        "full": "train everything", "head": "linear probe: backbone frozen in eval mode"})
    save_weights: bool = declare(False, "write the final model as model.safetensors in the job folder")

    def to_dict(self) -> dict[str, RecipeValue]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> Recipe:
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
            kind = RECIPE_FIELDS[name].kind
            if type(value) is not kind:  # exact: True is no int and 1 no float, or the hash would change
                raise UsageError(f"recipe field {name} must be {kind.__name__}, got {type(value).__name__} {value!r}")
        return cls().updated(values)

    def updated(self, values: Mapping[str, object]) -> Recipe:
        """This recipe with ``values`` in place, each checked (:func:`checked_value`): ``UsageError`` names the
        first unknown name, wrong type or value out of range."""
        checked = {name: checked_value(name, value) for name, value in values.items()}
        return replace(self, **checked)  # type: ignore[arg-type]  # each value is of its field's type, checked


@dataclass(frozen=True)
class RecipeField:
    """One field of ``Recipe`` as declared: read it from ``RECIPE_FIELDS``, never build one."""

    name: str
    kind: type  # bool, int, float or str: the exact type of every value (a Literal's choices are str)
    default: RecipeValue  # the generic recipe's value
    description: str  # what the field does, as declared
    bound: Bound | None = None  # a number's range
    choices: tuple[str, ...] = ()  # a Literal field's values, in declaration order
    notes: Mapping[str, str] = field(default_factory=dict)  # a few words on some choices
    pattern: re.Pattern[str] | None = None  # what a free-form text value must match
    forms: tuple[str, ...] = ()  # the pattern spelt out

    @property
    def help(self) -> str:
        """One line: the choices (or forms) and what the field does, for ``imgbench params`` and errors."""
        listed = [f"{c} ({self.notes[c]})" if c in self.notes else c for c in self.choices] or list(self.forms)
        return f"{' | '.join(listed)}: {self.description}" if listed else self.description

    def problem(self, value: RecipeValue) -> str:
        """Why ``value``, already of this field's type, is not allowed, or ''."""
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        if self.bound is not None and isinstance(value, (int, float)):
            return self.bound.problem(value)
        if self.choices and value not in self.choices:
            return f"must be one of {', '.join(self.choices)}"
        if self.pattern is not None and not self.pattern.fullmatch(str(value)):
            return f"must be {', '.join(self.forms[:-1])} or {self.forms[-1]}"
        return ""

    def refuse_out_of_range(self, value: RecipeValue) -> RecipeValue:
        """``value``, or ``UsageError`` naming the field, the value, the problem and the field's help."""
        problem = self.problem(value)
        if problem:
            raise UsageError(f"parameter {self.name}={value!r} {problem} ({self.name}: {self.help})")
        return value

    def checked(self, value: object) -> RecipeValue:
        """``value`` typed (:meth:`typed`) and in range, or ``UsageError``."""
        return self.refuse_out_of_range(self.typed(value))

    def typed(self, value: object) -> RecipeValue:
        """``value`` as this field's type (an int is taken for a float, nothing else is converted), or
        ``UsageError``."""
        is_bool = isinstance(value, bool)
        if self.kind is bool and is_bool:
            return cast(bool, value)
        if self.kind is int and isinstance(value, int) and not is_bool:
            return value
        if self.kind is float and isinstance(value, (int, float)) and not is_bool:
            return float(value)
        if self.kind is str and isinstance(value, str):
            return value
        raise UsageError(f"parameter {self.name} must be {self.kind.__name__}, got {type(value).__name__} {value!r}")


def read_declarations(record: type) -> dict[str, RecipeField]:
    """Each field's declaration in a dataclass declared like ``Recipe``: its annotation, its default and what
    :func:`declare` attached. Raises ``TypeError`` for notes on a value that is not among the choices."""
    hints = get_type_hints(record)
    declared = {}
    for spec in fields(record):
        about = cast(_Declared, spec.metadata[_DECLARATION])
        hint = hints[spec.name]
        choices = tuple(get_args(hint)) if get_origin(hint) is Literal else ()
        kind = type(choices[0]) if choices else hint
        if set(about.notes) - set(choices):
            raise TypeError(f"{record.__name__}.{spec.name} has notes on {sorted(set(about.notes) - set(choices))}, "
                            f"which are not among its choices {choices}")
        declared[spec.name] = RecipeField(spec.name, kind, cast(RecipeValue, spec.default), about.help, about.bound,
                                          choices, about.notes, about.pattern, about.forms)
    return declared


RECIPE_FIELDS: Mapping[str, RecipeField] = read_declarations(Recipe)


def checked_value(name: str, value: object) -> RecipeValue:
    """``value`` for the recipe field ``name``, typed and in range; else ``UsageError`` naming the problem (an
    unknown name with the close ones)."""
    if name not in RECIPE_FIELDS:
        close = difflib.get_close_matches(name, RECIPE_FIELDS, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(RECIPE_FIELDS)}"
        raise UsageError(f"unknown parameter {name!r}{hint}")
    return RECIPE_FIELDS[name].checked(value)
