"""Test plugin for the runner: models whose forward pass segfaults or is SIGKILLed, and models whose names hold
glob characters.

Loaded beside runner_testkit.py (its datasets tinygray/tinyrgb serve these models too).
"""

from __future__ import annotations

import ctypes
import os
import signal

from imgbench import ModelSpec, hookimpl


def _dereference_null() -> bytes:
    """Read address 0: a real SIGSEGV in this very frame, which faulthandler's stack then names."""
    return ctypes.string_at(0)


def _linear(*, num_classes: int, in_chans: int, image_size: int, pretrained: bool = False):
    import torch.nn as nn

    return nn.Sequential(nn.Flatten(), nn.Linear(in_chans * image_size * image_size, num_classes))


def _kill_self() -> None:
    """What the OOM killer does: SIGKILL, which no handler sees."""
    os.kill(os.getpid(), signal.SIGKILL)


def _dying(die):
    def build(*, num_classes: int, in_chans: int, image_size: int, pretrained: bool = False):
        import torch.nn as nn

        class Dying(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = _linear(num_classes=num_classes, in_chans=in_chans, image_size=image_size)

            def forward(self, x):
                die()
                return self.inner(x)

        return Dying()

    return build


@hookimpl
def imgbench_models() -> list[ModelSpec]:
    return [
        ModelSpec("crashkit/segfault", _dying(_dereference_null), "dereferences NULL in forward: SIGSEGV"),
        ModelSpec("crashkit/sigkill", _dying(_kill_self), "SIGKILLs its kernel in forward, as the OOM killer would"),
        # read as a glob, "odd[1]" would select "odd1" and "star*" would select both stars
        ModelSpec("crashkit/odd[1]", _linear, "a name holding glob characters"),
        ModelSpec("crashkit/odd1", _linear, "what crashkit/odd[1] matches as a glob"),
        ModelSpec("crashkit/star*", _linear, "a name holding a star"),
        ModelSpec("crashkit/starry", _linear, "what crashkit/star* also matches as a glob"),
    ]
