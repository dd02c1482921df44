"""Built-in Keras 3 family (``keras/...``), run on the torch backend so the one engine trains every model.

Registered through imgbench's own ``imgbench`` entry point, like any third-party plugin. Keras is imported
only when a model is built; ``KERAS_BACKEND`` is set to ``torch`` first.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from functools import partial
from typing import Iterator

from imgbench import ModelSpec, hookimpl

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


def _keras():
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
def _data_format(keras, data_format: str) -> Iterator[None]:
    before = keras.config.image_data_format()
    keras.config.set_image_data_format(data_format)
    try:
        yield
    finally:
        keras.config.set_image_data_format(before)


def _input_shape(keras, image_size: int, in_chans: int) -> tuple[int, int, int]:
    if keras.config.image_data_format() == "channels_first":
        return (in_chans, image_size, image_size)
    return (image_size, image_size, in_chans)


def _wrap(keras_model):
    from imgbench.modules import KerasModule

    return KerasModule(keras_model)


def build_mnist_convnet(*, num_classes: int, in_chans: int, image_size: int, pretrained: bool = False):
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


def build_flowers_cnn(*, num_classes: int, in_chans: int, image_size: int, pretrained: bool = False):
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


def build_application(keras_name: str, *, num_classes: int, in_chans: int, image_size: int, pretrained: bool = False):
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
        base = constructor(weights="imagenet", include_top=False, input_shape=shape, pooling="avg", **options)
        inputs = keras.Input(shape)
        outputs = keras.layers.Dense(num_classes)(base(inputs))
        return _wrap(keras.Model(inputs, outputs, name=f"{keras_name}_finetune"))


@hookimpl
def imgbench_models() -> list[ModelSpec]:
    specs = [
        ModelSpec("keras/mnist_convnet", build_mnist_convnet, "keras-io Simple MNIST convnet (2 conv + dense)",
                  style="cnn", min_size=10),
        ModelSpec("keras/flowers_cnn", build_flowers_cnn, "TensorFlow flowers-tutorial CNN (3 conv + dense 128)",
                  style="cnn", min_size=8),
    ]
    specs += [
        ModelSpec(f"keras/{arch}", partial(build_application, keras_name), f"keras.applications {description}",
                  style=style, min_size=min_size, pretrained=True)
        for arch, keras_name, style, min_size, description in APPLICATIONS
    ]
    return specs
