"""Restoration previews name the condition of every row, whatever the panel size."""

from __future__ import annotations

import numpy as np
import pytest

from mcgf.panels import GAP
from mcgf.reporting import restoration
from mcgf.reporting.restoration import restoration_preview

CONDITIONS = ["fog", "rain", "dark"]


@pytest.fixture
def echo(monkeypatch: pytest.MonkeyPatch) -> None:
    """A restoration branch that gives back its input (no model needed)."""
    monkeypatch.setattr(restoration, "restore_images",
                        lambda model, images, **kwargs: [np.asarray(i) for i in images])


def _image(h: int, w: int) -> np.ndarray:
    return np.full((h, w, 3), 128, np.uint8)


def test_large_panels_carry_their_labels_on_a_band(echo: None) -> None:
    picture = restoration_preview(None, _image(96, 96), conditions=CONDITIONS, tile=96)
    assert picture.shape[0] == 3 * 96 + 2 * GAP  # the bands add no height
    band = picture[:15, :96]  # the first panel's darkened band, with light text on it
    assert band.max() > 2 * band[:3].max()


@pytest.mark.parametrize(("h", "w", "tile"), [(64, 64, 42), (54, 96, 84)])
def test_panels_too_short_for_a_band_get_the_condition_above_their_row(
        echo: None, h: int, w: int, tile: int) -> None:
    picture = restoration_preview(None, _image(h, w), conditions=CONDITIONS, tile=tile)
    panel_h = round(h * tile / w)
    caption = picture.shape[0] - 3 * panel_h - 2 * GAP
    assert caption == 3 * 16  # one 16 px caption per row
    band = picture[:16, : 3 * tile]
    assert band.min() < 100 and band.max() == 255  # dark text on a white band
