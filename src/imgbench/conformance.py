"""Named checks of the model contract, for plugin authors and imgbench's own tests.

In a plugin package's tests, one decorator gives one pytest item per (model, input shape, check)::

    from imgbench.conformance import parametrize_with_checks

    @parametrize_with_checks(["myplugin/tinynet"])     # MNIST-, CIFAR- and flowers-shaped inputs
    def test_conforms(model_check):
        model_check()

``check_model("myplugin/tinynet")`` runs every check at every shape and raises one ``ConformanceError``
listing every failure; ``python -m imgbench.conformance 'myplugin/*' [--dataset fashion_mnist]`` prints every
failing check. Each check looks at one :class:`Trial`: the model built through the registry for one input
shape, with a forward and backward pass in training mode and two forward passes in eval mode, each made
once when a check first needs it. A check returns every problem it finds there; ``ModelCheck`` runs one check
alone, on a trial of its own.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Callable, Iterator, Sequence, cast

from imgbench.datasets import cifar, flowers, idx
from imgbench.registry import Registry, get_registry, input_size
from imgbench.specs import DatasetSpec

if TYPE_CHECKING:  # pragma: no cover
    import pytest
    import torch

BATCH = 2
SHOWN_NAMES = 3  # parameter names a problem lists before it says how many more


@dataclass(frozen=True)
class InputShape:
    """What a model is checked at: ``channels`` x ``image_size`` x ``image_size`` inputs, ``num_classes`` logits."""

    name: str
    image_size: int
    channels: int
    num_classes: int


def dataset_shape(spec: DatasetSpec) -> InputShape:
    """What a dataset's jobs feed a model at its default recipe: the recipe's image size, else the native one."""
    height, _, channels = spec.image_shape
    size = int(spec.recipe.from_scratch.get("image_size") or height)
    if not size or not channels or not spec.classes:
        raise ValueError(f"dataset {spec.name!r} states no fixed image shape and classes to check a model at")
    return InputShape(spec.name, size, channels, len(spec.classes))


# The built-in datasets' shapes, read from the datasets themselves.
MNIST, CIFAR, FLOWERS = (dataset_shape(d.spec()) for d in (idx.MNIST, cifar.CIFAR10, flowers.FLOWERS))
ALL_SHAPES = (MNIST, CIFAR, FLOWERS)


class ConformanceError(AssertionError):
    """A model does not meet imgbench's model contract."""


@dataclass(frozen=True)
class ConformanceResult:
    """A model that passed every check at one shape: the input size it really sees, its trainable parameters."""

    model: str
    shape: str
    input_size: int
    params: int


@dataclass(frozen=True)
class Failure:
    """One check that failed at one shape, with every problem it found."""

    model: str
    shape: InputShape
    check: str
    problems: tuple[str, ...]

    def __str__(self) -> str:
        where = f"{self.shape.name} shape ({self.shape.channels}x{self.shape.image_size}x{self.shape.image_size})"
        return f"{self.model} at {where}, {self.check}: {'; '.join(self.problems)}"


class Trial:
    """One model built for one input shape, and the passes the checks look at, each made once on demand."""

    def __init__(self, model: str, shape: InputShape, registry: Registry) -> None:
        self.name, self.shape, self.registry = model, shape, registry

    @cached_property
    def model(self) -> torch.nn.Module:
        import torch

        torch.manual_seed(0)
        return self.registry.build_model(self.name, num_classes=self.shape.num_classes, in_chans=self.shape.channels,
                                         image_size=self.shape.image_size)

    @cached_property
    def trainable(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(name, p) for name, p in self.model.named_parameters() if p.requires_grad]

    @cached_property
    def inputs(self) -> torch.Tensor:
        import torch

        return torch.randn(BATCH, self.shape.channels, self.shape.image_size, self.shape.image_size)

    @cached_property
    def train_output(self) -> object:
        """What a forward pass in training mode returns."""
        self.model.train()
        return self.model(self.inputs)

    @cached_property
    def output_problem(self) -> str:
        """'' when the training-mode output is logits ``(batch, classes)``, else what it is instead."""
        import torch

        out, expected = self.train_output, (BATCH, self.shape.num_classes)
        if isinstance(out, torch.Tensor) and tuple(out.shape) == expected:
            return ""
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        return f"output is {got}, expected logits {expected}"

    @property
    def logits(self) -> torch.Tensor:
        """The training-mode output, when it is logits of the expected shape; else ``ConformanceError``."""
        if self.output_problem:
            raise ConformanceError(f"no logits to check: {self.output_problem}")
        return cast("torch.Tensor", self.train_output)  # a tensor, as output_problem found

    @cached_property
    def without_gradient(self) -> list[str]:
        """The trainable parameters that one backward pass from the logits leaves without a gradient."""
        self.logits.float().logsumexp(dim=1).mean().backward()
        return [name for name, p in self.trainable if p.grad is None]

    @cached_property
    def eval_outputs(self) -> tuple[object, object]:
        """Two forward passes in eval mode on the same inputs."""
        import torch

        self.model.eval()
        with torch.no_grad():
            return self.model(self.inputs), self.model(self.inputs)


@dataclass(frozen=True)
class Check:
    """A named check of the model contract: ``run(trial)`` returns every problem it finds (none: it passes)."""

    name: str
    what: str
    run: Callable[[Trial], list[str]]


def _named(names: Sequence[str]) -> str:
    more = f" and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else ""
    return ", ".join(names[:SHOWN_NAMES]) + more


def _trainable_parameters(trial: Trial) -> list[str]:
    if sum(p.numel() for _, p in trial.trainable) > 0:
        return []
    return ["no trainable parameters; the engine would have nothing to train"]


def _output_shape(trial: Trial) -> list[str]:
    return [trial.output_problem] if trial.output_problem else []


def _finite_logits(trial: Trial) -> list[str]:
    import torch

    return [] if bool(torch.isfinite(trial.logits).all()) else ["forward pass gave non-finite logits"]


def _gradients(trial: Trial) -> list[str]:
    missing = trial.without_gradient
    if not missing:
        return []
    return [f"{len(missing)} trainable parameters got no gradient ({_named(missing)}); freeze them "
            f"(requires_grad=False) or use them"]


def _deterministic_eval(trial: Trial) -> list[str]:
    import torch

    first, second = trial.eval_outputs
    if not (isinstance(first, torch.Tensor) and isinstance(second, torch.Tensor)):
        return [f"eval-mode output is {type(first).__name__}, not logits"]
    if torch.equal(first, second):
        return []
    return ["eval-mode outputs differ between two identical calls; dropout or noise must be off in eval mode"]


CHECKS = (
    Check("trainable_parameters", "the model has parameters for the engine to train", _trainable_parameters),
    Check("output_shape", "a training-mode forward pass gives logits (batch, classes)", _output_shape),
    Check("finite_logits", "those logits are finite", _finite_logits),
    Check("gradients", "one backward pass reaches every trainable parameter", _gradients),
    Check("deterministic_eval", "two eval-mode passes on the same inputs agree exactly", _deterministic_eval),
)


def _problems(check: Check, trial: Trial) -> list[str]:
    """What ``check`` finds; a check that cannot look (the model does not build, a pass raises) says why."""
    try:
        return check.run(trial)
    except ConformanceError as exc:
        return [str(exc)]
    except Exception as exc:  # a plugin's model may raise anything; report it as this check's failure
        return [f"{type(exc).__name__}: {exc}"]


@dataclass(frozen=True)
class ModelCheck:
    """One check of one model at one shape, runnable alone: calling it builds the model and raises
    ``ConformanceError`` listing every problem the check finds. What ``parametrize_with_checks`` yields."""

    model: str
    shape: InputShape
    check: Check
    registry: Registry | None = None

    @property
    def id(self) -> str:
        return f"{self.model}-{self.shape.name}-{self.check.name}"

    def __call__(self) -> None:
        trial = Trial(self.model, self.shape, self.registry or get_registry())
        try:
            problems = self.check.run(trial)
        except ConformanceError as exc:
            problems = [str(exc)]
        if problems:
            raise ConformanceError(str(Failure(self.model, self.shape, self.check.name, tuple(problems))))


def model_checks(models: Sequence[str], shapes: Sequence[InputShape] = ALL_SHAPES,
                 registry: Registry | None = None, checks: Sequence[Check] = CHECKS) -> list[ModelCheck]:
    """One ``ModelCheck`` per (model, shape, check), at the shapes whose channel count the model takes (at
    every shape when it takes none of them, so that its checks fail instead of vanishing)."""
    registry = registry or get_registry()
    items = []
    for name in models:
        channels = registry.model(name).channels
        taken = [shape for shape in shapes if shape.channels in channels] or list(shapes)
        items += [ModelCheck(name, shape, check, registry) for shape in taken for check in checks]
    return items


def parametrize_with_checks(models: Sequence[str], shapes: Sequence[InputShape] = ALL_SHAPES,
                            registry: Registry | None = None,
                            checks: Sequence[Check] = CHECKS) -> pytest.MarkDecorator:
    """A ``pytest.mark.parametrize`` over ``model_check``: one test item per (model, shape, check), with ids such
    as ``myplugin/tinynet-cifar10-gradients``; the test calls ``model_check()``."""
    import pytest

    items = model_checks(models, shapes, registry, checks)
    return pytest.mark.parametrize("model_check", items, ids=[item.id for item in items])


def run_checks(name: str, shapes: Sequence[InputShape] = ALL_SHAPES, registry: Registry | None = None,
               checks: Sequence[Check] = CHECKS) -> Iterator[ConformanceResult | Failure]:
    """Every check at every shape whose channel count the model takes, one trial per shape: a result for each
    shape that passes them all, else a ``Failure`` for each check that fails there."""
    registry = registry or get_registry()
    spec = registry.model(name)
    taken = [shape for shape in shapes if shape.channels in spec.channels]
    if not taken:
        raise ConformanceError(f"{name}: accepts none of the channel counts {[s.channels for s in shapes]}")
    for shape in taken:
        trial = Trial(name, shape, registry)
        failures = [Failure(name, shape, check.name, tuple(problems)) for check in checks
                    if (problems := _problems(check, trial))]
        if failures:
            yield from failures
        else:
            yield ConformanceResult(name, shape.name, input_size(spec, shape.image_size),
                                    sum(p.numel() for _, p in trial.trainable))


def check_model(name: str, shapes: Sequence[InputShape] = ALL_SHAPES, registry: Registry | None = None,
                checks: Sequence[Check] = CHECKS) -> list[ConformanceResult]:
    """Every check of one model at each shape; returns what passed, or raises one ``ConformanceError`` listing
    every failing check at every shape."""
    outcomes = list(run_checks(name, shapes, registry, checks))
    failures = [str(o) for o in outcomes if isinstance(o, Failure)]
    if failures:
        raise ConformanceError("\n".join(failures))
    return [o for o in outcomes if isinstance(o, ConformanceResult)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imgbench.conformance", description="imgbench model conformance check")
    parser.add_argument("models", nargs="+", help="model names or globs, e.g. 'myplugin/*'")
    parser.add_argument("--dataset", action="append", metavar="NAME",
                        help="check at this registered dataset's shape (repeatable; default: mnist, cifar10, flowers)")
    args = parser.parse_args(argv)
    registry = get_registry()
    shapes = [dataset_shape(registry.dataset(name)[0]) for name in args.dataset] if args.dataset else ALL_SHAPES
    names = [s.name for s in registry.models(args.models)] or args.models
    failed = 0
    for name in names:
        try:
            for outcome in run_checks(name, shapes, registry=registry):
                if isinstance(outcome, ConformanceResult):
                    print(f"ok    {outcome.model:<32} {outcome.shape:<8} input {outcome.input_size:>3}px  "
                          f"{outcome.params:>12,} params")
                else:
                    failed += 1
                    print(f"FAIL  {outcome}")
        except Exception as exc:  # an unknown name, a model that takes none of the shapes
            failed += 1
            print(f"FAIL  {name}: {exc}")
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
