"""A conformance check that plugin authors (and imgbench's own tests) run over a model.

    from imgbench.conformance import check_model
    check_model("myplugin/tinynet")            # MNIST-, CIFAR- and flowers-shaped inputs

or ``python -m imgbench.conformance myplugin/tinynet [--dataset fashion_mnist]``. It builds the model through the registry for each input
shape, runs a forward and a backward pass in training mode and a forward pass in eval mode, and checks the
output shape, that the outputs are finite, that every trainable parameter receives a gradient, and that the
parameter count is positive. Failures raise ``ConformanceError`` naming the model, the shape and the fix.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Sequence

from imgbench.datasets import cifar, flowers, idx
from imgbench.registry import Registry, get_registry, input_size
from imgbench.specs import DatasetSpec


@dataclass(frozen=True)
class InputShape:
    name: str
    image_size: int
    channels: int
    num_classes: int


def dataset_shape(spec: DatasetSpec) -> InputShape:
    """What a dataset's jobs feed a model at its default recipe: the recipe's image size, else the native one."""
    height, _, channels = spec.image_shape
    size = spec.recipe.from_scratch.get("image_size") or height
    if not size or not channels or not spec.classes:
        raise ValueError(f"dataset {spec.name!r} states no fixed image shape and classes to check a model at")
    return InputShape(spec.name, size, channels, len(spec.classes))


# The built-in datasets' shapes, read from the datasets themselves.
MNIST, CIFAR, FLOWERS = (dataset_shape(d.spec()) for d in (idx.MNIST, cifar.CIFAR10, flowers.FLOWERS))
ALL_SHAPES = (MNIST, CIFAR, FLOWERS)
BATCH = 2


class ConformanceError(AssertionError):
    """A model does not meet imgbench's model contract."""


@dataclass(frozen=True)
class ConformanceResult:
    model: str
    shape: str
    input_size: int
    params: int


def check_model(
    name: str, shapes: Sequence[InputShape] = ALL_SHAPES, registry: Registry | None = None
) -> list[ConformanceResult]:
    """Check one model for each input shape; returns what was checked, raises ConformanceError."""
    import torch

    registry = registry or get_registry()
    spec = registry.model(name)
    results = []
    for shape in shapes:
        if shape.channels not in spec.channels:
            continue
        where = f"{name} at {shape.name} shape ({shape.channels}x{shape.image_size}x{shape.image_size})"
        torch.manual_seed(0)
        model = registry.build_model(name, num_classes=shape.num_classes, in_chans=shape.channels,
                                     image_size=shape.image_size)
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        params = sum(p.numel() for _, p in trainable)
        if params <= 0:
            raise ConformanceError(f"{where}: no trainable parameters; the engine would have nothing to train")
        x = torch.randn(BATCH, shape.channels, shape.image_size, shape.image_size)
        model.train()
        out = model(x)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (BATCH, shape.num_classes):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConformanceError(f"{where}: output is {got}, expected logits {(BATCH, shape.num_classes)}")
        if not torch.isfinite(out).all():
            raise ConformanceError(f"{where}: forward pass gave non-finite logits")
        out.float().logsumexp(dim=1).mean().backward()
        missing = [n for n, p in trainable if p.grad is None]
        if missing:
            raise ConformanceError(f"{where}: {len(missing)} trainable parameters got no gradient "
                                   f"(first: {missing[0]}); freeze them (requires_grad=False) or use them")
        model.eval()
        with torch.no_grad():
            first, second = model(x), model(x)
        if not torch.equal(first, second):
            raise ConformanceError(f"{where}: eval-mode outputs differ between two identical calls; "
                                   "dropout or noise must be off in eval mode")
        results.append(ConformanceResult(name, shape.name, input_size(spec, shape.image_size), params))
    if not results:
        raise ConformanceError(f"{name}: accepts none of the channel counts {[s.channels for s in shapes]}")
    return results


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
            for r in check_model(name, shapes, registry=registry):
                print(f"ok    {r.model:<32} {r.shape:<8} input {r.input_size:>3}px  {r.params:>12,} params")
        except Exception as exc:
            failed += 1
            print(f"FAIL  {name}: {exc}")
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
