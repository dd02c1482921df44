"""Small torch modules the registry wraps around built models. Imported only when a model is built."""

from __future__ import annotations

from typing import Any, Iterator

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
    """Adapts a Keras 3 model (torch backend) to imgbench's NCHW convention.

    On the torch backend a Keras model is a ``torch.nn.Module`` whose weights are torch parameters, so the
    engine trains it like any other module. Three things differ from a torch module, and are handled here:

    - Keras layers take the training flag from the call rather than from ``module.train()``, so it is passed
      on explicitly.
    - Keras puts every tensor it creates or converts on *its* device (``KERAS_TORCH_DEVICE``, else CUDA
      whenever CUDA is visible), whatever device the inputs are on. Each forward runs inside
      ``keras.device(<the inputs' device>)``, so the model computes where the engine put it.
    - Keras' seeded dropout (a ``noise_shape`` or a ``seed``, as in EfficientNet's drop-connect) seeds a fresh
      ``torch.Generator`` from its seed state with ``int(tensor)`` on every call: one host sync per layer per
      training step. Those layers draw the same Bernoulli mask from torch's own generator on the device
      instead (seeded by the job's seed), with the same shape, rate and scaling.
    - Keras' ``Rescaling`` and ``Normalization`` (EfficientNet's first layers) turn their Python floats (scale,
      offset, epsilon) into device tensors on every call: a copy from the host, and on CUDA a host sync, each.
      They compute the same with the floats as torch scalars instead.

    A model built channels-first (the engine builds them so: ``imgbench.families.keras_models``) takes the
    NCHW inputs as they are; a channels-last one gets an NHWC view of them (a permute, no copy). Which one is
    read from Keras' image data format when the module is made, right after the model was built.
    """

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        if not isinstance(net, torch.nn.Module):
            raise TypeError("Keras is not on the torch backend: its models are not torch modules")
        import keras

        keras_net: Any = net  # a Keras model on a torch module; Keras' own API is untyped
        self.net = keras_net
        self.channels_first = keras.config.image_data_format() == "channels_first"
        self._device_scope = keras.device
        for layer in keras_net._flatten_layers(include_self=False, recursive=True):
            # exactly Dropout: its subclasses (SpatialDropout2D...) compute their own noise shapes
            if type(layer) is keras.layers.Dropout and (layer.noise_shape is not None or layer.seed is not None):
                layer.call = _DeviceDropout(layer)
            elif type(layer) is keras.layers.Rescaling and _scalars(layer.scale, layer.offset):
                layer.call = _ScalarRescaling(layer)
            elif type(layer) is keras.layers.Normalization and not layer.invert:
                layer.call = _ScalarEpsilonNormalization(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self._device_scope(str(x.device)):
            return self.net(x if self.channels_first else x.permute(0, 2, 3, 1), training=self.training)

    def weighted_layers(self) -> list[Any]:
        """The Keras layers that hold weights, in order, nested models flattened: the last one makes the logits
        (the classifier), and their places name the weights in a checkpoint
        (:func:`imgbench.engine.weights.keras_variables`)."""
        return list(_weighted_layers(self.net))


def _weighted_layers(model: Any) -> Iterator[Any]:
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _weighted_layers(layer)
        elif layer.weights:
            yield layer


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


class _DeviceDropout:
    """``keras.layers.Dropout.call`` without the host sync: the mask comes from torch's generator."""

    def __init__(self, layer) -> None:
        self.layer = layer

    def __call__(self, inputs: torch.Tensor, training: bool = False) -> torch.Tensor:
        rate = self.layer.rate
        if not training or rate == 0:
            return inputs
        if rate == 1:
            return torch.zeros_like(inputs)
        noise_shape = self.layer.noise_shape or (None,) * inputs.ndim
        shape = [size if dim is None else dim for size, dim in zip(inputs.shape, noise_shape)]
        keep = 1.0 - rate
        mask = torch.empty(shape, dtype=inputs.dtype, device=inputs.device).bernoulli_(keep)
        return inputs / keep * mask  # Keras: where(mask, inputs / keep, 0)


def _scalars(*values: object) -> bool:
    return all(isinstance(value, (int, float)) for value in values)


class _ScalarRescaling:
    """``keras.layers.Rescaling.call`` for a scalar scale and offset, without making them device tensors."""

    def __init__(self, layer) -> None:
        self.layer = layer

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        return inputs.to(getattr(torch, layer.compute_dtype)) * layer.scale + layer.offset


class _ScalarEpsilonNormalization:
    """``keras.layers.Normalization.call`` (not inverted) with its epsilon a torch scalar, not a device tensor."""

    def __init__(self, layer) -> None:
        self.layer = layer

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        import keras

        layer = self.layer
        mean, variance = layer.convert_weight(layer.mean), layer.convert_weight(layer.variance)
        inputs = inputs.to(getattr(torch, layer.compute_dtype))
        return (inputs - mean) / torch.sqrt(variance).clamp_min(keras.config.epsilon())
