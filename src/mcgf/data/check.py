"""Validate a dataset folder before a long run does it the hard way.

:func:`check_dataset` finds every dataset tree (of any layout of
:mod:`mcgf.data.layouts`: University-1652, SUES-200, DenseUAV) and University-160k-style
flat split under a folder, counts images per split, view and class, runs each layout's
own checks, decodes every image (in parallel) and reports what would stop a run. It returns a :class:`CheckReport`;
:func:`format_report` renders it for people.
"""

from __future__ import annotations

import os
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from mcgf.data.images import (
    ADJUSTMENTS,
    BACKGROUND,
    EXIF_ORIENTATION,
    FLOAT,
    SIXTEEN_BIT,
    TRANSPARENCY,
    inspect_image,
)
from mcgf.data.layout import (
    ClassFolderSet,
    University1652,
    aligned_classes,
    broken_links_text,
    list_images,
    list_subfolders,
    load_flat_gallery,
    load_flat_queries,
)
from mcgf.errors import UserError, folder_error

if TYPE_CHECKING:
    from mcgf.data.layouts import DatasetLayout

#: Names files of the 160k protocol, by the query folder they belong to.
NAMES_FILE_GLOB = "*name*.txt"


@dataclass
class FolderCounts:
    """Counts of one view folder."""

    split: str
    name: str
    classes: int
    empty_classes: int
    images: int
    per_class: dict[str, int]

    @property
    def min_max_median(self) -> tuple[int, int, float]:
        vals = [v for v in self.per_class.values() if v] or [0]
        return min(vals), max(vals), statistics.median(vals)


@dataclass
class CheckReport:
    """What :func:`check_dataset` found."""

    root: Path
    folders: list[FolderCounts] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    decoded: int = 0
    #: Images that decode only with an adjustment (see :data:`mcgf.data.images.ADJUSTMENTS`),
    #: by adjustment.
    adjusted: dict[str, list[Path]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the dataset can be used as it is."""
        return not self.errors and not self.unreadable


def _counts(split: str, name: str, fs: ClassFolderSet) -> FolderCounts:
    per_class = {k: len(v) for k, v in fs.classes.items()}
    return FolderCounts(
        split=split,
        name=name,
        classes=len(per_class),
        empty_classes=sum(1 for v in per_class.values() if v == 0),
        images=sum(per_class.values()),
        per_class=per_class,
    )


def check_university(data: University1652, report: CheckReport) -> list[Path]:
    """The checks of a University-1652 tree (all its views and test folders); returns
    every image path."""
    rel = data.root.relative_to(report.root) if data.root != report.root else Path(".")
    images: list[Path] = []
    for split, folders in (("train", data.train), ("test", data.test)):
        for name, fs in folders.items():
            report.folders.append(_counts(f"{rel / split}", name, fs))
            images.extend(p for paths in fs.classes.values() for p in paths)
    if data.train:
        if "drone" in data.train and "satellite" in data.train:
            both = aligned_classes(data.train["drone"], data.train["satellite"])
            only = set(data.train["drone"].labels()) ^ set(data.train["satellite"].labels())
            report.notes.append(f"{rel / 'train'}: {len(both)} locations have drone and satellite images")
            if not both:
                report.errors.append(f"{data.root / 'train'}: no location has both drone and satellite images")
            if only:
                report.warnings.append(
                    f"{data.root / 'train'}: {len(only)} locations have images in only one of drone/satellite "
                    "(they are left out of cross-view training)"
                )
        else:
            report.errors.append(
                f"{data.root / 'train'}: needs both drone/ and satellite/ folders for cross-view training"
            )
    for q, g in (("query_drone", "gallery_satellite"), ("query_satellite", "gallery_drone"),
                 ("query_street", "gallery_satellite")):
        if q in data.test and g in data.test:
            qs, gs = set(data.test[q].labels()), set(data.test[g].labels())
            if not qs:
                report.errors.append(f"{data.root / 'test' / q}: holds no image")
            missing = qs - gs
            if missing:
                report.warnings.append(
                    f"{data.root / 'test'}: {len(missing)} {q} locations have no true match in {g} "
                    "(such queries are counted separately by the evaluation)"
                )
            distractors = len(gs - qs)
            report.notes.append(
                f"{rel / 'test'}: {q} -> {g}: {len(qs)} query locations, "
                f"{len(gs)} gallery locations ({distractors} without a query, i.e. distractors)"
            )
    for fs_split, folders in (("train", data.train), ("test", data.test)):
        _warn_folder_problems(report, data.root / fs_split, folders)
    return images


def check_views(report: CheckReport, base: Path, split: str, folders: dict[str, ClassFolderSet],
                pairs: Sequence[tuple[str, str]]) -> list[Path]:
    """Counts and cross-view checks of one split folder of a layout (``base`` holds the
    view or role folders in ``folders``); returns every image path.

    ``split`` ``"train"``: each pair of views must share locations (an error when none
    does, a warning for locations in only one). ``"test"``: each (query, gallery) pair
    present is described (query locations, gallery locations, distractors) and query
    locations without a true match are a warning.
    """
    rel = base.relative_to(report.root) if base != report.root else Path(".")
    images: list[Path] = []
    for name, fs in folders.items():
        report.folders.append(_counts(str(rel), name, fs))
        images.extend(p for paths in fs.classes.values() for p in paths)
    if split == "train" and folders:
        for a, b in pairs:
            if a not in folders or b not in folders:
                report.errors.append(f"{base}: needs both {a}/ and {b}/ folders for cross-view training")
                continue
            both = aligned_classes(folders[a], folders[b])
            only = set(folders[a].labels()) ^ set(folders[b].labels())
            report.notes.append(f"{rel}: {len(both)} locations have {a} and {b} images")
            if not both:
                report.errors.append(f"{base}: no location has both {a} and {b} images")
            if only:
                report.warnings.append(f"{base}: {len(only)} locations have images in only one of "
                                       f"{a}/{b} (they are left out of cross-view training)")
    if split == "test":
        for q, g in pairs:
            if q not in folders or g not in folders:
                continue
            qs, gs = set(folders[q].labels()), set(folders[g].labels())
            if not qs:
                report.errors.append(f"{base / q}: holds no image")
            missing = qs - gs
            if missing:
                report.warnings.append(f"{base}: {len(missing)} {q} locations have no true match in {g} "
                                       "(such queries are counted separately by the evaluation)")
            report.notes.append(f"{rel}: {q} -> {g}: {len(qs)} query locations, {len(gs)} gallery "
                                f"locations ({len(gs - qs)} without a query, i.e. distractors)")
    _warn_folder_problems(report, base, folders)
    return images


def _unread_images_text(fs: ClassFolderSet) -> str | None:
    """One line about the files of ``fs``'s class folders that Pillow names an image format
    (``.bmp``, ``.tif``, ``.gif``) but the layout does not read, or ``None``: without it a
    folder of such files would only be reported empty."""
    known = Image.registered_extensions()
    unread = [p for p in fs.other if p.suffix.lower() in known]
    if not unread:
        return None
    counts = Counter(p.suffix.lower() for p in unread)
    kinds = ", ".join(f"{ext}: {n}" for ext, n in sorted(counts.items()))
    read = sorted(fs.extensions)
    return (f"{fs.root}: {len(unread)} image files in formats this layout does not read are left "
            f"out ({kinds}), e.g. {unread[0]}; convert them to {', '.join(read[:-1])} or {read[-1]}")


def _warn_folder_problems(report: CheckReport, base: Path, folders: dict[str, ClassFolderSet]) -> None:
    """Warnings for the broken links, the files in formats not read and the empty class
    folders of the view or role folders ``folders`` of ``base``."""
    for name, fs in folders.items():
        if fs.broken:
            report.warnings.append(broken_links_text(fs.root, fs.broken))
        unread = _unread_images_text(fs)
        if unread:
            report.warnings.append(unread)
        empty = [k for k, v in fs.classes.items() if not v]
        if empty:
            shown = ", ".join(empty[:5]) + (" ..." if len(empty) > 5 else "")
            report.warnings.append(f"{base / name}: {len(empty)} empty class folders ({shown}); they are ignored")


def _find_flat_splits(root: Path, report: CheckReport) -> list[tuple[Path, Path]]:
    """(query folder, names file) pairs: a names file beside a folder of images whose
    name starts like it (``query_drone_name.txt`` ~ ``query_drone_160k_wx_24/``).

    A names file that fits no folder, or several, is not checked; a warning says so.
    """
    out: list[tuple[Path, Path]] = []
    for names in sorted(root.glob(NAMES_FILE_GLOB)):
        prefix = names.stem.replace("_name", "").replace("name", "")
        cands = [Path(e.path) for e in list_subfolders(root) if e.name.startswith(prefix) and list_images(e.path)]
        if len(cands) == 1:
            out.append((cands[0], names))
        elif not cands:
            report.warnings.append(
                f"{names}: no folder of images named {prefix}*/ beside it, so its queries were not "
                "checked"
            )
        else:
            folders = ", ".join(f"{c.name}/" for c in cands)
            report.warnings.append(
                f"{names}: fits several query folders ({folders}), so it was checked against none "
                "of them; keep one query folder per names file (or give mcgf predict "
                "--queries)"
            )
    return out


def _check_flat(root: Path, report: CheckReport) -> list[Path]:
    images: list[Path] = []
    rel = root.relative_to(report.root) if root != report.root else Path(".")
    for qdir, names in _find_flat_splits(root, report):
        try:
            q = load_flat_queries(qdir, names, warn=False)
        except UserError as err:
            report.errors.append(str(err))
            continue
        extra = len(list_images(qdir)) - len(q.paths)
        report.folders.append(FolderCounts(str(rel), qdir.name, 0, 0, len(q.paths), {}))
        report.notes.append(f"{rel}: {names.name} lists {len(q.names)} queries, all found in {qdir.name}/")
        if extra:
            report.warnings.append(f"{qdir}: {extra} images are not listed in {names.name} (not submitted)")
        if q.broken:
            report.warnings.append(broken_links_text(qdir, q.broken))
        images.extend(q.paths)
    for entry in list_subfolders(root):
        if entry.name.startswith("gallery"):
            try:
                g = load_flat_gallery(entry.path, warn=False)
            except UserError as err:
                report.errors.append(str(err))
                continue
            report.folders.append(FolderCounts(str(rel), entry.name, 0, 0, len(g.paths), {}))
            if g.broken:
                report.warnings.append(broken_links_text(entry.path, g.broken))
            images.extend(g.paths)
    return images


def _dataset_roots(root: Path, layout: str | None) -> tuple[list[DatasetLayout], list[Path], list[str]]:
    """Datasets of a layout and flat-split folders at ``root`` or one level below, and
    the folders whose tree fits several layouts."""
    from mcgf.data.layouts import find_datasets

    trees, problems = find_datasets(root, layout)
    roots = {t.root for t in trees}
    candidates = [root] + [Path(e.path) for e in list_subfolders(root)]
    flat = [p for p in candidates if any(p.glob(NAMES_FILE_GLOB)) and p not in roots]
    return trees, flat, problems


def check_dataset(path: str | Path, *, decode: bool = True, workers: int | None = None,
                  layout: str | None = None) -> CheckReport:
    """Check every dataset found at ``path`` (or one folder below).

    Args:
        path: a dataset root (University-1652, SUES-200, DenseUAV), a 160k-style folder
            (names file + flat folders), or a folder holding such datasets (e.g. the
            output of ``mcgf synth``).
        decode: decode every image fully (slow on the full dataset, but the only way
            to find truncated files).
        workers: processes used for decoding (default: all CPUs).
        layout: look only for datasets of this layout (default: every layout, each
            tree by what it shows).

    Raises:
        UserError: if ``path`` does not exist or holds no recognisable dataset.
    """
    root = Path(path)
    if not root.is_dir():
        raise folder_error("dataset folder", root)
    report = CheckReport(root=root)
    trees, flat, problems = _dataset_roots(root, layout)
    report.errors += problems
    if layout and not trees:
        # Asked for one layout: a 160k split beside it must not pass for that dataset.
        from mcgf.data.layouts import parse_layout

        cls, _ = parse_layout(layout)
        raise UserError(f"{root} holds no {cls.title} tree at its top or one folder below "
                        f"(--layout {layout}): point at that dataset's root, or leave --layout out "
                        "to check whatever the folder holds")
    if not trees and not flat and not problems:
        raise UserError(
            f"{root} holds no University-1652 tree (train/, test/), no SUES-200 tree (Training/, "
            "Testing/) and no 160k-style split (a query names file beside flat image folders); "
            "point at the dataset root"
        )
    images: list[Path] = []
    for tree in trees:
        if tree.name != "university1652":
            report.notes.append(f"{tree.root.relative_to(root) if tree.root != root else Path('.')}: "
                                f"{tree.title} layout ({tree.name})")
        try:
            images += tree.check(report)
        except UserError as err:
            # A tree that cannot be read (a class folder that names no location id, two
            # folders of one id): the dataset cannot be used, as for a flat split below.
            report.errors.append(str(err))
    for r in flat:
        images += _check_flat(r, report)
    if not images and not report.errors:  # a folder refused above has said why already
        report.errors.append(f"{root}: no image found (.jpg .jpeg .png .webp in any letter case)")
    if decode and images:
        report.unreadable, report.adjusted = _decode_all(images, workers)
        report.decoded = len(images)
    return report


_Inspected = tuple[list[tuple[Path, str]], list[tuple[Path, frozenset[str]]]]


def _inspect(paths: list[Path]) -> _Inspected:
    """(unreadable images with the reason, images that needed adjustments)."""
    bad: list[tuple[Path, str]] = []
    adjusted: list[tuple[Path, frozenset[str]]] = []
    for p in paths:
        reason, done = inspect_image(p)
        if reason is not None:
            bad.append((p, reason))
        elif done:
            adjusted.append((p, done))
    return bad, adjusted


def _decode_all(images: Iterable[Path], workers: int | None
                ) -> tuple[list[tuple[Path, str]], dict[str, list[Path]]]:
    images = list(images)
    workers = max(1, min(workers or os.cpu_count() or 1, len(images) // 64 or 1))
    if workers == 1:
        parts = [_inspect(images)]
    else:
        chunks = [images[i : i + 256] for i in range(0, len(images), 256)]
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_inspect, chunks))
    bad = [b for part, _ in parts for b in part]
    adjusted: dict[str, list[Path]] = {}
    for _, part in parts:
        for path, done in part:
            for kind in ADJUSTMENTS:
                if kind in done:
                    adjusted.setdefault(kind, []).append(path)
    return bad, adjusted


_BACKGROUND_NAME = "black" if BACKGROUND == (0, 0, 0) else f"RGB {BACKGROUND}"
#: How ``mcgf data check`` words each decoding adjustment: (one image, several images).
_ADJUSTED_TEXT = {
    SIXTEEN_BIT: ("is 16-bit", "are 16-bit", "scaled to 8-bit"),
    FLOAT: ("has floating-point samples", "have floating-point samples", "scaled to 8-bit"),
    EXIF_ORIENTATION: ("carries an EXIF rotation", "carry an EXIF rotation", "applied"),
    TRANSPARENCY: ("has transparency", "have transparency", f"composited on {_BACKGROUND_NAME}"),
}


def adjustment_lines(adjusted: dict[str, list[Path]]) -> list[str]:
    """One line per adjustment: how many images needed it, what was done, an example."""
    lines = []
    for kind in ADJUSTMENTS:
        paths = adjusted.get(kind, [])
        if paths:
            one, several, done = _ADJUSTED_TEXT[kind]
            n = len(paths)
            what = f"1 image {one}" if n == 1 else f"{n} images {several}"
            lines.append(f"{what} ({done}), e.g. {paths[0]}")
    return lines


def format_report(report: CheckReport, *, per_class: bool = False) -> str:
    """Render a report as plain text: a table of folders, then notes, warnings, errors."""
    rows = [("split", "folder", "classes", "empty", "images", "per class min/median/max")]
    for f in report.folders:
        if f.classes:
            lo, hi, med = f.min_max_median
            spread = f"{lo}/{med:g}/{hi}"
            rows.append((f.split, f.name, str(f.classes), str(f.empty_classes), str(f.images), spread))
        else:
            rows.append((f.split, f.name, "-", "-", str(f.images), "flat"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"dataset check: {report.root}"]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if per_class:
        for f in report.folders:
            if f.per_class:
                lines.append(f"per class, {f.split}/{f.name}:")
                lines += [f"  {k}\t{v}" for k, v in f.per_class.items()]
    lines += [f"note: {n}" for n in report.notes]
    lines += [f"warning: {w}" for w in report.warnings]
    if report.decoded:
        lines.append(f"decoded {report.decoded} images: {len(report.unreadable)} unreadable")
        lines += [f"note: {line}" for line in adjustment_lines(report.adjusted)]
    lines += [f"unreadable: {p}: {why}" for p, why in report.unreadable]
    lines += [f"error: {e}" for e in report.errors]
    if report.ok:
        lines.append("OK: the dataset can be used")
    elif report.unreadable and not report.errors:
        lines.append(
            "NOT OK: fix or remove the unreadable images, or skip them (training: data.on_bad_image: skip; "
            "mcgf evaluate: --on-bad-image skip; mcgf predict cannot skip them: every query needs "
            "its line and every gallery image may be an answer)"
        )
    else:
        lines.append("NOT OK: the dataset cannot be used as it is")
    return "\n".join(lines)
