"""Smooth random fields defined in metres, so a location looks the same at any raster size.

A field is a lattice of random values with a spacing in metres over a fixed square of
land, drawn from the caller's generator (the number of draws depends only on that
square and the spacing, never on the raster), then sampled bicubically at the world
coordinates of the raster's cells. Rasters of different resolution or extent therefore
see the same field.
"""

from __future__ import annotations

import cv2
import numpy as np


def lattice_noise(
    rng: np.random.Generator,
    half_extent_m: float,
    spacing_m: float,
    xs: np.ndarray,
    ys: np.ndarray,
) -> np.ndarray:
    """One octave of smooth noise in about [-1, 1], shape ``(len(ys), len(xs))``.

    The lattice covers ``[-half_extent_m, half_extent_m]``²; ``xs`` (east) and ``ys``
    (north) are the world coordinates of the raster's columns and rows.
    """
    size = int(np.ceil(2 * half_extent_m / spacing_m)) + 4
    lattice = rng.uniform(-1.0, 1.0, (size, size)).astype(np.float32)
    # Lattice index of each coordinate; +1.5 keeps bicubic taps inside the lattice.
    gx = ((np.asarray(xs, np.float64) + half_extent_m) / spacing_m + 1.5).astype(np.float32)
    gy = ((half_extent_m - np.asarray(ys, np.float64)) / spacing_m + 1.5).astype(np.float32)
    map_x = np.ascontiguousarray(np.broadcast_to(gx[None, :], (len(gy), len(gx))))
    map_y = np.ascontiguousarray(np.broadcast_to(gy[:, None], (len(gy), len(gx))))
    return cv2.remap(lattice, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def fractal_noise(
    rng: np.random.Generator,
    half_extent_m: float,
    spacing_m: float,
    xs: np.ndarray,
    ys: np.ndarray,
    octaves: int = 3,
    gain: float = 0.5,
) -> np.ndarray:
    """Sum of ``octaves`` lattice noises, each at half the spacing of the previous one,
    normalised to stay in about [-1, 1]."""
    total = np.zeros((len(ys), len(xs)), np.float32)
    amp, norm = 1.0, 0.0
    for k in range(octaves):
        total += amp * lattice_noise(rng, half_extent_m, spacing_m / 2**k, xs, ys)
        norm += amp
        amp *= gain
    return total / norm
