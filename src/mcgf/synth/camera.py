"""Drone camera poses on a descending orbit, and the rays of a pinhole camera.

Like University-1652's drone views, view 1 is the first and highest point of a spiral
around the target building and the last is the lowest; the camera always looks at the
target. Headings are compass bearings of the viewing direction (0° = looking north,
90° = looking east).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class OrbitSpec:
    """Shape of the drone orbit: altitude and pitch go linearly from the first view's
    values to the last's while the heading turns ``turns`` full circles."""

    altitude_first_m: float = 150.0
    altitude_last_m: float = 85.0
    pitch_first_deg: float = 52.0
    pitch_last_deg: float = 40.0
    fov_deg: float = 50.0
    turns: float = 1.0
    altitude_jitter: float = 0.04
    heading_jitter_deg: float = 4.0
    aim_jitter_m: float = 3.0


@dataclass(frozen=True)
class Pose:
    """Where a drone view was taken from; angles in degrees, distances in metres."""

    heading_deg: float
    pitch_deg: float
    altitude_m: float
    distance_m: float
    fov_deg: float
    position: tuple[float, float, float]
    target: tuple[float, float, float]

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        return {k: (round(v, 3) if isinstance(v, float) else [round(c, 3) for c in v]) for k, v in d.items()}


def pose_looking_at(target: tuple[float, float, float], heading_deg: float, pitch_deg: float,
                    altitude_m: float, fov_deg: float) -> Pose:
    """The pose at ``altitude_m`` that sees ``target`` straight ahead along ``heading_deg``,
    ``pitch_deg`` below the horizon."""
    h = np.radians(heading_deg)
    dz = altitude_m - target[2]
    dist = dz / np.tan(np.radians(pitch_deg))
    pos = (target[0] - dist * np.sin(h), target[1] - dist * np.cos(h), altitude_m)
    return Pose(float(heading_deg % 360), float(pitch_deg), float(altitude_m), float(dist),
                float(fov_deg), tuple(float(v) for v in pos), tuple(float(v) for v in target))  # type: ignore[arg-type]


def orbit_poses(n_views: int, rng: np.random.Generator, spec: OrbitSpec = OrbitSpec()) -> list[Pose]:
    """``n_views`` poses spiralling down around the origin; the start bearing is random."""
    start = float(rng.uniform(0, 360))
    poses = []
    for i in range(n_views):
        f = i / max(n_views - 1, 1)
        heading = start + spec.turns * 360.0 * i / n_views + rng.uniform(-1, 1) * spec.heading_jitter_deg
        alt = (spec.altitude_first_m + f * (spec.altitude_last_m - spec.altitude_first_m))
        alt *= 1 + rng.uniform(-1, 1) * spec.altitude_jitter
        pitch = spec.pitch_first_deg + f * (spec.pitch_last_deg - spec.pitch_first_deg)
        aim = (float(rng.uniform(-1, 1) * spec.aim_jitter_m), float(rng.uniform(-1, 1) * spec.aim_jitter_m), 0.0)
        poses.append(pose_looking_at(aim, heading, pitch, alt, spec.fov_deg))
    return poses


def camera_rays(pose: Pose, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Origin (3,) and unit directions (size*size, 3) of the pixels, row-major, top row first."""
    pos = np.array(pose.position, np.float64)
    fwd = np.array(pose.target, np.float64) - pos
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    half = np.tan(np.radians(pose.fov_deg) / 2)
    t = (np.arange(size) + 0.5) / size * 2 - 1
    px = t[None, :] * half
    py = -t[:, None] * half
    d = fwd[None, None, :] + px[..., None] * right + py[..., None] * up
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    return pos, d.reshape(-1, 3)
