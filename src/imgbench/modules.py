"""Small torch modules the registry wraps around built models. Imported only when a model is built."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class ResizeInput(torch.nn.Module):
    """Resizes inputs up to an architecture's minimum size before the wrapped model sees them."""

    def __init__(self, model: torch.nn.Module, size: int) -> None:
        super().__init__()
        self.model = model
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.model(x)


class KerasModule(torch.nn.Module):
    """Adapts a Keras 3 model (torch backend, channels-last) to imgbench's NCHW convention.

    On the torch backend a Keras model is a ``torch.nn.Module`` whose weights are torch parameters, so the
    engine trains it like any other module. Keras layers take the training flag from the call rather than
    from ``module.train()``, so it is passed on explicitly.
    """

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        if not isinstance(net, torch.nn.Module):
            raise TypeError("Keras is not on the torch backend: its models are not torch modules")
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.permute(0, 2, 3, 1), training=self.training)


class FrozenBackbone(torch.nn.Module):
    """A linear probe: only ``head``'s parameters train, and the model always runs in eval mode, so its
    BatchNorm statistics and dropout stay as they were (``finetune=head``)."""

    def __init__(self, model: torch.nn.Module, head: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        trained = {id(p) for p in head.parameters()}
        for parameter in model.parameters():
            parameter.requires_grad_(id(parameter) in trained)

    def train(self, mode: bool = True) -> "FrozenBackbone":
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
