"""Dataset layouts by name: ``university1652``, ``sues200``, ``denseuav``.

:func:`find_dataset` opens a dataset folder with the layout named by ``data.layout`` /
``--layout`` or, when none is named, the one its folder tree shows; every command reads
training views and test sets through the returned :class:`DatasetLayout`. Adding a
benchmark is one module with a :func:`register_layout` class (see
:mod:`mcgf.data.layouts.base`).
"""

from __future__ import annotations

from pathlib import Path

from mcgf.data.layout import list_subfolders
from mcgf.data.layouts import denseuav, sues200, university1652  # noqa: F401  (registration)
from mcgf.data.layouts.base import (
    DIRECTIONS,
    DRONE_ROLES,
    TEST_ROLES,
    DatasetLayout,
    TestFolders,
    TestSet,
    TrainView,
    get_layout,
    layout_names,
    merge_class_folders,
    parse_layout,
    register_layout,
)
from mcgf.errors import UserError, folder_error


def detect_layouts(folder: Path) -> list[type[DatasetLayout]]:
    """The layouts whose tree ``folder`` is the root of (a layout that refines another,
    e.g. DenseUAV of University-1652, replaces it)."""
    found = [get_layout(n) for n in layout_names() if get_layout(n).detect(folder)]
    refined = {getattr(c, "refines", "") for c in found}
    return [c for c in found if c.name not in refined]


def _choices() -> str:
    return " | ".join(layout_names())


def _ambiguous(folder: Path, found: list[type[DatasetLayout]], option: str) -> UserError:
    return UserError(f"{folder}: the folder tree fits several dataset layouts "
                     f"({', '.join(c.name for c in found)}); name one with {option} ({_choices()})")


def find_dataset(path: str | Path, layout: str | None = None, *, option: str = "--layout") -> DatasetLayout:
    """Open the dataset at ``path`` (or in its one sub-folder holding a dataset).

    Args:
        path: the dataset root or its parent.
        layout: a registered layout name, optionally with sub-sets (``sues200:150``);
            ``None`` or ``""`` detects it from the folder tree.
        option: how errors name the layout setting (``--layout`` or ``data.layout``).

    Raises:
        UserError: ``path`` does not exist, holds no dataset, several, or a tree that
            fits several layouts (one line naming the folder and the choices).
    """
    path = Path(path)
    if not path.is_dir():
        raise folder_error("dataset folder", path)
    if layout:
        cls, subsets = parse_layout(layout, option)
        return cls(cls.find_root(path), subsets)
    here = detect_layouts(path)
    if len(here) > 1:
        raise _ambiguous(path, here, option)
    if here:
        return here[0](path)
    below = [(Path(e.path), f) for e in list_subfolders(path) if (f := detect_layouts(Path(e.path)))]
    if len(below) == 1:
        sub, found = below[0]
        if len(found) > 1:
            raise _ambiguous(sub, found, option)
        return found[0](sub)
    if not below:
        if detect_layouts(path.parent):  # pointed at train/ or test/ itself
            raise UserError(f"{path} is a split of the dataset at {path.parent}: point at "
                            f"{path.parent}")
        raise UserError(
            f"{path} has no train/ or test/ folder (University-1652, DenseUAV) and no Training/ or "
            f"Testing/ folder (SUES-200): point at the dataset root, or name its layout with "
            f"{option} ({_choices()})")
    names = ", ".join(p.name for p, _ in below)
    raise UserError(f"{path} holds several datasets ({names}); point at one of them")


def find_datasets(path: Path, layout: str | None = None) -> tuple[list[DatasetLayout], list[str]]:
    """Every dataset at ``path`` or one folder below (what ``mcgf data check`` looks at),
    and one line per folder whose tree fits several layouts. With ``layout`` only that
    layout is looked for."""
    if layout:
        cls, subsets = parse_layout(layout)
        cands = [p for p in [path, *(Path(e.path) for e in list_subfolders(path))] if cls.structure(p)]
        top = [path] if path in cands else cands
        return [cls(p, subsets) for p in top], []
    out: list[DatasetLayout] = []
    problems: list[str] = []
    for folder in [path, *(Path(e.path) for e in list_subfolders(path))]:
        found = detect_layouts(folder)
        if len(found) == 1:
            out.append(found[0](folder))
        elif found:
            problems.append(str(_ambiguous(folder, found, "--layout")))
    return out, problems


__all__ = [
    "DIRECTIONS", "DRONE_ROLES", "TEST_ROLES", "DatasetLayout", "TestFolders",
    "TestSet", "TrainView", "detect_layouts", "find_dataset", "find_datasets", "get_layout",
    "layout_names", "merge_class_folders", "parse_layout", "register_layout",
]
