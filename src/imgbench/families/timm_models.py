"""Built-in timm family (``timm/...``): a curated list, plus any other timm architecture by its timm name.

Registered through imgbench's own ``imgbench`` entry point, like any third-party plugin. timm is imported
only when a model is built, or when a name outside the curated list is resolved.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from imgbench import DataConfig, ModelSpec, hookimpl
from imgbench.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    import torch

# (registry arch, timm name, style, min input size, description)
CURATED = [
    ("resnet18", "resnet18", "resnet", 8, "ResNet-18, basic residual blocks"),
    ("resnet50", "resnet50", "resnet", 8, "ResNet-50, bottleneck residual blocks"),
    ("densenet121", "densenet121", "densenet", 32, "DenseNet-121, dense connectivity"),
    ("inception_v3", "inception_v3", "inception", 75, "Inception v3"),
    ("xception41", "xception41", "inception", 8, "Aligned Xception-41, depthwise-separable Inception"),
    ("mobilenetv3_small_100", "mobilenetv3_small_100", "mobile", 8, "MobileNetV3-Small 1.0x"),
    ("mobilenetv3_large_100", "mobilenetv3_large_100", "mobile", 8, "MobileNetV3-Large 1.0x"),
    ("efficientnet_b0", "efficientnet_b0", "efficient", 8, "EfficientNet-B0"),
    ("regnety_002", "regnety_002", "resnet", 8, "RegNetY-200MF, a designed-space ResNet"),
    ("repvgg_a0", "repvgg_a0", "cnn", 8, "RepVGG-A0, a plain VGG-style CNN (3x3 convs; branches only while training)"),
    ("convnext_nano", "convnext_nano", "convnext", 32, "ConvNeXt-Nano"),
    ("ghostnet_100", "ghostnet_100", "mobile", 8, "GhostNet 1.0x"),
]
# Vision transformers get img_size set to the data and a patch size that leaves a useful token grid.
TRANSFORMERS = [
    ("vit_tiny", "vit_tiny_patch16_224", "ViT-Tiny; img_size set to the data, patch size adapted to it"),
    ("deit_tiny", "deit_tiny_patch16_224", "DeiT-Tiny; img_size set to the data, patch size adapted to it"),
]
PATCH_SIZES = (16, 8, 4, 2)
MIN_TOKENS_PER_SIDE = 7


def build_timm(timm_name: str, *, num_classes: int, in_chans: int, image_size: int, pretrained: bool = False,
               **extra: Any) -> torch.nn.Module:  # extra: passed to timm.create_model as they are
    import timm

    if not pretrained:
        return timm.create_model(timm_name, num_classes=num_classes, in_chans=in_chans, **extra)
    try:
        return timm.create_model(timm_name, pretrained=True, num_classes=num_classes, in_chans=in_chans, **extra)
    except (OSError, ValueError) as exc:  # huggingface_hub's offline and HTTP errors are OSErrors
        raise UsageError(_download_hint(timm_name, exc)) from exc


def _download_hint(timm_name: str, exc: Exception) -> str:
    from huggingface_hub import constants
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(timm_name)
    repo = cfg.hf_hub_id if cfg is not None and cfg.hf_hub_id else f"timm/{timm_name}"
    return (f"pretrained weights for timm {timm_name} could not be had ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Offline, fill the Hugging Face cache "
            f"{constants.HF_HUB_CACHE} (HF_HOME / HF_HUB_CACHE) with the hub repo {repo} "
            f"(`hf download {repo}` on a machine with network, then copy the folder), "
            f"or start from a file with weights=PATH")


def timm_data_config(timm_name: str) -> DataConfig | None:
    """The preprocessing of timm's default (or named, ``resnet18.a1_in1k``) pretrained weights, as timm
    resolves it."""
    from timm.data import resolve_data_config
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(timm_name)
    if cfg is None:
        return None
    resolved = resolve_data_config(pretrained_cfg=cfg.to_dict())
    return DataConfig(tuple(resolved["mean"]), tuple(resolved["std"]), int(resolved["input_size"][-1]),
                      interpolation=resolved["interpolation"], crop_pct=float(resolved["crop_pct"]),
                      source=f"timm pretrained_cfg {cfg.architecture}.{cfg.tag}")


def timm_classifier(net: torch.nn.Module) -> torch.nn.Module:
    """timm's own answer: every timm model names its head."""
    return net.get_classifier()  # type: ignore[operator]  # torch types unknown attributes as Tensor | Module


def patch_size_for(image_size: int) -> int:
    """The largest standard patch size that divides the image and leaves at least 7 tokens a side."""
    for patch in PATCH_SIZES:
        if image_size % patch == 0 and image_size // patch >= MIN_TOKENS_PER_SIDE:
            return patch
    return 1


def build_transformer(timm_name: str, *, num_classes: int, in_chans: int, image_size: int,
                      pretrained: bool = False) -> torch.nn.Module:
    patch = patch_size_for(image_size)
    return build_timm(timm_name, num_classes=num_classes, in_chans=in_chans, image_size=image_size,
                      pretrained=pretrained, img_size=image_size, patch_size=patch)


@hookimpl
def imgbench_models() -> list[ModelSpec]:
    specs = [
        ModelSpec(f"timm/{arch}", partial(build_timm, timm_name), f"timm {description}", style=style,
                  min_size=min_size, pretrained=True, data_config=partial(timm_data_config, timm_name),
                  classifier=timm_classifier)
        for arch, timm_name, style, min_size, description in CURATED
    ]
    specs += [
        ModelSpec(f"timm/{arch}", partial(build_transformer, timm_name), f"timm {description}", style="transformer",
                  min_size=14, pretrained=True, data_config=partial(timm_data_config, timm_name),
                  classifier=timm_classifier)
        for arch, timm_name, description in TRANSFORMERS
    ]
    return specs


@hookimpl
def imgbench_resolve_model(name: str) -> ModelSpec | None:
    namespace, _, timm_name = name.partition("/")
    if namespace != "timm":
        return None
    import timm

    if not timm.is_model(timm_name):
        return None
    return ModelSpec(name, partial(build_timm, timm_name), f"timm {timm_name} (not curated; defaults as timm)",
                     style="other", min_size=32, pretrained=True, data_config=partial(timm_data_config, timm_name),
                     classifier=timm_classifier)
