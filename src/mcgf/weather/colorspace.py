"""Brightness changes in luminance colour spaces, as closed-form float maths.

The recipe changes brightness by converting to one of six colour spaces chosen at random
(YCrCb, HSV, HLS, Lab, Luv, YUV), multiplying/adding on its brightness channel (in 8-bit
units, saturating) and converting back. Keeping the other channels fixed, each case has
a direct RGB form, written here once for NumPy arrays and torch tensors alike:

* YCrCb, YUV: chroma is stored as ``R − Y`` and ``B − Y``, so RGB shifts by ``Y' − Y``;
* HSV: hue and saturation fixed means RGB scales by ``V' / V``;
* HLS: RGB moves about ``L`` with chroma rescaled by ``(1 − |2L' − 1|) / (1 − |2L − 1|)``;
* Lab: the cube-root coordinates ``f(X), f(Z)`` shift with ``f(Y)``;
* Luv: ``u, v`` are ``13·L·(u' − u_n)``, so chromaticity moves by ``L / L'``.

Constants are OpenCV's (sRGB primaries, D65 white, its Lab/Luv thresholds), so the uint8
fast path (``cv2.cvtColor``) and this float path agree up to 8-bit rounding. This float
form also serves 16-bit images and the batched torch path.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Colour spaces the recipe picks from, in its order.
SPACES: tuple[str, ...] = ("YCrCb", "HSV", "HLS", "Lab", "Luv", "YUV")

_RGB2XYZ = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
_XYZ2RGB = (
    (3.240479, -1.53715, -0.498535),
    (-0.969256, 1.875991, 0.041556),
    (0.055648, -0.204043, 1.057311),
)
_WHITE = (0.950456, 1.0, 1.088754)
_LAB_T = 0.008856
_LAB_K = 903.3
_UN = 4 * _WHITE[0] / (_WHITE[0] + 15 * _WHITE[1] + 3 * _WHITE[2])
_VN = 9 * _WHITE[1] / (_WHITE[0] + 15 * _WHITE[1] + 3 * _WHITE[2])
_EPS = 1e-6


class _NumpyOps:
    where = staticmethod(np.where)
    abs = staticmethod(np.abs)
    sqrt = staticmethod(np.sqrt)

    @staticmethod
    def clip(x: Any, lo: Any, hi: Any) -> Any:
        return np.minimum(np.maximum(x, lo), hi)

    @staticmethod
    def stack(parts: list[Any]) -> Any:
        return np.stack(parts, axis=-1)

    @staticmethod
    def amax(x: Any) -> Any:
        return x.max(axis=-1)

    @staticmethod
    def amin(x: Any) -> Any:
        return x.min(axis=-1)


class _TorchOps:
    def __init__(self) -> None:
        import torch

        self.torch = torch

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        return self.torch.where(cond, a, b)

    def abs(self, x: Any) -> Any:
        return x.abs()

    def sqrt(self, x: Any) -> Any:
        return x.sqrt()

    def clip(self, x: Any, lo: Any, hi: Any) -> Any:
        return self.torch.minimum(self.torch.maximum(x, self._t(lo, x)), self._t(hi, x))

    def stack(self, parts: list[Any]) -> Any:
        return self.torch.stack(parts, dim=-1)

    def amax(self, x: Any) -> Any:
        return x.amax(dim=-1)

    def amin(self, x: Any) -> Any:
        return x.amin(dim=-1)

    def _t(self, v: Any, like: Any) -> Any:
        return v if self.torch.is_tensor(v) else self.torch.tensor(v, dtype=like.dtype, device=like.device)


def _ops(x: Any) -> Any:
    return _NumpyOps() if isinstance(x, np.ndarray) else _TorchOps()


#: What the recipe's multiplication loses on average: it truncates to whole levels.
MUL_TRUNCATION = 0.5


def transfer(level: Any, mul: Any, add: Any, mul_first: Any, ops: Any) -> Any:
    """The recipe's brightness op on levels: multiply and add, saturating each step.

    ``mul_first`` picks the order (the recipe shuffles the two operations per image).
    This continuous form (float images, the torch path) takes off the half level the
    recipe's truncating multiplication loses on average; :func:`recipe_table` is the
    exact 8-bit table.
    """
    def times(x: Any) -> Any:
        return ops.clip(x * mul - MUL_TRUNCATION, 0.0, 255.0)

    a = ops.clip(times(level) + add, 0.0, 255.0)
    b = times(ops.clip(level + add, 0.0, 255.0))
    if isinstance(mul_first, (bool, np.bool_)):
        return a if mul_first else b
    return ops.where(mul_first, a, b)


def recipe_table(mul: float, add: float, mul_first: bool) -> np.ndarray:
    """The recipe's 8-bit brightness table (imgaug 0.4.0 ``Multiply``, ``Add`` on uint8).

    ``Multiply`` is ``float32(level)·float32(mul)`` clipped and truncated to uint8;
    ``Add`` rounds its value to a whole level and saturates. Returns 256 uint8 levels.
    """
    levels = np.arange(256, dtype=np.int64)
    plus = int(np.clip(np.round(add), -255, 255))

    def times(x: np.ndarray) -> np.ndarray:
        return np.clip(x.astype(np.float32) * np.float32(mul), 0, 255).astype(np.uint8).astype(np.int64)

    def plus_(x: np.ndarray) -> np.ndarray:
        return np.clip(x + plus, 0, 255)

    out = plus_(times(levels)) if mul_first else times(plus_(levels))
    return out.astype(np.uint8)


def adjust_brightness(rgb: Any, space: str, mul: Any, add: Any, mul_first: Any) -> Any:
    """Change brightness of RGB in [0, 1] (channels last) in ``space``; returns RGB in [0, 1].

    ``mul``/``add`` are in 8-bit units of the space's brightness channel (as in the recipe);
    for torch they may be tensors broadcastable to the image without its channel axis.
    """
    ops = _ops(rgb)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]

    def level(v: Any, full: float) -> Any:  # brightness in [0, full] -> new value
        return transfer(v * (255.0 / full), mul, add, mul_first, ops) * (full / 255.0)

    if space in ("YCrCb", "YUV"):
        y = 0.299 * r + 0.587 * g + 0.114 * b
        out = rgb + (level(y, 1.0) - y)[..., None]
    elif space == "HSV":
        v = ops.amax(rgb)
        v2 = level(v, 1.0)
        ratio = ops.where(v > _EPS, v2 / ops.clip(v, _EPS, 1.0), 0.0)
        out = ops.where((v > _EPS)[..., None], rgb * ratio[..., None], v2[..., None])
    elif space == "HLS":
        mx, mn = ops.amax(rgb), ops.amin(rgb)
        light = (mx + mn) / 2
        light2 = level(light, 1.0)
        den = 1.0 - ops.abs(2.0 * light - 1.0)
        num = 1.0 - ops.abs(2.0 * light2 - 1.0)
        ratio = ops.where(den > _EPS, num / ops.clip(den, _EPS, 1.0), 0.0)
        out = light2[..., None] + (rgb - light[..., None]) * ratio[..., None]
    elif space == "Lab":
        out = _lab(rgb, level, ops)
    elif space == "Luv":
        out = _luv(rgb, level, ops)
    else:
        raise ValueError(f"unknown colour space {space!r}; expected one of {SPACES}")
    return ops.clip(out, 0.0, 1.0)


def _to_linear(c: Any, ops: Any) -> Any:
    return ops.where(c <= 0.04045, c / 12.92, ((ops.clip(c, 0.04045, 1.0) + 0.055) / 1.055) ** 2.4)


def _to_srgb(c: Any, ops: Any) -> Any:
    c = ops.clip(c, 0.0, 1.0)
    return ops.where(c <= 0.0031308, 12.92 * c, 1.055 * ops.clip(c, 0.0031308, 1.0) ** (1 / 2.4) - 0.055)


def _xyz(rgb: Any, ops: Any) -> tuple[Any, Any, Any]:
    lin = [_to_linear(rgb[..., i], ops) for i in range(3)]
    return tuple(m[0] * lin[0] + m[1] * lin[1] + m[2] * lin[2] for m in _RGB2XYZ)  # type: ignore[return-value]


def _rgb(x: Any, y: Any, z: Any, ops: Any) -> Any:
    return ops.stack([_to_srgb(m[0] * x + m[1] * y + m[2] * z, ops) for m in _XYZ2RGB])


def _cbrt_f(t: Any, ops: Any) -> Any:
    """Lab's f(t): cube root above the threshold, linear below (OpenCV's form)."""
    return ops.where(t > _LAB_T, ops.clip(t, _LAB_T, 1e9) ** (1 / 3), 7.787 * t + 16 / 116)


def _cbrt_f_inv(f: Any, ops: Any) -> Any:
    return ops.where(f > 0.206893, ops.clip(f, 0.206893, 1e9) ** 3, (f - 16 / 116) / 7.787)


def _lightness(y: Any, ops: Any) -> Any:
    return ops.where(y > _LAB_T, 116.0 * ops.clip(y, _LAB_T, 1e9) ** (1 / 3) - 16.0, _LAB_K * y)


def _y_from_lightness(light: Any, ops: Any) -> Any:
    return ops.where(light > 8.0, ((ops.clip(light, 8.0, 1e9) + 16.0) / 116.0) ** 3, light / _LAB_K)


def _lab(rgb: Any, level: Any, ops: Any) -> Any:
    x, y, z = _xyz(rgb, ops)
    fx, fy, fz = (_cbrt_f(v / w, ops) for v, w in zip((x, y, z), _WHITE, strict=True))
    light = 116.0 * fy - 16.0
    light = ops.where(y > _LAB_T, light, _LAB_K * y)
    light2 = level(light, 100.0)
    fy2 = ops.where(light2 > 8.0, (light2 + 16.0) / 116.0, 7.787 * (light2 / _LAB_K) + 16 / 116)
    shift = fy2 - fy
    x2 = _cbrt_f_inv(fx + shift, ops) * _WHITE[0]
    y2 = _y_from_lightness(light2, ops)
    z2 = _cbrt_f_inv(fz + shift, ops) * _WHITE[2]
    return _rgb(x2, y2, z2, ops)


def _luv(rgb: Any, level: Any, ops: Any) -> Any:
    x, y, z = _xyz(rgb, ops)
    den = x + 15.0 * y + 3.0 * z
    safe = ops.clip(den, _EPS, 1e9)
    up = ops.where(den > _EPS, 4.0 * x / safe, _UN)
    vp = ops.where(den > _EPS, 9.0 * y / safe, _VN)
    light = _lightness(y, ops)
    light2 = level(light, 100.0)
    # u, v = 13·L·(u' − u_n) stay fixed, so the chromaticity offset scales by L / L'.
    ratio = ops.where(light2 > _EPS, light / ops.clip(light2, _EPS, 1e9), 0.0)
    up2 = _UN + (up - _UN) * ratio
    vp2 = _VN + (vp - _VN) * ratio
    # May be ~0 or negative far from gamut (X, Z then come out negative and clip to 0);
    # only an exact zero must be avoided.
    vp2 = ops.where(ops.abs(vp2) < _EPS, _EPS, vp2)
    y2 = _y_from_lightness(light2, ops)
    x2 = y2 * 9.0 * up2 / (4.0 * vp2)
    z2 = y2 * (12.0 - 3.0 * up2 - 20.0 * vp2) / (4.0 * vp2)
    return _rgb(x2, y2, z2, ops)
