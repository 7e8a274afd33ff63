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


_CV_OPS = {"add": cv2.add, "max": cv2.max, "min": cv2.min}
_NP_OPS = {"add": np.add, "max": np.maximum, "min": np.minimum}


def with_scalar(op: str, a: np.ndarray, value: float, dst: np.ndarray | None = None) -> np.ndarray:
    """``a + value``, ``max(a, value)`` or ``min(a, value)`` (``op``: ``add``, ``max``,
    ``min``) of a float32 array, elementwise, into ``dst`` if given.

    OpenCV reads an array of at most four elements (a 1×1 or 4×1 map: a 1-pixel-wide
    image) as a scalar itself, and then returns a 4×1 float64 result; such arrays take
    NumPy's path, which gives the same float32 values.
    """
    if a.size > 4:
        return _CV_OPS[op](a, scalar(value)) if dst is None else _CV_OPS[op](a, scalar(value), dst=dst)
    return _NP_OPS[op](a, np.float32(value), out=dst)


def subtract_from(value: float, a: np.ndarray, dst: np.ndarray | None = None) -> np.ndarray:
    """``value - a`` of a float32 array, elementwise, into ``dst`` if given (tiny arrays
    as in :func:`with_scalar`)."""
    if a.size > 4:
        return cv2.subtract(scalar(value), a) if dst is None else cv2.subtract(scalar(value), a, dst=dst)
    return np.subtract(np.float32(value), a, out=dst)


def clip_inplace(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Clip a float32 array in place."""
    with_scalar("max", a, lo, dst=a)
    with_scalar("min", a, hi, dst=a)
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

#: Largest work buffer kept between calls. A larger one (a photo of many megapixels) is
#: allocated afresh each time, where the page faults cost little next to the rendering,
#: so that one large image does not leave gigabytes held by every thread that drew it.
KEEP_BYTES = 64 << 20


def scratch(name: str, shape: tuple[int, ...], dtype: np.dtype | type = np.float32) -> np.ndarray:
    """A reusable per-thread work buffer (uninitialised, C-contiguous) of ``shape``.

    Rendering needs several multi-megabyte temporaries per image; fresh allocations of
    that size are page-faulted in by the OS every time, which at 512×512 costs as much as
    the arithmetic. One flat buffer per (name, dtype) of up to :data:`KEEP_BYTES` is kept
    and grown when needed, and a view of the requested shape is returned, so shapes may
    vary from call to call. The view is overwritten by the next call with the same name:
    never hand it to a caller.
    """
    size = math.prod(shape)
    if size * np.dtype(dtype).itemsize > KEEP_BYTES:
        return np.empty(shape, dtype)
    cache: dict[tuple[str, str], np.ndarray] | None = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = {}
    key = (name, np.dtype(dtype).str)
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


#: Values a float image may hold: [0, 1], plus a margin (clipped) for the overshoot of
#: resampling. Anything beyond it is not an image in [0, 1] (e.g. 0..255 data as float).
FLOAT_RANGE = (-0.5, 1.5)


def check_image_values(image: np.ndarray) -> None:
    """Refuse an unsupported dtype (``TypeError``) and a float image whose values are not
    in [0, 1] (``ValueError``): NaN or infinity, or values outside :data:`FLOAT_RANGE`,
    such as 0..255 grey levels stored as float, which clipping would turn white."""
    if image.dtype in (np.uint8, np.uint16):
        return
    if image.dtype.kind != "f":
        raise TypeError(f"unsupported image dtype {image.dtype}: use uint8, uint16 or float in [0, 1]")
    if image.size == 0:
        return
    check_float_range(float(image.min()), float(image.max()), "a float image")


def check_float_range(lo: float, hi: float, subject: str) -> None:
    """Refuse (``ValueError``) float image values from ``lo`` to ``hi`` that are not an
    image in [0, 1]: NaN or infinity, or beyond :data:`FLOAT_RANGE`. ``subject`` starts
    the message (``"a float image"``)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{subject} must hold values in [0, 1], got NaN or infinity")
    if not FLOAT_RANGE[0] <= lo <= hi <= FLOAT_RANGE[1]:
        raise ValueError(
            f"{subject} must hold values in [0, 1], got values from {lo:g} to {hi:g}"
            " (divide 0..255 data by 255, or pass it as uint8)"
        )


def to_working(image: np.ndarray) -> np.ndarray:
    """An image as working grey levels: uint8 as is, uint16 and float in [0, 1] as float32
    in 0..255 (float values are clipped: callers refuse others with
    :func:`check_image_values` first)."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return image.astype(np.float32) * np.float32(1 / 257)
    if image.dtype.kind == "f":
        return np.clip(image, 0.0, 1.0).astype(np.float32) * np.float32(255)
    raise TypeError(f"unsupported image dtype {image.dtype}: use uint8, uint16 or float in [0, 1]")


def from_working(out: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Working grey levels back to ``dtype`` (the inverse of :func:`to_working`)."""
    if dtype == np.uint8:
        return to_uint8(out)
    out = out.astype(np.float32, copy=False)
    if dtype == np.uint16:
        return np.clip(np.rint(out * 257.0), 0, 65535).astype(np.uint16)
    return np.clip(out * (1.0 / 255.0), 0.0, 1.0).astype(dtype)


def jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    """``image`` encoded as a baseline JPEG at ``quality`` (4:2:0 chroma) and decoded again.

    Weathered test sets are stored as JPEG after the weather is drawn, so their queries
    carry a second round of compression that hits the faint colour a veil leaves most.
    Accepts (H, W), (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA (alpha passes through);
    uint8, uint16 or float in [0, 1]; the result has the input's shape and dtype (a JPEG
    holds 8 bits, so other dtypes are quantised to 8 bits on the way).
    """
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be 1..100, got {quality}")
    alpha = image[:, :, 3:] if image.ndim == 3 and image.shape[2] == 4 else None
    colour = image[:, :, :3] if alpha is not None else image
    check_image_values(colour)
    u8 = to_uint8(to_working(colour))
    rgb = u8.ndim == 3 and u8.shape[2] == 3
    # OpenCV encodes BGR: reverse the channels so that luma weights the right ones.
    src = np.ascontiguousarray(u8[:, :, ::-1] if rgb else u8.reshape(u8.shape[:2]))
    ok, buf = cv2.imencode(".jpg", src, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image of these shapes
        raise RuntimeError("JPEG encoding failed")
    dec = cv2.imdecode(buf, cv2.IMREAD_COLOR if rgb else cv2.IMREAD_GRAYSCALE)
    dec = dec[:, :, ::-1] if rgb else dec.reshape(colour.shape)
    out = np.ascontiguousarray(dec if colour.dtype == np.uint8 else from_working(dec, colour.dtype))
    return np.concatenate([out, alpha], axis=2) if alpha is not None else out
