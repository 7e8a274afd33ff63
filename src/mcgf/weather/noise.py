"""Random fields the effects are built from: power-law ("frequency") noise and density gates.

Power-law noise is white noise whose Fourier amplitudes fall off as ``f**exponent``; the
recipe's cloud layer draws its intensity and alpha maps this way. With the recipe's
exponent −2 the variance above ``f`` cycles per image falls as ``1/f²`` (0.1 % above 32
cycles), so the field is generated on a small grid and upsampled: the result is
indistinguishable from a full-resolution draw and costs a fraction of it.

A gate is a coarse grid of Beta(1, b) values that thins particles in some regions, as
the recipe's snow and rain layers do with an 8×8 grid over the image.
"""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=64)
def _amplitude(h: int, w: int, exponent: float) -> np.ndarray:
    """``f**exponent`` over the radial frequencies of an h×w grid, 0 at DC (cached, read-only)."""
    fy = np.fft.fftfreq(h) * h
    fx = np.fft.fftfreq(w) * w
    f = np.hypot(fy[:, None], fx[None, :])
    f[0, 0] = 1.0
    amplitude = f**exponent
    amplitude[0, 0] = 0.0
    amplitude.flags.writeable = False
    return amplitude


def power_law_noise(
    rng: np.random.Generator, shape: tuple[int, int], exponent: float
) -> np.ndarray:
    """A random field of ``shape`` with amplitude spectrum ``∝ f**exponent``, scaled to [0, 1].

    Frequencies are radial, in cycles per grid; the mean (DC) component is removed before
    the min–max scaling.
    """
    magnitude = rng.random(shape) * _amplitude(shape[0], shape[1], float(exponent))
    phase = rng.random(shape) * (2 * np.pi)
    field = np.fft.ifft2(magnitude * np.exp(1j * phase)).real
    lo, hi = float(field.min()), float(field.max())
    if hi - lo < 1e-12:
        return np.full(shape, 0.5, np.float32)
    return ((field - lo) / (hi - lo)).astype(np.float32)


def beta_gate(rng: np.random.Generator, shape: tuple[int, ...], uniformity: np.ndarray) -> np.ndarray:
    """Grids of Beta(1, 1 − u) values, one ``u`` per grid (``uniformity``, shape ``shape[:1]``).

    High uniformity puts nearly all mass at 1 (particles everywhere); lower values leave
    sparse regions. As in the recipe, ``u`` is drawn once per layer, not per cell, so a
    whole layer is even or patchy. Sampled by inverting the CDF ``1 − (1 − x)**b``.
    """
    b = np.maximum(1.0 - np.asarray(uniformity, np.float64), 1e-4).reshape(-1, *([1] * (len(shape) - 1)))
    draws = rng.random(shape)
    return (1.0 - (1.0 - draws) ** (1.0 / b)).astype(np.float32)


def _salt_table(levels: int = 1024) -> np.ndarray:
    u = (np.arange(levels) + 0.5) / levels
    table = (127.5 * (1.0 + np.abs(np.cos(np.pi * u)))).astype(np.float32)
    return np.append(table, table[-1])  # index `levels` when a float32 fraction rounds to 1


#: Levels of the salt table (a power of two, see :func:`salt_levels`).
SALT_BITS = 10
SALT_LEVELS = 1 << SALT_BITS
_SALT = _salt_table(SALT_LEVELS)


def salt_values(fraction: np.ndarray) -> np.ndarray:
    """Brightness of particles as in the recipe's salt noise, in [127.5, 255].

    The recipe folds a Beta(0.5, 0.5) draw into its upper half; Beta(0.5, 0.5) is the
    arcsine law ``sin²(πU/2)``, so the folded value is ``0.5 + 0.5·|cos(πU)|`` for a
    uniform ``U`` (here ``fraction``, in [0, 1)), read from a 1024-entry table.
    """
    return _SALT[(fraction * np.float32(len(_SALT) - 1)).astype(np.int32)]


def salt_levels(level: np.ndarray) -> np.ndarray:
    """Brightness of particles given their table level ``floor(fraction·SALT_LEVELS)``.

    Equal to :func:`salt_values` of the fraction; lets callers derive the level from the
    same integer as a particle's position instead of a separate float pass.
    """
    return _SALT[level]
