"""Every image mode a user's folder may hold decodes to the 8-bit RGB that the rules of
``imgbench.datasets.images`` state. Each expected array is worked out here from the pixel values the test put
in, by its own arithmetic; PNGs whose bytes matter are written by hand (``png_bytes``), not by Pillow."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from imgbench.datasets import DatasetError
from imgbench.datasets.imagefolder import IMAGEFOLDER
from imgbench.datasets.images import decode_file, to_rgb8

SIZE = 4  # the files are SIZE x SIZE and decoded at SIZE: no resampling, so pixels can be compared exactly
GRAY16 = np.array([[0, 255, 256, 4096], [32767, 32768, 40000, 65279],
                   [65280, 65535, 1000, 20000], [511, 512, 60000, 12345]], dtype=np.uint16)
# GRAY16 // 256 by hand: the high byte of each value
GRAY16_HIGH_BYTE = np.array([[0, 0, 1, 16], [127, 128, 156, 254],
                             [255, 255, 3, 78], [1, 2, 234, 48]], dtype=np.uint8)


def png_bytes(pixels: np.ndarray, color_type: int, bit_depth: int) -> bytes:
    """A PNG written from the specification: IHDR, one zlib IDAT of unfiltered big-endian rows, IEND."""
    height, width = pixels.shape[:2]

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    big_endian = pixels.astype(">u2" if bit_depth == 16 else "u1")
    rows = b"".join(b"\x00" + big_endian[r].tobytes() for r in range(height))
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def gray_as_rgb(gray: np.ndarray) -> np.ndarray:
    return np.stack([gray] * 3, axis=-1).astype(np.uint8)


def over_white(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Alpha compositing onto white in floating point, rounded: c*a/255 + 255*(1 - a/255)."""
    a = alpha.astype(np.float64)[..., None] / 255
    return np.round(color.astype(np.float64) * a + 255 * (1 - a)).astype(np.uint8)


def decoded(tmp_path, image: Image.Image, suffix: str = ".png", **save) -> np.ndarray:
    path = tmp_path / f"image{suffix}"
    image.save(path, **save)
    return decode_file(path, SIZE)


# -- 16- and 32-bit integers, floats: scaled, never clipped ------------------------------------------------

def test_16bit_grayscale_png_keeps_its_full_range_instead_of_coming_out_white(tmp_path):
    path = tmp_path / "gray16.png"
    path.write_bytes(png_bytes(GRAY16, color_type=0, bit_depth=16))
    out = decode_file(path, SIZE)
    np.testing.assert_array_equal(out, gray_as_rgb(GRAY16_HIGH_BYTE))
    assert out.mean() < 140  # clipped to 8 bits, 13 of these 16 values would read 255


def test_16bit_rgb_png_keeps_the_high_byte_too(tmp_path):
    rgb16 = np.stack([GRAY16, GRAY16[::-1], GRAY16.T], axis=-1)
    path = tmp_path / "rgb16.png"
    path.write_bytes(png_bytes(rgb16, color_type=2, bit_depth=16))
    expected = np.stack([GRAY16_HIGH_BYTE, GRAY16_HIGH_BYTE[::-1], GRAY16_HIGH_BYTE.T], axis=-1)
    np.testing.assert_array_equal(decode_file(path, SIZE), expected)


@pytest.mark.parametrize("mode, pack", [("I;16", "<H"), ("I;16L", "<H"), ("I;16B", ">H")])
def test_16bit_modes_of_either_byte_order(mode, pack):
    raw = b"".join(struct.pack(pack, int(v)) for v in GRAY16.ravel())
    image = Image.frombytes(mode, (SIZE, SIZE), raw)
    np.testing.assert_array_equal(np.asarray(to_rgb8(image)), gray_as_rgb(GRAY16_HIGH_BYTE))


@pytest.mark.parametrize("values, expected", [
    # 16-bit data in a 32-bit container (how Pillow has opened 16-bit files): the high byte of 16 bits
    ([0, 255, 256, 65535], [0, 0, 1, 255]),
    # beyond 16 bits: the top 8 of 31 bits (2**23 input levels per output level)
    ([0, 2**23 - 1, 2**23, 2**31 - 1], [0, 0, 1, 255]),
    # negative values: signed 32-bit moved to 0..2**32-1, then its top byte
    ([-2**31, -1, 0, 2**31 - 1], [0, 127, 128, 255]),
])
def test_32bit_integer_images_scale_by_the_range_their_values_need(tmp_path, values, expected):
    image = Image.frombytes("I", (2, 2), struct.pack("<4i", *values))
    np.testing.assert_array_equal(np.asarray(to_rgb8(image)), gray_as_rgb(np.reshape(expected, (2, 2))))
    path = tmp_path / "int32.tif"
    image.save(path)  # and through a file: a 32-bit TIFF opens as mode I
    np.testing.assert_array_equal(decode_file(path, 2), gray_as_rgb(np.reshape(expected, (2, 2))))


def test_float_images_in_0_to_1_scale_by_255_and_other_ranges_are_refused(tmp_path):
    values = np.array([[0.0, 0.25], [1.0, 0.2]], dtype=np.float32)
    path = tmp_path / "float.tif"
    Image.fromarray(values, "F").save(path)
    np.testing.assert_array_equal(decode_file(path, 2), gray_as_rgb(np.array([[0, 64], [255, 51]])))
    for bad, shown in ((values * 300, "0..300"), (values - 0.5, "-0.5..0.5")):
        Image.fromarray(bad, "F").save(path)
        with pytest.raises(DatasetError, match=rf"values {shown}.*scale it to 0\.\.1"):
            decode_file(path, 2)
    Image.fromarray(np.array([[np.nan, 0.5], [0.1, 0.2]], np.float32), "F").save(path)
    with pytest.raises(DatasetError, match="NaN"):
        decode_file(path, 2)


# -- palette, transparency, CMYK, 1-bit -----------------------------------------------------------------------

INDEX = np.array([[0, 1, 2, 3]] * SIZE, dtype=np.uint8)
PALETTE = np.array([[255, 0, 0], [0, 255, 0], [10, 20, 30], [200, 100, 50]], dtype=np.uint8)
PALETTE_ALPHA = np.array([255, 0, 128, 30], dtype=np.uint8)


def palette_image() -> Image.Image:
    image = Image.fromarray(INDEX, "P")
    image.putpalette(PALETTE.ravel().tolist())
    return image


def test_palette_without_transparency_is_its_colours(tmp_path):
    np.testing.assert_array_equal(decoded(tmp_path, palette_image()), PALETTE[INDEX])


def test_palette_with_transparency_is_composited_onto_white(tmp_path):
    out = decoded(tmp_path, palette_image(), transparency=PALETTE_ALPHA.tobytes())
    np.testing.assert_array_equal(out, over_white(PALETTE[INDEX], PALETTE_ALPHA[INDEX]))
    assert (out[:, 1] == 255).all()  # the fully transparent entry is the background, not its green


def test_palette_with_alpha_channel_pa_is_composited_onto_white():
    alpha = np.array([[0, 64, 128, 255]] * SIZE, dtype=np.uint8).T
    image = Image.merge("PA", [palette_image(), Image.fromarray(alpha, "L")])
    assert image.mode == "PA"
    np.testing.assert_array_equal(np.asarray(to_rgb8(image)), over_white(PALETTE[INDEX], alpha))


def test_gray_with_alpha_la_is_composited_onto_white(tmp_path):
    gray = np.array([[0, 50, 100, 200]] * SIZE, dtype=np.uint8)
    alpha = gray.T.copy()
    out = decoded(tmp_path, Image.merge("LA", [Image.fromarray(gray, "L"), Image.fromarray(alpha, "L")]))
    np.testing.assert_array_equal(out, over_white(gray_as_rgb(gray), alpha))


def test_rgba_is_composited_onto_white(tmp_path):
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (SIZE, SIZE, 4), dtype=np.uint8)
    out = decoded(tmp_path, Image.fromarray(rgba, "RGBA"))
    np.testing.assert_array_equal(out, over_white(rgba[..., :3], rgba[..., 3]))


def test_a_transparent_colour_key_of_rgb_and_gray_pngs_is_background(tmp_path):
    rgb = np.array([[[10, 20, 30], [1, 2, 3]] * 2] * SIZE, dtype=np.uint8)
    out = decoded(tmp_path, Image.fromarray(rgb, "RGB"), transparency=(1, 2, 3))  # the PNG tRNS chunk
    expected = rgb.copy()
    expected[:, 1::2] = 255
    np.testing.assert_array_equal(out, expected)
    gray = np.array([[0, 7, 200, 7]] * SIZE, dtype=np.uint8)
    out = decoded(tmp_path, Image.fromarray(gray, "L"), transparency=7)
    np.testing.assert_array_equal(out, gray_as_rgb(np.where(gray == 7, 255, gray)))


def test_cmyk_is_subtractive_without_a_profile(tmp_path):
    cmyk = np.array([[[0, 0, 0, 0], [255, 0, 0, 0], [0, 128, 0, 64], [10, 20, 30, 40]]] * SIZE, dtype=np.uint8)
    out = decoded(tmp_path, Image.fromarray(cmyk, "CMYK"), suffix=".tif")
    c = cmyk.astype(np.float64)
    expected = np.round((255 - c[..., :3]) * (255 - c[..., 3:]) / 255).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)


def test_one_bit_images_are_black_and_white(tmp_path):
    bits = np.array([[0, 1, 1, 0], [1, 0, 0, 1], [0, 0, 1, 1], [1, 1, 0, 0]], dtype=bool)
    image = Image.frombytes("1", (SIZE, SIZE), np.packbits(bits, axis=1).tobytes())  # 1 bit a pixel, MSB first
    out = decoded(tmp_path, image)
    np.testing.assert_array_equal(out, gray_as_rgb(bits * 255))


def test_modes_without_a_rule_are_refused_by_name():
    with pytest.raises(ValueError, match="mode 'LAB'"):
        to_rgb8(Image.new("LAB", (2, 2)))


# -- EXIF orientation --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("orientation, turned", [
    (1, lambda a: a),
    (3, lambda a: np.rot90(a, 2)),   # shown upside down
    (6, lambda a: np.rot90(a, -1)),  # shown turned a quarter clockwise
    (8, lambda a: np.rot90(a, 1)),   # shown turned a quarter counter-clockwise
    (2, lambda a: a[:, ::-1]),       # shown mirrored
])
def test_exif_orientation_is_applied(tmp_path, orientation, turned):
    rgb = np.arange(SIZE * SIZE * 3, dtype=np.uint8).reshape(SIZE, SIZE, 3) * 5
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = decoded(tmp_path, Image.fromarray(rgb, "RGB"), exif=exif.tobytes())
    np.testing.assert_array_equal(out, turned(rgb))


# -- through the real folder dataset ------------------------------------------------------------------------------

def test_16bit_folder_loads_with_its_real_brightness(tmp_path):
    """The imagefolder load path (decode, cache, split) keeps 16-bit PNGs at their level, not near white."""
    levels = {}
    for cls in ("dark", "mid"):
        for i in range(5):
            value = (1000 if cls == "dark" else 30000) + 997 * i
            folder = tmp_path / "tree" / cls
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i}.png").write_bytes(png_bytes(np.full((6, 6), value), color_type=0, bit_depth=16))
            levels[value // 256] = cls
    data = IMAGEFOLDER.load(image_size=6, val_size=0.25, data_dir=None, cache_dir=tmp_path / "c",
                            arg=str(tmp_path / "tree"))
    images = np.concatenate([data.train.x, data.val.x, data.test.x])
    labels = np.concatenate([data.train.y, data.val.y, data.test.y])
    assert images.shape == (10, 6, 6, 3)
    per_image = images.reshape(len(images), -1)
    assert (per_image == per_image[:, :1]).all()  # each file is one level, the same in all three channels
    assert sorted(per_image[:, 0].tolist()) == sorted(levels)
    assert [data.classes[y] for y in labels] == [levels[v] for v in per_image[:, 0]]
    assert images.max() == 132  # (30000 + 4 * 997) // 256; the old clipping decode read all of these as 255


def test_a_folder_of_mixed_grayscale_and_colour_images_loads_as_rgb(tmp_path):
    """Mixed channel counts are allowed: every image becomes RGB, a grayscale one with three equal channels."""
    rng = np.random.default_rng(1)
    written = []
    for cls in ("a", "b"):
        folder = tmp_path / "mixed" / cls
        folder.mkdir(parents=True)
        for i in range(4):
            if i % 2:
                pixels = rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)
                Image.fromarray(pixels, "L").save(folder / f"{i}.png")
                written.append(gray_as_rgb(pixels))
            else:
                pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
                Image.fromarray(pixels, "RGB").save(folder / f"{i}.png")
                written.append(pixels)
    data = IMAGEFOLDER.load(image_size=SIZE, val_size=0.25, data_dir=None, cache_dir=tmp_path / "c",
                            arg=str(tmp_path / "mixed"))
    assert data.image_shape == (SIZE, SIZE, 3)
    loaded = np.concatenate([data.train.x, data.val.x, data.test.x])
    assert sorted(a.tobytes() for a in loaded) == sorted(a.tobytes() for a in written)
