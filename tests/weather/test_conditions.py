"""Condition names: one source (``mcgf.weather.conditions``), one parser, one clean name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mcgf
from mcgf.evaluation.university import COMMUNITY_ORDER, NO_WEATHER
from mcgf.weather import CLEAN, CONDITIONS, UnknownConditionError
from mcgf.weather.conditions import parse_conditions

SRC = Path(mcgf.__file__).parent


def test_clean_is_the_communitys_name_and_comes_first() -> None:
    assert CLEAN == "normal" and CONDITIONS[0] == CLEAN
    assert COMMUNITY_ORDER is CONDITIONS
    assert NO_WEATHER not in CONDITIONS  # a row without weather is not a weather condition


def test_parse_conditions() -> None:
    assert parse_conditions("all", "--weather") == list(CONDITIONS)
    assert parse_conditions(" fog, dark ,fog", "--weather") == ["fog", "dark"]
    with pytest.raises(UnknownConditionError, match="unknown weather condition 'hail' in --weather"):
        parse_conditions("fog,hail", "--weather")
    with pytest.raises(UnknownConditionError, match="--condition is empty"):
        parse_conditions(" , ", "--condition")


def _string_constants(path: Path) -> list[tuple[int, str]]:
    """String literals of a module that are not docstrings."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def test_condition_names_are_spelled_in_one_module_only() -> None:
    """No other module writes the clean name or keeps its own list of the conditions."""
    home = SRC / "weather" / "conditions.py"
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path == home:
            continue
        found += [f"{path.relative_to(SRC)}:{line}: {value!r}"
                  for line, value in _string_constants(path) if value == CLEAN]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                names = {e.value for e in node.elts if isinstance(e, ast.Constant)} & set(CONDITIONS)
                if len(names) >= 3:
                    found.append(f"{path.relative_to(SRC)}:{node.lineno}: a list of conditions")
    assert not found, "use mcgf.weather.CLEAN / CONDITIONS instead of:\n" + "\n".join(found)
