"""Embedders by name: anything that turns a batch of images into feature vectors.

An embedder is any object with::

    identity: str                  # stable description, part of the feature-cache key
    input_size: tuple[int, int]    # (height, width) the images are resized to
    mean, std: tuple[float, float, float]   # per-channel normalisation of [0, 1] pixels
    embed(images: Tensor[B, 3, H, W] float) -> Tensor[B, D]   # or a NumPy array

and optionally ``to(device)`` and ``for_view(view)``, the embedder of ``"drone"`` or
``"satellite"`` images for one with an encoder per view (with an ``identity`` of its own
when their features differ; see :func:`mcgf.evaluation.features.for_view`). Factories are registered under a name with
:func:`register_embedder` and built with :func:`build_embedder`; the command line only
ever goes through this registry, so a trained model becomes available everywhere by
registering one more factory (a factory that accepts ``checkpoint=PATH`` is what
``--checkpoint`` uses; see :data:`CHECKPOINT_EMBEDDER`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch

from mcgf.config import parse_value
from mcgf.errors import UserError
from mcgf.registry import USER_MODULES, Registry, factory_keywords


@runtime_checkable
class Embedder(Protocol):
    """What evaluation needs from a model (see the module docstring)."""

    identity: str
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` normalised images → ``(B, D)`` features."""
        ...


EmbedderFactory = Callable[..., Embedder]
_REGISTRY: Registry[EmbedderFactory] = Registry("embedder")

#: Name of the factory that ``--checkpoint`` uses when no ``--embedder`` is given.
CHECKPOINT_EMBEDDER = "checkpoint"


def register_embedder(name: str) -> Callable[[EmbedderFactory], EmbedderFactory]:
    """Decorator: register ``factory(**kwargs) -> Embedder`` under ``name``."""

    return _REGISTRY.register(name)


def available_embedders() -> list[str]:
    """Registered embedder names, sorted."""
    return _REGISTRY.names()


def build_embedder(name: str, **kwargs: Any) -> Embedder:
    """Build the embedder registered as ``name`` with ``kwargs``.

    Raises:
        UserError: for an unknown name or an option the factory does not take.
    """
    factory = _REGISTRY.get(name)
    if factory is None:
        have = ", ".join(available_embedders()) or "none"
        if name == CHECKPOINT_EMBEDDER:
            raise UserError(
                f"no embedder can load checkpoints yet (registered: {have}); "
                "pick a training-free one with --embedder"
            )
        raise UserError(f"unknown embedder {name!r}: choose one of {have} (one of your own: "
                        f"import the module that registers it first, {USER_MODULES})")
    params, takes_any = factory_keywords(factory)
    unknown = [k for k in kwargs if k not in params and not takes_any]
    if unknown:
        options = ", ".join(p for p in params if p != "self") or "none"
        raise UserError(
            f"embedder {name!r} has no option {unknown[0]!r} (its options: {options})"
        )
    try:
        return factory(**kwargs)
    except (TypeError, ValueError) as err:
        raise UserError(f"embedder {name!r}: {err}") from None


def parse_embedder_args(pairs: list[str] | None) -> dict[str, Any]:
    """``["grid=8", "size=64"]`` → ``{"grid": 8, "size": 64}``; values are read like
    ``--set`` values (:func:`mcgf.config.parse_value`).

    Raises:
        UserError: for an item without ``=``.
    """
    out: dict[str, Any] = {}
    for item in pairs or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--embedder-arg {item!r} is not KEY=VALUE (e.g. --embedder-arg grid=8)")
        out[key.strip().replace("-", "_")] = parse_value(raw)
    return out
