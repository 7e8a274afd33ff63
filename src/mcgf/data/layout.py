"""Readers for the University-1652 and University-160k(-WX) folder layouts.

University-1652 (``University-Release/``)::

    train/{drone,satellite,street,google}/<class id>/<images>
    test/{query_drone,gallery_drone,query_satellite,gallery_satellite,
          query_street,gallery_street}/<class id>/<images>

Labels come from the class folder *name* (``"0839"`` is location 839), so views stay
aligned however many folders a view has; empty and missing class folders are allowed.
A class folder name must be a non-negative integer written in ASCII digits: other names
(``-1``, ``+5``, ``1_0``, ``tmp``) and two names of one id (``839`` and ``0839``) are
refused, so that no folder can produce a negative label, which the metrics would read
as junk.

University-160k(-WX): a flat query folder with a names file fixing the submission
order, and a flat gallery folder; names are masked and no labels are given.

Only the file system is read here (no image is decoded), so listing the 168k-image
gallery takes a fraction of a second.

Symbolic links are followed. A link that points to nothing (a *broken* link: its target
was moved or its drive is not mounted) cannot be listed as an image or class folder; the
loaders collect such links in ``broken`` and log one warning per folder, so that missing
images never vanish without notice (``mcgf data check`` reports them too).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mcgf.errors import UserError, folder_error

#: Image file extensions accepted everywhere, compared case-insensitively.
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".webp"})

#: The two views a cross-view model matches (its encoder for each, or one shared): the
#: one definition the models, the datasets and the evaluation use.
VIEWS: tuple[str, ...] = ("drone", "satellite")
#: The views University-1652 ships, in its own order (street and google are read, not matched).
RELEASE_VIEWS: tuple[str, ...] = (*VIEWS, "street", "google")

#: Test folders of University-1652 and the view each holds.
TEST_FOLDERS: dict[str, str] = {
    "query_drone": "drone",
    "gallery_drone": "drone",
    "query_satellite": "satellite",
    "gallery_satellite": "satellite",
    "query_street": "street",
    "gallery_street": "street",
}

#: Label of a *junk* gallery image: the University-1652 metrics remove it from every
#: ranking (the same value as :data:`mcgf.retrieval.metrics.JUNK_LABEL`). No folder of a
#: dataset is read as junk.
JUNK_LABEL = -1

#: Label of an image whose location is not given (University-160k queries and gallery).
#: Kept apart from :data:`JUNK_LABEL`: junk is a gallery item the protocol drops from
#: the ranking, while an unknown image has no ground truth and is never scored by label.
UNKNOWN_LABEL = -2


def is_hidden(name: str) -> bool:
    """True for hidden or system entries that datasets copied between OSes pick up."""
    return name.startswith((".", "__MACOSX", "~")) or name in {"Thumbs.db", "desktop.ini"}


def without_image_extension(name: str) -> str:
    """``name`` without its image extension (any letter case); other dots are part of the
    name (``a.v2`` is not ``a``)."""
    stem, ext = os.path.splitext(name)
    return stem if ext.lower() in IMAGE_EXTENSIONS else name


def is_image_file(name: str, extensions: frozenset[str] = IMAGE_EXTENSIONS) -> bool:
    """True if ``name`` has an accepted image extension (any letter case) and is not hidden.

    ``extensions`` (lower case, with the dot) widens the set for a dataset layout that
    ships other formats (DenseUAV's satellite tiles are ``.tif``).
    """
    return not is_hidden(name) and os.path.splitext(name)[1].lower() in extensions


_log = logging.getLogger(__name__)


def _is_broken_link(entry: os.DirEntry[str]) -> bool:
    """True for a symbolic link whose target does not exist (or a link loop)."""
    return entry.is_symlink() and not os.path.exists(entry.path)


def _entries(folder: str | Path) -> list[os.DirEntry[str]]:
    """The entries of ``folder``; ``[]`` if it does not exist.

    Raises:
        UserError: the folder exists but cannot be listed (e.g. no read permission).
    """
    try:
        return list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as err:
        raise UserError(f"cannot list folder {folder}: {err.strerror or err} "
                        "(give read access to it, or remove it)") from None


def list_images(folder: str | Path, broken: list[Path] | None = None,
                extensions: frozenset[str] = IMAGE_EXTENSIONS, other: list[Path] | None = None) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name; ``[]`` if it does not exist.

    Broken symbolic links with an image name are not images; when ``broken`` is given
    they are appended to it (sorted by name). ``extensions`` as in :func:`is_image_file`.
    When ``other`` is given, the visible files without such an extension (``.bmp``,
    ``.tif``, ``.txt``: not read) are appended to it, sorted by name.

    Raises:
        UserError: ``folder`` cannot be listed.
    """
    folder = Path(folder)
    entries = _entries(folder)
    images = [e for e in entries if is_image_file(e.name, extensions)]
    if other is not None:
        other.extend(sorted(Path(e.path) for e in entries if not is_hidden(e.name)
                            and not is_image_file(e.name, extensions) and e.is_file()))
    if broken is not None:
        broken.extend(sorted(Path(e.path) for e in images if _is_broken_link(e)))
    return sorted((Path(e.path) for e in images if e.is_file()), key=lambda p: p.name)


def list_subfolders(folder: str | Path, broken: list[Path] | None = None) -> list[os.DirEntry[str]]:
    """Visible sub-folders of ``folder`` sorted by name; ``[]`` if it does not exist.

    When ``broken`` is given, visible broken symbolic links (which may have been
    sub-folders) are appended to it.

    Raises:
        UserError: ``folder`` cannot be listed.
    """
    entries = _entries(folder)
    visible = [e for e in entries if not is_hidden(e.name)]
    if broken is not None:
        broken.extend(sorted(Path(e.path) for e in visible if _is_broken_link(e)))
    return sorted((e for e in visible if e.is_dir()), key=lambda e: e.name)


def broken_links_text(folder: str | Path, broken: list[Path]) -> str:
    """One line saying how many broken symbolic links under ``folder`` were skipped."""
    n = len(broken)
    return (f"{folder}: {n} broken symbolic link{'s' if n != 1 else ''} skipped "
            f"(target missing), e.g. {broken[0]}")


def _warn_broken(folder: Path, broken: list[Path], warn: bool) -> None:
    if warn and broken:
        _log.warning("%s", broken_links_text(folder, broken))


@dataclass(frozen=True)
class ImageRecord:
    """One image of a dataset: where it is, which location it shows, from which view."""

    path: Path
    label: int
    view: str
    #: Put before ``<class folder>/<file name>`` in :attr:`key` where that alone does not
    #: tell images apart (SUES-200 names the images of every height alike: ``"150/"``).
    key_prefix: str = ""

    def __post_init__(self) -> None:
        if self.label < 0 and self.label not in (JUNK_LABEL, UNKNOWN_LABEL):
            raise ValueError(f"label {self.label} of {self.path} is neither a location id (>= 0), "
                             f"JUNK_LABEL ({JUNK_LABEL}) nor UNKNOWN_LABEL ({UNKNOWN_LABEL})")

    @property
    def folder_key(self) -> str:
        """``<class folder>/<file name>``: how users and synthetic pose tables name the image."""
        return f"{self.path.parent.name}/{self.path.name}"

    @property
    def key(self) -> str:
        """A stable identifier of the image (``<key prefix><class folder>/<file name>``).

        It does not depend on where the dataset lives, so per-image randomness (weather)
        seeded from it is the same on every machine.
        """
        return self.key_prefix + self.folder_key


@dataclass
class ClassFolderSet:
    """One view folder of University-1652 (e.g. ``train/drone`` or ``test/query_drone``).

    ``classes`` maps the class folder name to its images (possibly empty), in folder
    name order; ``broken`` lists the broken symbolic links that were skipped (class
    folders or images); ``other`` the visible files of class folders that were not read,
    having none of the image ``extensions`` read; ``key_prefixes`` gives the :attr:`ImageRecord.key_prefix` of the
    images that need one (set by a dataset layout, e.g. SUES-200's height).
    """

    root: Path
    view: str
    classes: dict[str, list[Path]] = field(default_factory=dict)
    broken: list[Path] = field(default_factory=list)
    key_prefixes: dict[Path, str] = field(default_factory=dict)
    other: list[Path] = field(default_factory=list)
    extensions: frozenset[str] = IMAGE_EXTENSIONS

    @property
    def num_images(self) -> int:
        return sum(len(v) for v in self.classes.values())

    def record(self, path: Path, label: int) -> ImageRecord:
        """The record of image ``path`` of this view under ``label`` (with its key prefix)."""
        return ImageRecord(path, label, self.view, self.key_prefixes.get(path, ""))

    def records(self) -> list[ImageRecord]:
        """All images as records, class by class in folder name order."""
        return [self.record(path, int(name)) for name, paths in self.classes.items() for path in paths]

    def labels(self) -> list[int]:
        """Integer labels of the non-empty class folders."""
        return [int(name) for name, paths in self.classes.items() if paths]


def class_id(name: str) -> int | None:
    """The location id a class folder name stands for, or ``None`` if it is not one.

    Only ASCII digits are an id (``"0839"`` -> 839). ``int()`` alone would also accept
    ``"-1"`` (the junk label), ``"+5"``, ``" 7"``, ``"1_0"`` and non-ASCII digits.
    """
    return int(name) if name.isascii() and name.isdigit() else None


def read_class_folders(root: str | Path, view: str, *, warn: bool = True,
                       extensions: frozenset[str] = IMAGE_EXTENSIONS) -> ClassFolderSet:
    """Read ``root/<class id>/<images>``; class folder names must be location ids
    (see :func:`class_id`), one folder per id.

    Broken symbolic links are skipped, collected in ``broken`` and, with ``warn``, logged
    as one warning. ``extensions``: the image extensions read (see :func:`is_image_file`).

    Raises:
        UserError: if ``root`` is not a folder, a class folder name is not a non-negative
            integer id, or two folders name the same id.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder (expected <class id>/<images> inside)")
    classes: dict[str, list[Path]] = {}
    folder_of: dict[int, str] = {}
    broken: list[Path] = []
    other: list[Path] = []
    for entry in list_subfolders(root, broken):
        cid = class_id(entry.name)
        if cid is None:
            raise UserError(
                f"class folder {entry.path} is not named by a non-negative integer location id "
                "(digits only; University-1652 uses 4-digit ids such as 0839); rename or remove it"
            )
        if cid in folder_of:
            raise UserError(
                f"class folders {folder_of[cid]} and {entry.name} in {root} are both location {cid}; "
                "merge or remove one"
            )
        folder_of[cid] = entry.name
        classes[entry.name] = list_images(entry.path, broken, extensions, other)
    _warn_broken(root, broken, warn)
    return ClassFolderSet(root=root, view=view, classes=classes, broken=broken, other=other,
                          extensions=extensions)


@dataclass
class University1652:
    """A University-1652-style dataset: the view folders present under ``train``/``test``.

    ``train`` is keyed by view (``drone``, ``satellite``, ...), ``test`` by folder
    (``query_drone``, ``gallery_satellite``, ...). Views that are absent are simply not
    in the dict.
    """

    root: Path
    train: dict[str, ClassFolderSet] = field(default_factory=dict)
    test: dict[str, ClassFolderSet] = field(default_factory=dict)

    def folder(self, split: str, name: str) -> ClassFolderSet:
        """The view folder ``split/name``; a :class:`UserError` if it is absent."""
        folders = {"train": self.train, "test": self.test}.get(split)
        if folders is None:
            raise UserError(f"unknown split {split!r}: use 'train' or 'test'")
        if name not in folders:
            have = ", ".join(sorted(folders)) or "none"
            raise UserError(
                f"{self.root / split / name} is missing (this dataset has {split} views: {have})"
            )
        return folders[name]


def find_university1652_root(path: str | Path) -> Path:
    """Locate the folder holding ``train/`` and/or ``test/``.

    Accepts that folder itself or a parent holding exactly one such folder (e.g. the
    folder into which ``University-Release`` was unpacked).
    """
    path = Path(path)
    if not path.is_dir():
        raise folder_error("dataset folder", path)
    if (path / "train").is_dir() or (path / "test").is_dir():
        return path
    found = [
        Path(e.path)
        for e in list_subfolders(path)
        if (Path(e.path) / "train").is_dir() or (Path(e.path) / "test").is_dir()
    ]
    if len(found) == 1:
        return found[0]
    if not found:
        raise UserError(
            f"{path} has no train/ or test/ folder: point at the University-1652 root "
            "(the folder holding train/ and test/)"
        )
    names = ", ".join(p.name for p in found)
    raise UserError(f"{path} holds several datasets ({names}); point at one of them")


def load_university1652(path: str | Path, splits: Iterable[str] = ("train", "test"), *,
                        warn: bool = True) -> University1652:
    """Read the University-1652 layout under ``path`` (see :func:`find_university1652_root`);
    ``warn`` as in :func:`read_class_folders`."""
    root = find_university1652_root(path)
    data = University1652(root=root)
    splits = tuple(splits)
    if "train" in splits:
        for view in RELEASE_VIEWS:
            if (root / "train" / view).is_dir():
                data.train[view] = read_class_folders(root / "train" / view, view, warn=warn)
    if "test" in splits:
        for name, view in TEST_FOLDERS.items():
            if (root / "test" / name).is_dir():
                data.test[name] = read_class_folders(root / "test" / name, view, warn=warn)
    return data


def aligned_classes(*folder_sets: ClassFolderSet) -> list[str]:
    """Class folder names of the first view whose location is non-empty in every given
    view, in location id order.

    Alignment is by location id (the folder name read as a number, as labels are), never
    by position: ``0839`` in one view and ``839`` in another are the same location.
    """
    if not folder_sets:
        return []
    ids = set(folder_sets[0].labels())
    for fs in folder_sets[1:]:
        ids &= set(fs.labels())
    names = [n for n, paths in folder_sets[0].classes.items() if paths and int(n) in ids]
    return sorted(names, key=lambda n: (int(n), n))


# --------------------------------------------------------------------------- 160k


def read_names_file(path: str | Path) -> list[str]:
    """Query names in submission order, one per line; blank lines and surrounding
    whitespace ignored, order preserved exactly.

    Raises:
        UserError: if the file is missing, empty, or lists a name twice.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"names file {path} does not exist") from None
    except UnicodeDecodeError as err:
        raise UserError(f"names file {path} is not UTF-8 text: {err.reason}") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise UserError(f"names file {path} lists no query")
    seen: set[str] = set()
    for i, name in enumerate(names, 1):
        if name in seen:
            raise UserError(f"names file {path} lists {name!r} twice (second time on line {i})")
        seen.add(name)
    return names


@dataclass
class FlatQuerySet:
    """Queries of the 160k protocol: ``paths[i]`` is the file of ``names[i]``."""

    folder: Path
    names_file: Path
    names: list[str]
    paths: list[Path]
    #: Broken symbolic links with an image name in ``folder`` (skipped).
    broken: list[Path] = field(default_factory=list)


@dataclass
class FlatGallery:
    """A flat gallery folder: ``stems[i]`` is the name to submit for ``paths[i]``."""

    folder: Path
    paths: list[Path]
    #: Broken symbolic links with an image name in ``folder`` (skipped).
    broken: list[Path] = field(default_factory=list)

    @property
    def stems(self) -> list[str]:
        return [p.stem for p in self.paths]


def load_flat_queries(folder: str | Path, names_file: str | Path, *, warn: bool = True) -> FlatQuerySet:
    """Match every line of the names file to a file of ``folder``, keeping its order.

    A line may carry the extension (``0AD9uIptRbTXM6h.jpeg``, an image extension in any
    letter case) or not; ``a.b`` names the image ``a.b.<ext>``, never ``a.<ext>``. Broken
    symbolic links are skipped (and logged with ``warn``); a listed query that is one is missing.

    Raises:
        UserError: if a listed query has no file, a stem matches several files, or two
            lines name the same file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise folder_error("query folder", folder)
    names = read_names_file(names_file)
    broken: list[Path] = []
    files = list_images(folder, broken)
    by_name = {p.name: p for p in files}
    by_stem: dict[str, list[Path]] = {}
    for p in files:
        by_stem.setdefault(p.stem, []).append(p)
    paths: list[Path] = []
    missing: list[str] = []
    listed: dict[Path, str] = {}
    for name in names:
        p = by_name.get(name)
        if p is None:
            # Only an image extension is taken off: "a.v2" is the image "a.v2.<ext>", not "a".
            cands = by_stem.get(name) or by_stem.get(without_image_extension(name)) or []
            if len(cands) > 1:
                raise UserError(
                    f"query {name!r} of {names_file} matches several files in {folder}: "
                    + ", ".join(c.name for c in cands)
                )
            p = cands[0] if cands else None
        if p is None:
            missing.append(name)
            continue
        if p in listed:  # "abc" and "abc.jpeg": one query, two answer lines
            raise UserError(f"names file {names_file} lists {p.name} twice (as {listed[p]!r} "
                            f"and {name!r}): list every query once")
        listed[p] = name
        paths.append(p)
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        why = f" ({len(broken)} broken symbolic links in that folder)" if broken else ""
        raise UserError(
            f"{len(missing)} queries of {names_file} have no image in {folder}{why}: "
            + ", ".join(missing[:3]) + more
        )
    _warn_broken(folder, broken, warn)
    return FlatQuerySet(folder=folder, names_file=Path(names_file), names=names, paths=paths,
                        broken=broken)


def load_flat_gallery(folder: str | Path, *, warn: bool = True) -> FlatGallery:
    """List a flat gallery folder; stems must be unique and free of white space (they are
    what is submitted). Broken symbolic links are skipped (and logged with ``warn``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise folder_error("gallery folder", folder)
    broken: list[Path] = []
    paths = list_images(folder, broken)
    if not paths:
        raise UserError(f"gallery folder {folder} holds no image (.jpg .jpeg .png .webp)")
    stems: dict[str, Path] = {}
    for p in paths:
        if any(c.isspace() for c in p.stem):
            raise UserError(f"gallery file {p} has white space in its name, which an answer line "
                            "(names separated by tabs or spaces) cannot hold; rename or remove it")
        if p.stem in stems:
            raise UserError(
                f"gallery {folder} has two files named {p.stem!r} ({stems[p.stem].name}, {p.name}); "
                "submissions name gallery images without extension, so stems must be unique"
            )
        stems[p.stem] = p
    _warn_broken(folder, broken, warn)
    return FlatGallery(folder=folder, paths=paths, broken=broken)
