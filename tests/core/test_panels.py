"""mcgf.panels: the one module that lays out and writes on pictures."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import mcgf
from mcgf.panels import (
    BACKGROUND,
    WHITE,
    caption_above,
    label_band,
    pad,
    side_by_side,
    tile_grid,
)

SRC = Path(mcgf.__file__).parent


def grey(h: int, w: int, level: int = 200) -> np.ndarray:
    return np.full((h, w, 3), level, np.uint8)


def test_tile_grid_geometry() -> None:
    panels = [grey(10, 20, 100 + i) for i in range(5)]
    sheet = tile_grid(panels, columns=3, gap=4)
    assert sheet.shape == (2 * 10 + 3 * 4, 3 * 20 + 4 * 4, 3)
    assert (sheet[4, 4 + 2 * 24] == 102).all() and (sheet[18, 4 + 24] == 104).all()
    assert (sheet[18, 4 + 2 * 24] == BACKGROUND).all()  # the short last row is padded
    with pytest.raises(ValueError, match="columns"):
        tile_grid(panels, 0)


def test_label_band_darkens_the_top_or_stays_off_a_crowded_panel() -> None:
    panel = grey(120, 200)
    out = label_band(panel, "fog")
    assert out.shape == panel.shape and (panel == 200).all()  # a copy
    assert out[1, -1].max() == 80 and (out[-1] == 200).all()  # 200 * 2 // 5 under the band
    small = grey(30, 200)
    assert np.array_equal(label_band(small, "fog"), small)
    assert label_band(small, "fog", crowded="clip")[1, -1].max() == 80


def test_caption_above_and_pad() -> None:
    out = caption_above(grey(8, 40), "view 01", height=16)
    assert out.shape == (24, 40, 3) and (out[16:] == 200).all() and out[:16].min() < WHITE
    padded = pad(grey(2, 3), top=1, right=2, bottom=3, left=4, background=WHITE)
    assert padded.shape == (6, 9, 3) and (padded[1:3, 4:7] == 200).all() and padded[0, 0, 0] == WHITE


def test_side_by_side_labels_only_named_panels() -> None:
    strip = side_by_side([grey(60, 120), grey(60, 120)], ["fog", ""])
    assert strip[1, 119].max() == 80 and (strip[1, 124 + 119] == 200).all()


def test_only_panels_writes_text_on_pictures() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "panels.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ("putText", "getTextSize", "Draw"):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: {node.attr}")
    assert not found, "draw text through mcgf.panels:\n" + "\n".join(found)
