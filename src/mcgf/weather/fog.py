"""Fog: one cloud layer blended over the image, after the recipe's ``CloudLayer`` model.

The layer has an intensity map (grey level of the fog) and an alpha map (its opacity):

* intensity = mean + coarse offsets (an 8×8 grid of N(0, coarse_scale)) + fine detail
  ``mean·(2n − 1)/5`` where ``n`` is power-law noise scaled to [0, 1];
* alpha = ``clip((alpha_min + multiplier·n)**sparsity · density, 0, 1)`` where ``n`` is
  power-law noise on a grid of ``alpha_size_px_max`` cells along the long side.

Both maps are smooth, so they are drawn on small grids (see :mod:`mcgf.weather.noise`),
mapped through the alpha formula there and upsampled bicubically at render time. The
grids are sized relative to the image, so fog is resolution-independent by construction
(as in the recipe, whose alpha grid also has 10 cells at any image size).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mcgf.weather.arrays import clip_inplace, expand, owned_float, scratch, subtract_from
from mcgf.weather.noise import power_law_noise
from mcgf.weather.rng import Range, draw

#: Long side of the grid on which the fine intensity detail is drawn (see module doc).
INTENSITY_GRID = 64
#: Size of the coarse intensity offset grid (fixed in the recipe).
COARSE_GRID = 8


@dataclass(frozen=True)
class CloudParams:
    """Parameters of one cloud layer; defaults are the recipe's fog."""

    intensity_mean: Range = 225.0
    intensity_freq_exponent: float = -2.0
    intensity_coarse_scale: float = 2.0
    alpha_min: Range = 1.0
    alpha_multiplier: Range = 0.9
    alpha_size_px_max: int = 10
    alpha_freq_exponent: float = -2.0
    sparsity: Range = 0.9
    density_multiplier: Range = 0.5


@dataclass(frozen=True)
class CloudStage:
    """A sampled cloud layer: alpha (0..1) and intensity (grey levels) on one small grid."""

    alpha: np.ndarray
    intensity: np.ndarray


def _grid_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    long_side = max(2, min(long_side, max(height, width)))
    if height >= width:
        return long_side, max(2, round(long_side * width / height))
    return max(2, round(long_side * height / width)), long_side


def sample_cloud(
    rng: np.random.Generator, height: int, width: int, params: CloudParams
) -> CloudStage:
    """Draw one cloud layer for an image of ``height``×``width``."""
    mean = draw(rng, params.intensity_mean)
    alpha_min = draw(rng, params.alpha_min)
    multiplier = draw(rng, params.alpha_multiplier)
    sparsity = draw(rng, params.sparsity)
    density = draw(rng, params.density_multiplier)

    fine_shape = _grid_shape(height, width, INTENSITY_GRID)
    coarse = mean + rng.normal(0.0, params.intensity_coarse_scale, (COARSE_GRID, COARSE_GRID))
    coarse = cv2.resize(
        coarse.astype(np.float32), fine_shape[::-1], interpolation=cv2.INTER_CUBIC
    )
    detail = power_law_noise(rng, fine_shape, params.intensity_freq_exponent)
    intensity = coarse + mean * (2.0 * detail - 1.0) / 5.0

    noise = power_law_noise(
        rng, _grid_shape(height, width, params.alpha_size_px_max), params.alpha_freq_exponent
    )
    alpha = np.clip((alpha_min + multiplier * noise) ** sparsity * density, 0.0, 1.0)
    # On the intensity grid: upsampling 64 -> 512 is several times faster than 10 -> 512.
    alpha = cv2.resize(alpha.astype(np.float32), fine_shape[::-1], interpolation=cv2.INTER_CUBIC)
    return CloudStage(alpha=alpha, intensity=intensity.astype(np.float32))


def cloud_maps(stage: CloudStage, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Full-resolution (alpha, intensity) maps of a sampled layer, clipped to their ranges.

    Returns scratch buffers (valid until the next call in this thread).
    """
    maps = []
    for name, grid, hi in (("alpha", stage.alpha, 1.0), ("intensity", stage.intensity, 255.0)):
        out = cv2.resize(grid, (width, height), dst=scratch(f"fog.{name}", (height, width)),
                         interpolation=cv2.INTER_CUBIC)
        maps.append(clip_inplace(out, 0.0, hi))
    return maps[0], maps[1]


def render_cloud(image: np.ndarray, stage: CloudStage) -> np.ndarray:
    """Blend the cloud layer over an (H, W, C) image of grey levels (see :func:`owned_float`)."""
    height, width, channels = image.shape
    alpha, intensity = cloud_maps(stage, height, width)
    x = owned_float(image)
    keep = subtract_from(1.0, alpha, dst=scratch("fog.keep", (height, width)))
    return cv2.blendLinear(x, expand(intensity, channels), keep, alpha, dst=x)
