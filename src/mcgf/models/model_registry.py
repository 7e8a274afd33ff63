"""Trainable geo-localization models by name (MCGF, and later LPN, Muse-Net, MBEG, ...).

Each variant lives in its own module and registers a factory with
:func:`register_model`; :func:`create_model` builds one by name. Built-in modules are
imported on first use so that importing :mod:`mcgf.models` stays free of timm/diffusers.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from mcgf.errors import UserError
from mcgf.registry import Registry

ModelFactory = Callable[..., nn.Module]
_MODELS: Registry[ModelFactory] = Registry("model")
# Modules whose import registers the built-in models.
_BUILTIN_MODULES = ("mcgf.models.mcgf_model",)


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: register ``factory(**kwargs) -> nn.Module`` (a class works) as ``name``."""

    return _MODELS.register(name)


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def available_models() -> list[str]:
    """Registered model names, sorted."""
    _load_builtins()
    return _MODELS.names()


def _factory(name: str) -> ModelFactory:
    _load_builtins()
    factory = _MODELS.get(name)
    if factory is None:
        raise UserError(f"unknown model {name!r}: choose one of {', '.join(_MODELS.names())}")
    return factory


def model_options(name: str) -> set[str]:
    """Names of the keyword options the model registered as ``name`` accepts.

    Raises:
        UserError: unknown name.
    """
    factory = _factory(name)
    return set(inspect.signature(factory).parameters)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name``.

    Raises:
        UserError: unknown name, or an option the model does not take.
    """
    factory = _factory(name)
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as exc:
        raise UserError(f"bad options for model {name!r}: {exc}") from exc
    return factory(**kwargs)
