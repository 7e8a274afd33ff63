"""Picture assembly for the report: framed tiles in labelled grids, heat overlays.

Pure functions on uint8 RGB arrays, built on :mod:`mcgf.panels` (resizing and text).
Nothing here retrieves, embeds or reads files, so the pictures can be tested pixel by
pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from mcgf.panels import fit_square, put_text

#: Frame colours (RGB) by status of a tile.
COLOURS: dict[str, tuple[int, int, int]] = {
    "match": (0, 170, 60),      # a true match of the query
    "wrong": (215, 40, 40),     # another location
    "unknown": (150, 150, 150),  # no label (e.g. a distractor without location)
    "query": (40, 110, 220),
    "none": (24, 24, 24),
}
BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class Tile:
    """One picture of a grid: the image, its frame status and a caption under it."""

    image: np.ndarray
    status: str = "none"
    caption: str = ""


@dataclass(frozen=True)
class GridRow:
    """A row: a label on the left, then the tiles (the query first)."""

    label: str
    tiles: Sequence[Tile]


@dataclass(frozen=True)
class GridLayout:
    """Geometry of a grid picture (all in px)."""

    tile: int = 96
    border: int = 3
    gap: int = 6
    label_width: int = 78
    header: int = 18
    caption: int = 14
    split_after: int | None = 1  # extra gap after this many columns (the query column)

    def cell(self, row: int, col: int) -> tuple[int, int]:
        """Top-left ``(y, x)`` of the framed tile at ``row``, ``col``."""
        extra = self.gap * 2 if self.split_after is not None and col >= self.split_after else 0
        x = self.label_width + col * (self.tile + self.gap) + extra
        y = self.header + row * (self.tile + self.caption + self.gap)
        return y, x

    def size(self, rows: int, cols: int) -> tuple[int, int]:
        """``(height, width)`` of a grid with ``rows`` × ``cols`` tiles."""
        y, x = self.cell(rows, cols)
        return y, x


def framed(image: np.ndarray, size: int, border: int, colour: tuple[int, int, int]) -> np.ndarray:
    """``image`` fitted inside a ``size`` × ``size`` square with a ``border`` px frame."""
    out = np.empty((size, size, 3), np.uint8)
    out[:] = colour
    inner = size - 2 * border
    out[border: border + inner, border: border + inner] = fit_square(image, inner)
    return out


def draw_grid(rows: Sequence[GridRow], *, headers: Sequence[str] = (),
              layout: GridLayout | None = None) -> np.ndarray:
    """A grid picture: one row per :class:`GridRow`, tiles framed by status colour.

    Args:
        rows: the rows (they may have different numbers of tiles).
        headers: column titles drawn above the first row.
        layout: geometry (default :class:`GridLayout`).

    Returns:
        (H, W, 3) uint8 RGB; tile ``(r, c)`` starts at ``layout.cell(r, c)``.
    """
    lay = layout or GridLayout()
    cols = max((len(r.tiles) for r in rows), default=0)
    height, width = lay.size(len(rows), cols)
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = BACKGROUND
    for c, text in enumerate(headers[:cols]):
        _, x = lay.cell(0, c)
        put_text(canvas, text, x + 2, lay.header - 5, max_width=lay.tile - 4)
    for r, row in enumerate(rows):
        y, _ = lay.cell(r, 0)
        put_text(canvas, row.label, 4, y + lay.tile // 2 + 4, scale=0.45,
                 max_width=lay.label_width - 8)
        for c, tile in enumerate(row.tiles):
            y, x = lay.cell(r, c)
            colour = COLOURS.get(tile.status, COLOURS["none"])
            canvas[y: y + lay.tile, x: x + lay.tile] = framed(tile.image, lay.tile, lay.border, colour)
            if tile.caption:
                put_text(canvas, tile.caption, x + 2, y + lay.tile + lay.caption - 3, scale=0.35,
                         max_width=lay.tile - 4)
    return canvas


def heat_colours(heat: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] → (H, W, 3) uint8 RGB through OpenCV's JET colour map."""
    grey = np.clip(np.rint(np.asarray(heat, np.float32) * 255.0), 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(grey, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def overlay_heat(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``image`` (H, W, 3 uint8) blended with the colour map of ``heat`` ([0, 1], any size)."""
    h, w = image.shape[:2]
    heat = np.asarray(heat, np.float32)
    if heat.shape != (h, w):
        heat = cv2.resize(heat, (w, h), interpolation=cv2.INTER_LINEAR)
    colours = heat_colours(heat).astype(np.float32)
    out = image.astype(np.float32) * (1.0 - alpha) + colours * alpha
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
