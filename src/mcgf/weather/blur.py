"""Wind: a 15 px motion blur at a random angle and direction, after the recipe's MotionBlur.

The recipe convolves with a 15×15 matrix holding one line of weights that ramp linearly
from ``d`` to ``1 − d`` (``d`` from the random direction), rotated by a random angle. A
dense 15×15 convolution of a 512×512 colour image costs ~15 ms on one core. Here the
image is instead resampled into a frame aligned with the blur (bilinear), blurred with
the 15-tap ramp along one axis and resampled back — the same line integral at a fraction
of the cost. Each resampling spreads a pixel over at most 2×2 neighbours, as the
recipe's bilinearly rotated kernel does.

Speed (why the 8-bit path looks the way it does): with OpenCV 5 on AVX2, warping a
4-channel uint8 image is about twice as fast as a 3-channel float32 one, while its
1-D filter is fastest on 3-channel float32 along rows. So uint8 RGB images are warped as
RGBA into a canvas whose *rows* run along the blur, blurred in float32 and warped back as
RGBA; each of the three steps rounds to 8 bits (±0.5 grey level, invisible under a
15 px blur). The image is reflect-padded only by the blur's half-length: canvas pixels
farther out are never read by the blur of an image pixel, so they are left black. Other
dtypes keep a float32 path without intermediate rounding.

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


def blur_canvas(
    height: int, width: int, angle: float, length: float
) -> tuple[tuple[int, int], np.ndarray]:
    """Shape and canvas→image affine of a canvas whose columns run along the blur."""
    sin, cos = math.sin(math.radians(angle)), math.cos(math.radians(angle))
    # Blur direction in image (x, y): vertical at 0°, turning clockwise on screen with the
    # angle, as the recipe rotates its kernel.
    along = np.array([-sin, cos])
    across = np.array([cos, sin])
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
    return MotionBlurStage(angle=angle, kernel=kernel, canvas_shape=shape, canvas_to_image=affine)


def render_motion_blur(image: np.ndarray, stage: MotionBlurStage) -> np.ndarray:
    """Blur an (H, W, C) image of grey levels (see :func:`owned_float`).

    uint8 RGB input gives a new uint8 image (8-bit path, see module doc); other input is
    blurred in float32 (in place when it is float32).
    """
    if image.dtype == np.uint8 and image.shape[2] == 3:
        return _blur_rgb8(image, stage)
    return _blur_float(image, stage)


#: Row bands of the blur canvas processed separately (see :func:`_blur_rgb8`).
BANDS = 6


def _blur_rgb8(image: np.ndarray, stage: MotionBlurStage) -> np.ndarray:
    height, width, _ = image.shape
    hc, wc = stage.canvas_shape
    # Transposed canvas: canvas (column, row) = blur frame (row, column), so the blur runs
    # along canvas rows.
    to_image = stage.canvas_to_image[:, [1, 0, 2]]
    to_canvas = cv2.invertAffineTransform(to_image)
    # Blur reach along canvas rows and (for a kernel wider than one column) across them.
    reach, skirt = stage.kernel.shape[0] // 2, stage.kernel.shape[1] // 2
    pad = reach + skirt + 4  # blur half-length + footprint margin + bilinear support, px
    rgba = cv2.cvtColor(image, cv2.COLOR_RGB2RGBA, dst=scratch("wind.rgba", (height, width, 4), np.uint8))
    if pad < min(height, width):
        source = cv2.copyMakeBorder(
            rgba, pad, pad, pad, pad, cv2.BORDER_REFLECT,
            dst=scratch("wind.padded8", (height + 2 * pad, width + 2 * pad, 4), np.uint8),
        )
        to_source = to_image.copy()
        to_source[:, 2] += pad
        border = cv2.BORDER_CONSTANT
    else:  # tiny images: let the warp reflect (slower, but the image is tiny)
        source, to_source, border = rgba, to_image, cv2.BORDER_REFLECT
    # The image's footprint on the canvas (2 px margin for the warp back's bilinear taps).
    # The canvas is the footprint's bounding box, up to twice its area at 45°, so it is
    # processed in row bands, each over the columns that its part of the footprint needs.
    corners = np.array([[-2, -2, 1], [width + 1, -2, 1], [width + 1, height + 1, 1], [-2, height + 1, 1]])
    quad = corners @ to_canvas.T  # (column, row) per corner, in order around the footprint
    top = max(0, math.floor(quad[:, 1].min()))
    bottom = min(wc, math.ceil(quad[:, 1].max()) + 1)
    canvas = scratch("wind.canvas8", (wc, hc, 4), np.uint8)
    step = max(1, math.ceil((bottom - top) / BANDS))
    for r0 in range(top, bottom, step):
        r1 = min(bottom, r0 + step)
        span = _strip_span(quad, r0, r1 - 1)
        if span is None:
            continue
        c0 = max(0, math.floor(span[0]))
        c1 = min(hc, math.ceil(span[1]) + 1)
        a0, a1 = max(0, c0 - reach), min(hc, c1 + reach)  # the blur reads `reach` further
        b0, b1 = max(0, r0 - skirt), min(wc, r1 + skirt)
        shape = (b1 - b0, a1 - a0)
        band_to_source = to_source.copy()
        band_to_source[:, 2] += to_source[:, 0] * a0 + to_source[:, 1] * b0
        band = cv2.warpAffine(
            source, band_to_source, shape[::-1], dst=scratch("wind.band8", (*shape, 4), np.uint8),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=border,
        )
        rgb = cv2.cvtColor(band, cv2.COLOR_RGBA2RGB, dst=scratch("wind.band3", (*shape, 3), np.uint8))
        work = scratch("wind.bandf", (*shape, 3))
        np.copyto(work, rgb, casting="unsafe")
        blurred = cv2.filter2D(work, -1, stage.kernel.T, dst=scratch("wind.blurred", (*shape, 3)),
                               borderType=cv2.BORDER_REPLICATE)
        cv2.convertScaleAbs(blurred, dst=rgb)
        cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA, dst=band)
        canvas[r0:r1, c0:c1] = band[r0 - b0 : r1 - b0, c0 - a0 : c1 - a0]
    # Canvas pixels outside the bands are never read: every image pixel maps into them.
    back = cv2.warpAffine(
        canvas, to_canvas, (width, height), dst=rgba,
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE,
    )
    return cv2.cvtColor(back, cv2.COLOR_RGBA2RGB)


def _strip_span(quad: np.ndarray, row0: float, row1: float) -> tuple[float, float] | None:
    """Column range of a convex quadrilateral (corners in order) within rows [row0, row1]."""
    cols = [c for c, r in quad if row0 <= r <= row1]
    for i in range(4):
        (ca, ra), (cb, rb) = quad[i], quad[(i + 1) % 4]
        for row in (row0, row1):
            if (ra - row) * (rb - row) < 0:
                cols.append(ca + (row - ra) * (cb - ca) / (rb - ra))
    return (min(cols), max(cols)) if cols else None


def _blur_float(image: np.ndarray, stage: MotionBlurStage) -> np.ndarray:
    height, width, channels = image.shape
    x = owned_float(image)
    hc, wc = stage.canvas_shape
    affine = stage.canvas_to_image.copy()
    corners = affine @ np.array([[0, wc - 1, 0, wc - 1], [0, 0, hc - 1, hc - 1], [1, 1, 1, 1]])
    pad = math.ceil(max(
        0.0, -corners[0].min(), corners[0].max() - (width - 1),
        -corners[1].min(), corners[1].max() - (height - 1),
    )) + 2
    # Float warps are slow wherever they touch the border, so here the whole canvas is
    # sampled from a reflect-padded copy (3-4x faster than a reflecting warp).
    padded_shape = (height + 2 * pad, width + 2 * pad, channels)
    padded = scratch("wind.padded", padded_shape)
    if pad < min(height, width):
        cv2.copyMakeBorder(x, pad, pad, pad, pad, cv2.BORDER_REFLECT, dst=padded)
    else:  # tiny or elongated images: reflect repeatedly
        padded[...] = np.pad(x, ((pad, pad), (pad, pad), (0, 0)), mode="symmetric")
    affine[:, 2] += pad
    canvas = scratch("wind.canvas", (hc, wc, channels))
    blurred = scratch("wind.blurred", (hc, wc, channels))
    cv2.warpAffine(
        padded, affine, (wc, hc), dst=_as_cv(canvas), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
    )
    cv2.filter2D(_as_cv(canvas), -1, stage.kernel, dst=_as_cv(blurred), borderType=cv2.BORDER_REPLICATE)
    back = cv2.invertAffineTransform(stage.canvas_to_image)
    cv2.warpAffine(
        _as_cv(blurred), back, (width, height), dst=_as_cv(x),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE,
    )
    return x


def _as_cv(a: np.ndarray) -> np.ndarray:
    """OpenCV returns (H, W) for one channel; give it a 2-D view so ``dst=`` is honoured."""
    return a[:, :, 0] if a.ndim == 3 and a.shape[2] == 1 else a
