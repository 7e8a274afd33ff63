"""Rendering sanity: occlusion, walls, north-up satellite, shadows, drone vs satellite."""

from __future__ import annotations

import numpy as np

from mcgf.synth.camera import camera_rays, pose_looking_at
from mcgf.synth.lighting import Sun, shadow_map, sun_visibility
from mcgf.synth.palette import Material
from mcgf.synth.raycast import TOP, WALL, cast_rays
from mcgf.synth.render import TopPyramid, render_drone, render_satellite
from tests.synth.conftest import box, box_scene, shaded


def _unit(v: list[float]) -> np.ndarray:
    a = np.asarray(v, float)
    return a / np.linalg.norm(a)


def test_tall_box_occludes_what_is_behind_it() -> None:
    near = box(0, 0, 10, 40)
    far = box(40, 0, 10, 60)
    scene = box_scene([near, far])
    d = _unit([1, 0, -0.05])
    hits = cast_rays(scene, np.array([-100.0, 0.5, 20.0]), d[None])
    assert hits.kind[0] == WALL
    # West face of the near box is at x = -10 (within one cell); the far box is hidden.
    assert abs(hits.point[0, 0] + 10) <= scene.cell
    assert np.allclose(hits.normal[0], [-1, 0, 0])
    assert abs(hits.t[0] - 90 / d[0]) <= scene.cell / d[0] + 1e-6
    assert scene.parts.building[hits.part[0]] == 0
    # The same ray shifted sideways misses both boxes and lands on the ground.
    miss = cast_rays(scene, np.array([-100.0, 40.5, 20.0]), d[None])
    assert miss.kind[0] == TOP and abs(miss.point[0, 2]) < 1e-3
    assert np.isclose(miss.t[0], 20 / -d[2])


def test_ray_over_a_box_lands_on_its_roof_or_beyond() -> None:
    scene = box_scene([box(0, 0, 10, 40)])
    roof = cast_rays(scene, np.array([-30.0, 0.5, 100.0]), _unit([1, 0, -2])[None])
    assert roof.kind[0] == TOP and np.isclose(roof.point[0, 2], 40, atol=1e-3)
    assert abs(roof.point[0, 0] - 0) <= scene.cell
    over = cast_rays(scene, np.array([-30.0, 0.5, 60.0]), _unit([1, 0, -0.1])[None])
    assert over.kind[0] == TOP and over.point[0, 0] > 10 and abs(over.point[0, 2]) < 1e-3


def test_walls_visible_obliquely_but_not_from_nadir() -> None:
    scene = box_scene([box(0, 0, 15, 30, windows="punched")])
    pose = pose_looking_at((0.0, 0.0, 0.0), heading_deg=30, pitch_deg=40, altitude_m=120, fov_deg=50)
    view = render_drone(scene, TopPyramid(shaded(scene)), Sun(135, 45), pose, 64)
    assert (view.material == Material.WALL).mean() > 0.02
    assert (view.material == Material.ROOF).any()
    # Orthographic nadir rays (the satellite's view) never see a wall.
    xs = np.linspace(-40, 40, 41)
    gx, gy = np.meshgrid(xs, xs)
    origins = np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, 200.0)], 1)
    nadir = cast_rays(scene, origins, np.tile([0.0, 0.0, -1.0], (len(origins), 1)))
    assert not (nadir.kind == WALL).any()
    assert np.isclose(nadir.point[:, 2].max(), 30, atol=1e-3)


def test_camera_rays_point_at_the_target() -> None:
    pose = pose_looking_at((5.0, -3.0, 0.0), heading_deg=90, pitch_deg=45, altitude_m=100, fov_deg=50)
    origin, d = camera_rays(pose, 9)
    centre = d.reshape(9, 9, 3)[4, 4]
    # Heading 90 = looking east: the camera sits west of the target.
    assert origin[0] < 5.0 and np.isclose(origin[1], -3.0)
    assert np.allclose(centre, _unit([1, 0, -1]), atol=1e-6)
    # Top image row looks farther (less steeply down) than the bottom row.
    assert d.reshape(9, 9, 3)[0, 4, 2] > d.reshape(9, 9, 3)[8, 4, 2]


def test_satellite_is_north_up() -> None:
    red_roof = box(0, 50, 12, 8, roof_color=3)  # terracotta, north of the centre
    scene = box_scene([red_roof])
    tile = render_satellite(shaded(scene, Sun(180, 89)), scene, side_m=180, size=90).astype(int)
    redness = tile[..., 0] - tile[..., 1]
    rows, cols = np.nonzero(redness > 40)
    assert len(rows) > 50
    # 50 m north of centre = 25 px above the middle row of a 90 px / 180 m tile.
    assert abs(rows.mean() - (45 - 25)) < 2 and abs(cols.mean() - 45) < 2


def test_cast_shadow_falls_away_from_the_sun() -> None:
    scene = box_scene([box(0, 0, 5, 20)])
    lit = shadow_map(scene, Sun(azimuth_deg=90, elevation_deg=45))  # sun in the east
    r, c = scene.cell_index(np.array([-15.0, 15.0]), np.array([0.0, 0.0]))
    west, east = lit[r[0], c[0]], lit[r[1], c[1]]
    assert west < 0.1 and east > 0.9
    # A point high above the box sees the sun; one at its western foot does not.
    vis = sun_visibility(scene, Sun(90, 45), np.array([[-8.0, 0.0, 1.0], [-8.0, 0.0, 30.0]]))
    assert vis.tolist() == [0.0, 1.0]


def test_drone_view_differs_from_satellite() -> None:
    from mcgf.synth.location import build_location, render_drone_views, render_satellite_tile

    loc = build_location(3, 1, 64)
    sat, _ = render_satellite_tile(loc, 3, 64)
    shots = render_drone_views(loc, 3, 2, 64)
    for shot in shots:
        img = shot.view.image
        assert img.shape == sat.shape == (64, 64, 3) and img.dtype == np.uint8
        assert np.abs(img.astype(int) - sat.astype(int)).mean() > 10
        assert (shot.view.material == Material.WALL).any()
        assert img.std() > 10  # not a flat colour
    # Headings go round the orbit and the first view is the highest.
    assert shots[0].pose.altitude_m > shots[1].pose.altitude_m
