"""render_plan: a sampled plan rendered on an (H, W, 3) image of grey levels."""

from __future__ import annotations

import numpy as np
import pytest

from mcgf.weather import apply_plan, render_plan, sample_plan

from .conftest import natural_image


def test_render_plan_is_apply_plan_on_rgb_images() -> None:
    img = natural_image(32, seed=3)
    plan = sample_plan("fog_rain", seed=1, key="k/a.jpg", height=32, width=32)
    out = render_plan(img, plan)  # float32 grey levels, not rounded or clipped
    assert out.dtype == np.float32 and out.shape == img.shape
    np.testing.assert_array_equal(np.clip(np.rint(out), 0, 255).astype(np.uint8),
                                  apply_plan(img, plan))


@pytest.mark.parametrize("shape", [(32, 32), (32, 32, 1), (32, 32, 4)])
def test_render_plan_names_other_channel_layouts(shape) -> None:
    # A grey image failed with "not enough values to unpack" inside a renderer.
    plan = sample_plan("wind", seed=0, key="k", height=32, width=32)
    with pytest.raises(ValueError, match=r"takes an \(H, W, 3\) image, got shape"):
        render_plan(np.zeros(shape, np.uint8), plan)
    assert apply_plan(np.zeros(shape, np.uint8), plan).shape == shape
