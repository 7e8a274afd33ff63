"""Satellite (orthographic, north-up) and drone (perspective, oblique) renderers.

The satellite tile is a crop of the shaded top-surface map, so it is north-up by
construction (row 0 of the scene is its north edge). A drone view casts one ray per
pixel (see :mod:`mcgf.synth.raycast`) and shades what each ray hits:

* tops (ground, roofs, crowns): the shaded map, sampled bilinearly from a small stack
  of pre-blurred copies chosen by the pixel's footprint, so distant ground does not
  shimmer;
* walls: the part's facade colour with box-filtered windows by floors, lit by the sun
  according to the wall's normal and darkened where another object shadows it;
* misses: a sky gradient.

Then distance haze, exposure, white balance and a gentle camera softness are applied;
each view gets its own lighting so that no two views share a colour cast.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from mcgf.synth import palette
from mcgf.synth.camera import Pose, camera_rays
from mcgf.synth.lighting import SUNLIGHT, Sun, sky_light, soften_shadow, sun_visibility
from mcgf.synth.palette import Material
from mcgf.synth.patterns import box_filtered_wave
from mcgf.synth.raycast import SKY, TOP, WALL, cast_rays
from mcgf.synth.scene import Scene
from mcgf.synth.shapes import WINDOW_STYLES

_LOD_LEVELS = 4


@dataclass(frozen=True)
class ViewLighting:
    """Per-image photographic conditions."""

    exposure: float = 1.0
    wb_red: float = 1.0
    wb_blue: float = 1.0
    gamma: float = 1.0
    saturation: float = 1.0
    haze_visibility_m: float = 1500.0

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in asdict(self).items()}


def random_view_lighting(rng: np.random.Generator) -> ViewLighting:
    """Lighting for one drone photo: mild exposure, colour-balance and haze changes."""
    return ViewLighting(
        exposure=float(rng.uniform(0.85, 1.18)),
        wb_red=float(rng.uniform(0.93, 1.07)),
        wb_blue=float(rng.uniform(0.93, 1.08)),
        gamma=float(rng.uniform(0.9, 1.1)),
        saturation=float(rng.uniform(0.8, 1.1)),
        haze_visibility_m=float(rng.uniform(700, 2500)),
    )


def random_satellite_lighting(rng: np.random.Generator) -> ViewLighting:
    """Colour grade of a satellite tile (no distance haze: it is seen from above)."""
    return ViewLighting(
        exposure=float(rng.uniform(0.9, 1.12)),
        wb_red=float(rng.uniform(0.95, 1.05)),
        wb_blue=float(rng.uniform(0.95, 1.06)),
        gamma=float(rng.uniform(0.92, 1.08)),
        saturation=float(rng.uniform(0.75, 1.0)),
        haze_visibility_m=0.0,
    )


def _grade(rgb: np.ndarray, light: ViewLighting) -> np.ndarray:
    """Exposure, white balance, saturation and gamma; returns uint8."""
    out = rgb * (light.exposure * np.array([light.wb_red, 1.0, light.wb_blue], np.float32))
    grey = out.mean(-1, keepdims=True)
    out = grey + (out - grey) * light.saturation
    out = np.clip(out, 0.0, 1.0) ** (1.0 / light.gamma)
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


class TopPyramid:
    """The shaded top map and progressively blurred copies (for distant pixels)."""

    def __init__(self, shaded: np.ndarray) -> None:
        self.levels = [np.ascontiguousarray(shaded, dtype=np.float32)]
        for k in range(1, _LOD_LEVELS):
            self.levels.append(cv2.GaussianBlur(self.levels[0], (0, 0), 0.6 * 2 ** (k - 1)))

    def _remap(self, level: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        # remap wants a 2D map under 32767 per side: lay the points out in rows of 1024.
        m, width = len(rows), 1024
        pad = -m % width
        mx = np.pad(cols.astype(np.float32), (0, pad)).reshape(-1, width)
        my = np.pad(rows.astype(np.float32), (0, pad)).reshape(-1, width)
        s = cv2.remap(self.levels[level], mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        return s.reshape(-1, 3)[:m]

    def sample(self, rows: np.ndarray, cols: np.ndarray, lod: np.ndarray) -> np.ndarray:
        """Bilinear samples (M, 3) at continuous (row, col), blending the two nearest levels;
        outside the grid the map is mirrored."""
        m = len(rows)
        if m == 0:
            return np.zeros((0, 3), np.float32)
        lod = np.clip(lod, 0, _LOD_LEVELS - 1)
        lo = np.floor(lod).astype(int)
        frac = (lod - lo).astype(np.float32)
        out = np.zeros((m, 3), np.float32)
        for k in range(_LOD_LEVELS):
            w = np.where(lo == k, 1 - frac, 0) + np.where(lo + 1 == k, frac, 0)
            sel = np.flatnonzero(w > 0)
            if sel.size:
                out[sel] += self._remap(k, rows[sel], cols[sel]) * w[sel, None]
        return out


def render_satellite(shaded: np.ndarray, scene: Scene, side_m: float, size: int,
                     light: ViewLighting = ViewLighting()) -> np.ndarray:
    """North-up orthographic tile of the central ``side_m`` metres, ``size`` px, uint8."""
    half = side_m / 2 / scene.cell
    centre = scene.n / 2
    lo, hi = round(centre - half), round(centre + half)
    crop = shaded[lo:hi, lo:hi]
    if crop.shape[0] != size:
        interp = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_CUBIC
        crop = cv2.resize(crop, (size, size), interpolation=interp)
    crop = cv2.GaussianBlur(crop, (0, 0), 0.45)
    hazy = crop * 0.94 + palette.HAZE * 0.06
    return _grade(hazy, light)


@dataclass
class DroneView:
    """A rendered drone photo with its per-pixel material and distance (for analysis)."""

    image: np.ndarray
    material: np.ndarray
    depth: np.ndarray


def _wall_colors(scene: Scene, sun: Sun, pts: np.ndarray, normal: np.ndarray, part: np.ndarray,
                 footprint: np.ndarray) -> np.ndarray:
    """Facade colour of wall hits: windows by floor, sun by orientation, cast shadows."""
    tbl = scene.parts
    horiz_u = np.where(np.abs(normal[:, 0]) > 0, pts[:, 1], pts[:, 0])
    z = pts[:, 2]
    pitch = tbl.win_pitch[part]
    floor_h = np.maximum(tbl.floor_h[part], 2.5)
    style = tbl.windows[part]
    fw = footprint
    cols_on = box_filtered_wave(horiz_u + 0.3 * pitch, pitch, 0.55, fw)
    rows_on = box_filtered_wave(z - 0.9, floor_h, 0.45, fw)
    punched = cols_on * rows_on
    ribbon = 0.9 * rows_on
    curtain = 0.85 - 0.3 * box_filtered_wave(horiz_u, 1.6, 0.08, fw) - 0.3 * box_filtered_wave(z, floor_h, 0.1, fw)
    glass = np.select(
        [style == WINDOW_STYLES.index("punched"), style == WINDOW_STYLES.index("ribbon"),
         style == WINDOW_STYLES.index("curtain")],
        [punched, ribbon, curtain], 0.0)
    # No windows in parapets, gables or the ground floor plinth.
    glass = glass * (z < tbl.wall_h[part] - 0.6) * (z > 0.6)
    base = tbl.wall_rgb[part]
    glass_rgb = palette.GLASS + 0.12 * (palette.SKY_HORIZON - palette.GLASS) * (np.abs(normal[:, 1:2]) + 0.5)
    albedo = base * (1 - glass[:, None]) + glass_rgb * glass[:, None]
    s = sun.vector()
    cos = np.clip(normal @ s, 0.0, 1.0)
    # Walls facing away from the sun are dark anyway: only sunward ones need the march.
    lit = np.zeros(len(pts), np.float32)
    sunward = cos > 0
    lit[sunward] = sun_visibility(scene, sun, pts[sunward] + normal[sunward] * 0.3)
    lit = soften_shadow(lit, sun)
    ground_ao = 0.72 + 0.28 * np.clip(z / 4.0, 0.0, 1.0)
    light = sky_light(sun) * 0.85 * ground_ao[:, None] + SUNLIGHT * (cos * lit)[:, None]
    return (albedo * light).astype(np.float32)


def _sky(d: np.ndarray) -> np.ndarray:
    up = np.clip(d[:, 2], 0.0, 1.0) ** 0.5
    return (palette.SKY_HORIZON * (1 - up[:, None]) + palette.SKY_ZENITH * up[:, None]).astype(np.float32)


def render_drone(scene: Scene, pyramid: TopPyramid, sun: Sun, pose: Pose, size: int,
                 light: ViewLighting = ViewLighting(), supersample: int = 1) -> DroneView:
    """Render the view from ``pose`` at ``size`` px (``supersample``² rays per pixel)."""
    rs = size * supersample
    origin, d = camera_rays(pose, rs)
    hits = cast_rays(scene, origin, d)
    m = rs * rs
    rgb = np.empty((m, 3), np.float32)
    pix = 2 * np.tan(np.radians(pose.fov_deg) / 2) / rs
    t = np.where(np.isfinite(hits.t), hits.t, 0.0)
    footprint = (t * pix).astype(np.float32)

    sky = hits.kind == SKY
    rgb[sky] = _sky(d[sky])

    top = hits.kind == TOP
    p = hits.point[top]
    flank = hits.side[top]
    # A crown's flank takes the colour from inside the cell it entered, darkened.
    dxy = d[top][:, :2] / np.maximum(np.hypot(d[top][:, 0], d[top][:, 1]), 1e-6)[:, None]
    inward = p[:, :2] + dxy * (0.5 * scene.cell) * flank[:, None]
    rows, cols = scene.cell_coords(inward[:, 0], inward[:, 1])
    eff = footprint[top] / np.sqrt(np.maximum(np.abs(d[top, 2]), 0.05))
    lod = np.log2(np.maximum(eff / scene.cell, 1.0))
    outside = (np.abs(p[:, 0]) > scene.half_extent) | (np.abs(p[:, 1]) > scene.half_extent)
    lod = np.where(outside, _LOD_LEVELS - 1, lod)
    rgb[top] = pyramid.sample(rows, cols, lod) * np.where(flank, 0.72, 1.0)[:, None].astype(np.float32)

    wall = hits.kind == WALL
    if wall.any():
        cosi = np.abs(np.sum(hits.normal[wall] * d[wall], 1))
        rgb[wall] = _wall_colors(scene, sun, hits.point[wall], hits.normal[wall], hits.part[wall],
                                 footprint[wall] / np.maximum(cosi, 0.25))

    if light.haze_visibility_m > 0:
        trans = np.exp(-t / light.haze_visibility_m)[:, None].astype(np.float32)
        rgb = np.where(sky[:, None], rgb, rgb * trans + palette.HAZE * (1 - trans))

    material = np.full(m, Material.SKY, np.uint8)
    r_i, c_i = scene.cell_index(p[:, 0], p[:, 1])
    inside = ~outside
    mt = np.full(len(p), Material.GRASS, np.uint8)
    mt[inside] = scene.material[np.clip(r_i[inside], 0, scene.n - 1), np.clip(c_i[inside], 0, scene.n - 1)]
    material[top] = mt
    material[wall] = Material.WALL

    img = rgb.reshape(rs, rs, 3)
    depth = hits.t.reshape(rs, rs).astype(np.float32)
    mat = material.reshape(rs, rs)
    if supersample > 1:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        depth = depth[supersample // 2::supersample, supersample // 2::supersample]
        mat = mat[supersample // 2::supersample, supersample // 2::supersample]
    img = cv2.GaussianBlur(img, (0, 0), 0.5)
    return DroneView(image=_grade(img, light), material=mat, depth=depth)
