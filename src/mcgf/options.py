"""Typed option sections: one frozen dataclass per config section.

Each field's annotation is the option's type (``int``, ``float``, ``bool``, ``str``,
``list[int]``, ``dict[str, Any]``, unions with ``None``, ...) and :func:`option` attaches
its constraint (a :class:`Check`). :func:`parse_section` turns a mapping of the section into
the dataclass, checking every value, given or default, before any work starts: an unknown
key, a value of the wrong type or one outside its range raises a one-line
:class:`~mcgf.errors.UserError` that names the option as ``section.key``, e.g.
``configs/x.yaml: model.restoration_width must be a positive multiple of 8 (got 4)``.

A dataclass may add checks that involve several fields in a ``check(self)`` method that
raises :class:`OptionError`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mcgf.config import spelling
from mcgf.errors import UserError


@dataclass(frozen=True)
class Check:
    """A constraint on a value that already has the option's type.

    Attributes:
        ok: whether a value is acceptable.
        need: what an acceptable value is, completing "must be ..." (e.g. ``>= 1``).
        bad: values of the right type that ``ok`` rejects (examples for tests and docs).
    """

    ok: Callable[[Any], bool]
    need: str
    bad: tuple[Any, ...] = ()


class OptionError(Exception):
    """Raised by a section's ``check`` method: option ``key`` must be ``need``."""

    def __init__(self, key: str, need: str) -> None:
        super().__init__(f"{key} must be {need}")
        self.key = key
        self.need = need


def option(default: Any, check: Check | None = None) -> Any:
    """A dataclass field with ``default`` (lists and dicts are copied per instance) and an
    optional constraint ``check``, which is not applied to ``None``.

    For a field whose type admits a list or dict, write
    ``dataclasses.field(default_factory=..., metadata=checked(check))`` instead (linters
    flag calls as defaults of mutable types).
    """
    metadata = checked(check)
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def checked(check: Check | None) -> dict[str, Any]:
    """Field metadata that makes :func:`parse_section` apply ``check``."""
    return {"check": check} if check is not None else {}


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def at_least(lo: float) -> Check:
    """``value >= lo``."""
    return Check(lambda v: v >= lo, f">= {_fmt(lo)}", (lo - 1,))


def above(lo: float) -> Check:
    """``value > lo``."""
    return Check(lambda v: v > lo, f"> {_fmt(lo)}", (lo, lo - 5))


def in_range(lo: float, hi: float, *, hi_open: bool = False, lo_open: bool = False) -> Check:
    """``lo <= value <= hi`` (``<`` at an open end)."""

    def ok(v: float) -> bool:
        return (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)

    text = f"in {'(' if lo_open else '['}{_fmt(lo)}, {_fmt(hi)}{')' if hi_open else ']'}"
    bad = (lo - 5, hi + 5) + ((hi,) if hi_open else ()) + ((lo,) if lo_open else ())
    return Check(ok, text, bad)


def one_of(*choices: Any) -> Check:
    """``value in choices``."""
    text = " or ".join(repr(c) for c in choices)
    if len(choices) > 2:
        text = ", ".join(repr(c) for c in choices[:-1]) + f" or {choices[-1]!r}"
    bad = ("bad",) if all(isinstance(c, str) for c in choices) else (
        next(i for i in range(-1, 100) if i not in choices),)
    return Check(lambda v: v in choices, text, bad)


def multiple_of(n: int) -> Check:
    """A positive multiple of ``n``."""
    return Check(lambda v: v > 0 and v % n == 0, f"a positive multiple of {n}",
                 (n // 2 or n + 1, -n, 0))


NOT_EMPTY = Check(lambda v: len(v) > 0, "not empty", ("",))


# --- types ----------------------------------------------------------------------------------


class _BadType(Exception):
    """A value that does not have the option's type; ``need`` says which type."""

    def __init__(self, need: str) -> None:
        super().__init__(need)
        self.need = need


def describe(hint: Any) -> str:
    """The type ``hint`` in words: ``an integer``, ``a list of integers``, ``null``, ..."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if hint is type(None):
        return "null"
    if origin in (list, tuple, Sequence):
        return f"a list of {_plural(describe(args[0]) if args else 'values')}"
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return "a mapping of options"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        hint, "a value")


def _plural(words: str) -> str:
    for article in ("an ", "a "):
        if words.startswith(article):
            words = words[len(article):]
    return words if words.endswith("s") else words + "s"


def coerce(value: Any, hint: Any) -> Any:
    """``value`` converted to the type ``hint`` where that loses nothing (``3.0`` → ``3``
    for an integer, ``"1e-3"`` → ``0.001`` for a number, a tuple → a list).

    Raises:
        _BadType: the value does not have that type.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg)
            except _BadType:
                pass
        raise _BadType(describe(hint))
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
                and int(value) == value:
            return int(value)
    elif hint is float:
        # YAML 1.1 reads 1e-3 (no dot) as a string: numeric strings count as numbers.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise _BadType("a number") from None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise _BadType("a finite number")
    elif hint is str:
        # Numbers are names too (a folder called 2024 or 0001, as written); booleans and
        # containers are not.
        if isinstance(value, (str, int, float, os.PathLike)) and not isinstance(value, bool):
            return spelling(value) if not isinstance(value, os.PathLike) else os.fspath(value)
    elif origin in (list, tuple, Sequence):
        if isinstance(value, (list, tuple)):
            inner = args[0] if args else Any
            try:
                return [coerce(v, inner) for v in value]
            except _BadType:
                raise _BadType(describe(hint)) from None
    elif origin in (dict, Mapping) or hint in (dict, Mapping):
        if isinstance(value, Mapping):
            return dict(value)
    else:
        raise TypeError(f"no coercion for option type {hint!r}")
    raise _BadType(describe(hint))


# --- sections -------------------------------------------------------------------------------


def parse_section(cls: type, values: Mapping[str, Any] | None, section: str, where: str) -> Any:
    """The dataclass ``cls`` built from the mapping ``values`` of config section ``section``.

    Args:
        cls: a dataclass whose fields are declared with :func:`option` (or plain defaults).
        values: the section as read from the config (``None``: empty).
        section: the section's name in messages (``model``, ``train``, ...).
        where: how to name the config in messages (usually its file path).

    Raises:
        UserError: the section is not a mapping, has an unknown key, or a value (given or
            default) of the wrong type or outside its range; one line naming
            ``section.key`` and the value.
    """
    values = {} if values is None else values
    if not isinstance(values, Mapping):
        raise UserError(f"{where}: '{section}' must be a mapping of options (got {values!r})")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in values if k not in fields)
    if unknown:
        raise UserError(f"{where}: unknown option {section}.{unknown[0]} "
                        f"(known: {', '.join(sorted(fields))})")
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for name, f in fields.items():
        given = name in values
        raw = values[name] if given else _default(f)
        try:
            value = coerce(raw, hints[name])
        except _BadType as err:
            raise UserError(f"{where}: {section}.{name} must be {err.need} (got {raw!r})") from None
        check: Check | None = f.metadata.get("check")
        if check is not None and value is not None and not _passes(check, value):
            raise UserError(f"{where}: {section}.{name} must be {check.need} (got {raw!r})")
        out[name] = value
    obj = cls(**out)
    cross = getattr(obj, "check", None)
    if callable(cross):
        try:
            cross()
        except OptionError as err:
            got = out.get(err.key)
            raise UserError(f"{where}: {section}.{err.key} must be {err.need} (got {got!r})") from None
    return obj


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise TypeError(f"option {f.name} has no default")


def _passes(check: Check, value: Any) -> bool:
    try:
        return bool(check.ok(value))
    except (TypeError, ValueError):
        return False
