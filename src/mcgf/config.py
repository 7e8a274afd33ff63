"""YAML configuration files with ``key.sub=value`` overrides from the command line.

Configs are plain nested dicts; each consumer turns its section into a typed dataclass
and validates it, so errors name the option the user wrote.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from mcgf.errors import UserError


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path``.

    Raises:
        UserError: if the file is missing, is not valid YAML, or is not a mapping.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read config file {path}: {err}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no Python objects
    except _DuplicateKey as err:
        raise UserError(f"config file {path}: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"config file {path} is not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of options (key: value)")
    return data


class _DuplicateKey(Exception):
    """A mapping of the config that names a key twice."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key written twice in one mapping (plain YAML
    keeps the last, so a second ``train:`` section would silently drop the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader says so itself
                continue
            if first is not None:
                lines = f"line {line}" if first == line else f"lines {first} and {line}"
                raise _DuplicateKey(f"{key!r} is written twice in one mapping ({lines}): keep one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


class _Spelled:
    """A number read from text spelled otherwise than Python writes it (``0001``,
    ``1_000``, YAML 1.1's octal ``010``, ``1e3``): an option that takes text gets the
    spelling back (a folder called ``0001`` stays ``0001``), every other use sees the
    number."""

    text: str

    def __new__(cls, value: Any, text: str) -> Any:
        out = super().__new__(cls, value)  # type: ignore[call-arg]  # int's or float's
        out.text = text
        return out

    def __getnewargs__(self) -> tuple[Any, ...]:  # copies and pickles keep the spelling
        return (*super().__getnewargs__(), self.text)  # type: ignore[misc]


class SpelledInt(_Spelled, int):
    """An integer with its spelling (see :class:`_Spelled`)."""


class SpelledFloat(_Spelled, float):
    """A float with its spelling (see :class:`_Spelled`)."""


def keep_spelling(value: Any, text: str) -> Any:
    """``value`` (a number read from ``text``) with its spelling kept where ``str`` of the
    number would not give ``text`` back; anything else unchanged."""
    text = text.strip()
    if isinstance(value, bool) or str(value) == text:
        return value
    if isinstance(value, int):
        return SpelledInt(value, text)
    if isinstance(value, float):
        return SpelledFloat(value, text)
    return value


def spelling(value: Any) -> str:
    """The text ``value`` was read from: a number's own spelling, else ``str(value)``."""
    return value.text if isinstance(value, _Spelled) else str(value)


def _spelled(constructor: Any) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
        return keep_spelling(constructor(loader, node), str(node.value))
    return construct


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int",
                                 _spelled(yaml.SafeLoader.construct_yaml_int))
_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:float",
                                 _spelled(yaml.SafeLoader.construct_yaml_float))


def apply_overrides(config: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``config`` with ``dotted.key=value`` overrides applied.

    Values are parsed as YAML scalars (``3`` is an int, ``true`` a bool, ``[1, 2]`` a list).
    A section that is absent or null (``train:`` with nothing under it) is filled in.

    Raises:
        UserError: for an override without ``=`` or that descends into a non-mapping.
    """
    out = copy.deepcopy(dict(config))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"override {item!r} must look like section.option=value")
        value = parse_value(raw)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if node.get(part) is None:
                # Absent, or written with nothing under it (YAML null): an empty section.
                node[part] = {}
            nxt = node[part]
            if not isinstance(nxt, dict):
                raise UserError(f"override {item!r}: {part} is not a section")
            node = nxt
        node[parts[-1]] = value
    return out


def parse_value(raw: str) -> Any:
    """One command-line value, read as a YAML scalar: ``3`` an int, ``1e-3`` a float,
    ``true`` a bool, ``null`` None, ``[1, 2]`` a list, anything else the text itself.

    Every ``KEY=VALUE`` option of the CLI (``--set``, ``--embedder-arg``) reads values
    this way, so one spelling means the same everywhere.
    """
    if not raw.strip():
        return ""
    try:
        value = yaml.load(raw, Loader=_UniqueKeyLoader)
    except (yaml.YAMLError, _DuplicateKey):
        return raw
    return _number_or_value(value)


def _number_or_value(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` as a string; read such numbers as floats (keeping their
    spelling, :func:`keep_spelling`)."""
    if isinstance(value, str):
        try:
            return keep_spelling(float(value), value)
        except ValueError:
            return value
    return value


def section(config: Mapping[str, Any], name: str, allowed: Iterable[str], where: str) -> dict[str, Any]:
    """The mapping ``config[name]`` (``{}`` if absent), rejecting unknown keys.

    Raises:
        UserError: naming ``where`` (the file) and the unknown key.
    """
    value = config.get(name, {}) or {}
    if not isinstance(value, dict):
        raise UserError(f"{where}: '{name}' must be a mapping of options")
    allowed = set(allowed)
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise UserError(
            f"{where}: unknown option {name}.{unknown[0]} (known: {', '.join(sorted(allowed))})"
        )
    return dict(value)
