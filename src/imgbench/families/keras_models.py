"""Built-in Keras 3 family (``keras/...``), run on the torch backend so the one engine trains every model.

Registered through imgbench's own ``imgbench`` entry point, like any third-party plugin. Keras is imported
only when a model is built; ``KERAS_BACKEND`` is set to ``torch`` first.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from functools import partial
from types import ModuleType
from typing import TYPE_CHECKING, Iterator, cast

from imgbench import DataConfig, ModelSpec, hookimpl
from imgbench.errors import UsageError
from imgbench.specs import ChannelOrder

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from imgbench.wrappers import KerasModule

# keras.applications constructors: (registry arch, keras name, style, min input size, description)
APPLICATIONS = [
    ("resnet50", "ResNet50", "resnet", 32, "ResNet-50 (He et al. 2015), bottleneck residual blocks"),
    ("resnet50_v2", "ResNet50V2", "resnet", 32, "ResNet-50 v2, pre-activation residual blocks"),
    ("densenet121", "DenseNet121", "densenet", 32, "DenseNet-121 (Huang et al. 2017), dense connectivity"),
    ("inception_v3", "InceptionV3", "inception", 75, "Inception v3 (Szegedy et al. 2016)"),
    ("xception", "Xception", "inception", 71, "Xception (Chollet 2017), depthwise-separable Inception"),
    ("mobilenet_v2", "MobileNetV2", "mobile", 32, "MobileNetV2 (Sandler et al. 2018), inverted residuals"),
    ("mobilenet_v3_small", "MobileNetV3Small", "mobile", 32, "MobileNetV3-Small (Howard et al. 2019)"),
    ("efficientnet_b0", "EfficientNetB0", "efficient", 32, "EfficientNet-B0 (Tan & Le 2019)"),
    ("efficientnet_v2_b0", "EfficientNetV2B0", "efficient", 32, "EfficientNetV2-B0 (Tan & Le 2021)"),
    ("convnext_tiny", "ConvNeXtTiny", "convnext", 32, "ConvNeXt-Tiny (Liu et al. 2022)"),
    ("vgg16", "VGG16", "cnn", 32, "VGG-16 (Simonyan & Zisserman 2014), plain deep CNN"),
]
# These constructors normalise raw 0-255 pixels themselves unless told not to; imgbench feeds every model
# the same normalised tensors, so their built-in preprocessing is switched off.
HAS_PREPROCESSING_FLAG = {"MobileNetV3Small", "EfficientNetV2B0", "ConvNeXtTiny"}
# What the ImageNet weights expect: each application module's preprocess_input, except where that is a
# pass-through because the model normalises itself: then the imagenet_utils mode of the layers that
# imgbench switches off (mobilenet_v3: Rescaling to [-1, 1]; efficientnet_v2 B0, convnext: ImageNet mean/std).
PREPROCESSING = {
    "ResNet50": "resnet", "ResNet50V2": "resnet_v2", "DenseNet121": "densenet", "InceptionV3": "inception_v3",
    "Xception": "xception", "MobileNetV2": "mobilenet_v2", "MobileNetV3Small": "mode:tf",
    "EfficientNetB0": "efficientnet", "EfficientNetV2B0": "mode:torch", "ConvNeXtTiny": "mode:torch",
    "VGG16": "vgg16",
}
PRETRAINED_SIZE = {"InceptionV3": 299, "Xception": 299}  # the others were trained at 224
IMAGENET_SIZE = 224
# Keras' dtype policy for each engine precision. Keras layers cast their inputs to their own compute dtype,
# so under torch autocast alone a float32-policy model keeps its activations in float32; a mixed policy makes
# its layers compute in the engine's low-precision dtype (variables stay float32), as autocast does for timm.
DTYPE_POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
# The engine builds Keras models channels-first: the same layers and weights, but on the torch backend a
# channels-last Conv2D or pooling layer transposes to NCHW and back (with copies) on every call, forward and
# backward (about 1.4-1.9x slower per training step for keras/mnist_convnet on a CPU). ImageNet weights keep
# Keras' channels-last layout they were made in, and so do the applications that refuse channels-first.
ENGINE_DATA_FORMAT = "channels_first"
CHANNELS_LAST_ONLY = {"DenseNet121", "ConvNeXtTiny"}


def _keras() -> ModuleType:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    if keras.backend.backend() != "torch":
        raise RuntimeError(
            f"Keras is running on the {keras.backend.backend()!r} backend; imgbench needs 'torch'. "
            "Set KERAS_BACKEND=torch before anything imports keras."
        )
    return keras


@contextmanager
def build_scope(device: str, precision: str) -> Iterator[None]:
    """While a Keras model is built: Keras' device is the engine's (variables and constants are created there,
    not on Keras' own default), its dtype policy is the engine's precision and its image data format is
    ``ENGINE_DATA_FORMAT``. All are restored after."""
    keras = _keras()
    before = keras.config.dtype_policy(), keras.config.image_data_format()
    keras.config.set_dtype_policy(DTYPE_POLICIES[precision])
    keras.config.set_image_data_format(ENGINE_DATA_FORMAT)
    try:
        with keras.device(device):
            yield
    finally:
        keras.config.set_dtype_policy(before[0])
        keras.config.set_image_data_format(before[1])


@contextmanager
def _data_format(keras: ModuleType, data_format: str) -> Iterator[None]:
    before = keras.config.image_data_format()
    keras.config.set_image_data_format(data_format)
    try:
        yield
    finally:
        keras.config.set_image_data_format(before)


def _input_shape(keras: ModuleType, image_size: int, in_chans: int) -> tuple[int, int, int]:
    if keras.config.image_data_format() == "channels_first":
        return (in_chans, image_size, image_size)
    return (image_size, image_size, in_chans)


def _wrap(keras_model: torch.nn.Module) -> KerasModule:
    from imgbench.wrappers import KerasModule

    return KerasModule(keras_model)


def build_mnist_convnet(*, num_classes: int, in_chans: int, image_size: int, pretrained: bool = False) -> KerasModule:
    """The keras-io "Simple MNIST convnet" (conv32-pool-conv64-pool-dropout-dense)."""
    keras = _keras()
    layers = keras.layers
    net = keras.Sequential([
        keras.Input(_input_shape(keras, image_size, in_chans)),
        layers.Conv2D(32, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dropout(0.5),
        layers.Dense(num_classes),
    ], name="mnist_convnet")
    return _wrap(net)


def build_flowers_cnn(*, num_classes: int, in_chans: int, image_size: int, pretrained: bool = False) -> KerasModule:
    """The TensorFlow image-classification tutorial CNN (three conv-pool stages, dropout, dense 128).

    The tutorial's Rescaling layer is left out: imgbench feeds normalised inputs to every model.
    """
    keras = _keras()
    layers = keras.layers
    net = keras.Sequential([
        keras.Input(_input_shape(keras, image_size, in_chans)),
        layers.Conv2D(16, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Dropout(0.2),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dense(num_classes),
    ], name="flowers_cnn")
    return _wrap(net)


def build_application(keras_name: str, *, num_classes: int, in_chans: int, image_size: int,
                      pretrained: bool = False) -> KerasModule:
    """A ``keras.applications`` architecture, from scratch (or on ImageNet weights) for this input shape."""
    keras = _keras()
    constructor = getattr(keras.applications, keras_name)
    options = {"include_preprocessing": False} if keras_name in HAS_PREPROCESSING_FLAG else {}
    if not pretrained:
        data_format = "channels_last" if keras_name in CHANNELS_LAST_ONLY else keras.config.image_data_format()
        with _data_format(keras, data_format):
            net = constructor(weights=None, input_shape=_input_shape(keras, image_size, in_chans),
                              classes=num_classes, classifier_activation=None, **options)
            return _wrap(net)
    if in_chans != 3:
        raise ValueError("ImageNet weights need 3 input channels")
    with _data_format(keras, "channels_last"):
        shape = (image_size, image_size, in_chans)
        try:
            base = constructor(weights="imagenet", include_top=False, input_shape=shape, pooling="avg", **options)
        except Exception as exc:  # keras.utils.get_file raises a plain Exception when the fetch fails
            cache = os.path.join(os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")), "models")
            raise UsageError(f"ImageNet weights for keras {keras_name} could not be had ({exc}); offline, put "
                             f"Keras' weight file in {cache}, or start from a file with weights=PATH") from exc
        inputs = keras.Input(shape)
        outputs = keras.layers.Dense(num_classes)(base(inputs))
        return _wrap(keras.Model(inputs, outputs, name=f"{keras_name}_finetune"))


def keras_data_config(keras_name: str) -> DataConfig:
    """The per-channel affine map (and channel order) Keras applies for these weights, read off Keras' own
    preprocessing function by feeding it black and one pure red, green and blue pixel."""
    import numpy as np

    keras = _keras()
    where = PREPROCESSING[keras_name]
    if where.startswith("mode:"):
        mode = where.partition(":")[2]
        preprocess = partial(keras.applications.imagenet_utils.preprocess_input, mode=mode)
        source = f"keras.applications imagenet_utils mode={mode} (the {keras_name} preprocessing layers)"
    else:
        preprocess = getattr(keras.applications, where).preprocess_input
        source = f"keras.applications.{where}.preprocess_input"
    probe = np.zeros((4, 1, 1, 3), dtype="float32")
    for channel in range(3):
        probe[channel + 1, 0, 0, channel] = 255.0
    out = np.asarray(keras.ops.convert_to_numpy(preprocess(probe.copy())), dtype="float64").reshape(4, 3)
    change = out[1:] - out[0]  # row: input channel lit, column: output channel
    order = np.abs(change).argmax(0)
    scale = change[order, np.arange(3)] / 255.0  # output units per 0-255 input unit = 1 / std(0-255)
    std = 1.0 / scale
    mean = -out[0] * std
    orders: dict[tuple[int, ...], ChannelOrder] = {(0, 1, 2): "RGB", (2, 1, 0): "BGR"}
    channels = orders[tuple(int(c) for c in order)]
    return DataConfig(tuple(float(m) / 255 for m in mean), tuple(float(s) / 255 for s in std),
                      PRETRAINED_SIZE.get(keras_name, IMAGENET_SIZE), channel_order=channels,
                      interpolation="bilinear", source=source)


def keras_classifier(module: torch.nn.Module) -> torch.nn.Module:
    """The last Keras layer that holds weights: the Dense (or, in MobileNetV3, 1x1 Conv) making the logits."""
    return cast("KerasModule", module).weighted_layers()[-1]  # every keras/ model is built wrapped


@hookimpl
def imgbench_models() -> list[ModelSpec]:
    specs = [
        ModelSpec("keras/mnist_convnet", build_mnist_convnet, "keras-io Simple MNIST convnet (2 conv + dense)",
                  style="cnn", min_size=10, classifier=keras_classifier),
        ModelSpec("keras/flowers_cnn", build_flowers_cnn, "TensorFlow flowers-tutorial CNN (3 conv + dense 128)",
                  style="cnn", min_size=8, classifier=keras_classifier),
    ]
    specs += [
        ModelSpec(f"keras/{arch}", partial(build_application, keras_name), f"keras.applications {description}",
                  style=style, min_size=min_size, pretrained=True,
                  data_config=partial(keras_data_config, keras_name), classifier=keras_classifier)
        for arch, keras_name, style, min_size, description in APPLICATIONS
    ]
    return specs
