"""First-hit ray casting against a height field, vectorised over rays.

Each ray is clipped to the part of its path that can hit anything: from where it
descends below the tallest object (or enters the grid) to where it reaches the ground
(or leaves the grid; outside the grid the world is flat ground). That span is sampled
at half-cell horizontal steps, in chunks of samples for all still-unresolved rays at
once; the first sample below the surface wins, so near objects occlude far ones.

The hit is then refined: if the previous sample was above the hit cell's height the ray
came down through the top (roof, ground, tree crown); otherwise it entered the cell
through a side face, which is a **wall** when the cell belongs to a building part other
than the one the ray came from. The wall's face (and outward normal) is the cell
boundary the ray crossed last.

Testing samples in rounds lets the rays that have hit drop out early, which matters
more than skipping empty space: coarse block-maximum skipping was tried and did not
pay for itself, because the span below the tallest object is short and most rays
end on ground among trees and low buildings that such bounds cannot rule out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcgf.synth.scene import Scene

SKY, TOP, WALL = 0, 1, 2


@dataclass
class Hits:
    """Per-ray results: ``kind`` is SKY, TOP or WALL; ``t`` the distance along the ray
    (``inf`` for sky); ``point`` the hit point; ``part`` the building part of the hit
    cell (0 for none); ``normal`` the surface normal of walls (zero otherwise);
    ``side`` marks TOP hits that entered their cell through a side (flanks of tree
    crowns, cars), which the renderer shades darker."""

    kind: np.ndarray
    t: np.ndarray
    point: np.ndarray
    part: np.ndarray
    normal: np.ndarray
    side: np.ndarray


def _grid_span(scene: Scene, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Parameter interval over which each ray is above the grid square (slab method)."""
    e = scene.half_extent
    lo = np.zeros(len(d), np.float64)
    hi = np.full(len(d), np.inf)
    for axis in (0, 1):
        da = d[:, axis]
        with np.errstate(divide="ignore", invalid="ignore"):
            t_a = (-e - o[:, axis]) / da
            t_b = (e - o[:, axis]) / da
        flat = np.abs(da) < 1e-12
        inside = np.abs(o[:, axis]) < e
        t_a = np.where(flat, np.where(inside, -np.inf, np.inf), t_a)
        t_b = np.where(flat, np.where(inside, np.inf, -np.inf), t_b)
        lo = np.maximum(lo, np.minimum(t_a, t_b))
        hi = np.minimum(hi, np.maximum(t_a, t_b))
    return lo, hi


def cast_rays(scene: Scene, origins: np.ndarray, directions: np.ndarray,
              step_cells: float = 0.5, chunk: int = 16) -> Hits:
    """Cast rays ``origins`` (3,) or (R, 3) along unit ``directions`` (R, 3).

    ``step_cells`` is the horizontal sampling step in cells; ``chunk`` the number of
    samples tested per ray and round (rays that hit drop out after each round).
    """
    d = np.asarray(directions, np.float64)
    o = np.broadcast_to(np.asarray(origins, np.float64), d.shape)
    r = len(d)
    n, c, e = scene.n, scene.cell, scene.half_extent
    hflat = scene.padded_height.reshape(-1)
    stride = n + 2 * scene.MARCH_PAD
    dz = d[:, 2]
    down = dz < -1e-9
    with np.errstate(divide="ignore"):
        t_ground = np.where(down, o[:, 2] / -dz, np.inf)
        t_top = np.where(down, np.maximum((o[:, 2] - (scene.hmax + 1e-3)) / -dz, 0.0), np.inf)
    g_lo, g_hi = _grid_span(scene, o, d)
    t0 = np.maximum(t_top, g_lo)
    t1 = np.minimum(t_ground, g_hi)

    kind = np.where(down, TOP, SKY).astype(np.int8)
    t_hit = t_ground.copy()
    normal = np.zeros((r, 3), np.float32)
    part = np.zeros(r, np.int32)
    side = np.zeros(r, bool)

    march = np.nonzero(down & (t0 < t1))[0]
    t0m, t1m = t0[march], t1[march]
    hs = np.hypot(d[march, 0], d[march, 1])
    steps = np.maximum(np.ceil((t1m - t0m) * hs / (step_cells * c)), 1).astype(np.int64)
    dt = (t1m - t0m) / steps
    # Sample positions in grid units (float32 is plenty for a few thousand cells).
    inv = 1.0 / c
    gx0 = ((o[march, 0] + d[march, 0] * t0m + e) * inv).astype(np.float32)
    gy0 = ((e - o[march, 1] - d[march, 1] * t0m) * inv).astype(np.float32)
    z0 = (o[march, 2] + d[march, 2] * t0m).astype(np.float32)
    sx = (d[march, 0] * dt * inv).astype(np.float32)
    sy = (-d[march, 1] * dt * inv).astype(np.float32)
    sz = (d[march, 2] * dt).astype(np.float32)
    # Every round tests the next ``chunk`` samples of all unresolved rays. A ray may
    # sample up to ``chunk`` steps past its end: the zero border of the padded height
    # field is wider than that, and a hit found past the end is the ground (the default).
    pad = scene.MARCH_PAD
    offset = pad * stride + pad
    active = np.arange(len(march))
    chunk = int(min(chunk, steps.max(initial=0) + 1, 2 * pad - 2))
    found_ray, found_k, found_flat = [], [], []
    k0 = 0
    while active.size:
        ks = (k0 + np.arange(chunk, dtype=np.float32))[None, :]
        flat = ((gy0[active, None] + sy[active, None] * ks).astype(np.int32) * stride
                + (gx0[active, None] + sx[active, None] * ks).astype(np.int32) + offset)
        hit = z0[active, None] + sz[active, None] * ks <= hflat[flat]
        has = hit.any(1)
        rows_h = np.flatnonzero(has)
        if rows_h.size:
            first = hit[rows_h].argmax(1)
            found_ray.append(active[rows_h])
            found_k.append(k0 + first)
            found_flat.append(flat[rows_h, first])
        active = active[~has & (k0 + chunk <= steps[active])]
        k0 += chunk
    if found_ray:
        a = np.concatenate(found_ray)
        k = np.concatenate(found_k)
        flat = np.concatenate(found_flat).astype(np.int64)
        real = k <= steps[a]
        a, k, flat = a[real], k[real], flat[real]
        row, col = np.divmod(flat - offset, stride)
        _refine(scene, o, d, march[a], t0m[a] + dt[a] * k, dt[a],
                np.clip(row, 0, n - 1), np.clip(col, 0, n - 1), kind, t_hit, normal, part, side)
    point = (o + d * np.where(np.isfinite(t_hit), t_hit, 0.0)[:, None]).astype(np.float32)
    return Hits(kind=kind, t=t_hit, point=point, part=part, normal=normal, side=side)


def _refine(scene: Scene, o: np.ndarray, d: np.ndarray, ray: np.ndarray, t_k: np.ndarray,
            dt: np.ndarray, row_k: np.ndarray, col_k: np.ndarray, kind: np.ndarray,
            t_hit: np.ndarray, normal: np.ndarray, part: np.ndarray, side: np.ndarray) -> None:
    """Classify first hits as top or wall and compute their exact position (in place)."""
    n, c, e = scene.n, scene.cell, scene.half_extent
    oo, dd = o[ray], d[ray]
    t_p = t_k - dt
    xp = oo[:, 0] + dd[:, 0] * t_p
    yp = oo[:, 1] + dd[:, 1] * t_p
    zp = oo[:, 2] + dd[:, 2] * t_p
    row_p, col_p = scene.cell_index(xp, yp)
    inside_p = (row_p >= 0) & (row_p < n) & (col_p >= 0) & (col_p < n)
    rp, cp = np.clip(row_p, 0, n - 1), np.clip(col_p, 0, n - 1)
    h_k = scene.height[row_k, col_k]
    part_k = scene.part[row_k, col_k]
    part_p = np.where(inside_p, scene.part[rp, cp], 0)

    moved = (row_p != row_k) | (col_p != col_k)
    entered_side = (zp <= h_k) & moved
    wall = entered_side & (part_k > 0) & (part_p != part_k)
    # Boundary crossings into the hit cell along x and y.
    dcol, drow = col_k - col_p, row_k - row_p
    with np.errstate(divide="ignore", invalid="ignore"):
        xb = -e + c * np.where(dcol > 0, col_k, col_k + 1)
        tx = np.where(dcol != 0, (xb - oo[:, 0]) / dd[:, 0], -np.inf)
        yb = e - c * np.where(drow > 0, row_k, row_k + 1)
        ty = np.where(drow != 0, (yb - oo[:, 1]) / dd[:, 1], -np.inf)
    t_entry = np.maximum(tx, ty)
    z_entry = oo[:, 2] + dd[:, 2] * t_entry
    through_side = np.isfinite(t_entry) & (z_entry <= h_k + 1e-6)
    wall &= through_side
    side[ray] = entered_side & through_side & (part_k == 0)

    t_roof = np.clip((h_k - oo[:, 2]) / dd[:, 2], t_p, t_k)
    t_final = np.where(wall | side[ray], np.clip(t_entry, t_p, t_k), t_roof)
    kind[ray] = np.where(wall, WALL, TOP)
    t_hit[ray] = t_final
    part[ray] = part_k
    x_face = tx >= ty
    nx = np.where(wall & x_face, -np.sign(dd[:, 0]), 0.0)
    ny = np.where(wall & ~x_face, -np.sign(dd[:, 1]), 0.0)
    normal[ray] = np.stack([nx, ny, np.zeros_like(nx)], 1)
