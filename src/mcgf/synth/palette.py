"""Materials and the colour palette shared by every synthetic location.

All locations draw their colours from these same tables, so no single colour identifies
a place: what tells locations apart is the layout (footprints, heights, roads, trees).
Colours are linear-ish RGB in [0, 1]; shading multiplies them.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Material(IntEnum):
    """What a scene cell (or a rendered pixel) shows."""

    SKY = 0
    GRASS = 1
    DIRT = 2
    PAVEMENT = 3
    ROAD = 4
    PARKING = 5
    WATER = 6
    FIELD = 7
    TRACK = 8
    TREE = 9
    ROOF = 10
    WALL = 11
    CAR = 12


def rgb(*values: float) -> np.ndarray:
    """A float32 RGB triple."""
    return np.asarray(values, dtype=np.float32)


GRASS = (rgb(0.33, 0.42, 0.20), rgb(0.42, 0.47, 0.25), rgb(0.50, 0.49, 0.32))
DIRT = rgb(0.52, 0.45, 0.35)
PAVEMENT = rgb(0.66, 0.64, 0.60)
PLAZA = rgb(0.64, 0.61, 0.57)
ASPHALT = rgb(0.29, 0.29, 0.30)
PARKING_ASPHALT = rgb(0.34, 0.34, 0.35)
MARKING_WHITE = rgb(0.90, 0.90, 0.86)
MARKING_YELLOW = rgb(0.86, 0.72, 0.26)
WATER = rgb(0.16, 0.25, 0.29)
FIELD = rgb(0.28, 0.50, 0.23)
TRACK = rgb(0.60, 0.30, 0.24)
TREE = (rgb(0.16, 0.27, 0.11), rgb(0.21, 0.32, 0.13), rgb(0.26, 0.35, 0.16))

#: Roof colours: concrete, light membrane, dark bitumen, terracotta, brown, white,
#: copper green, slate.
ROOFS = np.stack([
    rgb(0.55, 0.55, 0.54),
    rgb(0.70, 0.70, 0.68),
    rgb(0.38, 0.38, 0.40),
    rgb(0.58, 0.31, 0.24),
    rgb(0.48, 0.39, 0.32),
    rgb(0.80, 0.79, 0.75),
    rgb(0.36, 0.47, 0.43),
    rgb(0.43, 0.45, 0.50),
])

#: Facade colours: beige, grey, brick, white, brown-grey, sandstone, concrete blue-grey.
WALLS = np.stack([
    rgb(0.76, 0.72, 0.63),
    rgb(0.66, 0.66, 0.66),
    rgb(0.58, 0.32, 0.25),
    rgb(0.84, 0.83, 0.79),
    rgb(0.52, 0.47, 0.42),
    rgb(0.70, 0.62, 0.48),
    rgb(0.55, 0.58, 0.62),
])

GLASS = rgb(0.16, 0.21, 0.26)
CARS = np.stack([
    rgb(0.85, 0.85, 0.85),
    rgb(0.12, 0.12, 0.13),
    rgb(0.50, 0.51, 0.53),
    rgb(0.60, 0.12, 0.10),
    rgb(0.15, 0.22, 0.45),
    rgb(0.70, 0.68, 0.62),
])

SKY_ZENITH = rgb(0.42, 0.60, 0.85)
SKY_HORIZON = rgb(0.80, 0.85, 0.90)
HAZE = rgb(0.74, 0.78, 0.82)
