"""Functions of the training and model layers stay short enough to read: none over 80
lines unless its docstring says why (a sentence with "over 80 lines")."""

from __future__ import annotations

import ast
from pathlib import Path

import mcgf

SRC = Path(mcgf.__file__).resolve().parent
LIMIT = 80


def test_no_long_function_without_a_reason() -> None:
    long = []
    for package in ("training", "models"):
        for path in sorted((SRC / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > LIMIT and "over 80 lines" not in (ast.get_docstring(node) or ""):
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []
