"""A weather plan: every random draw for one image, separated from the pixel work.

:func:`sample_plan` draws, from the image's own generator (see :mod:`mcgf.weather.rng`),
all the randomness of a condition for an image size: cloud grids, particle positions and
brightnesses, kernels, angles. The plan is small, picklable and backend-neutral;
:func:`render_plan` turns it into pixels with OpenCV, and :mod:`mcgf.weather.batch`
renders the very same plans with torch for whole batches. So pixels depend only on
(image content, condition, seed, image key, image size), whichever path renders them.

Consecutive rain (or snow) augmenters of a recipe form one stage, which the renderers
compose in closed form (see :mod:`mcgf.weather.particles`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import groupby

import numpy as np

from mcgf.weather.arrays import to_uint8
from mcgf.weather.blur import (
    MotionBlurParams,
    MotionBlurStage,
    render_motion_blur,
    sample_motion_blur,
)
from mcgf.weather.conditions import check_dark_variant, recipe
from mcgf.weather.fog import CloudParams, CloudStage, render_cloud, sample_cloud
from mcgf.weather.particles import (
    ParticleParams,
    RainStage,
    SnowStage,
    render_rain,
    render_snow,
    sample_rain,
    sample_snow,
)
from mcgf.weather.photometric import (
    PhotometricParams,
    PhotometricStage,
    render_photometric,
    sample_photometric,
)
from mcgf.weather.rng import image_rng

Stage = CloudStage | RainStage | SnowStage | PhotometricStage | MotionBlurStage

#: Version of the pixels a (seed, key, condition) gives. Bumped whenever rendering or
#: sampling changes them, so that a pre-rendered set is never resumed with other pixels.
ENGINE_VERSION = "5"


@dataclass(frozen=True)
class WeatherPlan:
    """All random draws of ``condition`` for one image of ``height``×``width``."""

    condition: str
    height: int
    width: int
    stages: tuple[Stage, ...]


def _kind(effect: object) -> str:
    return effect.kind if isinstance(effect, ParticleParams) else type(effect).__name__


def sample_plan(
    condition: str,
    *,
    seed: int,
    key: str,
    height: int,
    width: int,
    dark_variant: str = "train",
) -> WeatherPlan:
    """Draw the plan of ``condition`` for the image ``key`` (see module doc)."""
    check_dark_variant(dark_variant)
    effects = recipe(condition, dark_variant)
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    rng = image_rng(seed, key, condition)
    stages: list[Stage] = []
    for kind, group in groupby(effects, key=_kind):
        items = list(group)
        if kind == "rain":
            stages.append(sample_rain(rng, height, width, items))  # type: ignore[arg-type]
        elif kind == "snow":
            stages.append(sample_snow(rng, height, width, items))  # type: ignore[arg-type]
        else:
            for effect in items:
                stages.append(_sample_single(rng, height, width, effect))
    return WeatherPlan(condition=condition, height=height, width=width, stages=tuple(stages))


def _sample_single(rng: np.random.Generator, height: int, width: int, effect: object) -> Stage:
    if isinstance(effect, CloudParams):
        return sample_cloud(rng, height, width, effect)
    if isinstance(effect, PhotometricParams):
        return sample_photometric(rng, effect)
    if isinstance(effect, MotionBlurParams):
        return sample_motion_blur(rng, height, width, effect)
    raise TypeError(f"no sampler for {type(effect).__name__}")


_RENDERERS: dict[type, Callable[[np.ndarray, object], np.ndarray]] = {
    CloudStage: render_cloud,  # type: ignore[dict-item]
    RainStage: render_rain,  # type: ignore[dict-item]
    SnowStage: render_snow,  # type: ignore[dict-item]
    PhotometricStage: render_photometric,  # type: ignore[dict-item]
    MotionBlurStage: render_motion_blur,  # type: ignore[dict-item]
}


def render_stages(image: np.ndarray, plan: WeatherPlan) -> np.ndarray:
    """Render a plan on an (H, W, C) working image of grey levels.

    uint8 input is never modified; float32 input is modified in place. The result is
    uint8 or float32 and may be a per-thread scratch buffer: copy or convert it before
    the next call. With uint8 input, an intermediate float result is rounded to 8 bits
    before a snow stage (whose 8-bit path is exact and cheaper; the recipe itself
    works in 8 bits between augmenters). Use :func:`render_plan` unless you manage
    buffers yourself.
    """
    if image.shape[:2] != (plan.height, plan.width):
        raise ValueError(
            f"plan is for {plan.height}x{plan.width} images, got {image.shape[0]}x{image.shape[1]}"
        )
    out = image
    for stage in plan.stages:
        if image.dtype == np.uint8 and isinstance(stage, SnowStage):
            # Rounding once to 8 bits costs less than snow's float path, and snow's
            # saturating add/max is exact in 8 bits; the result is 8-bit anyway.
            out = to_uint8(out)
        out = _RENDERERS[type(stage)](out, stage)
    return out


def render_plan(image: np.ndarray, plan: WeatherPlan) -> np.ndarray:
    """Render a plan on an (H, W, 3) image of grey levels (uint8, or float32 in 0..255).

    Returns a new uint8 or float32 array (float32 values are not clipped); the input is
    left unchanged.
    """
    if image.dtype not in (np.uint8, np.float32):
        raise TypeError(f"render_plan takes uint8 or float32 grey levels, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"render_plan takes an (H, W, 3) image, got shape {image.shape} "
            "(apply_plan also takes grey and RGBA images)"
        )
    work = image if image.dtype == np.uint8 else image.copy()
    out = render_stages(work, plan)
    return out.copy() if out is image or out.dtype == np.float32 else out
