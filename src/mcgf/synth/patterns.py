"""Anti-aliased periodic patterns (windows, dashes, parking stalls).

A square wave sampled at a point aliases into moiré as soon as a pixel covers more than
one period; averaging it over the pixel's footprint removes that. The average of a
square wave over an interval has a closed form through its running integral, so the
filtered pattern costs a few array operations whatever the footprint.
"""

from __future__ import annotations

import numpy as np


def _square_integral(x: np.ndarray, period: float, duty: float) -> np.ndarray:
    """Integral from 0 to ``x`` of a wave that is 1 on ``[0, duty*period)`` of each period."""
    k = np.floor(x / period)
    r = x - k * period
    return k * duty * period + np.minimum(r, duty * period)


def box_filtered_wave(x: np.ndarray, period: float | np.ndarray, duty: float | np.ndarray,
                      width: np.ndarray | float) -> np.ndarray:
    """Mean of the square wave (1 on the first ``duty`` of each ``period``) over
    ``[x - width/2, x + width/2]``; ``width`` is the pixel footprint in the same units."""
    w = np.maximum(width, 1e-4)
    hi = _square_integral(x + w / 2, period, duty)
    lo = _square_integral(x - w / 2, period, duty)
    return (hi - lo) / w


def box_filtered_band(d: np.ndarray, lo: float, hi: float, width: np.ndarray | float) -> np.ndarray:
    """Fraction of ``[d - width/2, d + width/2]`` inside ``[lo, hi]`` (an anti-aliased stripe)."""
    w = np.maximum(width, 1e-4)
    return np.clip(np.minimum(d + w / 2, hi) - np.maximum(d - w / 2, lo), 0.0, None) / w
