"""Decoding image files and resizing arrays to square uint8 images.

Photos are resized so the shorter side matches, then center-cropped to a square, in one Pillow call (the
crop box is passed to ``resize``, which antialiases when shrinking). JPEGs are first decoded at a reduced
scale (``draft``) no smaller than needed, which makes decoding large photos several times faster. Many files
are decoded by a pool of threads, one per core: Pillow releases the GIL while it decodes and resamples, so
threads use every core without the pitfalls of process pools (re-imported ``__main__``, fork after torch).

Every file becomes 8-bit RGB by one stated rule per Pillow mode (:func:`to_rgb8`), after its EXIF orientation
is applied, so that a folder can mix grayscale, palette, 16-bit and RGB images and still feed one model:

- grayscale (``L``, 1-bit ``1`` as 0/255) is repeated into the three channels;
- integer modes keep their full range: 16-bit (``I;16``, ``I;16L``, ``I;16B``) keeps its high byte
  (``v >> 8``: 256 input levels per output level, as Pillow and libpng reduce 16-bit RGB); 32-bit ``I``, which
  Pillow also uses for 16-bit data, is read as 16-bit when its values lie in 0..65535, else as unsigned 31-bit
  (``v >> 23``), or signed 32-bit shifted to unsigned (``(v + 2**31) >> 24``) when it has negative values;
- float ``F`` is taken as 0..1 and scaled by 255 (rounded); other float ranges have no defined brightness (HDR,
  scientific data) and are refused with an error that says how to convert them;
- transparency (``RGBA``, ``LA``, ``PA``, palette, gray or RGB images with a transparent colour) is composited onto
  :data:`BACKGROUND`, white, as such images are shown on a page: ``round((c*a + 255*(255-a)) / 255)``;
- ``CMYK`` becomes ``round((255-c)(255-k)/255)`` per channel (Pillow's conversion; embedded ICC profiles are
  not applied), ``YCbCr`` and ``HSV`` go through Pillow's conversion. Other modes are refused by name.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from imgbench.datasets.errors import DatasetError

RESAMPLE = Image.Resampling.BILINEAR
RESIZE_METHOD = "shorter-side-bilinear-center-crop"  # recorded in fingerprints
DECODE_RULES = "to_rgb8-v1"  # recorded in fingerprints too: a change of the rules below re-decodes cached folders
CHUNK_IMAGES = 32
BACKGROUND = (255, 255, 255)  # what transparent pixels are composited onto
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
PILLOW_RGB_MODES = ("RGB", "RGBX", "CMYK", "YCbCr", "HSV", "L")  # Pillow's conversion is the stated rule


def to_rgb8(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB by the module's rules (orientation applied first); raises ValueError naming the
    mode when no rule fits."""
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode in ("P", "L", "RGB") and "transparency" in image.info:  # a transparent index or colour key
        image, mode = image.convert("RGBA"), "RGBA"
    if mode == "P":
        image, mode = image.convert("RGB"), "RGB"
    if mode == "1":
        image, mode = image.convert("L"), "L"
    if mode in PILLOW_RGB_MODES:
        return image.convert("RGB")
    if mode in ALPHA_MODES:
        return _composite(np.asarray(image.convert("RGBA")))
    if mode in SIXTEEN_BIT_MODES or mode == "I":
        return _gray(_integer_to_uint8(np.asarray(image), mode))
    if mode == "F":
        return _gray(_float_to_uint8(np.asarray(image)))
    raise ValueError(f"image mode {mode!r} has no conversion to 8-bit RGB here; convert the file to 8- or 16-bit "
                     f"PNG (grayscale, RGB or RGBA)")


def _integer_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    values = values.astype(np.int64)
    if mode == "I" and values.size and values.min() < 0:
        return ((values + 2**31) >> 24).astype(np.uint8)
    bits = 16 if mode != "I" or not values.size or values.max() <= 0xFFFF else 31
    return (values >> (bits - 8)).astype(np.uint8)


def _float_to_uint8(values: np.ndarray) -> np.ndarray:
    finite = np.isfinite(values).all()
    if not finite or values.min(initial=0.0) < 0 or values.max(initial=0.0) > 1:
        low, high = (float(np.nanmin(values)), float(np.nanmax(values))) if values.size else (0.0, 0.0)
        raise ValueError(f"float image with values {low:g}..{high:g}{'' if finite else ' and NaN/inf'}: only 0..1 "
                         f"has a defined brightness; scale it to 0..1 or save it as 8- or 16-bit PNG")
    return np.rint(values.astype(np.float64) * 255).astype(np.uint8)


def _composite(rgba: np.ndarray) -> Image.Image:
    color, alpha = rgba[..., :3].astype(np.int32), rgba[..., 3:].astype(np.int32)
    background = np.asarray(BACKGROUND, dtype=np.int32)
    mixed = (color * alpha + background * (255 - alpha) + 127) // 255  # rounded: x/255 never ends in .5
    return Image.fromarray(mixed.astype(np.uint8), "RGB")


def _gray(values: np.ndarray) -> Image.Image:
    return Image.fromarray(np.repeat(values[..., None], 3, axis=2), "RGB")


def decode_file(path: str | Path, size: int) -> np.ndarray:
    """One image file as uint8 ``(size, size, 3)``: made RGB by :func:`to_rgb8`, shorter side resized to
    ``size``, center-cropped."""
    try:
        with Image.open(path) as opened:
            opened.draft("RGB", (size, size))
            image = to_rgb8(opened)
            width, height = image.size
            side = min(width, height)
            left, top = (width - side) // 2, (height - side) // 2
            image = image.resize((size, size), RESAMPLE, box=(left, top, left + side, top + side))
            return np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"cannot decode image {path} ({type(exc).__name__}: {exc}); "
                           f"remove or replace the damaged file") from exc


def is_image(path: str | Path) -> bool:
    """Whether Pillow recognises ``path`` as an image (reads the header only)."""
    try:
        with Image.open(path) as image:
            return image.size[0] > 0 and image.size[1] > 0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return False


def _workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _fill_in_parallel(out: np.ndarray, work: Callable[[int, int], np.ndarray], desc: str) -> np.ndarray:
    """``out[i:j] = work(i, j)`` over chunks, on one thread per core, with a progress bar."""
    starts = range(0, len(out), CHUNK_IMAGES)
    with tqdm(total=len(out), unit="img", desc=desc, disable=None, leave=False) as bar, \
            ThreadPoolExecutor(max_workers=_workers()) as pool:
        blocks = pool.map(lambda i: (i, work(i, min(i + CHUNK_IMAGES, len(out)))), starts)
        for start, block in blocks:
            out[start:start + len(block)] = block
            bar.update(len(block))
    return out


def decode_files(paths: Sequence[Path], size: int, *, desc: str = "decoding") -> np.ndarray:
    """All ``paths`` as one uint8 ``(N, size, size, 3)`` array, decoded on every core."""
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    return _fill_in_parallel(out, lambda i, j: np.stack([decode_file(p, size) for p in paths[i:j]]), desc)


def resize_array(images: np.ndarray, size: int, *, desc: str = "resizing") -> np.ndarray:
    """Resize square uint8 ``(N, H, W, C)`` images to ``(N, size, size, C)``; returns the input when equal."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    channels = images.shape[3]

    def resize(i: int, j: int) -> np.ndarray:
        block = []
        for image in images[i:j]:
            resized = np.asarray(Image.fromarray(image[..., 0] if channels == 1 else image).resize((size, size), RESAMPLE))
            block.append(resized[..., None] if channels == 1 else resized)
        return np.stack(block)

    return _fill_in_parallel(np.empty((len(images), size, size, channels), dtype=np.uint8), resize, desc)
