"""Layouts and scenes: determinism, size independence, centre kept clear, patterns, names."""

from __future__ import annotations

import numpy as np
import pytest

from mcgf.synth.layout import generate_layout
from mcgf.synth.location import build_location, location_rng
from mcgf.synth.names import masked_names
from mcgf.synth.palette import Material
from mcgf.synth.patterns import box_filtered_band, box_filtered_wave


def test_layout_is_deterministic_and_varies_with_location() -> None:
    a = generate_layout(location_rng(1, 5, "layout"))
    b = generate_layout(location_rng(1, 5, "layout"))
    c = generate_layout(location_rng(1, 6, "layout"))
    assert a.summary() == b.summary()
    assert [p.cx for bd in a.buildings for p in bd.parts] == [p.cx for bd in b.buildings for p in bd.parts]
    assert np.array_equal(a.trees, b.trees)
    assert [p.cx for bd in a.buildings for p in bd.parts] != [p.cx for bd in c.buildings for p in bd.parts]


@pytest.mark.parametrize("number", [1, 2, 3, 4, 5, 6])
def test_target_building_sits_at_the_centre_clear_of_roads(number: int) -> None:
    loc = build_location(0, number, 64)
    s = loc.scene
    mid = s.n // 2
    tbl = s.parts
    # The centre cell belongs to the target building, which is among the tallest nearby.
    assert tbl.target[s.part[mid, mid]]
    assert s.material[mid, mid] == Material.ROOF
    r = int(25 / s.cell)
    assert not (s.material[mid - r: mid + r, mid - r: mid + r] == Material.ROAD).any()


def test_layout_does_not_depend_on_image_size() -> None:
    small = build_location(2, 3, 64)
    large = build_location(2, 3, 128)
    assert small.layout.summary() == large.layout.summary()
    assert small.sun == large.sun
    # Same place: the height fields agree at the same world points (up to edges).
    xs = np.linspace(-200, 200, 81)
    gx, gy = np.meshgrid(xs, xs)
    heights, materials = [], []
    for loc in (small, large):
        r, c = loc.scene.cell_index(gx, gy)
        heights.append(loc.scene.height[r, c])
        materials.append(loc.scene.material[r, c])
    assert (materials[0] == materials[1]).mean() > 0.85
    roofs = (materials[0] == Material.ROOF) & (materials[1] == Material.ROOF)
    assert roofs.sum() > 100
    assert (np.abs(heights[0] - heights[1])[roofs] < 1.0).mean() > 0.9


def test_satellite_only_raster_gives_the_same_tile() -> None:
    from mcgf.synth.location import render_satellite_tile

    full = build_location(4, 9, 64)
    crop = build_location(4, 9, 64, satellite_only=True)
    assert crop.scene.n < full.scene.n
    a, _ = render_satellite_tile(full, 4, 64)
    b, _ = render_satellite_tile(crop, 4, 64)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2


def test_box_filtered_patterns() -> None:
    x = np.linspace(0, 10, 101)
    # A footprint much wider than the period averages to the duty cycle.
    assert np.allclose(box_filtered_wave(x, 1.0, 0.3, 50.0), 0.3, atol=0.02)
    # A tiny footprint reproduces the square wave.
    sharp = box_filtered_wave(np.array([0.1, 0.5, 1.1, 1.9]), 1.0, 0.3, 1e-3)
    assert np.allclose(sharp, [1, 0, 1, 0])
    assert np.allclose(box_filtered_band(np.array([0.0, 5.0]), -1.0, 1.0, 1e-3), [1, 0])
    assert np.isclose(box_filtered_band(np.array([1.0]), -1.0, 1.0, 2.0)[0], 0.5)


def test_masked_names_unique_ignoring_case() -> None:
    names = masked_names(np.random.default_rng(0), 5000)
    assert len(names) == 5000 and len({n.lower() for n in names}) == 5000
    assert all(len(n) == 15 and n.isalnum() and n.isascii() for n in names)
    assert names == masked_names(np.random.default_rng(0), 5000)
