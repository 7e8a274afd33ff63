"""Geometry shared by the effects: the resolution scale and anti-aliased line kernels.

Every pixel-sized parameter of the recipe is defined at the reference resolution
:data:`REFERENCE_SIZE` (University-1652 drone views are 512×512, and the recipe was applied
there before any resizing). At another size it is multiplied by :func:`scale_factor`, so
an image rendered at 256 px looks like the 512 px rendering downsized.

Motion blur in the recipe convolves with a ``k``×``k`` matrix holding a line of linearly
ramped weights, rotated with bilinear interpolation. :func:`line_kernel` rasterises the
same continuous segment directly, at any (also fractional or anisotropic) pixel pitch,
which lets the effects blur on coarse canvases instead of full-resolution images.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

#: Side (px) at which the recipe's pixel-sized parameters are defined.
REFERENCE_SIZE = 512


def scale_factor(height: int, width: int) -> float:
    """Size of an image relative to the reference: ``max(height, width) / 512``."""
    return max(height, width) / REFERENCE_SIZE


def line_kernel(
    length: float,
    angle_deg: float,
    start_weight: float,
    end_weight: float,
    *,
    pitch: tuple[float, float] = (1.0, 1.0),
    footprint: float = 0.0,
    sigma: float = 0.0,
    antialias: bool = True,
) -> np.ndarray:
    """Correlation kernel of a straight motion-blur streak, normalised to sum 1.

    The streak is a segment of ``length`` image pixels through the kernel centre along
    ``(sin a, cos a)`` (x right, y down; ``a = 0`` is vertical). Weights ramp linearly
    from ``start_weight`` at the ``-length/2`` end to ``end_weight`` at the other, as the
    recipe's ``linspace`` column does. Optionally the segment is thickened by a square of
    side ``footprint`` px (the size of a rain drop) and blurred by a Gaussian of ``sigma``
    image px. ``pitch`` = (x, y) image pixels per kernel cell: rasterising on a coarse or
    anisotropic grid gives the kernel to apply on a canvas of that pitch.

    ``antialias`` splits each point of the segment bilinearly between cells (a thin line
    at full resolution, like the recipe's rotated kernel). Without it every point goes to
    its nearest cell: on a grid coarser than the blurred blobs (snow flakes) this keeps a
    blob as narrow as it is, where bilinear splitting would widen it by a whole cell.

    The geometry is rounded in kernel cells (segment end to 1/4 cell, sigma to 1/16,
    footprint to 1/32, weights to 1/256) and kernels are cached: a dataset then draws
    the same few hundred kernels over and over instead of building one per layer. A
    quarter cell is 0.25 px across and ~1 px along a 20–30 px rain streak; on a snow
    grid, where every point of the segment snaps to its nearest cell anyway, it moves a
    point by at most 1/8 cell. Returns a read-only,
    odd-sized float32 array; the anchor is its centre (as for ``cv2.filter2D``).
    """
    px, py = float(pitch[0]), float(pitch[1])
    rad = math.radians(angle_deg)
    half = max(length, 0.0) / 2

    def q(v: float, steps: int) -> float:
        return round(v * steps) / steps

    return _line_kernel_cached(
        q(half * math.sin(rad) / px, 4), q(half * math.cos(rad) / py, 4),
        q(start_weight, 256), q(end_weight, 256),
        q(footprint / px, 32), q(footprint / py, 32), q(sigma / px, 16), q(sigma / py, 16),
        antialias,
    )


@functools.lru_cache(maxsize=16384)
def _line_kernel_cached(
    end_x: float,
    end_y: float,
    start_weight: float,
    end_weight: float,
    foot_x: float,
    foot_y: float,
    sig_x: float,
    sig_y: float,
    antialias: bool,
) -> np.ndarray:
    """The kernel in cell units: segment from -end to +end, footprint and sigma in cells."""
    span = 2 * max(abs(end_x), abs(end_y))
    # Enough samples that every cell the segment crosses gets several.
    n = math.ceil(4.0 * span) + 2 if span > 1e-6 else 1
    f = np.arange(n) / max(n - 1, 1)
    cx, cy = (2 * f - 1) * end_x, (2 * f - 1) * end_y
    w = start_weight + (end_weight - start_weight) * f if n > 1 else np.ones(1)
    if foot_x > 0 or foot_y > 0:
        m = math.ceil(2.0 * max(foot_x, foot_y)) + 1
        side = np.linspace(-0.5, 0.5, m)
        cx = (cx[:, None] + np.tile(side * foot_x, m)[None, :]).ravel()
        cy = (cy[:, None] + np.repeat(side * foot_y, m)[None, :]).ravel()
        w = np.repeat(w, m * m)
    blur = max(sig_x, sig_y) > 0.05
    hx = math.ceil(np.abs(cx).max() + (3 * sig_x if blur else 0.0)) + 1
    hy = math.ceil(np.abs(cy).max() + (3 * sig_y if blur else 0.0)) + 1
    shape = (2 * hy + 1, 2 * hx + 1)
    if antialias:
        kernel = splat_bilinear(cy + hy, cx + hx, w, shape)
    else:
        cells = (np.rint(cy).astype(np.int64) + hy) * shape[1] + np.rint(cx).astype(np.int64) + hx
        kernel = np.bincount(cells, w, minlength=shape[0] * shape[1]).reshape(shape)
        kernel = kernel.astype(np.float32)
    if blur:
        kernel = cv2.GaussianBlur(
            kernel, (0, 0), sigmaX=max(sig_x, 1e-3), sigmaY=max(sig_y, 1e-3),
            borderType=cv2.BORDER_CONSTANT,
        )
    total = float(kernel.sum())
    if total <= 0:  # all weights zero (start = end = 0): behave as identity
        kernel = np.zeros(shape, np.float32)
        kernel[hy, hx] = 1.0
    else:
        kernel = _trim((kernel / total).astype(np.float32))
    kernel.flags.writeable = False
    return kernel


def pad_kernel(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Zero-pad an odd kernel symmetrically to the odd ``shape`` (anchor stays central)."""
    kh, kw = kernel.shape
    h, w = shape
    if kh > h or kw > w:
        raise ValueError(f"kernel {kernel.shape} does not fit in {shape}")
    out = np.zeros(shape, np.float32)
    top, left = (h - kh) // 2, (w - kw) // 2
    out[top : top + kh, left : left + kw] = kernel
    return out


def splat_bilinear(
    rows: np.ndarray, cols: np.ndarray, weights: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """Sum ``weights`` into a grid, each split bilinearly between its 4 nearest cells.

    Positions must lie in ``[0, h - 1) × [0, w - 1)``.
    """
    r0 = np.floor(rows).astype(np.int64)
    c0 = np.floor(cols).astype(np.int64)
    fr, fc = rows - r0, cols - c0
    h, w = shape
    idx = np.concatenate([r0 * w + c0, r0 * w + c0 + 1, (r0 + 1) * w + c0, (r0 + 1) * w + c0 + 1])
    val = np.concatenate([
        weights * (1 - fr) * (1 - fc), weights * (1 - fr) * fc,
        weights * fr * (1 - fc), weights * fr * fc,
    ])
    return np.bincount(idx, val, minlength=h * w).reshape(h, w).astype(np.float32)


def _trim(kernel: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Drop all-zero outer rows/columns symmetrically, keeping odd size and the centre."""
    h, w = kernel.shape
    mask = kernel > eps
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    ry = max(h // 2 - rows[0], rows[-1] - h // 2)
    rx = max(w // 2 - cols[0], cols[-1] - w // 2)
    return np.ascontiguousarray(
        kernel[h // 2 - ry : h // 2 + ry + 1, w // 2 - rx : w // 2 + rx + 1]
    )
