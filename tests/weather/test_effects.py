"""Each condition does what the recipe does, measured on pixel statistics."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from mcgf.weather import apply_weather, sample_plan
from mcgf.weather.particles import ParticleParams, sample_rain

from .conftest import natural_image

KEYS = [f"0001/image-{i:02d}.jpeg" for i in range(6)]


def luma(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float64).mean(axis=2)


def gradient(img: np.ndarray) -> float:
    g = luma(img)
    return float(np.abs(cv2.Sobel(g, cv2.CV_64F, 1, 0)).mean() + np.abs(cv2.Sobel(g, cv2.CV_64F, 0, 1)).mean())


def test_fog_brightens_and_flattens(image):
    for key in KEYS:
        out = apply_weather(image, "fog", seed=0, key=key)
        # alpha in [0.5, 0.89] towards ~225 grey: the mean rises and the scene's edges
        # keep only 1 - alpha of their contrast (the fog itself is smooth).
        assert out.mean() > image.mean() + 50
        assert gradient(out) < 0.6 * gradient(image)
        # Fog is grey: it pulls colour channels together.
        assert np.abs(out[..., 0].astype(int) - out[..., 2]).mean() < 0.5 * np.abs(
            image[..., 0].astype(int) - image[..., 2]).mean()


def test_dark_variants(image):
    train = [apply_weather(image, "dark", seed=0, key=k).mean() for k in KEYS]
    test = [apply_weather(image, "dark", seed=0, key=k, dark_variant="test").mean() for k in KEYS]
    # Training recipe: (blend) x0.2 and -15..-30 -> nearly black (the order of multiply
    # and add is random, so some images keep ~20 grey levels).
    assert max(train) < 35 and np.mean(train) < 20
    # Test-set variant: x0.4 and -15 -> dim but readable, always brighter than train.
    assert all(25 < t < 0.5 * image.mean() for t in test)
    assert min(test) > np.mean(train)


def test_dark_keeps_structure(image):
    out = apply_weather(image, "dark", seed=0, key=KEYS[0], dark_variant="test")
    corr = np.corrcoef(luma(out).ravel(), luma(image).ravel())[0, 1]
    assert corr > 0.8


def test_light_brightens(image):
    for key in KEYS:
        out = apply_weather(image, "light", seed=0, key=key)
        assert out.mean() > 1.4 * image.mean()
        assert np.corrcoef(luma(out).ravel(), luma(image).ravel())[0, 1] > 0.8


def wind_direction(key: str, size: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """Unit vectors along and across the wind of image ``key`` (x, y)."""
    angle = math.radians(sample_plan("wind", seed=0, key=key, height=size, width=size).stages[0].angle)
    return (-math.sin(angle), math.cos(angle)), (math.cos(angle), math.sin(angle))


def grating(size: int, direction: tuple[float, float], period: float = 6.0) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    g = 128 + 60 * np.sin(2 * np.pi * (xx * direction[0] + yy * direction[1]) / period)
    return np.dstack([g] * 3).astype(np.uint8)


def psf_variance(key: str, size: int) -> tuple[float, float]:
    """Spread (px²) of a single bright pixel along and across the wind."""
    along_v, across_v = wind_direction(key, size)
    dot = np.zeros((size, size, 3), np.uint8)
    dot[size // 2, size // 2] = 255
    psf = luma(apply_weather(dot, "wind", seed=0, key=key))
    w = psf / psf.sum()
    yy, xx = np.mgrid[0:size, 0:size]
    xa, ya = xx - (w * xx).sum(), yy - (w * yy).sum()
    along = (w * (xa * along_v[0] + ya * along_v[1]) ** 2).sum()
    across = (w * (xa * across_v[0] + ya * across_v[1]) ** 2).sum()
    return float(along), float(across)


def test_wind_blurs_along_one_direction_and_keeps_the_mean():
    size, inner = 256, slice(32, -32)
    img = natural_image(size, seed=4)
    for key in KEYS[:4]:
        out = apply_weather(img, "wind", seed=0, key=key)
        assert abs(out.mean() - img.mean()) < 1.0
        along_v, across_v = wind_direction(key, size)
        # A 6 px grating varying along the wind is washed out; across it, it survives.
        g_along, g_across = grating(size, along_v), grating(size, across_v)
        kept_along = luma(apply_weather(g_along, "wind", seed=0, key=key))[inner, inner].std()
        kept_across = luma(apply_weather(g_across, "wind", seed=0, key=key))[inner, inner].std()
        assert kept_along < 0.3 * luma(g_along)[inner, inner].std()
        assert kept_across > 0.7 * luma(g_across)[inner, inner].std()
        # A point spreads into a line of 15 px at 512 px (7.5 px here), about 1 px wide.
        along, across = psf_variance(key, size)
        assert 2.5 < along < 8.0 and across < 0.6


def test_rain_adds_near_vertical_bright_streaks():
    flat = np.full((256, 256, 3), 100, np.uint8)
    for key in KEYS[:3]:
        out = luma(apply_weather(flat, "rain", seed=0, key=key))
        diff = out - 100
        assert 40 < diff.mean() < 120  # a veil of grey-240 drops over the scene
        # Streaks fall within +-15 deg of vertical: far more variation across x than y.
        gx = np.abs(np.diff(diff, axis=1)).mean()
        gy = np.abs(np.diff(diff, axis=0)).mean()
        assert gx > 2.5 * gy
        # Thin: the horizontal profile decorrelates within a few pixels.
        row = diff - diff.mean(axis=1, keepdims=True)
        c1 = (row[:, 1:] * row[:, :-1]).mean() / (row * row).mean()
        c4 = (row[:, 4:] * row[:, :-4]).mean() / (row * row).mean()
        assert c4 < 0.5 * c1


def test_rain_layer_draws_one_density_uniformity():
    # The recipe's gate is Beta(1, 1 - u) with u drawn once per layer, so a whole layer
    # is dense (u near 1) or patchy (u near 0): over u in (0, 1) the layers' mean gates
    # spread from ~0.5 to ~1 (std ~0.14). One u per cell would average that away.
    params = ParticleParams("rain", size=0.1, speed=0.05, density=0.1, density_uniformity=(0.0, 1.0),
                            size_uniformity=0.3, angle=0.0, blur_sigma_fraction=0.001, layers=(1, 1))
    stage = sample_rain(np.random.default_rng(0), 128, 128, [params] * 80)
    means = np.array([layer.gate.mean() for layer in stage.layers])
    assert means.std() > 0.09
    assert 0.62 < means.mean() < 0.76  # E[1/(1 + b)], b ~ U(0, 1): ln 2


def test_snow_adds_round_saturated_flakes():
    flat = np.full((256, 256, 3), 60, np.uint8)
    areas, covers = [], []
    for key in KEYS[:3]:
        out = luma(apply_weather(flat, "snow", seed=0, key=key))
        flakes = (out >= 250).astype(np.uint8)
        covers.append(flakes.mean())
        _, _, stats, _ = cv2.connectedComponentsWithStats(flakes)
        areas.extend(stats[1:, cv2.CC_STAT_AREA].tolist())
        # Flakes are blobs, not lines: gradients similar along x and y.
        gx = np.abs(np.diff(out, axis=1)).mean()
        gy = np.abs(np.diff(out, axis=0)).mean()
        assert 0.6 < gx / gy < 2.5
    assert 0.003 < np.mean(covers) < 0.2
    assert 1 <= np.median(areas) <= 60  # a few px at 256 px (flakes are 2-10 px at 512)


def test_composites_apply_their_parts(image):
    key = KEYS[0]
    fog = apply_weather(image, "fog", seed=0, key=key)
    fog_snow = luma(apply_weather(image, "fog_snow", seed=0, key=key))
    assert (fog_snow >= 250).mean() > 0.002  # flakes on top of the fog
    assert fog_snow.mean() > luma(fog).mean() - 20  # still foggy-bright
    fog_rain = apply_weather(image, "fog_rain", seed=0, key=key)
    assert luma(fog_rain).std() < luma(image).std() * 0.75
    # Flakes over the rain: one view may draw few (a layer's gate can be sparse), a few do not.
    rain_snow = [luma(apply_weather(image, "rain_snow", seed=0, key=k)) for k in KEYS[:4]]
    assert np.mean([(r >= 250).mean() for r in rain_snow]) > 0.001
    assert min(r.mean() for r in rain_snow) > image.mean() + 30


@pytest.mark.parametrize("condition", ["fog", "rain", "snow", "fog_rain", "fog_snow", "rain_snow"])
def test_weather_changes_with_key(condition, image):
    a = apply_weather(image, condition, seed=0, key="a")
    b = apply_weather(image, condition, seed=0, key="b")
    assert np.abs(a.astype(int) - b).mean() > 1.0
