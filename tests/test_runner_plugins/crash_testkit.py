"""Test plugin for the runner: a model whose forward pass segfaults, and models whose names hold glob characters.

Loaded beside runner_testkit.py (its datasets tinygray/tinyrgb serve these models too).
"""

from __future__ import annotations

import ctypes

from imgbench import ModelSpec, hookimpl


def _dereference_null() -> bytes:
    """Read address 0: a real SIGSEGV in this very frame, which faulthandler's stack then names."""
    return ctypes.string_at(0)


def _linear(*, num_classes: int, in_chans: int, image_size: int, pretrained: bool = False):
    import torch.nn as nn

    return nn.Sequential(nn.Flatten(), nn.Linear(in_chans * image_size * image_size, num_classes))


def _segfaulting(*, num_classes: int, in_chans: int, image_size: int, pretrained: bool = False):
    import torch.nn as nn

    class Segfault(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = _linear(num_classes=num_classes, in_chans=in_chans, image_size=image_size)

        def forward(self, x):
            _dereference_null()
            return self.inner(x)

    return Segfault()


@hookimpl
def imgbench_models() -> list[ModelSpec]:
    return [
        ModelSpec("crashkit/segfault", _segfaulting, "dereferences NULL in forward: the kernel dies by SIGSEGV"),
        # read as a glob, "odd[1]" would select "odd1" and "star*" would select both stars
        ModelSpec("crashkit/odd[1]", _linear, "a name holding glob characters"),
        ModelSpec("crashkit/odd1", _linear, "what crashkit/odd[1] matches as a glob"),
        ModelSpec("crashkit/star*", _linear, "a name holding a star"),
        ModelSpec("crashkit/starry", _linear, "what crashkit/star* also matches as a glob"),
    ]
