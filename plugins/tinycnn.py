"""An example drop-in plugin: every *.py file in the repo's plugins/ folder is loaded as a plugin.

It registers two plain PyTorch models under the `tinycnn/` namespace. Copy it, rename the namespace and
return your own ModelSpecs. Import torch inside the builder so `imgbench models` stays fast; the annotations
let a type checker hold the builders and the hook to imgbench's contracts (`imgbench.specs.ModelBuilder`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from imgbench import ModelSpec, hookimpl

if TYPE_CHECKING:
    import torch


def build_tinycnn(*, num_classes: int, in_chans: int, image_size: int, pretrained: bool = False,
                  width: int = 16) -> torch.nn.Module:
    import torch.nn as nn

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    return nn.Sequential(
        block(in_chans, width), nn.MaxPool2d(2),
        block(width, 2 * width), nn.MaxPool2d(2),
        block(2 * width, 4 * width),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, num_classes),
    )


def build_tinycnn_wide(*, num_classes: int, in_chans: int, image_size: int, pretrained: bool = False) -> torch.nn.Module:
    return build_tinycnn(num_classes=num_classes, in_chans=in_chans, image_size=image_size, pretrained=pretrained,
                         width=32)


@hookimpl
def imgbench_models() -> list[ModelSpec]:
    return [
        ModelSpec("tinycnn/small", build_tinycnn, "three conv-BN-ReLU blocks, width 16 (example plugin)", min_size=4),
        ModelSpec("tinycnn/wide", build_tinycnn_wide, "three conv-BN-ReLU blocks, width 32 (example plugin)", min_size=4),
    ]
