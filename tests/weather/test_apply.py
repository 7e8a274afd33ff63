"""apply_weather: shapes, dtypes, channel layouts, determinism and errors."""

from __future__ import annotations

import numpy as np
import pytest

from mcgf.errors import UserError
from mcgf.weather import CONDITIONS, UnknownConditionError, apply_weather

from .conftest import natural_image


@pytest.mark.parametrize("condition", CONDITIONS)
def test_shape_dtype_and_determinism(condition, small):
    out = apply_weather(small, condition, seed=5, key="0001/a.jpg")
    assert out.shape == small.shape and out.dtype == np.uint8
    again = apply_weather(small, condition, seed=5, key="0001/a.jpg")
    np.testing.assert_array_equal(out, again)
    if condition == "normal":
        np.testing.assert_array_equal(out, small)
        assert out is not small
    else:
        assert np.abs(out.astype(int) - small).mean() > 1.0  # it did something
        other = apply_weather(small, condition, seed=6, key="0001/a.jpg")
        assert not np.array_equal(out, other)


def test_input_is_not_modified(small):
    before = small.copy()
    for condition in CONDITIONS:
        apply_weather(small, condition, seed=0, key="k")
    np.testing.assert_array_equal(small, before)


def test_call_order_does_not_matter():
    a, b = natural_image(64, 1), natural_image(64, 2)
    first = [apply_weather(a, "rain_snow", seed=1, key="x/a"), apply_weather(b, "fog", seed=1, key="x/b")]
    second_b = apply_weather(b, "fog", seed=1, key="x/b")
    second_a = apply_weather(a, "rain_snow", seed=1, key="x/a")
    np.testing.assert_array_equal(first[0], second_a)
    np.testing.assert_array_equal(first[1], second_b)


@pytest.mark.parametrize("condition", ["fog", "rain", "snow", "dark", "light", "wind"])
def test_grayscale_inputs(condition, small):
    grey = small.mean(axis=2).astype(np.uint8)
    out2 = apply_weather(grey, condition, seed=0, key="g")
    out3 = apply_weather(grey[:, :, None], condition, seed=0, key="g")
    assert out2.shape == grey.shape and out2.dtype == np.uint8
    assert out3.shape == (*grey.shape, 1)
    np.testing.assert_array_equal(out2, out3[:, :, 0])
    # A grey image gets the same weather as its RGB version, averaged over channels.
    rgb = apply_weather(np.dstack([grey] * 3), condition, seed=0, key="g")
    assert np.abs(rgb.mean(axis=2) - out2).max() <= 1.0


def test_rgba_keeps_alpha(small):
    alpha = np.linspace(0, 255, small.shape[0] * small.shape[1]).reshape(small.shape[:2]).astype(np.uint8)
    rgba = np.dstack([small, alpha])
    out = apply_weather(rgba, "snow", seed=0, key="a")
    assert out.shape == rgba.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, 3], alpha)
    np.testing.assert_array_equal(out[:, :, :3], apply_weather(small, "snow", seed=0, key="a"))


@pytest.mark.parametrize("condition", ["fog", "rain", "snow", "dark", "light", "wind", "fog_snow"])
def test_uint16_and_float_match_uint8(condition, small):
    ref = apply_weather(small, condition, seed=2, key="d").astype(np.float64)
    # Real 16-bit content: sub-8-bit detail on top of the 8-bit image.
    detail = np.random.default_rng(0).integers(0, 200, small.shape).astype(np.uint16)
    wide = apply_weather(small.astype(np.uint16) * 257 + detail, condition, seed=2, key="d")
    assert wide.dtype == np.uint16 and wide.shape == small.shape
    flt = apply_weather(small.astype(np.float32) / 255, condition, seed=2, key="d")
    assert flt.dtype == np.float32 and flt.min() >= 0.0 and flt.max() <= 1.0
    # Same weather; only 8-bit rounding (uint8 path) separates them.
    assert np.abs(wide / 257.0 - ref).mean() < 2.0
    assert np.abs(flt * 255.0 - ref).mean() < 1.5
    # 16-bit output keeps sub-8-bit detail rather than being a scaled uint8 image.
    if condition not in ("dark",):
        assert np.any(wide % 257 != 0)


def test_errors(small):
    with pytest.raises(UnknownConditionError, match="unknown weather condition 'hail'"):
        apply_weather(small, "hail", seed=0, key="k")
    with pytest.raises(UserError) as info:
        apply_weather(small, "hail", seed=0, key="k")
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
    with pytest.raises(UserError, match="dark variant"):
        apply_weather(small, "dark", seed=0, key="k", dark_variant="night")
    with pytest.raises(TypeError):
        apply_weather(small.astype(np.int32), "fog", seed=0, key="k")
    with pytest.raises(ValueError):
        apply_weather(np.zeros((8, 8, 2), np.uint8), "fog", seed=0, key="k")
    with pytest.raises(TypeError):
        apply_weather(small.tolist(), "fog", seed=0, key="k")  # type: ignore[arg-type]


@pytest.mark.parametrize("condition", CONDITIONS)
def test_float_images_outside_zero_one_are_refused(condition, small):
    # 0..255 grey levels stored as float were clipped to [0, 1]: a white image.
    for bad, what in [(small.astype(np.float32), f"from {small.min()} to {small.max()}"),
                      (np.full((8, 8, 3), np.nan, np.float32), "NaN"),
                      (np.full((8, 8), np.inf), "infinity"),
                      (np.full((8, 8, 3), -1.0, np.float32), "from -1 to -1")]:
        with pytest.raises(ValueError, match=what):
            apply_weather(bad, condition, seed=0, key="k")
    # A resampling overshoot is still clipped, as before: the [0, 1] image's weather.
    flt = small.astype(np.float32) / 255
    over = flt.copy()
    over[0, 0] = [1.2, -0.2, 0.5]
    clipped = np.clip(over, 0.0, 1.0)
    np.testing.assert_array_equal(apply_weather(over, condition, seed=0, key="k")[1:],
                                  apply_weather(clipped, condition, seed=0, key="k")[1:])


@pytest.mark.parametrize("condition", CONDITIONS)
def test_tiny_and_elongated_images(condition):
    for shape in ((5, 7, 3), (16, 96, 3), (96, 16, 3)):
        img = natural_image(shape[0], 3, width=shape[1]) if min(shape[:2]) >= 12 else np.full(shape, 120, np.uint8)
        out = apply_weather(img, condition, seed=0, key="t")
        assert out.shape == shape


@pytest.mark.parametrize("condition", CONDITIONS)
def test_one_pixel_wide_images(condition):
    """OpenCV reads a map of at most four pixels (1x1, 4x1) as a scalar: such images
    must render like any other, in uint8 and in float alike."""
    for shape in ((1, 1, 3), (4, 1, 3), (1, 4, 3), (1, 1)):
        img = np.full(shape, 120, np.uint8)
        out = apply_weather(img, condition, seed=0, key="t")
        assert out.shape == shape and out.dtype == np.uint8
        assert np.array_equal(out, apply_weather(img, condition, seed=0, key="t"))
        flt = apply_weather(img.astype(np.float32) / 255, condition, seed=0, key="t")
        # Only the uint8 path's 8-bit rounding separates them (light's tables: up to 3).
        assert np.abs(out.astype(int) - np.rint(flt * 255).astype(int)).max() <= 3
