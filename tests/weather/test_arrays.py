"""``jpeg_round_trip``: weathered images stored as the published sets store them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mcgf.weather import WeatherTransform, apply_weather
from mcgf.weather.arrays import jpeg_round_trip

from .conftest import natural_image


def _pil_jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf))


def test_matches_a_pil_jpeg_file_of_the_same_quality() -> None:
    img = apply_weather(natural_image(64, seed=3), "fog", seed=0, key="0001/a.jpg")
    for quality in (95, 60):
        np.testing.assert_array_equal(jpeg_round_trip(img, quality), _pil_jpeg(img, quality))


def test_compression_takes_the_faint_colour_of_a_veil_first() -> None:
    # A pale grey veil with a weak colour pattern: 4:2:0 chroma and quantisation at q95
    # erase more of its colour contrast than of its brightness contrast.
    rng = np.random.default_rng(0)
    chroma = rng.normal(0, 4, (64, 64))
    grey = 200 + rng.normal(0, 4, (64, 64))
    img = np.clip(np.stack([grey + chroma, grey - chroma, grey], axis=2), 0, 255).astype(np.uint8)
    out = jpeg_round_trip(img, 95).astype(float)
    src = img.astype(float)

    def rg(x: np.ndarray) -> np.ndarray:
        return x[:, :, 0] - x[:, :, 1]

    def luma(x: np.ndarray) -> np.ndarray:
        return x @ np.array([0.299, 0.587, 0.114])

    keep_rg = np.corrcoef(rg(out).ravel(), rg(src).ravel())[0, 1]
    keep_y = np.corrcoef(luma(out).ravel(), luma(src).ravel())[0, 1]
    assert keep_rg < 0.5 and keep_y > 0.85  # measured: 0.20 and 0.90


def test_shapes_and_dtypes_are_kept() -> None:
    img = natural_image(40, seed=1)
    grey = jpeg_round_trip(img[:, :, :1], 90)
    assert grey.shape == (40, 40, 1) and grey.dtype == np.uint8
    assert jpeg_round_trip(img[:, :, 0], 90).shape == (40, 40)
    rgba = np.dstack([img, np.full((40, 40), 7, np.uint8)])
    out = jpeg_round_trip(rgba, 90)
    assert out.shape == (40, 40, 4) and (out[:, :, 3] == 7).all()
    f = jpeg_round_trip(img.astype(np.float32) / 255, 90)
    assert f.dtype == np.float32 and np.abs(f * 255 - jpeg_round_trip(img, 90)).max() < 1e-3
    u16 = jpeg_round_trip(img.astype(np.uint16) * 257, 90)
    assert u16.dtype == np.uint16 and (u16 == jpeg_round_trip(img, 90).astype(np.uint16) * 257).all()
    with pytest.raises(ValueError, match=r"1\.\.100"):
        jpeg_round_trip(img, 0)


def test_transform_re_encodes_weathered_images_only() -> None:
    img = natural_image(48, seed=9)
    t = WeatherTransform(["fog", "normal"], seed=2, jpeg_quality=95, clean_fraction=0.0)
    keys = [f"0001/{i}.jpg" for i in range(12)]
    seen = set()
    for key in keys:
        out, condition = t(img, key)
        seen.add(condition)
        if condition == "normal":
            np.testing.assert_array_equal(out, img)
        else:
            plain = apply_weather(img, condition, seed=2, key=key)
            np.testing.assert_array_equal(out, jpeg_round_trip(plain, 95))
            assert not np.array_equal(out, plain)
    assert seen == {"fog", "normal"}
    with pytest.raises(ValueError, match="jpeg_quality"):
        WeatherTransform(jpeg_quality=101)


def test_float_images_outside_zero_one_are_refused() -> None:
    img = natural_image(16, seed=2)
    with pytest.raises(ValueError, match=f"from {img.min()} to {img.max()}"):
        jpeg_round_trip(img.astype(np.float32), 90)
    with pytest.raises(ValueError, match="NaN"):
        jpeg_round_trip(np.full((8, 8), np.nan), 90)


def test_large_work_buffers_are_not_kept_between_calls() -> None:
    from mcgf.weather.arrays import KEEP_BYTES, scratch

    small = scratch("test.buffer", (64, 64, 3))
    assert np.shares_memory(small, scratch("test.buffer", (32, 32, 3)))  # reused
    # A 12-megapixel photo's float buffers were kept by every thread after one call
    # (gigabytes); past KEEP_BYTES each call gets its own, freed with the result.
    big = (KEEP_BYTES // 4 + 1,)
    first = scratch("test.buffer", big)
    assert first.shape == big and first.dtype == np.float32 and first.flags.c_contiguous
    assert not np.shares_memory(first, scratch("test.buffer", big))
    # The kept small buffer is still the one handed out for small shapes.
    assert np.shares_memory(small, scratch("test.buffer", (16, 16)))
