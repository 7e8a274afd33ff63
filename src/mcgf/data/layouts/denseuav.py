"""DenseUAV (Dai et al., IEEE TIP 2024): low-altitude drone views sampled densely over
14 university campuses, each at three heights, against satellite tiles::

    Dense_GPS_ALL.txt                  one line per location: path  E<lon>  N<lat>  height
    Dense_GPS_train.txt, Dense_GPS_test.txt   the same, per split
    train/drone/<class id>/H80.JPG H90.JPG H100.JPG
    train/satellite/<class id>/H80.tif H90.tif H100.tif (+ *_old.tif: older imagery)
    test/query_drone/<class id>/...        test locations
    test/query_satellite/<class id>/...    test locations
    test/gallery_drone/<class id>/...      training + test locations
    test/gallery_satellite/<class id>/...  training + test locations

The test protocol is University-1652's (Recall@K, AP over the whole gallery, whose
training locations act as distractors) plus SDM@K (:mod:`mcgf.retrieval.geo`), which
needs each location's coordinates: the class folder of a line's path names the location
(the benchmark's own reader keys them so). A tree is told apart from University-1652's
by those coordinates files or by drone images named after their height (``H80``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mcgf.data.layout import IMAGE_EXTENSIONS, class_id, list_images, list_subfolders
from mcgf.data.layouts.base import DatasetLayout, TestSet, TrainView, register_layout

if TYPE_CHECKING:
    from mcgf.data.check import CheckReport

GPS_ALL = "Dense_GPS_ALL.txt"
GPS_SPLITS: tuple[str, ...] = ("Dense_GPS_train.txt", "Dense_GPS_test.txt")
#: Drone (and satellite) images are named after the flight height: ``H80.JPG``.
HEIGHT_NAME = re.compile(r"^H(\d+)(_old)?$", re.IGNORECASE)
#: Two lines of one location whose coordinates differ by more (degrees) disagree.
COORD_TOLERANCE = 1e-7
_COORD = re.compile(r"^([NSEW])?([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)([NSEW])?$", re.IGNORECASE)


@dataclass
class Coordinates:
    """Location coordinates read from the ``Dense_GPS_*.txt`` files.

    ``lonlat`` maps a location id to (longitude, latitude) in degrees; ``bad_lines``
    lists ``file:line`` of lines that could not be read; ``conflicts`` the ids listed
    twice with different coordinates (the last line is kept: the benchmark's
    ``evaluateDistance.py`` fills a dictionary line by line, so a later line replaces
    an earlier one, and its SDM@K uses the last).
    """

    files: list[Path]
    lonlat: dict[int, tuple[float, float]] = field(default_factory=dict)
    bad_lines: list[str] = field(default_factory=list)
    conflicts: list[int] = field(default_factory=list)


def _coordinate(token: str) -> tuple[str, float] | None:
    """``("lon"|"lat"|"", value)`` of ``E120.38``, ``N30.3``, ``30.3S`` or ``120.38``."""
    m = _COORD.match(token)
    if m is None or (m.group(1) and m.group(3)):
        return None
    value = float(m.group(2))
    hemi = (m.group(1) or m.group(3) or "").upper()
    if hemi in ("S", "W"):
        value = -value
    return ("lat" if hemi in ("N", "S") else "lon" if hemi in ("E", "W") else ""), value


def parse_gps_line(line: str) -> tuple[int, float, float] | None:
    """``(location id, longitude, latitude)`` of one line, ``None`` if it is not one.

    Fields are separated by white space: the image path (its class folder names the
    location), then the two coordinates. A hemisphere letter (``E120.38 N30.32``)
    says which is which; bare numbers are read as the benchmark's reader reads them,
    longitude first, unless only the other order is a coordinate pair (``30.32 120.38``:
    the benchmark's README documents latitude first, and its SDM, symmetric in the two,
    reads such a file as well).
    """
    parts = line.split()
    if len(parts) < 3:
        return None
    folder = parts[0].replace("\\", "/").rstrip("/").split("/")
    cid = class_id(folder[-2]) if len(folder) >= 2 else None
    a, b = _coordinate(parts[1]), _coordinate(parts[2])
    if cid is None or a is None or b is None:
        return None
    bare_lat_first = not a[0] and not b[0] and abs(a[1]) <= 90 < abs(b[1]) <= 180
    if a[0] == "lat" or b[0] == "lon" or bare_lat_first:
        a, b = b, a
    if a[0] == "lat" or b[0] == "lon" or not (-180 <= a[1] <= 180 and -90 <= b[1] <= 90):
        return None
    return cid, a[1], b[1]


def read_coordinates(root: Path) -> Coordinates | None:
    """The coordinates of ``root``: ``Dense_GPS_ALL.txt``, else the per-split files;
    ``None`` when there is none."""
    files = [root / GPS_ALL] if (root / GPS_ALL).is_file() else [root / n for n in GPS_SPLITS
                                                                  if (root / n).is_file()]
    if not files:
        return None
    out = Coordinates(files)
    for path in files:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            parsed = parse_gps_line(line)
            if parsed is None:
                out.bad_lines.append(f"{path}:{number}")
                continue
            cid, lon, lat = parsed
            have = out.lonlat.get(cid, (lon, lat))
            # An absolute tolerance only: a relative one (np.allclose's default) would let
            # two points ~100 m apart at longitude 120 pass as one, where locations lie
            # ~20 m apart.
            if (max(abs(have[0] - lon), abs(have[1] - lat)) > COORD_TOLERANCE
                    and cid not in out.conflicts):
                out.conflicts.append(cid)
            out.lonlat[cid] = (lon, lat)
    return out


@register_layout
class DenseUAVLayout(DatasetLayout):
    """DenseUAV: one test protocol scored with Recall@K, AP and (with coordinates) SDM@K."""

    name: ClassVar[str] = "denseuav"
    title: ClassVar[str] = "DenseUAV"
    extensions: ClassVar[frozenset[str]] = IMAGE_EXTENSIONS | {".tif", ".tiff"}
    tree: ClassVar[str] = "train/ or test/"
    order: ClassVar[int] = 2
    #: A DenseUAV tree has University-1652's structure: when detected, it wins over it.
    refines: ClassVar[str] = "university1652"
    extra_topk: ClassVar[int] = 10

    def __init__(self, root: str | Path, subsets: tuple[str, ...] = ()) -> None:
        super().__init__(root, subsets)
        self._coords: Coordinates | bool | None = False  # False: not read yet

    @classmethod
    def structure(cls, folder: Path) -> bool:
        return (folder / "train").is_dir() or (folder / "test").is_dir()

    @classmethod
    def detect(cls, folder: Path) -> bool:
        if not cls.structure(folder):
            return False
        if any((folder / n).is_file() for n in (GPS_ALL, *GPS_SPLITS)):
            return True
        # Else the drone images' names: the first non-empty class folder decides.
        for view in (folder / "train" / "drone", folder / "test" / "query_drone"):
            for entry in list_subfolders(view)[:5]:
                names = list_images(entry.path, extensions=cls.extensions)
                if names:
                    return all(HEIGHT_NAME.match(p.stem) for p in names)
        return False

    def train_views(self) -> list[TrainView]:
        base = self.root / "train"
        return [TrainView("", base, {"drone": base / "drone", "satellite": base / "satellite"})]

    def test_sets(self) -> list[TestSet]:
        return [TestSet("", self.root / "test")]

    def protocol(self, weather: bool) -> str:
        return "denseuav-wx" if weather else "denseuav"

    def coordinates(self) -> Coordinates | None:
        """The locations' coordinates (read once), ``None`` without a coordinates file."""
        if self._coords is False:
            self._coords = read_coordinates(self.root)
        return self._coords  # type: ignore[return-value]

    def _test_labels(self) -> set[int]:
        labels: set[int] = set()
        for ts in self.test_sets():
            for fs in self.read_test(ts, warn=False).folders.values():
                labels.update(fs.labels())
        return labels

    def extra_metrics(self, direction: str, query_labels: np.ndarray, query_valid: np.ndarray,
                      top_labels: np.ndarray) -> dict[str, Any]:
        from mcgf.retrieval.geo import SDM_KS, sdm_at_k

        coords = self.coordinates()
        if coords is None:
            return {}
        needed = set(np.asarray(query_labels).tolist()) | set(top_labels[top_labels >= 0].tolist())
        if not needed <= coords.lonlat.keys():
            return {}
        lookup = coords.lonlat
        valid = np.asarray(query_valid, bool) & (top_labels[:, 0] >= 0)
        out = {f"SDM@{k}": 0.0 for k in SDM_KS}
        if valid.any():
            # Labels to coordinates through a sorted table (every label is in it, see above).
            keys = np.fromiter(lookup.keys(), np.int64, len(lookup))
            table = np.array(list(lookup.values()), np.float64).reshape(-1, 2)
            order = np.argsort(keys)
            keys, table = keys[order], table[order]
            q = table[np.searchsorted(keys, np.asarray(query_labels, np.int64)[valid])]
            t = table[np.searchsorted(keys, top_labels[valid].astype(np.int64))]
            per = sdm_at_k(q, t, SDM_KS)
            # Unreadable queries count as 0, like their recall.
            out = {f"SDM@{k}": float(100.0 * v.sum() / len(query_labels)) for k, v in per.items()}
        return out

    def notes(self) -> list[str]:
        coords = self.coordinates()
        if coords is None:
            return [f"SDM@K not computed: {self.root} has no {GPS_ALL} (nor {' + '.join(GPS_SPLITS)}), "
                    "which holds each location's coordinates"]
        lines = []
        missing = sorted(self._test_labels() - coords.lonlat.keys())
        if missing:
            lines.append(f"SDM@K not computed: {len(missing)} test locations have no coordinates in "
                         f"{', '.join(p.name for p in coords.files)} (e.g. {missing[0]})")
        if coords.bad_lines:
            lines.append(f"{len(coords.bad_lines)} lines of the coordinates files could not be read "
                         f"(e.g. {coords.bad_lines[0]}); expected 'path E<lon> N<lat> height'")
        return lines

    def check(self, report: CheckReport) -> list[Path]:
        images = super().check(report)
        coords = self.coordinates()
        if coords is None:
            report.warnings.append(f"{self.root}: no {GPS_ALL} (nor {' + '.join(GPS_SPLITS)}): "
                                   "evaluation reports Recall@K and AP but not SDM@K")
            return images
        report.notes.append(f"{self.root}: {len(coords.lonlat)} locations with coordinates in "
                            f"{', '.join(p.name for p in coords.files)}")
        missing = sorted(self._test_labels() - coords.lonlat.keys())
        if missing:
            report.warnings.append(f"{self.root}: {len(missing)} test locations have no coordinates "
                                   f"(e.g. {missing[0]}): SDM@K cannot be computed")
        if coords.bad_lines:
            report.warnings.append(f"{len(coords.bad_lines)} unreadable lines in the coordinates files, "
                                   f"e.g. {coords.bad_lines[0]} (expected 'path E<lon> N<lat> height')")
        if coords.conflicts:
            report.warnings.append(f"{len(coords.conflicts)} locations are listed with different "
                                   f"coordinates (e.g. {coords.conflicts[0]}); the last line is used, as "
                                   "the benchmark's evaluateDistance.py uses it")
        return images
