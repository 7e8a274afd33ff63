"""What every dataset layout provides, and the registry that finds one by name.

A *layout* maps a benchmark's folder tree to the two things the rest of mcgf needs:

* its **training views**: the drone and satellite class folders of the train split
  (several per dataset when the benchmark has sub-sets, e.g. SUES-200's four flight
  heights), merged into one drone and one satellite :class:`ClassFolderSet` for training;
* its **test sets**: one per sub-protocol (one for University-1652 and DenseUAV, one per
  height for SUES-200), each a folder holding the test folders by *role*
  (``query_drone``, ``gallery_satellite``, ...). The directions of :data:`DIRECTIONS`
  pair a query role with a gallery role, so every test set is scored the same way.

Layouts register themselves by name (:func:`register_layout`, like timm's model
registry); :mod:`mcgf.data.layouts` imports the built-in ones and finds the layout of a
folder (:func:`mcgf.data.layouts.find_dataset`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mcgf.data.layout import IMAGE_EXTENSIONS, ClassFolderSet, read_class_folders
from mcgf.errors import NameTaken, UserError

if TYPE_CHECKING:
    from mcgf.data.check import CheckReport

#: direction name -> (query role, gallery role).
DIRECTIONS: dict[str, tuple[str, str]] = {
    "drone->satellite": ("query_drone", "gallery_satellite"),
    "satellite->drone": ("query_satellite", "gallery_drone"),
}
#: Test folder roles shared by the drone <-> satellite benchmarks, and the view of each.
TEST_ROLES: dict[str, str] = {
    "query_drone": "drone",
    "gallery_drone": "drone",
    "query_satellite": "satellite",
    "gallery_satellite": "satellite",
}
#: Roles whose images are drone views (weather applies to them only).
DRONE_ROLES = frozenset({"query_drone", "gallery_drone"})


@dataclass(frozen=True)
class TrainView:
    """The training class folders of one sub-set: ``folders`` maps a view (``drone``,
    ``satellite``) to its folder under ``base``; ``name`` is ``""`` for a layout without
    sub-sets."""

    name: str
    base: Path
    folders: Mapping[str, Path]


@dataclass(frozen=True)
class TestSet:
    """One test protocol of a dataset: the folder holding its role folders.

    ``name`` is ``""`` for a layout with a single test protocol, else the sub-set
    (SUES-200: the height, ``"150"``).
    """

    name: str
    base: Path
    roles: Mapping[str, str] = field(default_factory=lambda: dict(TEST_ROLES))

    def path(self, role: str) -> Path:
        """The folder of ``role`` (whether or not it exists)."""
        return self.base / role

    def has(self, role: str) -> bool:
        """Whether the folder of ``role`` exists."""
        return role in self.roles and self.path(role).is_dir()


@dataclass
class TestFolders:
    """The test folders of a :class:`TestSet` that exist, read (role -> class folders)."""

    test_set: TestSet
    folders: dict[str, ClassFolderSet]

    def __contains__(self, role: object) -> bool:
        return role in self.folders

    def __getitem__(self, role: str) -> ClassFolderSet:
        return self.folder(role)

    def folder(self, role: str) -> ClassFolderSet:
        """The folder of ``role``; a :class:`UserError` naming it if it is absent."""
        if role not in self.folders:
            have = ", ".join(sorted(self.folders)) or "none"
            raise UserError(f"{self.test_set.path(role)} is missing (this dataset has test views: {have})")
        return self.folders[role]


class DatasetLayout:
    """Base of the dataset layouts; an instance is bound to a dataset root.

    Subclasses set the class attributes and implement :meth:`structure`,
    :meth:`train_views` and :meth:`test_sets`; the other methods have defaults that
    suit a drone <-> satellite benchmark with the University-1652 test folders.
    """

    #: Registry name (the value of ``data.layout`` / ``--layout``).
    name: ClassVar[str] = ""
    #: The benchmark's own name, for messages and reports.
    title: ClassVar[str] = ""
    #: What a test sub-set stands for (``"height"``); empty without sub-sets.
    subset_label: ClassVar[str] = ""
    #: Unit of the sub-set names (``"m"``), shown after them.
    subset_unit: ClassVar[str] = ""
    #: Image extensions read (lower case, with the dot).
    extensions: ClassVar[frozenset[str]] = IMAGE_EXTENSIONS
    #: Test roles and their views.
    test_roles: ClassVar[Mapping[str, str]] = TEST_ROLES
    #: The top-level folders that make the tree, for messages (``"train/, test/"``).
    tree: ClassVar[str] = ""
    #: Where the layout comes in listings of the choices (lower first).
    order: ClassVar[int] = 100

    def __init__(self, root: str | Path, subsets: Sequence[str] = ()) -> None:
        self.root = Path(root)
        self.subsets = tuple(subsets)

    def __repr__(self) -> str:
        sel = f":{','.join(self.subsets)}" if self.subsets else ""
        return f"{type(self).__name__}({str(self.root)!r}{', ' + sel if sel else ''})"

    @property
    def spec(self) -> str:
        """``name`` plus the selected sub-sets (``sues200:150``), as ``--layout`` takes it."""
        return self.name + (f":{','.join(self.subsets)}" if self.subsets else "")

    # ------------------------------------------------------------------ detection

    @classmethod
    def structure(cls, folder: Path) -> bool:
        """Whether ``folder`` holds this layout's top-level folders (``--layout`` given)."""
        raise NotImplementedError

    @classmethod
    def detect(cls, folder: Path) -> bool:
        """Whether ``folder`` is a root of this layout when no layout is named. Layouts
        sharing a structure tell themselves apart here (DenseUAV by its files)."""
        return cls.structure(folder)

    @classmethod
    def find_root(cls, path: Path) -> Path:
        """``path`` if it has this layout's structure, else its one sub-folder that has it."""
        from mcgf.data.layout import list_subfolders

        if cls.structure(path):
            return path
        found = [Path(e.path) for e in list_subfolders(path) if cls.structure(Path(e.path))]
        if len(found) == 1:
            return found[0]
        if not found:
            raise UserError(f"{path} has no {cls.tree} folder: point at the {cls.title} root "
                            f"(the folder holding {cls.tree})")
        names = ", ".join(p.name for p in found)
        raise UserError(f"{path} holds several datasets ({names}); point at one of them")

    @classmethod
    def check_subsets(cls, subsets: Sequence[str], option: str) -> tuple[str, ...]:
        """Validate sub-set names given after the layout name (``sues200:150``)."""
        if subsets:
            raise UserError(f"{option} {cls.name}:{','.join(subsets)}: {cls.title} has no sub-sets "
                            f"to pick; use {cls.name}")
        return ()

    # ------------------------------------------------------------------ folders

    def read_folder(self, path: Path, view: str, *, warn: bool = True) -> ClassFolderSet:
        """``path/<class id>/<images>`` with this layout's image extensions."""
        return read_class_folders(path, view, warn=warn, extensions=self.extensions)

    def train_views(self) -> list[TrainView]:
        """The training class folders, one :class:`TrainView` per sub-set present."""
        raise NotImplementedError

    def read_train(self, *, warn: bool = True) -> tuple[ClassFolderSet, ClassFolderSet]:
        """The drone and satellite class folders training reads (sub-sets merged).

        Raises:
            UserError: a view folder is missing.
        """
        views = self.train_views()
        for v in views:
            missing = [k for k in ("drone", "satellite") if not Path(v.folders[k]).is_dir()]
            if missing:
                raise UserError(f"data.root {self.root}: no {v.folders[missing[0]]} folder (expected "
                                f"the {self.title} layout {self.train_hint()})")
        if not views:
            raise UserError(f"data.root {self.root}: no training split (expected the {self.title} "
                            f"layout {self.train_hint()})")
        drones = [self.read_folder(Path(v.folders["drone"]), "drone", warn=warn) for v in views]
        sats = [self.read_folder(Path(v.folders["satellite"]), "satellite", warn=warn) for v in views]
        return merge_class_folders(drones), merge_class_folders(sats, unique_names=True)

    def train_hint(self) -> str:
        """Where the training folders go, for messages."""
        return "train/drone/<class>, train/satellite/<class>"

    def test_sets(self) -> list[TestSet]:
        """The test protocols present (or selected), in the benchmark's order."""
        raise NotImplementedError

    def read_test(self, test_set: TestSet, *, warn: bool = True) -> TestFolders:
        """Every role folder of ``test_set`` that exists, read."""
        return TestFolders(test_set, {role: self.read_folder(test_set.path(role), view, warn=warn)
                                      for role, view in test_set.roles.items() if test_set.has(role)})

    def subset_title(self, name: str) -> str:
        """How a sub-set is named for people (``height 150 m``); ``""`` for none."""
        if not name:
            return ""
        return f"{self.subset_label} {name}{' ' + self.subset_unit if self.subset_unit else ''}".strip()

    # ------------------------------------------------------------------ protocol

    def protocol(self, weather: bool) -> str:
        """Name of the protocol recorded in ``metrics.json``."""
        return f"{self.name}-wx" if weather else self.name

    #: Ranked gallery items per query that :meth:`extra_metrics` needs (0: none).
    extra_topk: ClassVar[int] = 0

    def extra_metrics(self, direction: str, query_labels: np.ndarray, query_valid: np.ndarray,
                      top_labels: np.ndarray) -> dict[str, Any]:
        """Metrics of this benchmark beyond R@K/AP, from the labels of each query's
        :attr:`extra_topk` best gallery items (rows of unreadable queries are ``-1``)."""
        return {}

    def notes(self) -> list[str]:
        """Lines about what this dataset lets the evaluation compute (e.g. a missing
        coordinates file)."""
        return []

    # ------------------------------------------------------------------ check

    def check(self, report: CheckReport) -> list[Path]:
        """Add this dataset's counts, notes, warnings and errors to ``report``; returns
        every image path (for decoding)."""
        from mcgf.data.check import check_views

        images: list[Path] = []
        for v in self.train_views():
            train = {view: self.read_folder(Path(p), view, warn=False)
                     for view, p in v.folders.items() if Path(p).is_dir()}
            images += check_views(report, v.base, "train", train, self.train_pairs())
        for ts in self.test_sets():
            folders = self.read_test(ts, warn=False).folders
            images += check_views(report, ts.base, "test", folders, self.test_pairs())
        return images

    def train_pairs(self) -> Sequence[tuple[str, str]]:
        """Views that must share locations in a training sub-set."""
        return (("drone", "satellite"),)

    def test_pairs(self) -> Sequence[tuple[str, str]]:
        """(query, gallery) roles whose overlap ``mcgf data check`` reports."""
        return tuple(DIRECTIONS.values())


def merge_class_folders(sets: Sequence[ClassFolderSet], *, unique_names: bool = False) -> ClassFolderSet:
    """One :class:`ClassFolderSet` holding the classes of ``sets`` (by location id).

    Images of one location from several sets are concatenated in set order; with
    ``unique_names`` an image whose file name the location already has is left out
    (SUES-200 copies each satellite tile into every height's folder). A single set is
    returned as it is.
    """
    if len(sets) == 1:
        return sets[0]
    classes: dict[str, list[Path]] = {}
    name_of: dict[int, str] = {}
    broken: list[Path] = []
    other: list[Path] = []
    key_prefixes: dict[Path, str] = {}
    for s in sets:
        broken += s.broken
        other += s.other
        key_prefixes.update(s.key_prefixes)
        for name, paths in s.classes.items():
            key = name_of.setdefault(int(name), name)
            have = classes.setdefault(key, [])
            seen = {p.name for p in have} if unique_names else set()
            have += [p for p in paths if p.name not in seen]
    ordered = dict(sorted(classes.items(), key=lambda kv: (int(kv[0]), kv[0])))
    return ClassFolderSet(root=sets[0].root.parent, view=sets[0].view, classes=ordered, broken=broken,
                          key_prefixes=key_prefixes, other=other, extensions=sets[0].extensions)


_REGISTRY: dict[str, type[DatasetLayout]] = {}


def register_layout(cls: type[DatasetLayout]) -> type[DatasetLayout]:
    """Class decorator adding a layout to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise NameTaken(f"register_layout({cls.__name__}): a layout named {cls.name!r} is "
                        "already registered: register yours under another name")
    _REGISTRY[cls.name] = cls
    return cls


def layout_names() -> list[str]:
    """Names of the registered layouts (the built-in ones first)."""
    return sorted(_REGISTRY, key=lambda n: (_REGISTRY[n].order, n))


def get_layout(name: str, option: str = "--layout") -> type[DatasetLayout]:
    """The layout class registered as ``name``; a :class:`UserError` naming ``option``
    and the choices otherwise."""
    if name not in _REGISTRY:
        raise UserError(f"{option}: unknown dataset layout {name!r} (choose {' | '.join(layout_names())})")
    return _REGISTRY[name]


def parse_layout(spec: str, option: str = "--layout") -> tuple[type[DatasetLayout], tuple[str, ...]]:
    """``"sues200"`` or ``"sues200:150,250"`` -> (layout class, selected sub-sets)."""
    name, colon, rest = str(spec).strip().partition(":")
    cls = get_layout(name.strip(), option)
    subsets = tuple(dict.fromkeys(p.strip() for p in rest.split(",") if p.strip()))
    if colon and not subsets:
        raise UserError(f"{option} {spec}: name the sub-sets after the colon (e.g. {name}:150)")
    return cls, cls.check_subsets(subsets, option)
