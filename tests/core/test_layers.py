"""The package's layers import in one direction only (see docs/architecture.md).

Every module under ``src/mcgf`` is parsed and each of its imports of ``mcgf`` code,
those inside functions included, is checked against the rank table: a module may import
its own package and anything of a lower rank, never a higher rank nor another package
of its own rank.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import mcgf

SRC = Path(mcgf.__file__).parent

#: Rank of each top-level module or package of ``mcgf`` (lower ranks are imported by
#: higher ones). The base modules (rank 0) may import one another.
RANKS: dict[str, int] = {
    # base: no mcgf package below them
    "mcgf": 0, "errors": 0, "config": 0, "fileio": 0, "options": 0, "safeload": 0,
    "runtime": 0, "registry": 0, "panels": 0, "pools": 0, "progress": 0, "launch": 0,
    # the weather engine and the search know no dataset and no model
    "weather": 1, "retrieval": 1,
    # dataset layouts, decoding, datasets (they name weather conditions)
    "data": 2,
    # the procedural benchmark (writes datasets, may weather them)
    "synth": 3,
    # models, their registry and checkpoint folders
    "models": 4,
    # what uses models: training, evaluation (neither imports the other)
    "training": 5, "evaluation": 5,
    # pictures and pages built from evaluations and models
    "reporting": 6,
    # the command line, which the library never imports
    "cli": 7, "__main__": 8,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import of mcgf code in ``path``, at any depth."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
    return [(line, m) for line, m in found if m == "mcgf" or m.startswith("mcgf.")]


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "mcgf"


def _violations() -> list[str]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        here = _layer(_module_name(path))
        for line, target in _imports(path):
            there = _layer(target)
            if there == here:
                continue
            if here not in RANKS or there not in RANKS:
                out.append(f"{path.relative_to(SRC)}:{line}: {here} or {there} has no rank")
                continue
            upward = RANKS[there] > RANKS[here]
            sideways = RANKS[there] == RANKS[here] and RANKS[here] > 0
            if upward or sideways:
                out.append(f"{path.relative_to(SRC)}:{line}: {here} (rank {RANKS[here]}) "
                           f"imports {target} (rank {RANKS[there]})")
    return out


def test_every_module_has_a_rank() -> None:
    layers = {_layer(_module_name(p)) for p in SRC.rglob("*.py")}
    assert layers <= set(RANKS), f"add to RANKS: {sorted(layers - set(RANKS))}"


def test_imports_point_down_the_layers() -> None:
    bad = _violations()
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_the_checker_sees_function_local_and_relative_imports(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A model module importing training inside a function, or a data module importing
    the evaluation relatively, is reported."""
    root = tmp_path / "mcgf"
    (root / "models").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "__init__.py").write_text("")
    (root / "models" / "m.py").write_text("def f():\n    from mcgf.training import loop\n")
    (root / "data" / "d.py").write_text("from ..evaluation import university\nfrom . import layout\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", root)
    bad = _violations()
    assert len(bad) == 2
    assert "models/m.py:2: models (rank 4) imports mcgf.training" in bad[1]
    assert "data/d.py:1: data (rank 2) imports mcgf.evaluation (rank 5)" in bad[0]


def test_one_definition_of_the_views() -> None:
    """``VIEWS`` (the two views a model matches) is defined in mcgf.data.layout only."""
    homes = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            targets = (node.targets if isinstance(node, ast.Assign)
                       else [node.target] if isinstance(node, ast.AnnAssign) else [])
            if any(isinstance(t, ast.Name) and t.id == "VIEWS" for t in targets):
                homes.append(path.relative_to(SRC).as_posix())
    assert homes == ["data/layout.py"]
