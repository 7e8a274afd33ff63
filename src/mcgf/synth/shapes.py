"""Building parts: footprints and roof heights as pure functions of world coordinates.

A part is a prism (rectangle, round, or rectangular ring = courtyard) with a roof on top.
Complex buildings (L, T, U, towers on podiums, domed rotundas with wings) are unions of
parts; the height field takes the maximum, so overlapping parts just merge.

World frame: x east, y north, z up, metres. A part's local frame is rotated by
``angle`` (radians, counter-clockwise from east): ``u`` along its length, ``v`` across.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPES = ("rect", "round", "ring")
ROOFS = ("flat", "gabled", "hipped", "dome")
WINDOW_STYLES = ("none", "punched", "ribbon", "curtain")


@dataclass(frozen=True)
class Part:
    """One prism of a building; see the module docstring for the frame."""

    shape: str
    cx: float
    cy: float
    angle: float
    hu: float
    hv: float
    wall_h: float
    roof: str = "flat"
    rise: float = 0.0
    ring_w: float = 0.0
    roof_color: int = 0
    wall_color: int = 0
    windows: str = "punched"
    floor_h: float = 3.5
    win_pitch: float = 3.0

    @property
    def radius(self) -> float:
        """Radius of the circle around the centre that holds the footprint."""
        return self.hu if self.shape == "round" else float(np.hypot(self.hu, self.hv))

    @property
    def top(self) -> float:
        """Highest point of the part (m)."""
        return self.wall_h + self.rise


def local_coords(part: Part, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of world points in the part's (u, v) frame."""
    c, s = np.cos(part.angle), np.sin(part.angle)
    dx, dy = x - part.cx, y - part.cy
    return dx * c + dy * s, -dx * s + dy * c


def footprint(part: Part, x: np.ndarray, y: np.ndarray, pad: float = 0.0) -> np.ndarray:
    """Boolean mask of the points inside the part's footprint grown by ``pad`` metres.

    A courtyard's hole is ignored when ``pad > 0`` (padding is for spacing checks).
    """
    u, v = local_coords(part, x, y)
    if part.shape == "round":
        return u * u + v * v <= (part.hu + pad) ** 2
    inside = (np.abs(u) <= part.hu + pad) & (np.abs(v) <= part.hv + pad)
    if part.shape == "ring" and pad <= 0:
        hole = (np.abs(u) < part.hu - part.ring_w) & (np.abs(v) < part.hv - part.ring_w)
        inside &= ~hole
    return inside


def roof_height(
    part: Part, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Surface height and its world gradient over points of the footprint.

    Returns ``(z, dz_dx, dz_dy, edge)`` where ``edge`` is the horizontal distance to the
    nearest outer or courtyard edge (used to paint parapets and eaves).
    """
    u, v = local_coords(part, x, y)
    au, av = np.abs(u), np.abs(v)
    zero = np.zeros_like(u)
    if part.shape == "round":
        r = np.sqrt(u * u + v * v)
        edge = part.hu - r
        if part.roof == "dome" and part.rise > 0:
            q = np.clip(1.0 - (r / part.hu) ** 2, 1e-3, 1.0)
            z = part.rise * np.sqrt(q)
            dz_dr = np.clip(-part.rise * r / (part.hu**2 * np.sqrt(q)), -4.0, 0.0)
            safe = np.maximum(r, 1e-6)
            return part.wall_h + z, dz_dr * u / safe, dz_dr * v / safe, edge
        return part.wall_h + zero, zero, zero, edge
    d_out = np.minimum(part.hu - au, part.hv - av)
    if part.shape == "ring":
        d_in = np.minimum(au - (part.hu - part.ring_w), av - (part.hv - part.ring_w))
        d_in = np.where((au < part.hu - part.ring_w) & (av < part.hv - part.ring_w), -d_in, np.inf)
        edge = np.minimum(d_out, np.abs(d_in))
    else:
        edge = d_out
    if part.roof == "flat" or part.rise <= 0:
        return part.wall_h + zero, zero, zero, edge
    su, sv = np.sign(u), np.sign(v)
    # d_out grows inward from the nearest outer edge; its gradient points inward.
    toward_u = (part.hu - au) < (part.hv - av)
    grad_u = np.where(toward_u, -su, 0.0)
    grad_v = np.where(toward_u, 0.0, -sv)
    if part.shape == "ring":
        # Ridge along the middle of the wing: up from the outer edge, down to the courtyard.
        half = part.ring_w / 2
        z = part.rise * (1.0 - np.abs(d_out - half) / half)
        k = part.rise / half * np.where(d_out < half, 1.0, -1.0)
        gu, gv = k * grad_u, k * grad_v
    elif part.roof == "gabled":
        # Ridge along the long axis.
        if part.hu >= part.hv:
            z = part.rise * (1.0 - av / part.hv)
            gu, gv = zero, -part.rise * sv / part.hv
        else:
            z = part.rise * (1.0 - au / part.hu)
            gu, gv = -part.rise * su / part.hu, zero
    else:
        # Hipped: height grows with the distance to the nearest edge.
        k = part.rise / min(part.hu, part.hv)
        z = k * d_out
        gu, gv = k * grad_u, k * grad_v
    c, s = np.cos(part.angle), np.sin(part.angle)
    return part.wall_h + z, gu * c - gv * s, gu * s + gv * c, edge
