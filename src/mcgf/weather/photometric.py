"""Dark and light: brightness changes in a randomly chosen luminance colour space.

* light: brightness ×1.6 and +U(0, 30) (8-bit units), in random order;
* dark, training recipe: a 50 % blend of (image + 100) and (image × 0.2) per channel,
  then brightness ×0.2 and +U(−30, −15): nearly black;
* dark, test variant: brightness ×0.4 and −15 only, as the generator of the published
  weathered test images has it (its blend step is commented out): dim but readable, with
  the scene's full contrast scaled by 0.4. Which one to use is the caller's choice
  (``dark_variant``), since training and test recipes differ.

uint8 images take OpenCV's colour conversions with a look-up table on the brightness
channel (what the recipe did, and the fastest path): the recipe's own 8-bit table, whose
multiplication truncates and whose addition rounds its amount to a whole level
(:func:`~mcgf.weather.colorspace.recipe_table`; rounding the multiplication instead made
``light`` half a level brighter on the brightness channel). Other precisions use the
closed forms of :mod:`mcgf.weather.colorspace`, which keep 16-bit detail and take off
the truncation's mean. Both are per-pixel operations, so there is nothing to scale with
resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mcgf.weather.arrays import owned_float, scratch, with_scalar
from mcgf.weather.colorspace import SPACES, adjust_brightness, recipe_table
from mcgf.weather.rng import Range, draw

#: Index of the brightness channel in OpenCV's representation of each space.
CHANNEL = {"YCrCb": 0, "HSV": 2, "HLS": 1, "Lab": 0, "Luv": 0, "YUV": 0}
_TO = {s: getattr(cv2, f"COLOR_RGB2{s}") for s in SPACES}
_FROM = {s: getattr(cv2, f"COLOR_{s}2RGB") for s in SPACES}


@dataclass(frozen=True)
class PhotometricParams:
    """A brightness change, optionally preceded by the dark recipe's per-channel blend."""

    mul: Range
    add: Range
    blend: bool = False


LIGHT = PhotometricParams(mul=1.6, add=(0.0, 30.0))
DARK_TRAIN = PhotometricParams(mul=0.2, add=(-30.0, -15.0), blend=True)
DARK_TEST = PhotometricParams(mul=0.4, add=-15.0)


@dataclass(frozen=True)
class PhotometricStage:
    """A sampled brightness change."""

    space: str
    mul: float
    add: float
    mul_first: bool
    blend: bool


def sample_photometric(rng: np.random.Generator, params: PhotometricParams) -> PhotometricStage:
    """Draw the colour space, operation order and amounts for one image."""
    space = SPACES[int(rng.integers(len(SPACES)))]
    mul_first = bool(rng.random() < 0.5)
    return PhotometricStage(
        space=space, mul=draw(rng, params.mul), add=draw(rng, params.add),
        mul_first=mul_first, blend=params.blend,
    )


def dark_blend(x: np.ndarray | float) -> np.ndarray | float:
    """The dark recipe's first step: ``0.5·min(x + 100, 255) + 0.5·(0.2·x)`` per channel."""
    return 0.5 * np.minimum(np.asarray(x) + 100.0, 255.0) + 0.1 * np.asarray(x)


def _recipe_blend_table() -> np.ndarray:
    """The recipe's 8-bit blend: ``Add(100)`` saturates, ``Multiply(0.2)`` truncates (float32),
    and the 50 % alpha blend ``bg + 0.5·(fg − bg)`` is rounded (half to even)."""
    x = np.arange(256, dtype=np.float32)
    fg = np.minimum(x + 100, 255)
    bg = np.clip(x * np.float32(0.2), 0, 255).astype(np.uint8).astype(np.float32)
    return np.round(bg + np.float32(0.5) * (fg - bg)).astype(np.uint8)


_BLEND_LUT = _recipe_blend_table()


def render_photometric(image: np.ndarray, stage: PhotometricStage) -> np.ndarray:
    """Apply a brightness change to an (H, W, 3) image in grey levels.

    uint8 in, new uint8 out (OpenCV path); float32 in, the same array out, modified in
    place (closed-form path; see :func:`~mcgf.weather.arrays.owned_float`).
    """
    if image.dtype == np.uint8:
        return _render_uint8(image, stage)
    x = owned_float(image)
    if stage.blend:
        up = with_scalar("min", with_scalar("add", x, 100.0), 255.0)
        cv2.addWeighted(up, 0.5, x, 0.1, 0.0, dst=x)
    rgb = adjust_brightness(x * (1.0 / 255.0), stage.space, stage.mul, stage.add, stage.mul_first)
    np.multiply(rgb, 255.0, out=x, casting="unsafe")
    return x


def _render_uint8(image: np.ndarray, stage: PhotometricStage) -> np.ndarray:
    shape = image.shape
    x = cv2.LUT(image, _BLEND_LUT, dst=scratch("photo.blend", shape, np.uint8)) if stage.blend else image
    table = recipe_table(stage.mul, stage.add, stage.mul_first)
    converted = cv2.cvtColor(x, _TO[stage.space], dst=scratch("photo.space", shape, np.uint8))
    i = CHANNEL[stage.space]
    channel = cv2.extractChannel(converted, i, dst=scratch("photo.channel", shape[:2], np.uint8))
    cv2.insertChannel(cv2.LUT(channel, table, dst=channel), converted, i)
    return cv2.cvtColor(converted, _FROM[stage.space])
