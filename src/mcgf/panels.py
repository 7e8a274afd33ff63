"""Labelled image panels: the one place pictures are laid out and written on.

Restoration previews, the weather preview grid, the synthetic benchmark's contact sheet
and the report's match grids are all panels side by side and rows stacked, with a line
of text on or above a panel. This module does that on uint8 RGB arrays with NumPy and
OpenCV's Hershey font (no plotting stack); nothing here reads files or runs a model, so
every picture can be checked pixel by pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

#: Pixels between panels and between rows.
GAP = 4
#: Grey level behind dark pictures (gaps, and padding where panels differ in size).
BACKGROUND = 24
#: White, behind pictures meant for a light page.
WHITE = 255
FONT = cv2.FONT_HERSHEY_SIMPLEX

Colour = tuple[int, int, int]


def check_panel(image: Any, index: int = 0) -> np.ndarray:
    """``image`` if it is an (H, W, 3) uint8 RGB array, else a ValueError naming ``index``."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
            or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        desc = (f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray)
                else type(image).__name__)
        raise ValueError(f"image {index} must be an (H, W, 3) uint8 RGB array, got {desc}")
    return image


def fit_width(image: np.ndarray, width: int | None) -> np.ndarray:
    """``image`` scaled to ``width`` px wide (aspect kept); unchanged when ``width`` is None."""
    if width is None or image.shape[1] == width:
        return image
    h = max(1, round(width * image.shape[0] / image.shape[1]))
    interp = cv2.INTER_AREA if width < image.shape[1] else cv2.INTER_CUBIC
    return cv2.resize(image, (width, h), interpolation=interp)


def fit_square(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` resized to ``size`` × ``size`` (area filter when shrinking)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    interp = cv2.INTER_AREA if size < max(image.shape[:2]) else cv2.INTER_CUBIC
    return cv2.resize(image, (size, size), interpolation=interp)


def put_text(canvas: np.ndarray, text: str, x: int, y: int, *, scale: float = 0.4,
             colour: Colour = (30, 30, 30), thickness: int = 1,
             max_width: int | None = None) -> None:
    """Draw ``text`` on ``canvas`` (in place) with its baseline at ``(x, y)``, shrunk to fit
    ``max_width`` px."""
    (w, _), _ = cv2.getTextSize(text, FONT, scale, thickness)
    if max_width is not None and w > max_width > 0:
        scale *= max_width / w
    cv2.putText(canvas, text, (x, y), FONT, scale, colour, thickness, cv2.LINE_AA)


def _band_geometry(width: int, text: str, min_scale: float) -> tuple[float, int, int, int]:
    """``(scale, thickness, band height, baseline)`` of :func:`label_band`'s text on a
    panel ``width`` px wide."""
    scale = max(min_scale, width / 512)
    thickness = max(1, round(scale * 1.5))
    (_, th), base = cv2.getTextSize(text, FONT, scale, thickness)
    return scale, thickness, th + base + 8, base


def label_fits(panel: np.ndarray, text: str, *, min_scale: float = 0.3) -> bool:
    """Whether :func:`label_band` draws ``text`` on ``panel`` with ``crowded="skip"``
    (its band is at most a third of the panel's height)."""
    return _band_geometry(panel.shape[1], text, min_scale)[2] <= panel.shape[0] // 3


def label_band(panel: np.ndarray, text: str, *, min_scale: float = 0.3, inset: int = 4,
               crowded: str = "skip") -> np.ndarray:
    """A copy of ``panel`` with ``text`` in white on a darkened band across its top.

    The text scales with the panel's width (never below ``min_scale``) and starts
    ``inset`` px from the left edge; the band adds no height. A band taller than a third
    of the panel would hide it: ``crowded="skip"`` leaves such a panel unlabelled,
    ``"clip"`` draws the band anyway (cut at the panel's bottom).
    """
    if crowded not in ("skip", "clip"):
        raise ValueError(f"crowded must be 'skip' or 'clip', got {crowded!r}")
    out = panel.copy()
    h, w = out.shape[:2]
    scale, thickness, band, base = _band_geometry(w, text, min_scale)
    if band > h // 3 and crowded == "skip":
        return out
    band = min(h, band)
    out[:band] = (out[:band].astype(np.uint16) * 2 // 5).astype(np.uint8)
    put_text(out, text, inset, band - base - 3, scale=scale, colour=(255, 255, 255),
             thickness=thickness)
    return out


def caption_above(panel: np.ndarray, text: str, *, height: int = 16, scale: float = 0.36,
                  inset: int = 3, colour: Colour = (20, 20, 20), background: int = WHITE
                  ) -> np.ndarray:
    """``panel`` with a ``height`` px band above it holding ``text`` (adds that height)."""
    band = np.full((height, panel.shape[1], 3), background, np.uint8)
    put_text(band, text, inset, height - 4, scale=scale, colour=colour)
    return np.concatenate([band, panel], 0)


def side_by_side(panels: Sequence[np.ndarray], labels: Sequence[str] | None = None, *,
                 gap: int = GAP, background: int = BACKGROUND) -> np.ndarray:
    """Panels left to right, ``gap`` px apart, optionally labelled; (H, ΣW + gaps, 3) uint8.

    Panels are (H, W, 3) uint8 RGB; shorter ones are top-aligned on ``background``.
    Labels go on a darkened band across each panel's top (:func:`label_band`), so they
    add no height (panels too short for a readable band stay unlabelled).
    """
    if not panels:
        raise ValueError("side_by_side needs at least one panel")
    if labels is not None and len(labels) != len(panels):
        raise ValueError(f"{len(labels)} labels for {len(panels)} panels")
    panels = [check_panel(p, i) for i, p in enumerate(panels)]
    if labels is not None:
        panels = [label_band(p, text) if text else p for p, text in zip(panels, labels, strict=True)]
    height = max(p.shape[0] for p in panels)
    width = sum(p.shape[1] for p in panels) + gap * (len(panels) - 1)
    strip = np.full((height, width, 3), background, np.uint8)
    x = 0
    for p in panels:
        strip[: p.shape[0], x : x + p.shape[1]] = p
        x += p.shape[1] + gap
    return strip


def stack_rows(rows: Sequence[np.ndarray], *, gap: int = GAP,
               background: int = BACKGROUND) -> np.ndarray:
    """Rows top to bottom, ``gap`` px apart; narrower rows are left-aligned on ``background``."""
    if not rows:
        raise ValueError("stack_rows needs at least one row")
    rows = [check_panel(r, i) for i, r in enumerate(rows)]
    width = max(r.shape[1] for r in rows)
    height = sum(r.shape[0] for r in rows) + gap * (len(rows) - 1)
    grid = np.full((height, width, 3), background, np.uint8)
    y = 0
    for r in rows:
        grid[y : y + r.shape[0], : r.shape[1]] = r
        y += r.shape[0] + gap
    return grid


def pad(image: np.ndarray, *, top: int = 0, right: int = 0, bottom: int = 0, left: int = 0,
        background: int = BACKGROUND) -> np.ndarray:
    """``image`` with borders of ``background`` added on each side."""
    h, w = image.shape[:2]
    out = np.full((h + top + bottom, w + left + right, 3), background, np.uint8)
    out[top : top + h, left : left + w] = image
    return out


def tile_grid(panels: Sequence[np.ndarray], columns: int, *, gap: int = GAP,
              background: int = BACKGROUND) -> np.ndarray:
    """Panels row by row, ``columns`` to a row, ``gap`` px apart and around the edge."""
    if columns < 1:
        raise ValueError("columns must be at least 1")
    rows = [side_by_side(panels[i : i + columns], gap=gap, background=background)
            for i in range(0, len(panels), columns)]
    sheet = stack_rows(rows, gap=gap, background=background)
    return pad(sheet, top=gap, right=gap, bottom=gap, left=gap, background=background)
