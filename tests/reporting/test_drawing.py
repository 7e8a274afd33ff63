"""Grid pictures: frames by status at the layout's positions; heat overlays."""

from __future__ import annotations

import numpy as np

from mcgf.reporting.drawing import (
    COLOURS,
    GridLayout,
    GridRow,
    Tile,
    draw_grid,
    heat_colours,
    overlay_heat,
)


def flat(value: int, size: int = 20) -> np.ndarray:
    return np.full((size, size, 3), value, np.uint8)


def test_frames_take_the_status_colour_at_the_layout_position() -> None:
    lay = GridLayout(tile=40, border=3)
    statuses = [["query", "match", "wrong", "unknown"], ["query", "wrong", "match"]]
    rows = [GridRow(f"r{i}", [Tile(flat(100 + 10 * j), s, "c") for j, s in enumerate(row)])
            for i, row in enumerate(statuses)]
    pic = draw_grid(rows, headers=["q", "1", "2", "3"], layout=lay)
    assert pic.shape == (*lay.size(2, 4), 3)
    for r, row in enumerate(statuses):
        for c, status in enumerate(row):
            y, x = lay.cell(r, c)
            assert tuple(pic[y + 1, x + 1]) == COLOURS[status]          # frame
            assert tuple(pic[y + 20, x + 20]) == (100 + 10 * c,) * 3     # image inside
    # The missing third tile of row 1 is background.
    y, x = lay.cell(1, 3)
    assert tuple(pic[y + 20, x + 20]) == (255, 255, 255)
    # The query column is set apart by a wider gap.
    assert lay.cell(0, 1)[1] - lay.cell(0, 0)[1] > lay.cell(0, 2)[1] - lay.cell(0, 1)[1]


def test_heat_overlay_blends_the_colour_map() -> None:
    image = flat(0, 8)
    heat = np.zeros((4, 4), np.float32)
    heat[:, 2:] = 1.0
    out = overlay_heat(image, heat, alpha=1.0)
    assert out.shape == (8, 8, 3)
    cold, hot = heat_colours(np.zeros((1, 1)))[0, 0], heat_colours(np.ones((1, 1)))[0, 0]
    assert tuple(out[0, 0]) == tuple(cold) and tuple(out[0, 7]) == tuple(hot)
    assert hot[0] > hot[2] and cold[2] > cold[0]  # JET: hot is red, cold is blue
    half = overlay_heat(flat(200, 8), heat, alpha=0.5)
    assert np.allclose(half[0, 7].astype(int), np.rint((200 + hot.astype(int)) / 2), atol=1)
