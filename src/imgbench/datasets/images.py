"""Decoding image files and resizing arrays to square uint8 images.

Photos are resized so the shorter side matches, then center-cropped to a square, in one Pillow call (the
crop box is passed to ``resize``, which antialiases when shrinking). JPEGs are first decoded at a reduced
scale (``draft``) no smaller than needed, which makes decoding large photos several times faster. Many files
are decoded by a pool of threads, one per core: Pillow releases the GIL while it decodes and resamples, so
threads use every core without the pitfalls of process pools (re-imported ``__main__``, fork after torch).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from imgbench.datasets.errors import DatasetError

RESAMPLE = Image.Resampling.BILINEAR
RESIZE_METHOD = "shorter-side-bilinear-center-crop"  # recorded in fingerprints
CHUNK_IMAGES = 32


def decode_file(path: str | Path, size: int) -> np.ndarray:
    """One image file as uint8 ``(size, size, 3)``: shorter side resized to ``size``, center-cropped."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (size, size))
            image = image.convert("RGB")
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
