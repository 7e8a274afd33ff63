"""Resolution awareness: pixel sizes are defined at 512 px and scale with the image."""

from __future__ import annotations

import numpy as np

from mcgf.weather import apply_weather, sample_plan, scale_factor
from mcgf.weather.particles import RainStage, SnowStage

from .test_effects import KEYS, luma, psf_variance


def test_scale_factor():
    assert scale_factor(512, 512) == 1.0
    assert scale_factor(256, 128) == 0.5
    assert scale_factor(300, 1024) == 2.0


def test_wind_length_scales_with_size():
    key = KEYS[1]
    big, _ = psf_variance(key, 512)
    small, _ = psf_variance(key, 128)
    # A box of length L has variance L²/12: 15 px -> 18.75, 3.75 px -> ~1.2, plus the
    # ~0.5 px² that the two bilinear warps add wherever the angle puts the dot (ratio 9-10).
    assert 12 < big < 26
    assert 8 < big / small < 22
    k512 = sample_plan("wind", seed=0, key=key, height=512, width=512).stages[0].kernel
    k128 = sample_plan("wind", seed=0, key=key, height=128, width=128).stages[0].kernel
    assert k512.shape[0] >= 3 * k128.shape[0]


def _rain(size: int, key: str) -> RainStage:
    return sample_plan("rain", seed=0, key=key, height=size, width=size).stages[0]


def test_rain_drops_and_streaks_scale():
    # The first layer's parameters are drawn first, so they agree across sizes. Drops per
    # image are set per grid cell, so their number is the same at any size ...
    for key in KEYS:
        ratio = len(_rain(256, key).layers[0].cells) / len(_rain(512, key).layers[0].cells)
        assert 0.9 < ratio < 1.15
    # ... while streaks (kernel extent in image px) are half as long at half the size.
    def extent(size: int) -> float:
        stage = _rain(size, KEYS[0])
        return np.mean([lay.kernel.shape[0] * stage.canvas.row_pitch for lay in stage.layers])
    assert 1.5 < extent(512) / extent(256) < 2.6


def test_snow_grid_scales():
    for key in KEYS[:3]:
        big: SnowStage = sample_plan("snow", seed=0, key=key, height=512, width=512).stages[0]
        small: SnowStage = sample_plan("snow", seed=0, key=key, height=256, width=256).stages[0]
        # The first layer's parameters are drawn first, so they agree across sizes: the
        # grid has as many cells (each covering twice as many pixels at 512 px) and
        # about as many flakes.
        gb, gs = big.layers[0].grid_shape, small.layers[0].grid_shape
        if gb[0] < 256:  # not clamped to the small image
            assert gb == gs
        assert 0.7 < len(big.layers[0].rows) / max(1, len(small.layers[0].rows)) < 1.4


def test_look_is_resolution_independent():
    # Averaged over images (each draws its own layers), weather brightens a flat grey
    # image as much at 128 px as at 512 px.
    flat = {s: np.full((s, s, 3), 100, np.uint8) for s in (128, 512)}
    keys = [f"0001/image-{i:02d}.jpeg" for i in range(16)]
    for condition in ("rain", "fog", "snow"):
        means = {s: np.mean([luma(apply_weather(flat[s], condition, seed=0, key=k)).mean() for k in keys])
                 for s in flat}
        assert abs(means[128] - means[512]) < 0.15 * (means[512] - 100), (condition, means)
