"""``apply_weather``: one image in, the same image under a weather condition out.

Accepted images (NumPy arrays): (H, W, 3) RGB, (H, W) or (H, W, 1) grey, (H, W, 4) RGBA
(alpha is passed through unchanged); dtype uint8, uint16 (full 16-bit range) or float
in [0, 1]. The result has the input's shape and dtype. Effects work in 8-bit grey
levels as the recipe does; 16-bit and float images are processed in float32 without
quantising to 8 bits (except where noted in :mod:`mcgf.weather.photometric`).
"""

from __future__ import annotations

import numpy as np

from mcgf.weather.arrays import check_image_values, from_working, to_working
from mcgf.weather.conditions import CLEAN, check_condition, check_dark_variant
from mcgf.weather.plan import WeatherPlan, render_stages, sample_plan

_SCALES = {np.dtype(np.uint8): 1.0, np.dtype(np.uint16): 257.0}


def check_image(image: np.ndarray) -> None:
    """Refuse what :func:`apply_weather` does not take (see its ``Raises``), before any work."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a NumPy array, got {type(image).__name__}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))):
        raise ValueError(
            f"image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape {image.shape}"
        )
    check_image_values(image)


def _split(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(H, W, 3) working colour part and the alpha channel (or None)."""
    if image.ndim == 2 or image.shape[2] == 1:
        grey = image.reshape(image.shape[:2])
        return np.repeat(grey[:, :, None], 3, axis=2), None
    alpha = image[:, :, 3] if image.shape[2] == 4 else None
    return np.ascontiguousarray(image[:, :, :3]), alpha


def apply_plan(image: np.ndarray, plan: WeatherPlan) -> np.ndarray:
    """Render a sampled :class:`~mcgf.weather.plan.WeatherPlan` on an image (any accepted form)."""
    check_image(image)
    return _apply_checked(image, plan)


def _apply_checked(image: np.ndarray, plan: WeatherPlan) -> np.ndarray:
    rgb, alpha = _split(image)
    if not plan.stages:
        return image.copy()
    out = from_working(render_stages(to_working(rgb), plan), image.dtype)
    if image.ndim == 2 or image.shape[2] == 1:
        grey = out.astype(np.float32).mean(axis=2)
        if image.dtype.kind != "f":
            grey = np.rint(grey)
        return grey.astype(image.dtype).reshape(image.shape)
    if alpha is not None:
        return np.dstack([out, alpha])
    return out


def apply_weather(
    image: np.ndarray,
    condition: str,
    *,
    seed: int,
    key: str,
    dark_variant: str = "train",
) -> np.ndarray:
    """Render ``condition`` on ``image``; pixels depend only on (image, condition, seed, key).

    Args:
        image: (H, W, 3) RGB, (H, W)/(H, W, 1) grey or (H, W, 4) RGBA; uint8, uint16 or
            float in [0, 1]. Weather is applied at the image's own resolution, with the
            recipe's pixel sizes scaled by ``max(H, W) / 512``.
        condition: one of :data:`~mcgf.weather.conditions.CONDITIONS`.
        seed: integer that, with ``key``, fixes every random draw.
        key: stable identifier of the image, e.g. ``ImageRecord.key``
            (``"<class folder>/<file name>"``).
        dark_variant: ``"train"`` (the recipe's nearly black dark) or ``"test"`` (the
            milder dark of the published weathered test images).

    Returns:
        A new array of the input's shape and dtype (``normal`` returns a copy).

    Raises:
        TypeError: not a NumPy array, or a dtype other than uint8, uint16 and float.
        ValueError: another shape, or a float image not in [0, 1] (NaN, infinity, or
            0..255 grey levels stored as float; an overshoot of up to 0.5 is clipped).
    """
    check_condition(condition)
    check_dark_variant(dark_variant)
    check_image(image)  # type, shape, dtype and float range, before any work
    if condition == CLEAN:
        return image.copy()
    plan = sample_plan(
        condition, seed=seed, key=key, height=image.shape[0], width=image.shape[1],
        dark_variant=dark_variant,
    )
    return _apply_checked(image, plan)
