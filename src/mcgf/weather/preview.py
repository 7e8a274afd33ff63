"""A labelled contact sheet of one image under every condition (for eyes and for docs)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from mcgf.weather.apply import apply_weather
from mcgf.weather.conditions import CONDITIONS, check_conditions

_BACKGROUND = 24
_GAP = 4


def preview_grid(
    image: np.ndarray,
    *,
    seed: int = 0,
    key: str = "preview",
    dark_variant: str = "train",
    tile: int = 256,
    columns: int = 5,
    conditions: Sequence[str] = CONDITIONS,
) -> np.ndarray:
    """Render ``image`` (H, W, 3 uint8 RGB) under each condition; returns an RGB uint8 grid.

    Weather is applied at the image's own resolution (as a dataset would be), then each
    result is shrunk to ``tile`` px wide and labelled with its condition.
    """
    conditions = check_conditions(conditions)
    if tile < 32:
        raise ValueError("tile must be at least 32 px")
    if columns < 1:
        raise ValueError("columns must be at least 1")
    h, w = image.shape[:2]
    th = max(1, round(tile * h / w))
    tiles = []
    for condition in conditions:
        out = apply_weather(image, condition, seed=seed, key=key, dark_variant=dark_variant)
        small = cv2.resize(out, (tile, th), interpolation=cv2.INTER_AREA)
        tiles.append(_label(small, condition))
    rows = -(-len(tiles) // columns)
    cols = min(columns, len(tiles))
    sheet = np.full(
        (rows * th + (rows + 1) * _GAP, cols * tile + (cols + 1) * _GAP, 3), _BACKGROUND, np.uint8
    )
    for i, t in enumerate(tiles):
        r, c = divmod(i, columns)
        y, x = _GAP + r * (th + _GAP), _GAP + c * (tile + _GAP)
        sheet[y : y + th, x : x + tile] = t
    return sheet


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` on a dark band across the top of ``tile`` (in place; returns it)."""
    scale = max(0.35, tile.shape[1] / 512)
    thickness = max(1, round(scale * 1.5))
    (_, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    band = min(tile.shape[0], th + base + 8)
    tile[:band] = (tile[:band].astype(np.uint16) * 2 // 5).astype(np.uint8)
    cv2.putText(tile, text, (6, band - base - 3), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), thickness, cv2.LINE_AA)
    return tile
