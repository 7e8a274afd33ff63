"""Wind: a 15 px motion blur at a random angle and direction, after the recipe's MotionBlur.

The recipe convolves with a 15×15 matrix holding one line of weights that ramp linearly
from ``d`` to ``1 − d`` (``d`` from the random direction), rotated by a random angle. A
dense 15×15 convolution of a 512×512 colour image costs ~15 ms on one core. Here the
image is instead resampled into a frame aligned with the blur (bilinear, reflecting at
the borders), blurred with the 15-tap ramp along the columns and resampled back — the
same line integral at a third of the cost. Each resampling spreads a pixel over at most
2×2 neighbours, as the recipe's bilinearly rotated kernel does.

Resolution: the 15 px length is defined at 512 px and scaled by
:func:`~mcgf.weather.kernels.scale_factor`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from mcgf.weather.arrays import owned_float, scratch
from mcgf.weather.kernels import line_kernel, scale_factor
from mcgf.weather.rng import Range, draw


@dataclass(frozen=True)
class MotionBlurParams:
    """Motion blur of ``length`` px (at 512 px) with random angle and direction."""

    length: float = 15.0
    angle: Range = (0.0, 360.0)
    direction: Range = (-1.0, 1.0)


WIND = MotionBlurParams()


@dataclass(frozen=True)
class MotionBlurStage:
    """A sampled blur: the column kernel and the blur-aligned canvas geometry.

    ``canvas_to_image`` maps canvas (column, row) to image (x, y) (2×3 affine).
    """

    angle: float
    kernel: np.ndarray
    canvas_shape: tuple[int, int]
    canvas_to_image: np.ndarray
    length: float
    start: float


def blur_canvas(
    height: int, width: int, angle: float, length: float
) -> tuple[tuple[int, int], np.ndarray]:
    """Shape and canvas→image affine of a canvas whose columns run along the blur."""
    sin, cos = math.sin(math.radians(angle)), math.cos(math.radians(angle))
    along = np.array([sin, cos])  # blur direction in image (x, y)
    across = np.array([cos, -sin])
    half_u = width / 2 * abs(cos) + height / 2 * abs(sin) + 1
    half_v = width / 2 * abs(sin) + height / 2 * abs(cos) + length / 2 + 2
    wc, hc = 2 * math.ceil(half_u) + 1, 2 * math.ceil(half_v) + 1
    centre_canvas = np.array([(wc - 1) / 2, (hc - 1) / 2])
    centre_image = np.array([(width - 1) / 2, (height - 1) / 2])
    linear = np.stack([across, along], axis=1)  # columns: d(image)/du, d(image)/dv
    offset = centre_image - linear @ centre_canvas
    return (hc, wc), np.hstack([linear, offset[:, None]])


def sample_motion_blur(
    rng: np.random.Generator, height: int, width: int, params: MotionBlurParams
) -> MotionBlurStage:
    """Draw the angle and direction of one blur for an image of the given size."""
    angle = draw(rng, params.angle)
    start = (float(np.clip(draw(rng, params.direction), -1.0, 1.0)) + 1.0) / 2.0
    length = params.length * scale_factor(height, width)
    kernel = line_kernel(length, 0.0, start, 1.0 - start)
    shape, affine = blur_canvas(height, width, angle, length)
    return MotionBlurStage(
        angle=angle, kernel=kernel, canvas_shape=shape, canvas_to_image=affine, length=length,
        start=start,
    )


def shear_kernel(stage: MotionBlurStage) -> np.ndarray:
    """The blur's 1-D kernel on the sheared canvas (see :func:`render_motion_blur`).

    A column kernel when the blur is closer to vertical, a row kernel otherwise; its
    length is the streak's extent along that axis, its ramp runs the streak's way.
    """
    sin, cos = math.sin(math.radians(stage.angle)), math.cos(math.radians(stage.angle))
    if abs(cos) >= abs(sin):
        return line_kernel(stage.length * abs(cos), 0.0 if cos > 0 else 180.0, stage.start, 1.0 - stage.start)
    return line_kernel(stage.length * abs(sin), 90.0 if sin > 0 else -90.0, stage.start, 1.0 - stage.start)


def render_motion_blur(image: np.ndarray, stage: MotionBlurStage) -> np.ndarray:
    """Blur an (H, W, C) image of grey levels (see :func:`owned_float`).

    For a blur closer to vertical, the image is sheared horizontally (row ``y`` shifted
    by ``y·tan``, linear interpolation) so that lines along the blur become the columns
    of a canvas as tall as the image plus the kernel's reach; the canvas is blurred along
    its columns with :func:`shear_kernel` and sheared back. Closer to horizontal, rows and
    columns swap roles. Both shears are 1-D interpolations over about the image's area,
    much cheaper than rotating into and out of a blur-aligned frame.
    """
    height, width, channels = image.shape
    sin, cos = math.sin(math.radians(stage.angle)), math.cos(math.radians(stage.angle))
    kernel = shear_kernel(stage)
    vertical = abs(cos) >= abs(sin)
    n_along, n_across = (height, width) if vertical else (width, height)
    slope = sin / cos if vertical else cos / sin
    reach = max(kernel.shape) // 2 + 1
    # Reflect-pad only as far as the kernel reaches past the border, then sample with a
    # constant border (3-4x faster than OpenCV's reflecting border inside remap); canvas
    # pixels farther out are never read back.
    pad_along, pad_across = reach + 1, math.ceil(reach * abs(slope)) + 2
    pad_y, pad_x = (pad_along, pad_across) if vertical else (pad_across, pad_along)
    # uint8 stays uint8 (OpenCV's fixed-point uint8 remap is the fastest; rounding the
    # canvas to whole grey levels is invisible after the blur).
    x = image if image.dtype == np.uint8 else owned_float(image)
    padded = scratch("wind.padded", (height + 2 * pad_y, width + 2 * pad_x, channels), x.dtype)
    if max(pad_y, pad_x) < min(height, width):
        cv2.copyMakeBorder(x, pad_y, pad_y, pad_x, pad_x, cv2.BORDER_REFLECT, dst=_as_cv(padded))
    else:  # tiny or elongated images: reflect repeatedly
        padded[...] = np.pad(x, ((pad_y, pad_y), (pad_x, pad_x), (0, 0)), mode="symmetric")
    # Canvas (across i, along r) holds the image at along r - reach, across
    # i - offset + (r - reach - mid)·slope.
    mid = (n_along - 1) / 2
    offset = math.ceil(mid * abs(slope)) + 1
    along_c, across_c = n_along + 2 * reach, n_across + 2 * offset
    r = np.arange(along_c, dtype=np.float32)
    shift = ((r - reach - mid) * slope - offset + pad_across).astype(np.float32)
    i = np.arange(across_c, dtype=np.float32)
    r += pad_along - reach
    shape = (along_c, across_c) if vertical else (across_c, along_c)
    map_across = scratch("wind.map_across", shape)
    map_along = scratch("wind.map_along", shape)
    if vertical:
        np.add(shift[:, None], i[None, :], out=map_across)
        np.copyto(map_along, r[:, None])
    else:
        np.add(shift[None, :], i[:, None], out=map_across)
        np.copyto(map_along, r[None, :])
    map_x, map_y = (map_across, map_along) if vertical else (map_along, map_across)
    canvas = scratch("wind.canvas", (*shape, channels), x.dtype)
    _remap(padded, map_x, map_y, canvas, cv2.BORDER_CONSTANT)
    blurred = scratch("wind.blurred", (*shape, channels), x.dtype)
    one = np.ones(1, np.float32)
    kx, ky = (one, kernel[:, 0]) if kernel.shape[1] == 1 else (kernel[0], one)
    cv2.sepFilter2D(_as_cv(canvas), -1, kx, ky, dst=_as_cv(blurred), borderType=cv2.BORDER_REPLICATE)
    # Back: image (along b, across a) is canvas (along b + reach, across a + offset - (b - mid)·slope).
    b = np.arange(n_along, dtype=np.float32)
    back = (offset - (b - mid) * slope).astype(np.float32)
    a = np.arange(n_across, dtype=np.float32)
    b += reach
    back_across = scratch("wind.back_across", (height, width))
    back_along = scratch("wind.back_along", (height, width))
    if vertical:
        np.add(back[:, None], a[None, :], out=back_across)
        np.copyto(back_along, b[:, None])
    else:
        np.add(back[None, :], a[:, None], out=back_across)
        np.copyto(back_along, b[None, :])
    map_x, map_y = (back_across, back_along) if vertical else (back_along, back_across)
    out = scratch("wind.out", image.shape, np.uint8) if x is image else x
    return _remap(blurred, map_x, map_y, out, cv2.BORDER_REPLICATE)


def _remap(src: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, dst: np.ndarray, border: int) -> np.ndarray:
    """Bilinear ``cv2.remap`` into ``dst``; uint8 goes through fixed-point maps (faster)."""
    if src.dtype == np.uint8:
        map_x, map_y = cv2.convertMaps(map_x, map_y, cv2.CV_16SC2)
    cv2.remap(_as_cv(src), map_x, map_y, cv2.INTER_LINEAR, dst=_as_cv(dst), borderMode=border)
    return dst


def _as_cv(a: np.ndarray) -> np.ndarray:
    """OpenCV returns (H, W) for one channel; give it a 2-D view so ``dst=`` is honoured."""
    return a[:, :, 0] if a.ndim == 3 and a.shape[2] == 1 else a
