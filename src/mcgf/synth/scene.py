"""Rasterise a :class:`~mcgf.synth.layout.Layout` into a 2.5D scene: height field + maps.

The scene is a square grid of ``n`` × ``n`` cells of ``cell`` metres covering
``[-half_extent, half_extent]``² with **row 0 at the north edge** and column 0 at the
west edge, so a crop of any map is a north-up satellite picture. Per cell it holds the
surface height, the surface gradient (for shading sloped roofs and tree crowns), the
material, the albedo, and the index of the building part that covers it (0 = none),
whose facade style lives in :class:`PartTable` for the renderer's walls.

Ground features are painted with anti-aliased coverage so edges stay clean at any
raster size; buildings and trees write the height field.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from mcgf.synth import palette
from mcgf.synth.layout import Layout, Patch, Road
from mcgf.synth.noise import fractal_noise, lattice_noise
from mcgf.synth.palette import DEFAULT_PALETTE, Material, Palette
from mcgf.synth.patterns import box_filtered_band, box_filtered_wave
from mcgf.synth.shapes import WINDOW_STYLES, footprint, roof_height


@dataclass
class PartTable:
    """Facade attributes per building part; row 0 is "no part"."""

    wall_rgb: np.ndarray
    wall_h: np.ndarray
    floor_h: np.ndarray
    win_pitch: np.ndarray
    windows: np.ndarray
    building: np.ndarray
    target: np.ndarray


@dataclass
class Scene:
    """A rasterised location (see the module docstring for the frame)."""

    half_extent: float
    cell: float
    height: np.ndarray
    grad: np.ndarray
    material: np.ndarray
    albedo: np.ndarray
    part: np.ndarray
    parts: PartTable

    @property
    def n(self) -> int:
        return int(self.height.shape[0])

    @cached_property
    def hmax(self) -> float:
        return float(self.height.max())

    #: Width (cells) of the zero border of :attr:`padded_height`.
    MARCH_PAD = 16

    @cached_property
    def padded_height(self) -> np.ndarray:
        """The height field inside a border of zeros ``MARCH_PAD`` cells wide, so that
        ray marching can look up slightly outside the grid without clipping."""
        return np.pad(self.height, self.MARCH_PAD)

    def cell_index(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, col) of the cells holding world points (may be out of range)."""
        col = np.floor((x + self.half_extent) / self.cell).astype(np.int64)
        row = np.floor((self.half_extent - y) / self.cell).astype(np.int64)
        return row, col

    def cell_coords(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Continuous (row, col) coordinates with cell centres at integers (for resampling)."""
        return ((self.half_extent - y) / self.cell - 0.5, (x + self.half_extent) / self.cell - 0.5)


def grid_size(half_extent: float, cell: float, crop: int) -> int:
    """Cells per side: about ``2*half_extent/cell`` with the same parity as ``crop`` so that
    a centred ``crop``-cell window is exact."""
    n = round(2 * half_extent / cell)
    return n + ((n - crop) % 2)


class _Canvas:
    """Mutable maps being painted, with helpers to address a window in metres."""

    def __init__(self, cell: float, n: int, colours: Palette = DEFAULT_PALETTE) -> None:
        self.c, self.n = cell, n
        self.pal = colours
        centers = (np.arange(n) + 0.5) * cell
        self.xs = (centers - n * cell / 2).astype(np.float32)
        self.ys = (n * cell / 2 - centers).astype(np.float32)
        self.height = np.zeros((n, n), np.float32)
        self.grad = np.zeros((n, n, 2), np.float32)
        self.material = np.full((n, n), Material.GRASS, np.uint8)
        self.albedo = np.zeros((n, n, 3), np.float32)
        self.part = np.zeros((n, n), np.int32)

    def window(self, x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice] | None:
        h = self.n * self.c / 2
        c0 = max(int(np.floor((x0 + h) / self.c)), 0)
        c1 = min(int(np.ceil((x1 + h) / self.c)) + 1, self.n)
        r0 = max(int(np.floor((h - y1) / self.c)), 0)
        r1 = min(int(np.ceil((h - y0) / self.c)) + 1, self.n)
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def xy(self, win: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray]:
        return self.xs[win[1]][None, :], self.ys[win[0]][:, None]

    def paint(self, win: tuple[slice, slice], cover: np.ndarray, color: np.ndarray,
              material: Material | None = None) -> None:
        """Blend ``color`` (RGB or per-cell RGB) in with coverage ``cover`` in [0, 1]."""
        touched = cover > 0
        if not touched.any():
            return
        albedo = self.albedo[win]
        cov = cover[touched][:, None]
        col = color[touched] if np.ndim(color) == 3 else color
        albedo[touched] = albedo[touched] * (1 - cov) + col * cov
        if material is not None:
            self.material[win][cover >= 0.5] = np.uint8(material)


    def paint_cells(self, cells: np.ndarray, cover: np.ndarray, color: np.ndarray,
                    material: Material | None = None) -> None:
        """:meth:`paint` for flat cell indices, ``cover`` and ``color`` given per cell."""
        touched = cover > 0
        if not touched.any():
            return
        cells, cov = cells[touched], cover[touched][:, None]
        col = color[touched] if np.ndim(color) == 2 else color
        albedo = self.albedo.reshape(-1, 3)
        albedo[cells] = albedo[cells] * (1 - cov) + col * cov
        if material is not None:
            self.material.reshape(-1)[cells[cov[:, 0] >= 0.5]] = np.uint8(material)


def _coverage(signed_dist: np.ndarray, cell: float) -> np.ndarray:
    """Anti-aliased coverage of a shape from its signed distance (negative inside)."""
    return np.clip(0.5 - signed_dist / cell, 0.0, 1.0)


def _paint_ground(cv: _Canvas, rng: np.random.Generator, field_extent: float, dry_grass: float = 0.7) -> np.ndarray:
    broad = fractal_noise(rng, field_extent, 60.0, cv.xs, cv.ys, octaves=3)
    dry = fractal_noise(rng, field_extent, 25.0, cv.xs, cv.ys, octaves=2)
    fine = lattice_noise(rng, field_extent, 2.5, cv.xs, cv.ys)
    g0, g1, g2 = cv.pal.grass
    t = np.clip(broad * 0.9 + 0.5, 0, 1)[..., None]
    grass = g0 * (1 - t) + g1 * t
    d = np.clip(dry * 1.6 - 0.5, 0, 1)[..., None] * dry_grass
    cv.albedo[...] = (grass * (1 - d) + g2 * d) * (1 + 0.08 * fine[..., None])
    return fine


def _paint_patch(cv: _Canvas, p: Patch, fine: np.ndarray) -> None:
    r = max(p.hu, p.hv) + 2 * cv.c
    win = cv.window(p.cx - r, p.cx + r, p.cy - r, p.cy + r)
    if win is None:
        return
    x, y = cv.xy(win)
    c, s = np.cos(p.angle), np.sin(p.angle)
    u = (x - p.cx) * c + (y - p.cy) * s
    v = -(x - p.cx) * s + (y - p.cy) * c
    if p.shape == "ellipse":
        q = np.sqrt((u / p.hu) ** 2 + (v / p.hv) ** 2)
        sd = (q - 1) * min(p.hu, p.hv)
    else:
        sd = np.maximum(np.abs(u) - p.hu, np.abs(v) - p.hv)
    fw = cv.c
    f = fine[win][..., None]
    if p.kind == "plaza":
        tiles = 1 - 0.06 * np.maximum(box_filtered_wave(u, 6.0, 0.08, fw), box_filtered_wave(v, 6.0, 0.08, fw))
        cv.paint(win, _coverage(sd, cv.c), cv.pal.plaza * tiles[..., None] * (1 + 0.04 * f), Material.PAVEMENT)
    elif p.kind == "parking":
        cv.paint(win, _coverage(sd, cv.c), cv.pal.parking * (1 + 0.05 * f), Material.PARKING)
        stalls = box_filtered_wave(u + 1.3 + 0.06, 2.6, 0.12 / 2.6, fw) * (np.abs(v) > p.hv - 5.2)
        edge = box_filtered_band(np.abs(v), p.hv - 5.3, p.hv - 5.1, fw)
        lines = np.clip(stalls + edge, 0, 1) * (sd < -0.5)
        cv.paint(win, lines * 0.85, palette.MARKING_WHITE)
    elif p.kind == "water":
        cv.paint(win, _coverage(sd + 2.5 * fine[win], cv.c), cv.pal.water * (1 + 0.05 * f), Material.WATER)
    elif p.kind == "dirt":
        cv.paint(win, _coverage(sd + 2.0 * fine[win], cv.c), cv.pal.dirt * (1 + 0.1 * f), Material.DIRT)
    elif p.kind == "field":
        stripes = 1 + 0.07 * (box_filtered_wave(u, 10.0, 0.5, fw) - 0.5)
        cv.paint(win, _coverage(sd, cv.c), cv.pal.field * stripes[..., None], Material.FIELD)
        lines = np.maximum(box_filtered_band(sd, -3.2, -2.9, fw), box_filtered_band(np.abs(u), 0, 0.15, fw))
        circle = box_filtered_band(np.abs(np.hypot(u, v) - 8.0), 0, 0.15, fw)
        cv.paint(win, np.maximum(lines, circle) * (sd < -2.5) * 0.9, palette.MARKING_WHITE)
    elif p.kind == "track":
        cv.paint(win, _coverage(sd, cv.c), cv.pal.track * (1 + 0.04 * f), Material.TRACK)
        inner = (np.sqrt((u / (p.hu - 8)) ** 2 + (v / (p.hv - 8)) ** 2) - 1) * (min(p.hu, p.hv) - 8)
        lanes = box_filtered_wave(sd, 1.25, 0.1, fw) * (sd < 0) * (inner > 0) * 0.5
        cv.paint(win, lanes, palette.MARKING_WHITE)
        cv.paint(win, _coverage(inner, cv.c), cv.pal.field, Material.FIELD)


def _segment_fields(x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Distance to segment ab and the arc-length position of the closest point."""
    ab = (b - a).astype(np.float64)
    length = float(np.hypot(*ab))
    t = np.clip(((x - a[0]) * ab[0] + (y - a[1]) * ab[1]) / max(length**2, 1e-9), 0, 1)
    d = np.hypot(x - a[0] - t * ab[0], y - a[1] - t * ab[1])
    return d.astype(np.float32), (t * length).astype(np.float32)


def _paint_roads(cv: _Canvas, roads: list[Road], fine: np.ndarray) -> None:
    if not roads:
        return
    n = cv.n
    best_d = np.full((n, n), np.inf, np.float32)
    best_s = np.zeros((n, n), np.float32)
    best_r = np.full((n, n), -1, np.int32)
    on_asphalt = np.zeros((n, n), np.int16)
    for ri, road in enumerate(roads):
        reach = road.width / 2 + road.sidewalk + 2 * cv.c
        lo = road.points.min(0) - reach
        hi = road.points.max(0) + reach
        win = cv.window(float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))
        if win is None:
            continue
        rd = np.full((win[0].stop - win[0].start, win[1].stop - win[1].start), np.inf, np.float32)
        rs = np.zeros_like(rd)
        s0 = 0.0
        for a, b in zip(road.points[:-1], road.points[1:], strict=True):
            seg = cv.window(float(min(a[0], b[0]) - reach), float(max(a[0], b[0]) + reach),
                            float(min(a[1], b[1]) - reach), float(max(a[1], b[1]) + reach))
            length = float(np.hypot(*(b - a)))
            if seg is not None:
                x, y = cv.xy(seg)
                d, sv = _segment_fields(x, y, a, b)
                local = (slice(seg[0].start - win[0].start, seg[0].stop - win[0].start),
                         slice(seg[1].start - win[1].start, seg[1].stop - win[1].start))
                closer = d < rd[local]
                rd[local] = np.where(closer, d, rd[local])
                rs[local] = np.where(closer, sv + s0, rs[local])
            s0 += length
        on_asphalt[win] += (rd <= road.width / 2).astype(np.int16)
        closer = rd < best_d[win]
        best_d[win] = np.where(closer, rd, best_d[win])
        best_s[win] = np.where(closer, rs, best_s[win])
        best_r[win] = np.where(closer, ri, best_r[win])

    # Paint only the cells a road can reach (a small part of the grid).
    width = np.array([rd.width for rd in roads], np.float32)
    walk = np.array([rd.sidewalk for rd in roads], np.float32)
    kinds = np.array([["avenue", "street", "path"].index(rd.kind) for rd in roads])
    reach = np.where(best_r >= 0, width[np.maximum(best_r, 0)] / 2 + walk[np.maximum(best_r, 0)] + cv.c, -1)
    cells = np.flatnonzero(best_d <= reach)
    if cells.size == 0:
        return
    d, s, r = best_d.reshape(-1)[cells], best_s.reshape(-1)[cells], best_r.reshape(-1)[cells]
    hw, kind = width[r] / 2, kinds[r]
    f = fine.reshape(-1)[cells][:, None]
    is_path = kind == 2
    side = _coverage(d - hw - walk[r], cv.c) * (~is_path)
    cv.paint_cells(cells, side, cv.pal.pavement * (1 + 0.04 * f), Material.PAVEMENT)
    cv.paint_cells(cells, _coverage(d - hw, cv.c) * is_path, cv.pal.plaza * (1 + 0.04 * f), Material.PAVEMENT)
    asphalt = _coverage(d - hw, cv.c) * (~is_path)
    cv.paint_cells(cells, asphalt, cv.pal.asphalt * (1 + 0.06 * f), Material.ROAD)

    fw = cv.c
    single = on_asphalt.reshape(-1)[cells] <= 1
    dashes = box_filtered_wave(s, 9.0, 0.35, fw)
    street = (kind == 1) & single
    avenue = (kind == 0) & single
    centre_dash = box_filtered_band(d, -0.15, 0.15, fw) * dashes * street
    yellow = box_filtered_band(d, 0.12, 0.42, fw) * avenue
    lanes = box_filtered_band(np.abs(d - hw / 2), 0, 0.15, fw) * dashes * avenue
    edges = box_filtered_band(d, hw - 0.7, hw - 0.4, fw) * avenue
    cv.paint_cells(cells, np.clip(centre_dash + lanes + edges, 0, 1) * 0.9, palette.MARKING_WHITE)
    cv.paint_cells(cells, yellow * 0.9, palette.MARKING_YELLOW)


def _stamp(cv: _Canvas, x: np.ndarray, y: np.ndarray, reach: float
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cells in a square of ``reach`` metres around each item, vectorised over items.

    Returns item index, flat cell index, and the offsets (dx, dy) of each cell centre
    from its item, for cells inside the grid.
    """
    h = cv.n * cv.c / 2
    k = int(np.ceil(reach / cv.c)) + 1
    off = np.arange(-k, k + 1)
    col0 = np.floor((x + h) / cv.c).astype(np.int64)
    row0 = np.floor((h - y) / cv.c).astype(np.int64)
    rows = row0[:, None, None] + off[None, :, None]
    cols = col0[:, None, None] + off[None, None, :]
    rows, cols = np.broadcast_arrays(rows, cols)
    item = np.broadcast_to(np.arange(len(x))[:, None, None], rows.shape)
    ok = (rows >= 0) & (rows < cv.n) & (cols >= 0) & (cols < cv.n)
    rows, cols, item = rows[ok], cols[ok], item[ok]
    dx = cv.xs[cols] - x[item]
    dy = cv.ys[rows] - y[item]
    return item, rows * cv.n + cols, dx, dy, rows


def _write_max(cv: _Canvas, flat: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep, per cell, the stamped element with the largest ``z`` (deterministically).

    Returns the indices (into the stamp arrays) of the winners and their cells.
    """
    order = np.lexsort((z, flat))
    flat_sorted = flat[order]
    last = np.ones(len(order), bool)
    last[:-1] = flat_sorted[1:] != flat_sorted[:-1]
    winners = order[last]
    return winners, flat[winners]


def _paint_cars(cv: _Canvas, cars: np.ndarray) -> None:
    if len(cars) == 0:
        return
    x, y, ang, color = cars[:, 0], cars[:, 1], cars[:, 2], cars[:, 3].astype(int)
    item, flat, dx, dy, _ = _stamp(cv, x, y, 2.6)
    c, s = np.cos(ang[item]), np.sin(ang[item])
    u = dx * c + dy * s
    v = -dx * s + dy * c
    inside = (np.abs(u) <= 2.2) & (np.abs(v) <= 0.9)
    item, flat, u = item[inside], flat[inside], u[inside]
    z = np.full(len(flat), 1.45, np.float32)
    winners, cells = _write_max(cv, flat, z)
    rgb = palette.CARS[color[item[winners]]]
    glass = (np.abs(u[winners]) > 0.4) & (np.abs(u[winners]) < 1.3)
    rgb = np.where(glass[:, None], palette.GLASS, rgb)
    cv.height.reshape(-1)[cells] = 1.45
    cv.material.reshape(-1)[cells] = Material.CAR
    cv.albedo.reshape(-1, 3)[cells] = rgb


def _paint_trees(cv: _Canvas, trees: np.ndarray, rng: np.random.Generator, field_extent: float) -> None:
    if len(trees) == 0:
        return
    x, y, radius, top, tone = (trees[:, i] for i in range(5))
    item, flat, dx, dy, _ = _stamp(cv, x, y, float(radius.max()))
    r = np.hypot(dx, dy)
    rad = radius[item]
    inside = r < rad
    item, flat, r, dx, dy, rad = item[inside], flat[inside], r[inside], dx[inside], dy[inside], rad[inside]
    q = np.sqrt(np.clip(1 - (r / rad) ** 2, 0.02, 1))
    # Half-ellipsoid crowns reaching down to a quarter of the tree's height, so that
    # from the side a tree is a rounded crown rather than a cylinder.
    depth = 0.75 * top[item]
    z = top[item] - depth * (1 - q)
    winners, cells = _write_max(cv, flat, z)
    zw = z[winners]
    higher = zw > cv.height.reshape(-1)[cells]
    winners, cells, zw = winners[higher], cells[higher], zw[higher]
    dz_dr = -depth[winners] * (r[winners] / rad[winners] ** 2) / q[winners]
    dz_dr = np.clip(dz_dr, -3.0, 0.0)
    safe = np.maximum(r[winners], 1e-6)
    cv.height.reshape(-1)[cells] = zw
    cv.grad.reshape(-1, 2)[cells] = np.stack([dz_dr * dx[winners] / safe, dz_dr * dy[winners] / safe], 1)
    cv.material.reshape(-1)[cells] = Material.TREE
    # Crowns: a tone per tree, leafy speckle, darker rims.
    leaf = lattice_noise(rng, field_extent, 1.2, cv.xs, cv.ys).reshape(-1)[cells]
    shade = (0.8 + 0.25 * q[winners] + 0.18 * leaf)[:, None]
    cv.albedo.reshape(-1, 3)[cells] = cv.pal.trees[tone[item[winners]].astype(int)] * shade


def _paint_buildings(cv: _Canvas, layout: Layout, fine: np.ndarray) -> PartTable:
    # Row 0 of every column stands for "no building part".
    rows_rgb: list[np.ndarray] = [np.zeros(3, np.float32)]
    wall_h, floor_h, pitch = [0.0], [0.0], [1.0]
    windows, building, target = [0], [-1], [False]
    pid = 0
    for bi, b in enumerate(layout.buildings):
        for p in b.parts:
            pid += 1
            rows_rgb.append(cv.pal.walls[p.wall_color])
            wall_h.append(p.wall_h)
            floor_h.append(p.floor_h)
            pitch.append(p.win_pitch)
            windows.append(WINDOW_STYLES.index(p.windows))
            building.append(bi)
            target.append(b.target)
            r = p.radius + 2 * cv.c
            win = cv.window(p.cx - r, p.cx + r, p.cy - r, p.cy + r)
            if win is None:
                continue
            x, y = cv.xy(win)
            x, y = np.broadcast_arrays(x, y)
            mask = footprint(p, x, y)
            z, gx, gy, edge = roof_height(p, x, y)
            write = mask & ((cv.part[win] == 0) | (z >= cv.height[win]))
            if not write.any():
                continue
            base = cv.pal.roofs[p.roof_color]
            tint = 1 + 0.07 * fine[win]
            if p.roof == "flat":
                # Parapet rim and a slightly weathered membrane.
                tint = tint * np.where(edge < 0.7, 0.82, 1.0)
            elif p.roof in ("gabled", "hipped"):
                tint = tint * (1 - 0.05 * box_filtered_wave(z, 0.6, 0.5, cv.c * 0.3))
            cv.height[win] = np.where(write, z, cv.height[win])
            cv.grad[win] = np.where(write[..., None], np.stack([gx, gy], -1), cv.grad[win])
            cv.material[win] = np.where(write, np.uint8(Material.ROOF), cv.material[win])
            cv.part[win] = np.where(write, pid, cv.part[win])
            cv.albedo[win] = np.where(write[..., None], base * tint[..., None], cv.albedo[win])
    return PartTable(
        wall_rgb=np.stack(rows_rgb).astype(np.float32),
        wall_h=np.array(wall_h, np.float32),
        floor_h=np.array(floor_h, np.float32),
        win_pitch=np.array(pitch, np.float32),
        windows=np.array(windows, np.int8),
        building=np.array(building, np.int32),
        target=np.array(target, bool),
    )


def rasterize(layout: Layout, cell: float, n: int, rng: np.random.Generator,
              colours: Palette = DEFAULT_PALETTE, dry_grass: float = 0.7) -> Scene:
    """Paint ``layout`` on an ``n`` × ``n`` grid of ``cell`` metres centred on the origin,
    in the colours of ``colours``; ``dry_grass`` (0–1) is how far the driest grass
    patches turn to the dry tone.

    ``rng`` drives the texture noise only (the layout is already fixed); its draws do
    not depend on ``cell`` or ``n``, so textures match across raster sizes and a smaller
    grid is an exact crop of a larger one (up to objects reaching in from outside).
    """
    cv = _Canvas(cell, n, colours)
    fine = _paint_ground(cv, rng, layout.half_extent, dry_grass)
    for patch in layout.patches:
        _paint_patch(cv, patch, fine)
    _paint_roads(cv, layout.roads, fine)
    _paint_cars(cv, layout.cars)
    _paint_trees(cv, layout.trees, rng, layout.half_extent)
    parts = _paint_buildings(cv, layout, fine)
    return Scene(
        half_extent=n * cell / 2, cell=cell, height=cv.height, grad=cv.grad,
        material=cv.material, albedo=np.clip(cv.albedo, 0, 1), part=cv.part, parts=parts,
    )
