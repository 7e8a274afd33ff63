"""A labelled contact sheet of one image under every condition (for eyes and for docs)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from mcgf.panels import label_band, tile_grid
from mcgf.weather.apply import apply_weather
from mcgf.weather.conditions import CONDITIONS, check_conditions


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
    result is shrunk to ``tile`` px wide (an image over twice as tall as wide: ``2 × tile``
    px high) and labelled with its condition.
    """
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
            and image.shape[2] == 3 and image.size):
        got = (f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray)
               else type(image).__name__)
        raise ValueError(f"preview_grid takes an (H, W, 3) uint8 RGB image, got {got}")
    conditions = check_conditions(conditions)
    if tile < 32:
        raise ValueError("tile must be at least 32 px")
    if columns < 1:
        raise ValueError("columns must be at least 1")
    h, w = image.shape[:2]
    tw, th = tile, max(1, round(tile * h / w))
    if th > 2 * tile:  # a tall strip: at most two tiles high, narrower instead
        tw, th = max(1, round(2 * tile * w / h)), 2 * tile
    tiles = []
    for condition in conditions:
        out = apply_weather(image, condition, seed=seed, key=key, dark_variant=dark_variant)
        small = cv2.resize(out, (tw, th), interpolation=cv2.INTER_AREA)
        tiles.append(label_band(small, condition, min_scale=0.35, inset=6, crowded="clip"))
    return tile_grid(tiles, columns)
