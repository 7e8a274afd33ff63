"""Synthetic weather for drone images: ten conditions, reproducible per image, fast.

A re-implementation of the multi-weather recipe used by the University-1652 /
University-160k-WX community (written for imgaug 0.4.0, which no longer runs on
current NumPy), on NumPy/OpenCV with a batched torch path:

* :func:`apply_weather` renders one condition on one image; pixels depend only on
  (image, condition, seed, image key), never on call order or worker count;
* :func:`choose_condition` is the reproducible random choice of a condition per image;
* :class:`WeatherTransform` is a picklable dataset transform;
* :func:`apply_weather_batch` (torch, CPU or GPU) renders whole batches from the same
  per-image plans;
* :mod:`mcgf.data.weather_render` pre-renders dataset splits with a manifest (it reads
  datasets, so it sits with the data layer, above the weather engine).

See ``docs/weather.md`` for the recipe, resolution scaling and speed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mcgf.weather.apply import apply_plan, apply_weather
from mcgf.weather.conditions import (
    CLEAN,
    CONDITIONS,
    DARK_VARIANTS,
    UnknownConditionError,
    choose_condition,
    describe,
    recipe,
)
from mcgf.weather.kernels import REFERENCE_SIZE, scale_factor
from mcgf.weather.plan import ENGINE_VERSION, WeatherPlan, render_plan, sample_plan
from mcgf.weather.transform import WeatherTransform

if TYPE_CHECKING:
    from mcgf.weather.batch import apply_weather_batch

__all__ = [
    "CLEAN",
    "CONDITIONS",
    "DARK_VARIANTS",
    "ENGINE_VERSION",
    "REFERENCE_SIZE",
    "UnknownConditionError",
    "WeatherPlan",
    "WeatherTransform",
    "apply_plan",
    "apply_weather",
    "apply_weather_batch",
    "choose_condition",
    "describe",
    "recipe",
    "render_plan",
    "sample_plan",
    "scale_factor",
]


def __getattr__(name: str) -> Any:
    # torch is imported only by code that renders batches with it.
    if name == "apply_weather_batch":
        from mcgf.weather.batch import apply_weather_batch

        return apply_weather_batch
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
