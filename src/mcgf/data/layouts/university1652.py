"""University-1652 (``University-Release/``)::

    train/{drone,satellite,street,google}/<class id>/<images>
    test/{query_drone,gallery_drone,query_satellite,gallery_satellite,
          query_street,gallery_street}/<class id>/<images>

One test protocol; the gallery of ``drone->satellite`` holds the 250 distractor tiles.
Reading goes through :func:`mcgf.data.layout.load_university1652`, so what is read and
every message are those of that loader.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from mcgf.data.layout import (
    TEST_FOLDERS,
    ClassFolderSet,
    find_university1652_root,
    load_university1652,
)
from mcgf.data.layouts.base import DatasetLayout, TestFolders, TestSet, TrainView, register_layout
from mcgf.errors import UserError

if TYPE_CHECKING:
    from mcgf.data.check import CheckReport


@register_layout
class University1652Layout(DatasetLayout):
    """The University-1652 tree (also what ``mcgf synth`` writes by default)."""

    name: ClassVar[str] = "university1652"
    title: ClassVar[str] = "University-1652"
    test_roles = TEST_FOLDERS
    tree: ClassVar[str] = "train/ or test/"
    order: ClassVar[int] = 0

    @classmethod
    def structure(cls, folder: Path) -> bool:
        return (folder / "train").is_dir() or (folder / "test").is_dir()

    @classmethod
    def find_root(cls, path: Path) -> Path:
        return find_university1652_root(path)

    def train_views(self) -> list[TrainView]:
        base = self.root / "train"
        return [TrainView("", base, {"drone": base / "drone", "satellite": base / "satellite"})]

    def read_train(self, *, warn: bool = True) -> tuple[ClassFolderSet, ClassFolderSet]:
        data = load_university1652(self.root, splits=("train",), warn=warn)
        missing = [v for v in ("drone", "satellite") if v not in data.train]
        if missing:
            raise UserError(f"data.root {self.root}: no train/{missing[0]} folder (expected the "
                            "University-1652 layout train/drone/<class>, train/satellite/<class>)")
        return data.train["drone"], data.train["satellite"]

    def test_sets(self) -> list[TestSet]:
        return [TestSet("", self.root / "test", dict(TEST_FOLDERS))]

    def read_test(self, test_set: TestSet, *, warn: bool = True) -> TestFolders:
        return TestFolders(test_set, load_university1652(self.root, splits=("test",), warn=warn).test)

    def protocol(self, weather: bool) -> str:
        return "university-wx" if weather else "university-1652"

    def check(self, report: CheckReport) -> list[Path]:
        from mcgf.data.check import check_university

        return check_university(load_university1652(self.root, warn=False), report)
