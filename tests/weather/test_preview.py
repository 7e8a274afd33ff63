"""preview_grid: the contact sheet of one image under every condition."""

from __future__ import annotations

import numpy as np
import pytest

from mcgf.weather.preview import preview_grid

from .conftest import natural_image


def test_grid_of_an_rgb_image() -> None:
    grid = preview_grid(natural_image(40, seed=1), conditions=["fog", "rain"], tile=32, columns=2)
    assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3
    assert grid.shape[1] >= 2 * 32


@pytest.mark.parametrize("shape, dtype", [((40, 40), np.uint8), ((40, 40, 4), np.uint8),
                                          ((40, 40, 3), np.float32), ((0, 40, 3), np.uint8)])
def test_other_images_are_named_not_failed_on_in_the_panels(shape, dtype) -> None:
    # Grey and RGBA images used to fail deep in the panel code, after ten renders, with
    # a message about "image 0" of shape (171, 256): the resized tile, not the input.
    with pytest.raises(ValueError, match=r"takes an \(H, W, 3\) uint8 RGB image, got .*"
                                         + str(np.dtype(dtype)) + r" array of shape "
                                         + str(shape).replace("(", r"\(").replace(")", r"\)")):
        preview_grid(np.zeros(shape, dtype))


def test_a_tall_image_is_shrunk_to_at_most_twice_the_tile_height() -> None:
    """A 5000 x 4 strip at 32 px wide would give 40,000 px tall tiles."""
    square = preview_grid(np.full((40, 40, 3), 128, np.uint8), conditions=["normal"], tile=32,
                          columns=1)
    tall = preview_grid(np.full((400, 4, 3), 128, np.uint8), conditions=["normal"], tile=32,
                        columns=1)
    assert tall.shape[0] == square.shape[0] + 32  # one tile taller than the square's
    portrait = preview_grid(np.full((60, 40, 3), 128, np.uint8), conditions=["normal"], tile=32,
                            columns=1)
    assert portrait.shape == (square.shape[0] + 16, square.shape[1], 3)  # 48 x 32, as before
