"""Fast elementwise helpers for working images (float32 or uint8 grey levels, H×W×C).

NumPy broadcasting between an (H, W, 3) image and an (H, W) map is several times slower
than OpenCV's saturating vector kernels at 512×512, so the hot paths use these helpers.
OpenCV treats a bare Python number as a 4-vector ``(v, 0, 0, 0)``; the helpers always pass
full 4-tuples so that every channel is affected.
"""

from __future__ import annotations

import math
import threading

import cv2
import numpy as np


def scalar(value: float) -> tuple[float, float, float, float]:
    """An OpenCV scalar with ``value`` in every channel."""
    return (float(value),) * 4


def clip_inplace(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Clip a float32 array in place."""
    cv2.max(a, scalar(lo), dst=a)
    cv2.min(a, scalar(hi), dst=a)
    return a


def to_uint8(a: np.ndarray) -> np.ndarray:
    """Round and saturate float grey levels to a new uint8 array (uint8 is returned as is).

    ``convertScaleAbs`` rounds and saturates in one pass but takes ``|x|``: the renderers
    only produce convex combinations of values in 0..255, so the smallest input is a
    float rounding error above -0.5, which rounds to 0 either way.
    """
    if a.dtype == np.uint8:
        return a
    return cv2.convertScaleAbs(a)


def expand(channel: np.ndarray, channels: int) -> np.ndarray:
    """Repeat an (H, W) map to (H, W, channels) (a scratch buffer) for per-pixel arithmetic."""
    if channels == 1:
        return channel[:, :, None]
    out = scratch(f"expand.{channels}", (*channel.shape, channels), channel.dtype)
    return cv2.merge([channel] * channels, dst=out)


_local = threading.local()


def scratch(name: str, shape: tuple[int, ...], dtype: np.dtype | type = np.float32) -> np.ndarray:
    """A reusable per-thread work buffer (uninitialised, C-contiguous) of ``shape``.

    Rendering needs several multi-megabyte temporaries per image; fresh allocations of
    that size are page-faulted in by the OS every time, which at 512×512 costs as much as
    the arithmetic. One flat buffer per (name, dtype) is kept and grown when needed, and
    a view of the requested shape is returned, so shapes may vary from call to call. The
    view is overwritten by the next call with the same name: never hand it to a caller.
    """
    cache: dict[tuple[str, str], np.ndarray] | None = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = {}
    key = (name, np.dtype(dtype).str)
    size = math.prod(shape)
    buf = cache.get(key)
    if buf is None or buf.size < size:
        buf = cache[key] = np.empty(size, dtype)
    return buf[:size].reshape(shape)


def owned_float(image: np.ndarray) -> np.ndarray:
    """A float32 working copy of a uint8 image in a scratch buffer; float32 input as is.

    Renderers treat float32 input as theirs to modify in place and never modify uint8
    input (the caller's array).
    """
    if image.dtype == np.float32:
        return image
    out = scratch("work", image.shape, np.float32)
    np.copyto(out, image, casting="unsafe")
    return out
