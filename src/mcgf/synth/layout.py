"""Procedural layout of one location, as geometry in metres (independent of raster size).

A location is a campus-like patch of land centred on a distinctive target building
(University-1652 photographs one university building per location): a road network of
one of several styles kept clear of the centre, a plaza and footpaths around the target,
optional parking lots, sports grounds and ponds, other buildings of varied footprints,
heights and roofs, and trees in clusters and along streets.

Placement uses rejection sampling against a coarse occupancy grid (2 m cells). The
grid's resolution is fixed, so the same seed gives the same layout at any image size.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

import numpy as np

from mcgf.synth import palette
from mcgf.synth.shapes import Part, footprint
from mcgf.synth.style import DEFAULT_STYLE, SynthStyle

#: Half the side of the square of land modelled around each location (m).
HALF_EXTENT_M = 280.0
ROAD_STYLES = ("grid", "campus", "organic")
PATCH_KINDS = ("plaza", "parking", "water", "field", "track", "dirt")
_OCC_CELL_M = 2.0


@dataclass(frozen=True)
class Road:
    """A polyline road (``points``: (P, 2) metres); kind is ``avenue``, ``street`` or ``path``."""

    points: np.ndarray
    width: float
    kind: str
    sidewalk: float = 0.0


@dataclass(frozen=True)
class Patch:
    """A ground area: ``kind`` in :data:`PATCH_KINDS`, rectangle or ellipse in a rotated frame."""

    kind: str
    shape: str
    cx: float
    cy: float
    angle: float
    hu: float
    hv: float


@dataclass(frozen=True)
class Building:
    """A union of parts; ``target`` marks the location's landmark building."""

    parts: tuple[Part, ...]
    target: bool = False
    kind: str = "rect"


@dataclass
class Layout:
    """Everything placed at one location. Arrays of trees and cars are one row per item."""

    half_extent: float
    road_style: str
    roads: list[Road] = field(default_factory=list)
    patches: list[Patch] = field(default_factory=list)
    buildings: list[Building] = field(default_factory=list)
    trees: np.ndarray = field(default_factory=lambda: np.zeros((0, 5), np.float32))
    cars: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))

    @property
    def target(self) -> Building:
        return next(b for b in self.buildings if b.target)

    def summary(self) -> dict[str, object]:
        """A small JSON-able description for metadata."""
        tgt = self.target
        return {
            "road_style": self.road_style,
            "roads": len(self.roads),
            "buildings": len(self.buildings),
            "trees": len(self.trees),
            "cars": len(self.cars),
            "patches": sorted(p.kind for p in self.patches),
            "target": {
                "kind": tgt.kind,
                "parts": len(tgt.parts),
                "height_m": round(max(p.top for p in tgt.parts), 2),
                "roofs": sorted({p.roof for p in tgt.parts}),
            },
        }


class _Occupancy:
    """Coarse grid of taken land used to reject overlapping placements."""

    def __init__(self, half_extent: float) -> None:
        self.e = half_extent
        self.n = round(2 * half_extent / _OCC_CELL_M)
        self.taken = np.zeros((self.n, self.n), bool)
        c = (np.arange(self.n) + 0.5) * _OCC_CELL_M
        self.xs = (c - half_extent).astype(np.float32)
        self.ys = (half_extent - c).astype(np.float32)

    def _window(self, cx: float, cy: float, r: float) -> tuple[slice, slice]:
        c0 = int(np.floor((cx - r + self.e) / _OCC_CELL_M))
        c1 = int(np.ceil((cx + r + self.e) / _OCC_CELL_M)) + 1
        r0 = int(np.floor((self.e - cy - r) / _OCC_CELL_M))
        r1 = int(np.ceil((self.e - cy + r) / _OCC_CELL_M)) + 1
        return slice(max(r0, 0), min(r1, self.n)), slice(max(c0, 0), min(c1, self.n))

    def part_mask(self, part: Part, pad: float) -> tuple[tuple[slice, slice], np.ndarray]:
        rows, cols = self._window(part.cx, part.cy, part.radius + pad + _OCC_CELL_M)
        x = self.xs[cols][None, :]
        y = self.ys[rows][:, None]
        return (rows, cols), footprint(part, x, y, pad)

    def free(self, parts: tuple[Part, ...], pad: float, margin: float = 10.0) -> bool:
        """True if every part (grown by ``pad``) lies on free land inside the scene."""
        for p in parts:
            if max(abs(p.cx), abs(p.cy)) + p.radius > self.e - margin:
                return False
            win, mask = self.part_mask(p, pad)
            if (self.taken[win] & mask).any():
                return False
        return True

    def take(self, parts: tuple[Part, ...], pad: float) -> None:
        for p in parts:
            win, mask = self.part_mask(p, pad)
            self.taken[win] |= mask

    def take_road(self, road: Road, extra: float) -> None:
        half = road.width / 2 + road.sidewalk + extra
        for a, b in zip(road.points[:-1], road.points[1:], strict=True):
            mid = (a + b) / 2
            reach = float(np.hypot(*(b - a))) / 2 + half + _OCC_CELL_M
            rows, cols = self._window(float(mid[0]), float(mid[1]), reach)
            if rows.start >= rows.stop or cols.start >= cols.stop:
                continue
            d = _segment_distance(self.xs[cols][None, :], self.ys[rows][:, None], a, b)
            self.taken[rows, cols] |= d <= half

    def taken_at(self, x: float, y: float) -> bool:
        """Whether the cell under one point is taken (outside the scene counts as taken)."""
        col, row = int((x + self.e) // _OCC_CELL_M), int((self.e - y) // _OCC_CELL_M)
        return not (0 <= row < self.n and 0 <= col < self.n) or bool(self.taken[row, col])

    def is_free_point(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        col = np.clip(((x + self.e) / _OCC_CELL_M).astype(int), 0, self.n - 1)
        row = np.clip(((self.e - y) / _OCC_CELL_M).astype(int), 0, self.n - 1)
        inside = (np.abs(x) < self.e) & (np.abs(y) < self.e)
        return inside & ~self.taken[row, col]


def _segment_distance(px: np.ndarray, py: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((px - a[0]) * ab[0] + (py - a[1]) * ab[1]) / max(float(ab @ ab), 1e-9), 0, 1)
    return np.hypot(px - a[0] - t * ab[0], py - a[1] - t * ab[1])


# --------------------------------------------------------------------------- styles


def _pick(rng: np.random.Generator, options: list, p: list[float] | None = None):  # type: ignore[type-arg]
    """One of ``options`` (with probabilities ``p``); much cheaper than ``rng.choice``."""
    if p is None:
        return options[int(rng.integers(len(options)))]
    r = rng.random() * sum(p)
    for option, weight in zip(options, p, strict=True):
        r -= weight
        if r < 0:
            return option
    return options[-1]


def _floors(rng: np.random.Generator, tall: bool = False, style: SynthStyle = DEFAULT_STYLE) -> int:
    if tall:
        return int(_pick(rng, [4, 5, 6, 7, 8, 10, 12]))
    return int(_pick(rng, list(style.floors)))


@dataclass(frozen=True)
class _Style:
    """Facade and roof style shared by the parts of one building (before per-part tweaks)."""

    wall_h: float
    floor_h: float
    roof: str
    roof_color: int
    wall_color: int
    windows: str
    win_pitch: float


def _style(rng: np.random.Generator, floors: int, area: float, style: SynthStyle = DEFAULT_STYLE) -> _Style:
    floor_h = float(rng.uniform(*style.floor_height_m))
    small = area < 500
    roof = str(_pick(rng, ["flat", "gabled", "hipped"], p=list(style.roofs_small if small else style.roofs_large)))
    if floors <= 1 and rng.random() < 0.4:
        windows = "none"
    else:
        windows = str(_pick(rng, ["punched", "ribbon", "curtain"], p=[0.55, 0.28, 0.17]))
    roof_color = int(rng.integers(len(palette.ROOFS)))
    if roof != "flat" and rng.random() < 0.5:
        roof_color = int(_pick(rng, [3, 4, 7]))  # pitched roofs: tiles and slate
    return _Style(
        wall_h=floors * floor_h, floor_h=floor_h, roof=roof, roof_color=roof_color,
        wall_color=int(rng.integers(len(palette.WALLS))), windows=windows,
        win_pitch=float(rng.uniform(2.4, 3.8)),
    )


def _rise(style: _Style, half_span: float, rng: np.random.Generator) -> float:
    if style.roof == "flat":
        return 0.0
    return float(min(half_span * np.tan(np.radians(rng.uniform(18, 35))), 7.0))


def _place(parts: list[tuple[float, float, float, float, float]], x: float, y: float, angle: float,
           shape_of: list[str], styles: list[_Style], rng: np.random.Generator,
           ring_w: float = 0.0) -> tuple[Part, ...]:
    """Turn parts given in the building frame (du, dv, dangle, hu, hv) into world parts."""
    c, s = np.cos(angle), np.sin(angle)
    out = []
    for (du, dv, da, hu, hv), shape, st in zip(parts, shape_of, styles, strict=True):
        roof = st.roof
        if shape == "round":
            roof = "dome" if rng.random() < (0.7 if roof != "flat" else 0.15) else "flat"
            rise = float(hu * rng.uniform(0.45, 0.8)) if roof == "dome" else 0.0
        elif shape == "ring":
            rise = _rise(st, ring_w / 2, rng)
            roof = "flat" if rise == 0 else "gabled"
        else:
            rise = _rise(st, min(hu, hv), rng)
        out.append(Part(
            shape=shape, cx=float(x + du * c - dv * s), cy=float(y + du * s + dv * c),
            angle=float(angle + da), hu=float(hu), hv=float(hv), wall_h=float(st.wall_h),
            roof=roof, rise=rise, ring_w=float(ring_w), roof_color=st.roof_color,
            wall_color=st.wall_color, windows=st.windows, floor_h=st.floor_h, win_pitch=st.win_pitch,
        ))
    return tuple(out)


def make_building(rng: np.random.Generator, x: float, y: float, angle: float,
                  target: bool = False, style: SynthStyle = DEFAULT_STYLE) -> Building:
    """A building of a random kind centred at (x, y); the target is larger and taller.

    ``style`` sets the kinds, size, floors and roofs of ordinary buildings; the target
    keeps its own kinds, size and floors in every style.
    """
    scale = rng.uniform(1.5, 2.1) if target else rng.uniform(*style.building_scale)
    kinds = ["courtyard", "L", "T", "U", "tower", "rotunda", "hall", "cross"] if target else style.kinds_bag()
    kind = str(_pick(rng, kinds))
    a = float(rng.uniform(12, 24) * scale)  # half length
    b = float(rng.uniform(6, 11) * scale)  # half width
    floors = _floors(rng, tall=target, style=style)
    st = _style(rng, floors, 4 * a * b, style)
    p: list[tuple[float, float, float, float, float]]
    shapes: list[str]
    ring_w = 0.0
    styles = [st]
    if kind == "rect":
        p, shapes = [(0, 0, 0, a, b)], ["rect"]
    elif kind == "L":
        w = b * rng.uniform(0.8, 1.1)
        ln = a * rng.uniform(0.6, 1.0)
        p = [(0, 0, 0, a, b), (a - w, b + ln / 2 - 0.5, 0, w, ln / 2)]
        shapes = ["rect", "rect"]
    elif kind == "T":
        ln = a * rng.uniform(0.6, 1.1)
        w = b * rng.uniform(0.7, 1.0)
        p = [(0, 0, 0, a, b), (0, b + ln / 2 - 0.5, 0, w, ln / 2)]
        shapes = ["rect", "rect"]
    elif kind == "U":
        ln = a * rng.uniform(0.6, 1.0)
        w = b * rng.uniform(0.7, 1.0)
        p = [(0, 0, 0, a, b), (a - w, b + ln / 2 - 0.5, 0, w, ln / 2),
             (-a + w, b + ln / 2 - 0.5, 0, w, ln / 2)]
        shapes = ["rect"] * 3
    elif kind == "cross":
        p = [(0, 0, 0, a, b), (0, 0, np.pi / 2, a * rng.uniform(0.6, 0.9), b * rng.uniform(0.7, 1.0))]
        shapes = ["rect", "rect"]
    elif kind == "courtyard":
        ring_w = float(rng.uniform(8, 13) * min(scale, 1.4))
        hv = max(b * 2.2, ring_w * 2 + 8)
        p, shapes = [(0, 0, 0, max(a, hv * 1.1), hv)], ["ring"]
    elif kind == "round":
        p, shapes = [(0, 0, 0, b * 1.4, b * 1.4)], ["round"]
    elif kind == "tower":
        t = b * rng.uniform(0.8, 1.1)
        tall = replace(st, wall_h=st.wall_h + float(rng.uniform(12, 26)), roof="flat",
                    windows=str(_pick(rng, ["curtain", "ribbon"])))
        p = [(0, 0, 0, a, b * 1.5), (rng.uniform(-0.4, 0.4) * a, 0, 0, t, t)]
        shapes, styles = ["rect", "rect"], [replace(st, wall_h=min(st.wall_h, 11.0)), tall]
    elif kind == "rotunda":
        r = b * rng.uniform(1.0, 1.3)
        wing = replace(st, wall_h=st.wall_h * float(rng.uniform(0.6, 0.9)))
        p = [(0, 0, 0, r, r), (-(r + a * 0.45), 0, 0, a * 0.55, b * 0.7),
             (r + a * 0.45, 0, 0, a * 0.55, b * 0.7)]
        shapes, styles = ["round", "rect", "rect"], [replace(st, roof="gabled"), wing, wing]
    else:  # hall
        p = [(0, 0, 0, a * 1.3, b * 1.2), (a * 1.3 + 4, 0, 0, 4.5, b * 0.8)]
        shapes = ["rect", "rect"]
        styles = [replace(st, roof=str(_pick(rng, ["gabled", "hipped"]))), replace(st, wall_h=st.wall_h * 0.6)]
    if len(styles) < len(p):
        styles = styles + [styles[0]] * (len(p) - len(styles))
    parts = _place(p, x, y, angle, shapes, styles, rng, ring_w)
    return Building(parts=parts + _rooftop_units(rng, parts), target=target, kind=kind)


def _rooftop_units(rng: np.random.Generator, parts: tuple[Part, ...]) -> tuple[Part, ...]:
    """Small plant boxes on large flat roofs (they make roofs look real from the air)."""
    units = []
    for p in parts:
        if p.roof != "flat" or p.shape != "rect" or p.hu * p.hv < 120:
            continue
        for _ in range(int(rng.integers(0, 4))):
            hu, hv = float(rng.uniform(1.2, 3.5)), float(rng.uniform(1.0, 2.5))
            du = float(rng.uniform(-1, 1) * max(p.hu - hu - 1.5, 0))
            dv = float(rng.uniform(-1, 1) * max(p.hv - hv - 1.5, 0))
            c, s = np.cos(p.angle), np.sin(p.angle)
            units.append(Part(
                shape="rect", cx=p.cx + du * c - dv * s, cy=p.cy + du * s + dv * c, angle=p.angle,
                hu=hu, hv=hv, wall_h=p.wall_h + float(rng.uniform(1.2, 2.8)), roof="flat",
                roof_color=int(_pick(rng, [0, 1, 5])), wall_color=1, windows="none",
            ))
    return tuple(units)


def _roads_grid(rng: np.random.Generator, e: float, clear: float, angle: float) -> list[Road]:
    roads: list[Road] = []
    c, s = np.cos(angle), np.sin(angle)
    span = e * 1.5
    for axis in (0, 1):
        spacing = rng.uniform(max(2 * clear + 12, 95), max(2 * clear + 40, 150))
        offset = rng.uniform(-0.12, 0.12) * spacing
        ks = np.arange(-4, 5)
        for k in ks:
            pos = (k + 0.5) * spacing + offset
            if abs(pos) - 10 < clear or abs(pos) > e * 1.2:
                continue
            avenue = rng.random() < 0.3
            width = float(rng.uniform(15, 20) if avenue else rng.uniform(8, 11))
            # Break the line into blocks and drop some to make T-junctions.
            cuts = np.linspace(-span, span, 7)
            for a0, a1 in itertools.pairwise(cuts):
                if not avenue and rng.random() < 0.12:
                    continue
                pts_local = np.array([[a0, pos], [a1, pos]]) if axis == 0 else np.array([[pos, a0], [pos, a1]])
                pts = np.stack([pts_local[:, 0] * c - pts_local[:, 1] * s,
                                pts_local[:, 0] * s + pts_local[:, 1] * c], 1)
                roads.append(Road(pts.astype(np.float32), width, "avenue" if avenue else "street",
                                  float(rng.uniform(2, 3.5))))
    return roads


def _line_road(rng: np.random.Generator, e: float, min_dist: float, curvy: bool) -> Road:
    phi = rng.uniform(0, np.pi)
    p = rng.uniform(min_dist, max(min_dist + 10, e * 0.9)) * _pick(rng, [-1, 1])
    normal = np.array([np.cos(phi), np.sin(phi)])
    tangent = np.array([-normal[1], normal[0]])
    t = np.linspace(-e * 1.5, e * 1.5, 40)
    lateral = np.zeros_like(t)
    if curvy:
        amp = min(30.0, (abs(p) - min_dist) * 0.8)
        lateral = amp * np.sin(t / rng.uniform(60, 140) + rng.uniform(0, 2 * np.pi))
    pts = (p + lateral)[:, None] * normal + t[:, None] * tangent
    avenue = rng.random() < 0.3
    width = float(rng.uniform(14, 19) if avenue else rng.uniform(8, 11))
    return Road(pts.astype(np.float32), width, "avenue" if avenue else "street", float(rng.uniform(2, 3.5)))


def _roads_campus(rng: np.random.Generator, e: float, clear: float, angle: float) -> list[Road]:
    rx = clear + rng.uniform(20, 55)
    ry = clear + rng.uniform(20, 55)
    th = np.linspace(0, 2 * np.pi, 65)
    # Rounded rectangle loop (superellipse).
    ex = 2 / rng.uniform(2.5, 6.0)
    cx = np.sign(np.cos(th)) * np.abs(np.cos(th)) ** ex * rx
    cy = np.sign(np.sin(th)) * np.abs(np.sin(th)) ** ex * ry
    c, s = np.cos(angle), np.sin(angle)
    loop = np.stack([cx * c - cy * s, cx * s + cy * c], 1)
    roads = [Road(loop.astype(np.float32), float(rng.uniform(8, 10)), "street", float(rng.uniform(2, 3)))]
    for _ in range(int(rng.integers(2, 5))):
        k = int(rng.integers(0, 64))
        start = loop[k]
        direction = start / max(np.linalg.norm(start), 1e-6)
        pts = np.stack([start, start + direction * e * 1.6])
        roads.append(Road(pts.astype(np.float32), float(rng.uniform(8, 11)), "street", float(rng.uniform(2, 3))))
    for _ in range(int(rng.integers(0, 3))):
        roads.append(_line_road(rng, e, max(rx, ry) * 1.2 + 25, curvy=False))
    return roads


def _roads_organic(rng: np.random.Generator, e: float, clear: float) -> list[Road]:
    return [_line_road(rng, e, clear + 8, curvy=rng.random() < 0.6) for _ in range(int(rng.integers(3, 7)))]


def _footpaths(rng: np.random.Generator) -> list[Road]:
    """Straight paths leading away from the target (drawn under it)."""
    paths = []
    for _ in range(int(rng.integers(1, 4))):
        a = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(80, 200)
        pts = np.array([[0.0, 0.0], [np.cos(a) * length, np.sin(a) * length]], np.float32)
        paths.append(Road(pts, float(rng.uniform(2.5, 4.5)), "path"))
    return paths


def _patch_footprint(patch: Patch) -> tuple[Part, ...]:
    """A part covering the patch, for occupancy checks (ellipses conservatively as rectangles)."""
    shape = "round" if patch.shape == "ellipse" and abs(patch.hu - patch.hv) < 1e-6 else "rect"
    return (Part(shape, patch.cx, patch.cy, patch.angle, patch.hu, patch.hv, 0.0),)


def generate_layout(rng: np.random.Generator, half_extent: float = HALF_EXTENT_M,
                    style: SynthStyle = DEFAULT_STYLE) -> Layout:
    """Draw a complete location from ``rng`` (see the module docstring); ``style`` sets
    the building and vegetation knobs."""
    e = half_extent
    occ = _Occupancy(e)
    road_style = str(_pick(rng, ROAD_STYLES))
    main_angle = float(_pick(rng, [0.0, rng.uniform(0, np.pi / 2)], [0.3, 0.7]))

    target = make_building(rng, float(rng.uniform(-6, 6)), float(rng.uniform(-6, 6)),
                           main_angle + float(_pick(rng, [0, np.pi / 2])), target=True, style=style)
    clear = max(np.hypot(p.cx, p.cy) + p.radius for p in target.parts) + 10

    if road_style == "grid":
        roads = _roads_grid(rng, e, clear + 6, main_angle)
    elif road_style == "campus":
        roads = _roads_campus(rng, e, clear + 6, main_angle)
    else:
        roads = _roads_organic(rng, e, clear + 6)
    layout = Layout(half_extent=e, road_style=road_style)

    # Paved forecourt (most often) or just a narrow apron around the target's parts,
    # and footpaths leading away from it.
    margin = float(rng.uniform(5, 12) if rng.random() < 0.6 else rng.uniform(2, 3.5))
    plazas = [Patch("plaza", "ellipse" if p.shape == "round" else "rect", p.cx, p.cy, p.angle,
                    p.hu + margin, (p.hu if p.shape == "round" else p.hv) + margin)
              for p in target.parts if p.wall_h > 0 and p.hu > 4]
    layout.patches.extend(plazas)
    paths = _footpaths(rng)
    for r in roads:
        occ.take_road(r, extra=0.0)
    for r in paths:
        occ.take_road(r, extra=0.5)
    for plaza in plazas:
        occ.take(_patch_footprint(plaza), pad=1.0)
    occ.take(target.parts, pad=4.0)
    layout.roads = roads + paths
    layout.buildings.append(target)

    # Grounds first so that they find room, then buildings, then trees in what is left.
    _place_grounds(rng, layout, occ, clear, main_angle)
    _place_buildings(rng, layout, occ, clear, main_angle, style)
    layout.trees = _trees(rng, e, occ, layout.roads, style)
    return layout


def _place_grounds(rng: np.random.Generator, layout: Layout, occ: _Occupancy, clear: float,
                   main_angle: float) -> None:
    """Optional sports grounds, pond and bare earth, then parking lots with cars."""
    e = layout.half_extent
    for kind, prob, size in (("track", 0.15, (50, 32)), ("field", 0.2, (45, 28)),
                             ("water", 0.25, (30, 22)), ("dirt", 0.15, (22, 16))):
        if rng.random() >= prob:
            continue
        for _ in range(30):
            d = rng.uniform(clear + 30, e * 0.85)
            a = rng.uniform(0, 2 * np.pi)
            hu, hv = size[0] * rng.uniform(0.8, 1.3), size[1] * rng.uniform(0.8, 1.3)
            patch = Patch(kind, "ellipse" if kind in ("water", "track") else "rect",
                          float(d * np.cos(a)), float(d * np.sin(a)),
                          main_angle + float(rng.uniform(-0.2, 0.2)), float(hu), float(hv))
            if occ.free(_patch_footprint(patch), pad=3.0):
                occ.take(_patch_footprint(patch), pad=3.0)
                layout.patches.append(patch)
                break
    cars: list[np.ndarray] = []
    for _ in range(int(rng.integers(1, 6))):
        for _ in range(20):
            d = rng.uniform(clear + 5, e * 0.8)
            a = rng.uniform(0, 2 * np.pi)
            n_stalls = int(rng.integers(5, 16))
            patch = Patch("parking", "rect", float(d * np.cos(a)), float(d * np.sin(a)),
                          main_angle + float(_pick(rng, [0, np.pi / 2])), n_stalls * 1.3 + 1.0, 9.0)
            if occ.free(_patch_footprint(patch), pad=1.5):
                occ.take(_patch_footprint(patch), pad=1.5)
                layout.patches.append(patch)
                cars.append(_park_cars(rng, patch, n_stalls))
                break
    if cars:
        layout.cars = np.concatenate(cars, 0)


def _place_buildings(rng: np.random.Generator, layout: Layout, occ: _Occupancy, clear: float,
                     main_angle: float, style: SynthStyle = DEFAULT_STYLE) -> None:
    """Other buildings, denser toward the centre where the photos look.

    Candidates are drawn in bulk; one whose centre or near surroundings are taken is
    skipped before the building is even designed (any building with its spacing covers
    5 m around its centre).
    """
    e = layout.half_extent
    n_try = int(520 * style.building_density * rng.uniform(0.5, 1.0))
    in_disk = rng.random(n_try) < 0.6
    rad, ang0 = 170.0 * np.sqrt(rng.random(n_try)), rng.uniform(0, 2 * np.pi, n_try)
    xy = np.where(in_disk[:, None], np.stack([rad * np.cos(ang0), rad * np.sin(ang0)], 1),
                  rng.uniform(-e, e, (n_try, 2)))
    aligned = rng.random(n_try) < 0.75
    angles = np.where(aligned, main_angle + rng.integers(0, 4, n_try) * np.pi / 2, rng.uniform(0, np.pi, n_try))
    pads = rng.uniform(*style.building_gap_m, n_try)
    ring = ((0.0, 0.0), (5.0, 0.0), (-5.0, 0.0), (0.0, 5.0), (0.0, -5.0))
    for (x, y), ang, pad in zip(xy.tolist(), angles.tolist(), pads.tolist(), strict=True):
        if x * x + y * y < clear * clear or any(occ.taken_at(x + dx, y + dy) for dx, dy in ring):
            continue
        b = make_building(rng, x, y, ang, style=style)
        if occ.free(b.parts, pad):
            occ.take(b.parts, pad)
            layout.buildings.append(b)


def _park_cars(rng: np.random.Generator, lot: Patch, n_stalls: int) -> np.ndarray:
    """Cars (x, y, angle, colour) in the two stall rows of a parking lot."""
    u = (np.arange(n_stalls) - (n_stalls - 1) / 2) * 2.6
    rows = []
    for side in (-1, 1):
        keep = rng.random(n_stalls) < rng.uniform(0.3, 0.9)
        v = np.full(keep.sum(), side * (lot.hv - 2.6))
        rows.append(np.stack([u[keep], v], 1))
    uv = np.concatenate(rows, 0)
    c, s = np.cos(lot.angle), np.sin(lot.angle)
    x = lot.cx + uv[:, 0] * c - uv[:, 1] * s
    y = lot.cy + uv[:, 0] * s + uv[:, 1] * c
    ang = np.full(len(uv), lot.angle + np.pi / 2) + rng.normal(0, 0.04, len(uv))
    color = rng.integers(0, len(palette.CARS), len(uv))
    return np.stack([x, y, ang, color], 1).astype(np.float32)


def _trees(rng: np.random.Generator, e: float, occ: _Occupancy, roads: list[Road],
           style: SynthStyle = DEFAULT_STYLE) -> np.ndarray:
    """Trees as rows (x, y, radius, top height, tone)."""
    # Clusters: dense where a coarse random field is high.
    n_cand = int((2 * e) ** 2 / 55 * style.tree_density)
    xy = rng.uniform(-e, e, (n_cand, 2))
    lattice = rng.uniform(-1, 1, (int(2 * e / 45) + 2,) * 2)
    li = np.clip(((xy + e) / 45).astype(int), 0, lattice.shape[0] - 1)
    cluster = lattice[li[:, 1], li[:, 0]]
    keep = cluster > rng.uniform(0.0, 0.5)
    pts = [xy[keep]]
    # Street trees along some roads.
    for road in roads:
        if road.kind == "path" or rng.random() < 1 - style.street_trees:
            continue
        spacing = rng.uniform(8, 14)
        off = road.width / 2 + road.sidewalk + 1.2
        for a, b in zip(road.points[:-1], road.points[1:], strict=True):
            seg = b - a
            length = float(np.hypot(*seg))
            if length < 1:
                continue
            t = np.arange(spacing / 2, length, spacing) / length
            nrm = np.array([-seg[1], seg[0]]) / length
            base = a + t[:, None] * seg
            pts.append(np.concatenate([base + off * nrm, base - off * nrm], 0))
    xy = np.concatenate(pts, 0)
    n = len(xy)
    radius = rng.uniform(*style.tree_radius_m, n)
    height = radius * rng.uniform(1.4, 2.6, n) + rng.uniform(1.5, 4.0, n)
    tone = rng.integers(0, len(palette.TREE), n)
    ok = occ.is_free_point(xy[:, 0], xy[:, 1])
    # Thin out trees that would sit inside one another.
    trees = np.concatenate([xy, radius[:, None], height[:, None], tone[:, None]], 1)[ok]
    return trees.astype(np.float32)
