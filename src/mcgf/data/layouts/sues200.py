"""SUES-200 (Zhu et al., IEEE TCSVT 2023): 200 locations seen from a drone at four flight
heights (150, 200, 250 and 300 m) and from a satellite. After the benchmark's own split
script (``script/split_datasets.py``, 120 training and 80 test locations)::

    Training/<height>/drone/<class id>/<images>        training locations
    Training/<height>/satellite/<class id>/<images>    their tiles (the same at every height)
    Testing/<height>/query_drone/<class id>/<images>   test locations
    Testing/<height>/query_satellite/<class id>/...    test locations
    Testing/<height>/gallery_drone/<class id>/...      all 200 locations
    Testing/<height>/gallery_satellite/<class id>/...  all 200 locations

Each height is its own test protocol (the paper reports a row per height and direction);
training reads every height present (or those selected, ``sues200:150``), each
location's satellite tile once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from mcgf.data.layout import ClassFolderSet, list_subfolders
from mcgf.data.layouts.base import DatasetLayout, TestSet, TrainView, register_layout
from mcgf.errors import UserError

if TYPE_CHECKING:
    from mcgf.data.check import CheckReport

#: The flight heights SUES-200 ships (m).
HEIGHTS: tuple[str, ...] = ("150", "200", "250", "300")
TRAIN, TEST = "Training", "Testing"


@register_layout
class Sues200Layout(DatasetLayout):
    """SUES-200 after its train/test split: one sub-set per flight height."""

    name: ClassVar[str] = "sues200"
    title: ClassVar[str] = "SUES-200"
    subset_label: ClassVar[str] = "height"
    subset_unit: ClassVar[str] = "m"
    tree: ClassVar[str] = "Training/ or Testing/"
    order: ClassVar[int] = 1

    @classmethod
    def structure(cls, folder: Path) -> bool:
        return (folder / TRAIN).is_dir() or (folder / TEST).is_dir()

    @classmethod
    def check_subsets(cls, subsets: Sequence[str], option: str) -> tuple[str, ...]:
        bad = [s for s in subsets if not (s.isascii() and s.isdigit())]
        if bad:
            raise UserError(f"{option} sues200:{','.join(subsets)}: {bad[0]!r} is not a height in "
                            f"metres (SUES-200 has {', '.join(HEIGHTS)})")
        return tuple(str(int(s)) for s in subsets)

    def heights(self, split: str) -> list[str]:
        """Height folders of ``split`` (``Training`` or ``Testing``), lowest first; only the
        selected ones when heights were selected (a selected one that is missing is an
        error naming it). None without a ``split`` folder: a tree may hold only one split."""
        if not (self.root / split).is_dir():
            return []
        here = sorted((e.name for e in list_subfolders(self.root / split)
                       if e.name.isascii() and e.name.isdigit()), key=int)
        if not self.subsets:
            return here
        missing = [h for h in self.subsets if h not in here]
        if missing:
            raise UserError(f"{self.root / split / missing[0]} is missing (heights in "
                            f"{self.root / split}: {', '.join(here) or 'none'})")
        return [h for h in here if h in self.subsets]

    def read_folder(self, path: Path, view: str, *, warn: bool = True) -> ClassFolderSet:
        """``<height>/<view or role>/<class id>/<images>``; image keys start with the height.

        Every height names its images alike (``0.jpg`` ...): without the height the same
        key, and so the same weather draw, would go to the views of one location at every
        height (training merges them). Query and gallery copies of an image keep one key.
        """
        folder = super().read_folder(path, view, warn=warn)
        prefix = f"{path.parent.name}/"
        folder.key_prefixes = {p: prefix for paths in folder.classes.values() for p in paths}
        return folder

    def train_views(self) -> list[TrainView]:
        base = self.root / TRAIN
        return [TrainView(h, base / h, {"drone": base / h / "drone", "satellite": base / h / "satellite"})
                for h in self.heights(TRAIN)]

    def train_hint(self) -> str:
        return "Training/<height>/drone/<class>, Training/<height>/satellite/<class>"

    def test_sets(self) -> list[TestSet]:
        return [TestSet(h, self.root / TEST / h) for h in self.heights(TEST)]

    def protocol(self, weather: bool) -> str:
        return "sues-200-wx" if weather else "sues-200"

    def check(self, report: CheckReport) -> list[Path]:
        images = super().check(report)
        for split in (TRAIN, TEST):
            if not (self.root / split).is_dir():
                continue
            here = self.heights(split)
            absent = [h for h in HEIGHTS if h not in here] if not self.subsets else []
            other = [h for h in here if h not in HEIGHTS]
            if absent:
                report.warnings.append(f"{self.root / split}: no folder for height {', '.join(absent)} "
                                       f"(SUES-200 has {', '.join(HEIGHTS)})")
            if other:
                report.notes.append(f"{self.root / split}: height folders beyond SUES-200's four: "
                                    f"{', '.join(other)}")
        if not (self.root / TRAIN).is_dir():
            report.notes.append(f"{self.root}: no {TRAIN}/ folder (test split only)")
        return images
