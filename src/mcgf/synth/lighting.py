"""Sun light, cast shadows and the shaded top-surface map of a scene.

Shadows on a height field need no geometry engine: a point is in shadow when the
terrain toward the sun rises above the line from the point to the sun. For the whole
grid this is one vectorised comparison per step of a march toward the sun (shifting
the height map), stopping once the line is above the tallest object.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mcgf.synth.scene import Scene

AMBIENT = np.array([0.40, 0.42, 0.47], np.float32)
SUNLIGHT = np.array([0.78, 0.75, 0.68], np.float32)


@dataclass(frozen=True)
class Sun:
    """Direction toward the sun: azimuth clockwise from north, elevation above the horizon;
    with the sky light (``ambient``, × :data:`AMBIENT`) and the share of direct light a
    cast shadow removes (``shadow``, 0–1)."""

    azimuth_deg: float
    elevation_deg: float
    ambient: float = 1.0
    shadow: float = 1.0

    def vector(self) -> np.ndarray:
        """Unit vector toward the sun in the scene frame (x east, y north, z up)."""
        az, el = np.radians(self.azimuth_deg), np.radians(self.elevation_deg)
        return np.array([np.sin(az) * np.cos(el), np.cos(az) * np.cos(el), np.sin(el)], np.float32)


def random_sun(rng: np.random.Generator, azimuth_deg: tuple[float, float] = (0.0, 360.0),
               elevation_deg: tuple[float, float] = (35.0, 65.0), ambient: float = 1.0,
               shadow: float = 1.0) -> Sun:
    """A daytime sun drawn uniformly from the ranges (default: any azimuth, 35–65° high)."""
    return Sun(float(rng.uniform(*azimuth_deg)), float(rng.uniform(*elevation_deg)), ambient, shadow)


def sky_light(sun: Sun) -> np.ndarray:
    """The ambient RGB light under ``sun``."""
    return AMBIENT if sun.ambient == 1.0 else (AMBIENT * np.float32(sun.ambient)).astype(np.float32)


def soften_shadow(lit: np.ndarray, sun: Sun) -> np.ndarray:
    """Direct-light factor after a shadow of strength ``sun.shadow`` (unchanged at 1)."""
    if sun.shadow == 1.0:  # skip the arithmetic so that full shadows stay bit-identical
        return lit
    return (1.0 - np.float32(sun.shadow) * (1.0 - lit)).astype(np.float32)


def shadow_map(scene: Scene, sun: Sun, bias_m: float = 0.3) -> np.ndarray:
    """Fraction of direct sun reaching each cell's surface (1 lit, 0 shadowed), soft-edged."""
    s = sun.vector()
    h = scene.height
    n = scene.n
    horiz = float(np.hypot(s[0], s[1]))
    rise = float(s[2]) / max(horiz, 1e-6)  # metres up per metre toward the sun
    step = 0.7 * scene.cell
    steps = int(np.ceil(max(scene.hmax, 0.0) / max(rise * step, 1e-6)))
    lit = np.ones((n, n), bool)
    for k in range(1, steps + 1):
        dist = k * step
        dc = round(dist * s[0] / horiz / scene.cell)
        dr = round(-dist * s[1] / horiz / scene.cell)
        if abs(dc) >= n or abs(dr) >= n:
            break
        # shifted[r, c] = h[r + dr, c + dc], zero outside the grid.
        shifted = np.zeros_like(h)
        rs, rd = slice(max(dr, 0), n + min(dr, 0)), slice(max(-dr, 0), n - max(dr, 0))
        cs, cd = slice(max(dc, 0), n + min(dc, 0)), slice(max(-dc, 0), n - max(dc, 0))
        shifted[rd, cd] = h[rs, cs]
        lit &= shifted <= h + bias_m + dist * rise
    soft = cv2.GaussianBlur(lit.astype(np.float32), (0, 0), max(0.35 / scene.cell, 0.5))
    return soft


def sun_visibility(scene: Scene, sun: Sun, points: np.ndarray, bias_m: float = 0.2) -> np.ndarray:
    """1 where the sun is visible from ``points`` (M, 3), else 0; marches toward the sun.

    A point drops out of the march as soon as it is shadowed or its line to the sun
    has risen above the tallest object.
    """
    s = sun.vector()
    lit = np.ones(len(points), np.float32)
    if len(points) == 0:
        return lit
    horiz = float(np.hypot(s[0], s[1]))
    step = 0.7 * scene.cell
    rise = float(s[2]) / max(horiz, 1e-6)
    n, e, c = scene.n, scene.half_extent, scene.cell
    hflat = scene.padded_height.reshape(-1)
    pad = scene.MARCH_PAD
    stride = n + 2 * pad
    # Positions in padded-grid units; a point leaving the grid sees flat ground (lit).
    gx = (points[:, 0] + e) / c + pad
    gy = (e - points[:, 1]) / c + pad
    z = points[:, 2] + bias_m
    sx, sy, sz = step * s[0] / horiz / c, -step * s[1] / horiz / c, step * rise
    active = np.flatnonzero(z < scene.hmax)
    k = 0
    while active.size:
        k += 1
        x = gx[active] + k * sx
        y = gy[active] + k * sy
        inside = (x >= 0) & (x < stride) & (y >= 0) & (y < stride)
        flat = np.where(inside, y.astype(np.int64) * stride + x.astype(np.int64), 0)
        zk = z[active] + k * sz
        blocked = inside & (hflat[flat] > zk)
        lit[active[blocked]] = 0.0
        active = active[~blocked & inside & (zk < scene.hmax)]
    return lit


def ambient_occlusion(scene: Scene) -> np.ndarray:
    """Darkening of low cells next to tall ones (a cheap sky-visibility proxy)."""
    sigma = max(3.0 / scene.cell, 1.0)
    around = cv2.GaussianBlur(scene.height, (0, 0), sigma)
    return 1.0 - 0.45 * np.clip((around - scene.height) / 8.0, 0.0, 1.0)


def shade_top(scene: Scene, sun: Sun) -> np.ndarray:
    """Colour of every cell's top surface under ``sun``: albedo × (sky + sun·cosθ·lit)."""
    s = sun.vector()
    gx, gy = scene.grad[..., 0], scene.grad[..., 1]
    norm = np.sqrt(gx * gx + gy * gy + 1.0)
    cos = np.clip((-gx * s[0] - gy * s[1] + s[2]) / norm, 0.0, 1.0)
    lit = soften_shadow(shadow_map(scene, sun), sun)
    ao = ambient_occlusion(scene)
    light = sky_light(sun) * ao[..., None] + SUNLIGHT * (cos * lit)[..., None]
    return (scene.albedo * light).astype(np.float32)
