"""Fixtures for the weather tests: small natural-looking images made with NumPy."""

from __future__ import annotations

import cv2
import numpy as np
import pytest


def natural_image(size: int = 128, seed: int = 0, width: int | None = None) -> np.ndarray:
    """An aerial-looking RGB uint8 image: smooth colour fields, sharp-edged blocks, texture.

    Mid-range brightness (mean ~110) like a real drone view, with edges and fine detail
    so that blur and contrast changes are measurable.
    """
    rng = np.random.default_rng(seed)
    h, w = size, width or size
    low = rng.uniform(40, 180, (4, 4, 3)).astype(np.float32)
    img = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(12):  # "buildings": flat blocks with hard edges
        y, x = rng.integers(0, h), rng.integers(0, w)
        bh, bw = rng.integers(h // 12, h // 4), rng.integers(w // 12, w // 4)
        img[y : y + bh, x : x + bw] = rng.uniform(60, 200, 3)
    img += rng.normal(0, 12, (h, w, 3)).astype(np.float32)  # texture
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture
def image() -> np.ndarray:
    return natural_image(128)


@pytest.fixture
def small() -> np.ndarray:
    return natural_image(64, seed=1)
