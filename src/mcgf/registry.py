"""Factories by name: the one registry mechanism behind models, embedders and variants.

A :class:`Registry` maps names to factories (functions or classes); ``register(name)``
is a decorator, ``get(name)`` looks one up. Callers add their own wording for errors.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Generic, TypeVar

from mcgf.errors import NameTaken

F = TypeVar("F", bound=Callable[..., object])

#: How the command line loads a module of a user's own that registers factories (named in
#: the errors about an unknown name).
USER_MODULES = "mcgf --import MODULE"


def factory_keywords(factory: Callable[..., object]) -> tuple[list[str], bool]:
    """The keyword arguments ``factory`` names (``*args`` and ``**kwargs`` left out), and
    whether it also takes ``**kwargs`` (then any other name is accepted)."""
    params = inspect.signature(factory).parameters.values()
    named = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return named, any(p.kind is p.VAR_KEYWORD for p in params)


class Registry(Generic[F]):
    """Named factories of one kind (``kind`` is used in messages, e.g. ``"model"``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator: register ``factory`` under ``name``; re-registering it is a no-op.

        Raises:
            NameTaken: another factory has ``name``.
        """

        def deco(factory: F) -> F:
            if name in self._factories and self._factories[name] is not factory:
                raise NameTaken(f"a {self.kind} named {name!r} is already registered: register "
                                "yours under another name")
            self._factories[name] = factory
            return factory

        return deco

    def get(self, name: str) -> F | None:
        """The factory registered as ``name``, or ``None``."""
        return self._factories.get(name)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories
