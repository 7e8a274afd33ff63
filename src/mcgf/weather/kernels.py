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
from collections.abc import Sequence

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
    ``(−sin a, cos a)`` (x right, y down; ``a = 0`` is vertical and a positive ``a``
    turns it clockwise on screen, as the recipe's rotation of its kernel). Weights ramp linearly
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
        q(-half * math.sin(rad) / px, 4), q(half * math.cos(rad) / py, 4),
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


# --------------------------------------------------------------------------- snow flakes

#: OpenCV's bicubic constant (``cv2.resize`` INTER_CUBIC; torch's bicubic uses it too).
CUBIC_A = -0.75


def cubic_lobe(u: np.ndarray) -> np.ndarray:
    """The positive lobe of the bicubic kernel at ``u`` cells (0 from one cell on).

    A single bright cell upsampled bicubically into uint8, as the recipe stores its
    flake grid, is this lobe in x times this lobe in y: the kernel's negative lobes are
    clipped to 0.
    """
    u = np.abs(np.asarray(u, np.float64))
    return (((CUBIC_A + 2.0) * u - (CUBIC_A + 3.0)) * u * u + 1.0) * (u < 1.0)


def recipe_blur_taps(sigma: float, unit: float) -> tuple[np.ndarray, np.ndarray]:
    """The recipe's Gaussian pre-blur of flakes: (offsets, weights) of its discrete kernel.

    The recipe blurs with OpenCV's ``ksize``-tap Gaussian, ``ksize`` odd and at least 5,
    at 512 px; ``unit`` = canvas pixels per pixel at 512 px places the taps. Taps under
    0.1 % are left out (at the recipe's sigma of 0.5 px, the outer two, 0.03 % each).
    """
    size = int(max(3.3 * sigma, 5.0))
    size += 1 - size % 2
    weights = cv2.getGaussianKernel(size, sigma).ravel().astype(np.float64)
    offsets = np.arange(size) - size // 2
    keep = weights >= 1e-3
    return offsets[keep] * unit, weights[keep]


def recipe_streak_taps(speed: float) -> int:
    """Taps of the recipe's motion blur of a flake layer at 512 px (1: no blur).

    ``k = int(speed·512)``; no blur for ``k ≤ 1``; else at least 3 and made odd by
    adding one, a column of ``k`` weights ramping from 1 to 0 (length ``k − 1`` px).
    """
    k = int(speed * REFERENCE_SIZE)
    if k <= 1:
        return 1
    k = max(k, 3)
    return k if k % 2 else k + 1


@functools.lru_cache(maxsize=256)
def _blur_taps_cached(sigma: float, unit: float) -> tuple[np.ndarray, np.ndarray]:
    return recipe_blur_taps(sigma, unit)


def flake_profile(cell: float, pitch: float, unit: float, sigma: float) -> np.ndarray:
    """Horizontal profile of one flake on a canvas of ``pitch`` px per column.

    The cubic lobe of a grid cell ``cell`` px wide, blurred by the recipe's Gaussian
    (:func:`recipe_blur_taps`), sampled at ``pitch``: an odd, centred float32 row kernel
    with the flake's value 1 at the cell centre (cached; sigma rounded to 1/1024).
    """
    return _flake_profile_cached(float(cell), float(pitch), float(unit), round(sigma * 1024) / 1024)


@functools.lru_cache(maxsize=4096)
def _flake_profile_cached(cell: float, pitch: float, unit: float, sigma: float) -> np.ndarray:
    offsets, weights = recipe_blur_taps(sigma, unit)
    half = math.ceil((cell + float(np.abs(offsets).max())) / pitch)
    x = np.arange(-half, half + 1) * pitch
    profile = cubic_lobe((x[:, None] - offsets[None, :]) / cell) @ weights
    profile[profile < 1e-4] = 0.0  # zero taps cost OpenCV nothing; trimmed at the ends
    profile = _trim(profile[None, :].astype(np.float32), 1e-4)[0]
    profile.flags.writeable = False
    return profile


def streak_kernel(
    taps: int, angle_deg: float, cell: float, pitch: float, unit: float, sigma: float
) -> np.ndarray:
    """The kernel of one snow layer (see :func:`streak_kernels`)."""
    return streak_kernels([taps], [angle_deg], [cell], [pitch], unit, [sigma])[0]


def streak_kernels(
    taps: Sequence[int],
    angles_deg: Sequence[float],
    cells: Sequence[float],
    pitches: Sequence[float],
    unit: float,
    sigmas: Sequence[float],
) -> list[np.ndarray]:
    """Correlation kernels that draw snow layers' flakes as the recipe's streaks.

    A kernel's rows are grid rows (``cell`` px apart), its columns canvas columns
    (``pitch`` px apart): applied to a canvas holding every flake at its row and column,
    after the horizontal :func:`flake_profile`, then upsampled bicubically in y, it gives
    each flake the recipe's shape — the cubic lobe of its cell, the Gaussian pre-blur
    (``sigma``) and the motion blur of ``taps`` weights ramping from 1 to 0 along
    ``(−sin a, cos a)``, ``unit`` px apart (:func:`recipe_streak_taps`). Each row holds
    the vertical lobe-and-blur weight of every tap at the tap's own column (split
    linearly between the two nearest), so a tilted streak stays as thin as the recipe's
    wherever it passes between columns. The flake is recentred on the weighted mean
    height of its taps, which moves every flake of a layer by the same fraction of a cell
    (flakes are placed at random anyway) and puts the peak of short streaks on a grid
    row, where the upsampling keeps it intact.

    All layers of a stage are built in one vectorised pass. Returns read-only, odd-sized
    float32 arrays, anchor at their centre.
    """
    k = np.asarray(taps, np.int64)[:, None]
    cell = np.asarray(cells, np.float64)[:, None, None, None]
    i = np.arange(int(k.max()), dtype=np.float64)[None, :]
    # Tap i of k: ramp weight 1 − i/(k − 1) (a single tap: 1), (k − 1)/2 − i px along.
    ramp = np.where(i < k, np.where(k > 1, 1.0 - i / np.maximum(k - 1, 1), 1.0), 0.0)
    weights = ramp / ramp.sum(axis=1, keepdims=True)
    along = ((k - 1) / 2 - i) * (unit * (ramp > 0))
    rad = np.radians(np.asarray(angles_deg, np.float64))[:, None]
    ty, tx = np.cos(rad) * along, -np.sin(rad) * along
    blur = [_blur_taps_cached(round(float(s), 6), float(unit)) for s in sigmas]
    size = max(len(w) for _, w in blur)
    if any(len(w) != size for _, w in blur):  # wider blurs than the recipe's: centre-pad
        blur = [(np.pad(o, (size - len(o)) // 2), np.pad(w, (size - len(w)) // 2)) for o, w in blur]
    offsets = np.stack([o for o, _ in blur])
    blur_w = np.stack([w for _, w in blur])
    reach = np.abs(ty).max(axis=1) + np.abs(offsets).max(axis=1)
    half_rows = int(np.ceil(reach / cell[:, 0, 0, 0]).max()) + 1
    rows = (np.arange(-half_rows, half_rows + 1)[None, :] * cell[:, :, 0, 0]
            + (weights * ty).sum(axis=1)[:, None])
    # Vertical weight of every tap on every row: its lobe, blurred, times its ramp weight.
    lobe = cubic_lobe((rows[:, :, None, None] - ty[:, None, :, None] - offsets[:, None, None, :]) / cell)
    vertical = (lobe @ blur_w[:, None, :, None])[..., 0] * weights[:, None, :]  # (L, rows, taps)
    # Each tap at its own column, split linearly between the two nearest.
    cols = tx / np.asarray(pitches, np.float64)[:, None]
    half_cols = int(np.ceil(np.abs(cols).max())) + 1
    grid = np.arange(-half_cols, half_cols + 1, dtype=np.float64)
    split = np.maximum(0.0, 1.0 - np.abs(grid[None, None, :] - cols[:, :, None]))  # (L, taps, cols)
    pattern = vertical @ split
    # Weights under 0.1 % (0.05 % of a streak's mass) cost OpenCV a multiply-add per pixel
    # each: dropped, the rest rescaled to the same mass.
    mass = pattern.sum(axis=(1, 2))
    pattern[pattern < 1e-3] = 0.0
    pattern *= (mass / np.maximum(pattern.sum(axis=(1, 2)), 1e-12))[:, None, None]
    # Trim every kernel symmetrically to its non-zero extent (odd, centred).
    ry = _extent(pattern.any(axis=2), half_rows)
    rx = _extent(pattern.any(axis=1), half_cols)
    # A pattern drawn around each flake is a correlation with the mirrored kernel.
    mirrored = pattern[:, ::-1, ::-1].astype(np.float32)
    kernels = []
    for one, y, x in zip(mirrored, ry.tolist(), rx.tolist(), strict=True):
        kernel = np.ascontiguousarray(one[half_rows - y : half_rows + y + 1, half_cols - x : half_cols + x + 1])
        kernel.flags.writeable = False
        kernels.append(kernel)
    return kernels


def _extent(nonzero: np.ndarray, centre: int) -> np.ndarray:
    """Per row of ``nonzero`` (L, 2·centre + 1): the largest distance of a True from the
    centre (0 when all are False)."""
    n = nonzero.shape[1]
    first = np.where(nonzero.any(axis=1), nonzero.argmax(axis=1), centre)
    last = np.where(nonzero.any(axis=1), n - 1 - nonzero[:, ::-1].argmax(axis=1), centre)
    return np.maximum(centre - first, last - centre)
