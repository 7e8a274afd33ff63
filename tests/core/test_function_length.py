"""Functions of every module of mcgf stay short enough to read: none over 80 lines
unless its docstring says why (a sentence with "over 80 lines")."""

from __future__ import annotations

import ast
from pathlib import Path

import mcgf

SRC = Path(mcgf.__file__).resolve().parent
LIMIT = 80


def long_functions(root: Path) -> list[str]:
    """``path:line name (n lines)`` of every function under ``root`` over :data:`LIMIT`
    lines whose docstring gives no reason."""
    long = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > LIMIT and "over 80 lines" not in (ast.get_docstring(node) or ""):
                long.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({lines} lines)")
    return long


def test_no_long_function_without_a_reason() -> None:
    assert long_functions(SRC) == []


def test_a_long_function_is_found(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(LIMIT))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(
        f"def long():\n{body}\n\ndef reasoned():\n    \"\"\"It stays over 80 lines.\"\"\"\n{body}"
        f"\n\ndef short():\n{body[: body.index(chr(10)) + 1]}", encoding="utf-8")
    assert long_functions(tmp_path) == [f"pkg/m.py:1 long ({LIMIT + 1} lines)"]
