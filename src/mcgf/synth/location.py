"""One location from (seed, location number): its scene, satellite tile and drone views.

Every random choice of a location comes from generators derived from the global seed
and the location number alone (``numpy.random.SeedSequence([seed, number, stream])``),
with separate streams for layout, textures, light and views. A location is therefore
the same whatever the number of worker processes or the order they run in, and its
layout is the same at every image size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mcgf.synth.camera import OrbitSpec, Pose, orbit_poses
from mcgf.synth.layout import HALF_EXTENT_M, Layout, generate_layout
from mcgf.synth.lighting import Sun, random_sun, shade_top
from mcgf.synth.render import (
    DroneView,
    TopPyramid,
    ViewLighting,
    random_satellite_lighting,
    random_view_lighting,
    render_drone,
    render_satellite,
)
from mcgf.synth.scene import Scene, grid_size, rasterize
from mcgf.synth.style import DEFAULT_STYLE, SynthStyle

#: Ground side covered by a satellite tile (m).
SATELLITE_SIDE_M = 180.0
#: The scene raster never gets finer than this many cells across the satellite tile;
#: larger tiles are upsampled (keeps 512 px generation tractable).
MAX_RASTER_CELLS = 288

#: Margin around a satellite-only raster: the longest shadow of a 50 m building under
#: the lowest sun (35°).
SHADOW_MARGIN_M = 72.0

_STREAMS = {"layout": 0, "texture": 1, "sun": 2, "satellite": 3, "views": 4}


def location_rng(seed: int, number: int, stream: str) -> np.random.Generator:
    """The generator of one random stream of location ``number``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(number), _STREAMS[stream]]))


def raster_cell(size: int, side_m: float = SATELLITE_SIDE_M) -> float:
    """Scene cell size (m) used for images of ``size`` px."""
    return side_m / min(size, MAX_RASTER_CELLS)


@dataclass
class Location:
    """A built location, ready to render."""

    number: int
    layout: Layout
    scene: Scene
    sun: Sun
    shaded: np.ndarray
    pyramid: TopPyramid = field(repr=False)
    style: SynthStyle = DEFAULT_STYLE


def shadow_margin(style: SynthStyle = DEFAULT_STYLE) -> float:
    """Margin (m) around a satellite-only raster: the longest shadow of a 50 m building
    under the style's lowest sun, and never less than :data:`SHADOW_MARGIN_M`."""
    return max(SHADOW_MARGIN_M, 50.0 / float(np.tan(np.radians(min(style.sun_elevation_deg)))))


def build_location(seed: int, number: int, size: int, satellite_only: bool = False,
                   style: SynthStyle = DEFAULT_STYLE) -> Location:
    """Generate and rasterise location ``number`` for images of ``size`` px in ``style``.

    With ``satellite_only`` only the tile and a margin for shadows cast into it are
    rasterised (several times faster; the tile is the same up to rare pixels).
    """
    layout = generate_layout(location_rng(seed, number, "layout"), HALF_EXTENT_M, style)
    cell = raster_cell(size)
    crop = round(SATELLITE_SIDE_M / cell)
    half = min(SATELLITE_SIDE_M / 2 + shadow_margin(style), HALF_EXTENT_M) if satellite_only else HALF_EXTENT_M
    scene = rasterize(layout, cell, grid_size(half, cell, crop), location_rng(seed, number, "texture"),
                      style.colours(), style.dry_grass)
    sun = random_sun(location_rng(seed, number, "sun"), style.sun_azimuth_deg, style.sun_elevation_deg,
                     style.ambient, style.shadow_strength)
    shaded = shade_top(scene, sun)
    return Location(number, layout, scene, sun, shaded, TopPyramid(shaded), style)


def render_satellite_tile(loc: Location, seed: int, size: int) -> tuple[np.ndarray, ViewLighting]:
    """The location's north-up satellite tile (uint8, ``size`` px) and its colour grade."""
    light = random_satellite_lighting(location_rng(seed, loc.number, "satellite"))
    return render_satellite(loc.shaded, loc.scene, SATELLITE_SIDE_M, size, light), light


@dataclass
class DroneShot:
    """One drone photo with the pose and lighting it was taken under."""

    view: DroneView
    pose: Pose
    lighting: ViewLighting


def render_drone_views(loc: Location, seed: int, n_views: int, size: int,
                       orbit: OrbitSpec | None = None, supersample: int = 1) -> list[DroneShot]:
    """The ``n_views`` orbit photos of the location, first (highest) first; the orbit is
    the location's style's unless given."""
    rng = location_rng(seed, loc.number, "views")
    poses = orbit_poses(n_views, rng, orbit or loc.style.orbit())
    lights = [random_view_lighting(rng) for _ in poses]
    return [
        DroneShot(render_drone(loc.scene, loc.pyramid, loc.sun, pose, size, light, supersample), pose, light)
        for pose, light in zip(poses, lights, strict=True)
    ]
