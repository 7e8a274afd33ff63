"""Building blocks: power-law noise, the 8-bit wind path and the snow canvas."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from mcgf.weather import sample_plan
from mcgf.weather.blur import _blur_float, render_motion_blur
from mcgf.weather.kernels import line_kernel
from mcgf.weather.noise import power_law_noise
from mcgf.weather.particles import snow_canvas_shape

from .conftest import natural_image


def band_means(power: np.ndarray, shape: tuple[int, int]) -> dict[int, float]:
    """Mean of ``power`` per octave band of radial frequency (1-2, 2-4, ... cycles)."""
    fy = np.fft.fftfreq(shape[0]) * shape[0]
    fx = np.fft.fftfreq(shape[1]) * shape[1]
    radius = np.hypot(fy[:, None], fx[None, :])
    return {lo: float(power[(radius >= lo) & (radius < 2 * lo)].mean()) for lo in (1, 2, 4, 8)}


def expected_and_measured(shape: tuple[int, int], exponent: float, draws: int = 60):
    fy = np.fft.fftfreq(shape[0]) * shape[0]
    fx = np.fft.fftfreq(shape[1]) * shape[1]
    radius = np.maximum(np.hypot(fy[:, None], fx[None, :]), 1e-9)
    total = np.zeros(shape)
    for i in range(draws):
        field = power_law_noise(np.random.default_rng(i), shape, exponent).astype(np.float64)
        total += np.abs(np.fft.fft2(field - field.mean())) ** 2
    return band_means(radius ** (2 * exponent), shape), band_means(total, shape)


def test_power_law_noise_has_the_requested_spectrum():
    # Power ~ f^(2·exponent): the ratios between octave bands follow the model's.
    for shape, exponent in (((64, 64), -2.0), ((32, 48), -1.0), ((33, 17), 0.0)):
        expected, measured = expected_and_measured(shape, exponent)
        for lo in (1, 2, 4):
            ratio = (measured[lo] / measured[2 * lo]) / (expected[lo] / expected[2 * lo])
            assert 0.6 < ratio < 1.6, (shape, exponent, lo, ratio)


def test_power_law_noise_range_and_reproducibility():
    a = power_law_noise(np.random.default_rng(3), (10, 13), -2.0)
    b = power_law_noise(np.random.default_rng(3), (10, 13), -2.0)
    assert a.dtype == np.float32 and a.shape == (10, 13)
    np.testing.assert_array_equal(a, b)
    assert a.min() == 0.0 and a.max() == pytest.approx(1.0)


@pytest.mark.parametrize("size", [512, 97, 9])
def test_8bit_wind_matches_the_float_path(size):
    # The uint8 path (RGBA warps, row bands, rounding between steps) must give the
    # float path's line integral within rounding, at every angle and any image size.
    img = natural_image(size, seed=2)
    for i in range(12):
        stage = sample_plan("wind", seed=0, key=f"k{i}", height=size, width=size).stages[0]
        if i % 3 == 0:  # a kernel wider than one column exercises the band overlap
            stage = replace(stage, kernel=line_kernel(15 * size / 512, 0.0, 0.2, 0.8, footprint=2.0))
        fast = render_motion_blur(img, stage)
        assert fast.dtype == np.uint8 and fast.shape == img.shape
        exact = _blur_float(img.astype(np.float32), stage)
        assert np.abs(fast - exact).max() <= 1.5, (size, i)


def test_snow_canvas_has_the_pixels_of_a_512_px_image():
    # 1 px pitch at 512 px (the recipe composes flakes at full resolution): the image
    # itself from 256 to 512 px, half of a 1024 px image; below 256 px the image
    # enlarged an integer number of times to at least 256 px (flakes would be sub-pixel).
    for size, expected in ((1024, (512, 512)), (512, (512, 512)), (256, (256, 256)),
                           (200, (400, 400)), (64, (256, 256))):
        stage = sample_plan("snow", seed=0, key="a", height=size, width=size).stages[0]
        assert snow_canvas_shape(stage, size, size) == expected
    stage = sample_plan("snow", seed=0, key="a", height=100, width=150).stages[0]
    assert snow_canvas_shape(stage, 100, 150) == (200, 300)
    # Never coarser than a layer's own grid.
    stage = sample_plan("snow", seed=0, key="a", height=1024, width=1024).stages[0]
    fine = replace(stage.layers[0], grid_shape=(800, 600))
    assert snow_canvas_shape(replace(stage, layers=(fine,)), 1024, 1024) == (800, 600)
