"""Materials and the colour palette shared by every synthetic location.

All locations draw their colours from these same tables, so no single colour identifies
a place: what tells locations apart is the layout (footprints, heights, roads, trees).
Colours are linear-ish RGB in [0, 1]; shading multiplies them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from numpy.typing import ArrayLike


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


#: The colours a style may change, with the number of RGB triples each holds. Lists
#: are slots with fixed roles (layouts pick slots, palettes fill them), so a palette
#: never changes where anything is.
PALETTE_SLOTS: dict[str, int] = {
    "grass": 3, "dirt": 1, "pavement": 1, "plaza": 1, "asphalt": 1, "parking": 1, "water": 1,
    "field": 1, "track": 1, "trees": 3, "roofs": 8, "walls": 7,
}


@dataclass(frozen=True, eq=False)
class Palette:
    """Ground, road, vegetation and building colours of one style (float32 RGB in [0, 1]).

    ``grass`` holds the lush, mid and dry grass tones; ``trees`` three crown tones;
    ``roofs`` eight slots in the roles concrete, light membrane, dark bitumen,
    terracotta, brown, white, copper green, slate (pitched roofs favour slots 3, 4
    and 7; rooftop plant boxes use 0, 1 and 5); ``walls`` seven facade colours.
    """

    grass: np.ndarray
    dirt: np.ndarray
    pavement: np.ndarray
    plaza: np.ndarray
    asphalt: np.ndarray
    parking: np.ndarray
    water: np.ndarray
    field: np.ndarray
    track: np.ndarray
    trees: np.ndarray
    roofs: np.ndarray
    walls: np.ndarray

    def to_dict(self) -> dict[str, list]:  # type: ignore[type-arg]
        """Colours rounded to 4 decimals, single colours as one triple (for metadata)."""
        out = {}
        for name, count in PALETTE_SLOTS.items():
            value = np.round(getattr(self, name).astype(np.float64), 4)
            out[name] = value.tolist() if count > 1 else value.reshape(3).tolist()
        return out

    def with_colors(self, overrides: Mapping[str, ArrayLike]) -> Palette:
        """A copy with some colours replaced (each of the replaced colour's shape)."""
        fields = {name: getattr(self, name) for name in PALETTE_SLOTS}
        fields.update({k: np.asarray(v, np.float32).reshape(fields[k].shape) for k, v in overrides.items()})
        return Palette(**fields)


DEFAULT_PALETTE = Palette(
    grass=np.stack(GRASS), dirt=DIRT, pavement=PAVEMENT, plaza=PLAZA, asphalt=ASPHALT,
    parking=PARKING_ASPHALT, water=WATER, field=FIELD, track=TRACK, trees=np.stack(TREE),
    roofs=ROOFS, walls=WALLS,
)

#: A small European town: lush lawns, warm sandstone paving, dark fresh asphalt,
#: mostly clay-tile roofs and pastel rendered facades.
TOWN_PALETTE = Palette(
    grass=np.stack([rgb(0.24, 0.44, 0.16), rgb(0.32, 0.52, 0.20), rgb(0.50, 0.54, 0.28)]),
    dirt=rgb(0.60, 0.48, 0.33),
    pavement=rgb(0.74, 0.69, 0.60),
    plaza=rgb(0.72, 0.63, 0.52),
    asphalt=rgb(0.22, 0.22, 0.24),
    parking=rgb(0.28, 0.28, 0.30),
    water=rgb(0.12, 0.27, 0.31),
    field=rgb(0.26, 0.50, 0.20),
    track=rgb(0.66, 0.36, 0.26),
    trees=np.stack([rgb(0.11, 0.25, 0.10), rgb(0.15, 0.31, 0.12), rgb(0.21, 0.36, 0.13)]),
    # Same roles as ROOFS, with warm clay tiles in most slots.
    roofs=np.stack([
        rgb(0.62, 0.33, 0.24),   # concrete slot: weathered clay
        rgb(0.66, 0.62, 0.56),   # light membrane
        rgb(0.32, 0.30, 0.30),   # dark bitumen
        rgb(0.70, 0.30, 0.18),   # terracotta
        rgb(0.52, 0.28, 0.20),   # brown tile
        rgb(0.74, 0.42, 0.26),   # white slot: orange tile
        rgb(0.34, 0.40, 0.44),   # copper slot: grey-blue slate
        rgb(0.30, 0.31, 0.36),   # slate
    ]),
    walls=np.stack([
        rgb(0.88, 0.81, 0.64),   # cream
        rgb(0.84, 0.66, 0.42),   # ochre
        rgb(0.84, 0.64, 0.60),   # salmon
        rgb(0.92, 0.90, 0.85),   # white render
        rgb(0.70, 0.76, 0.62),   # sage
        rgb(0.70, 0.75, 0.82),   # powder blue
        rgb(0.64, 0.37, 0.28),   # brick
    ]),
)

#: Named palettes a style can start from.
PALETTES: dict[str, Palette] = {"default": DEFAULT_PALETTE, "town": TOWN_PALETTE}
