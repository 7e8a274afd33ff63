"""Decoding: files that open without error but need care to give the right pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mcgf.data.check import check_dataset, format_report
from mcgf.data.images import (
    EXIF_ORIENTATION,
    FLOAT,
    SIXTEEN_BIT,
    TRANSPARENCY,
    decode_image,
    read_image,
)
from mcgf.errors import ImageReadError
from tests.data.conftest import write_image

ORIENTATION = 0x0112


def grey16(path: Path) -> np.ndarray:
    """A 16-bit greyscale PNG whose samples cover 0..65535; returns the samples."""
    samples = (np.arange(32 * 32, dtype=np.uint32).reshape(32, 32) * 64).astype(np.uint16)
    Image.fromarray(samples).save(path)
    return samples


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_grey_is_scaled_not_clipped(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"g16{suffix}"
    samples = grey16(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # what the fix is about
    image, done = decode_image(path)
    rgb = np.asarray(image)
    assert image.mode == "RGB" and done == {SIXTEEN_BIT}
    assert np.array_equal(rgb[..., 0], (samples >> 8).astype(np.uint8))
    assert np.array_equal(rgb[..., 0], rgb[..., 2])
    assert (rgb == 255).mean() < 0.01  # a plain convert("RGB") makes > 99 % of it white


def test_32bit_integer_grey_is_read_as_16bit_samples() -> None:
    from mcgf.data.images import _normalise

    values = np.array([[0, 255, 256, 65535], [70000, -5, 32768, 512]], dtype=np.int32)
    image, done = _normalise(Image.fromarray(values, "I"), "L")
    assert done == {SIXTEEN_BIT}
    assert np.asarray(image).tolist() == [[0, 0, 1, 255], [255, 0, 128, 2]]


def _quadrants() -> np.ndarray:
    """16x24 RGB: red top-left block, the rest dark blue (orientation is easy to read)."""
    arr = np.zeros((16, 24, 3), np.uint8)
    arr[..., 2] = 80
    arr[:8, :8] = (255, 0, 0)
    return arr


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_exif_orientation_is_applied(tmp_path: Path, suffix: str) -> None:
    image = Image.fromarray(_quadrants())
    exif = image.getexif()
    exif[ORIENTATION] = 6  # the camera was turned: show the image rotated 90 degrees clockwise
    path = tmp_path / f"rotated{suffix}"
    image.save(path, exif=exif, **({"quality": 95} if suffix == ".jpg" else {}))
    decoded, done = decode_image(path)
    rgb = np.asarray(decoded).astype(int)
    assert done == {EXIF_ORIENTATION}
    assert rgb.shape == (24, 16, 3)
    # the red block moves from the top-left to the top-right corner
    assert rgb[3, 12, 0] > 200 and rgb[3, 12, 2] < 60
    assert rgb[3, 3, 0] < 60 and rgb[20, 3, 0] < 60


def test_no_orientation_tag_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    Image.fromarray(_quadrants()).save(path)
    decoded, done = decode_image(path)
    assert done == frozenset() and np.array_equal(np.asarray(decoded), _quadrants())


def test_rgba_is_composited_on_black(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = (255, 255, 255)  # white under every pixel
    rgba[0, :, 3] = 0  # fully transparent row
    rgba[1, :, 3] = 128  # half transparent row
    rgba[2:, :, 3] = 255
    path = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(path)
    decoded, done = decode_image(path)
    rgb = np.asarray(decoded).astype(int)
    assert done == {TRANSPARENCY}
    assert (rgb[0] == 0).all()
    assert (abs(rgb[1] - 128) <= 1).all()
    assert (rgb[2:] == 255).all()


def test_grey_alpha_and_palette_transparency(tmp_path: Path) -> None:
    la = tmp_path / "la.png"
    Image.new("LA", (3, 3), (200, 0)).save(la)
    rgb, done = decode_image(la)
    assert done == {TRANSPARENCY} and (np.asarray(rgb) == 0).all()

    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 255, 255, 10, 200, 30])
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    path = tmp_path / "p.png"
    pal.save(path, transparency=0)
    rgb, done = decode_image(path)
    assert done == {TRANSPARENCY}
    assert np.asarray(rgb).tolist() == [[[0, 0, 0], [10, 200, 30]]]


def test_opaque_alpha_is_not_reported(tmp_path: Path) -> None:
    arr = np.full((2, 2, 4), 255, np.uint8)
    arr[..., 0] = 7
    path = tmp_path / "opaque.png"
    Image.fromarray(arr, "RGBA").save(path)
    rgb, done = decode_image(path)
    assert done == frozenset() and np.asarray(rgb)[0, 0].tolist() == [7, 255, 255]


def test_cmyk_jpeg_still_decodes_to_rgb(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(path, quality=100)
    rgb = np.asarray(read_image(path)).astype(int)
    assert (abs(rgb - np.array([255, 0, 0])) <= 3).all()


def test_truncated_file_is_still_an_error(tmp_path: Path) -> None:
    path = write_image(tmp_path / "t.png", size=32)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(ImageReadError, match=r"t\.png"):
        decode_image(path)


def test_data_check_counts_each_adjustment(u1652: Path) -> None:
    drone = u1652 / "train" / "drone" / "0001"
    grey16(drone / "g1.png")
    grey16(drone / "g2.png")
    image = Image.fromarray(_quadrants())
    exif = image.getexif()
    exif[ORIENTATION] = 3
    image.save(drone / "turned.jpg", exif=exif)
    Image.new("RGBA", (4, 4), (9, 9, 9, 0)).save(u1652 / "train" / "satellite" / "0001" / "alpha.png")
    rep = check_dataset(u1652, workers=1)
    assert rep.ok
    assert sorted(p.name for p in rep.adjusted[SIXTEEN_BIT]) == ["g1.png", "g2.png"]
    assert [p.name for p in rep.adjusted[EXIF_ORIENTATION]] == ["turned.jpg"]
    assert [p.name for p in rep.adjusted[TRANSPARENCY]] == ["alpha.png"]
    text = format_report(rep)
    assert "note: 2 images are 16-bit (scaled to 8-bit), e.g. " in text
    assert "note: 1 image carries an EXIF rotation (applied), e.g. " in text
    assert "note: 1 image has transparency (composited on black), e.g. " in text
    assert text.endswith("OK: the dataset can be used")


def test_corrupt_exif_is_no_orientation_and_no_warning(tmp_path: Path) -> None:
    path = tmp_path / "bad-exif.jpg"
    Image.new("RGB", (8, 8), (10, 200, 30)).save(path, exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decoded, done = decode_image(path)
    assert done == frozenset() and decoded.size == (8, 8)
    assert abs(np.asarray(decoded).astype(int)[4, 4] - np.array([10, 200, 30])).max() <= 3


def _float_tiff(path: Path, samples: np.ndarray) -> None:
    """A single-channel 32-bit float TIFF (Pillow mode ``F``) holding ``samples``."""
    Image.fromarray(samples.astype(np.float32), "F").save(path)


def test_float_tiff_in_unit_range_is_scaled_not_black(tmp_path: Path) -> None:
    samples = np.linspace(0.0, 1.0, 16 * 16, dtype=np.float32).reshape(16, 16)
    path = tmp_path / "f.tif"
    _float_tiff(path, samples)
    with Image.open(path) as im:
        assert im.mode == "F"  # what the fix is about: a plain convert("RGB") makes it all 0/1
    image, done = decode_image(path)
    rgb = np.asarray(image)
    assert image.mode == "RGB" and done == {FLOAT}
    assert np.array_equal(rgb[..., 0], np.round(samples * 255).astype(np.uint8))
    assert np.array_equal(rgb[..., 0], rgb[..., 1])


def test_float_tiff_beyond_unit_range_is_read_on_the_8bit_scale(tmp_path: Path) -> None:
    samples = np.array([[0.0, 1.5, 127.6, 255.0], [300.0, -4.0, np.nan, 64.0]], np.float32)
    path = tmp_path / "f255.tif"
    _float_tiff(path, samples)
    rgb, done = decode_image(path)
    assert done == {FLOAT}
    assert np.asarray(rgb)[..., 0].tolist() == [[0, 2, 128, 255], [255, 0, 0, 64]]


def test_data_check_counts_float_images(tmp_path: Path) -> None:
    from mcgf.data.check import adjustment_lines

    path = tmp_path / "f.tif"
    _float_tiff(path, np.full((4, 4), 0.5))
    assert adjustment_lines({FLOAT: [path]}) == [
        f"1 image has floating-point samples (scaled to 8-bit), e.g. {path}"]
