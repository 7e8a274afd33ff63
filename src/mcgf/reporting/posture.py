"""Posture analysis: drone → satellite R@1 as a function of the drone's pose.

Where the poses come from:

* **synthetic benchmark** (``mcgf synth``): its ``metadata.json`` records every drone
  view's pose (``locations[<id>].drone[i]`` with ``file`` and ``pose.heading_deg``,
  ``pose.altitude_m``, ``pose.distance_m``); a query image is matched to its pose by its
  class folder (the location) and file name.
* **University-1652**: no pose is published. The 54 views of a location,
  ``image-01`` … ``image-54``, are frames taken in order along the drone's descending
  flight around the building, so the image index stands for the position along that
  path, and altitude falls as the index grows. The report bins by index and labels the
  axis as such; reading it as a heading or a height in metres is only approximate.

Per-query correctness is the evaluation's R@1 of each query (its ranking, junk handling
included), so the curves average to the R@1 of ``mcgf evaluate``. Binning is
pure NumPy (:func:`bin_rate`), vectorised over queries and conditions.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mcgf.data.layout import ImageRecord
from mcgf.evaluation.features import FeatureSet
from mcgf.retrieval.ranking import rank_and_score

COMPASS = ("N", "NE", "E", "SE", "S", "SW", "W", "NW")
#: University-1652's view names, ``image-01`` … ``image-54``: only these are frames of the
#: descending orbit (DenseUAV's ``H80`` is a height, SUES-200's ``0`` … ``49`` no index).
_INDEX = re.compile(r"^image-(\d+)$")


@dataclass(frozen=True)
class Axis:
    """A pose quantity per query and the bins it is cut into."""

    name: str
    label: str  # axis title
    values: np.ndarray  # (Q,) float, NaN where unknown
    edges: np.ndarray  # (B + 1,) increasing
    bin_labels: tuple[str, ...]


@dataclass(frozen=True)
class BinnedRate:
    """Queries per bin and the rate of correct ones (``None`` for an empty bin)."""

    counts: np.ndarray  # (B,)
    rate: list[float | None]  # percent


def bin_rate(values: np.ndarray, correct: np.ndarray, edges: np.ndarray) -> BinnedRate:
    """Mean of ``correct`` (in percent) over the queries whose value falls in each bin.

    Bins are ``[edges[i], edges[i+1])``, the last one closed. Queries with a NaN value or a
    NaN correctness are left out.

    Args:
        values: ``(Q,)`` pose values.
        correct: ``(Q,)`` 0/1 (or fractional, e.g. averaged over conditions) per query.
        edges: ``(B + 1,)`` increasing bin edges.
    """
    values = np.asarray(values, np.float64)
    correct = np.asarray(correct, np.float64)
    edges = np.asarray(edges, np.float64)
    ok = np.isfinite(values) & np.isfinite(correct) & (values >= edges[0]) & (values <= edges[-1])
    idx = np.clip(np.searchsorted(edges, values[ok], side="right") - 1, 0, len(edges) - 2)
    counts = np.bincount(idx, minlength=len(edges) - 1)
    sums = np.bincount(idx, weights=correct[ok], minlength=len(edges) - 1)
    rate = [float(100.0 * s / c) if c else None for s, c in zip(sums, counts, strict=True)]
    return BinnedRate(counts, rate)


def find_metadata(data_root: Path) -> Path | None:
    """The synthetic benchmark's ``metadata.json`` (in the dataset root or its parent)."""
    for cand in (data_root / "metadata.json", data_root.parent / "metadata.json"):
        if cand.is_file():
            return cand
    return None


def synthetic_poses(metadata: Mapping[str, object]) -> dict[str, dict[str, float]]:
    """``"<location>/<file>"`` → ``{"heading", "altitude", "distance"}`` from a synthetic
    benchmark's metadata."""
    out: dict[str, dict[str, float]] = {}
    locations = metadata.get("locations")
    if not isinstance(locations, Mapping):
        return out
    for loc, info in locations.items():
        views = info.get("drone", []) if isinstance(info, Mapping) else []
        for view in views if isinstance(views, list) else []:
            pose = view.get("pose") if isinstance(view, Mapping) else None
            if not isinstance(pose, Mapping) or "file" not in view:
                continue
            out[f"{loc}/{view['file']}"] = {
                "heading": float(pose.get("heading_deg", np.nan)),
                "altitude": float(pose.get("altitude_m", np.nan)),
                "distance": float(pose.get("distance_m", np.nan)),
            }
    return out


def image_index(record: ImageRecord) -> float:
    """The view index of ``image-07.jpeg`` → 7.0 (NaN for a name other than ``image-NN``)."""
    m = _INDEX.search(record.path.stem)
    return float(m.group(1)) if m else float("nan")


def heading_axis(headings: np.ndarray) -> Axis:
    """Compass heading cut into eight 45° sectors centred on N, NE, …, NW."""
    shifted = np.mod(np.asarray(headings, np.float64) + 22.5, 360.0)
    return Axis("heading", "drone heading (compass sector of the viewing direction)", shifted,
                np.arange(0.0, 361.0, 45.0), COMPASS)


def range_axis(name: str, label: str, values: np.ndarray, bins: int = 5, unit: str = "m") -> Axis:
    """``values`` cut into ``bins`` equal-width bins between their extremes."""
    v = np.asarray(values, np.float64)
    finite = v[np.isfinite(v)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    labels = tuple(f"{(a + b) / 2:.0f} {unit}".strip() for a, b in itertools.pairwise(edges))
    return Axis(name, label, v, edges, labels)


def index_axis(indices: np.ndarray, bins: int = 6) -> Axis:
    """Image index (position along the flight, altitude falling) in ``bins`` ranges."""
    v = np.asarray(indices, np.float64)
    top = int(np.nanmax(v)) if np.isfinite(v).any() else 1
    bins = max(1, min(bins, top))
    edges = np.linspace(0.5, top + 0.5, bins + 1)
    labels = []
    for a, b in itertools.pairwise(edges):
        first, last = int(np.ceil(a)), int(np.floor(b - 1e-9))
        labels.append(f"{first:02d}" if first == last else f"{first:02d}-{last:02d}")
    return Axis("index", "image index (position along the descending orbit; altitude falls "
                "left to right; approximate)", v, edges, tuple(labels))


def posture_axes(records: Sequence[ImageRecord], data_root: Path) -> tuple[str, list[Axis]]:
    """The pose axes of the drone queries: ``(source description, axes)``; no axis when
    neither a synthetic benchmark's poses nor University-1652's view names are there."""
    meta_path = find_metadata(data_root)
    if meta_path is not None:
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        poses = synthetic_poses(meta if isinstance(meta, dict) else {})
        # Poses are listed by "<location>/<file>", without a key prefix (SUES-200's height).
        names = [r.folder_key for r in records]
        if poses and any(n in poses for n in names):
            nan = {"heading": np.nan, "altitude": np.nan, "distance": np.nan}
            table = [poses.get(n, nan) for n in names]
            heading = np.array([p["heading"] for p in table])
            altitude = np.array([p["altitude"] for p in table])
            distance = np.array([p["distance"] for p in table])
            return (f"poses from {meta_path}", [
                heading_axis(heading),
                range_axis("altitude", "drone altitude above ground", altitude),
                range_axis("distance", "horizontal distance to the target", distance),
            ])
    indices = np.array([image_index(r) for r in records])
    if not np.isfinite(indices).any():
        return ("no pose known: no metadata.json beside the dataset, and the query names are not "
                "University-1652's image-NN", [])
    return ("University-1652 image index (no pose metadata)", [index_axis(indices)])


@dataclass(frozen=True)
class PostureCurve:
    """R@1 per bin of one axis, for each series (clean, weather mean, ...)."""

    axis: Axis
    counts: np.ndarray
    series: dict[str, list[float | None]]


def posture_curves(axes: Sequence[Axis], correct: Mapping[str, np.ndarray]) -> list[PostureCurve]:
    """R@1 by bin for each axis and each series of per-query correctness.

    Args:
        axes: from :func:`posture_axes`.
        correct: series name → ``(Q,)`` correctness, or ``(C, Q)`` for several conditions
            (then the mean over conditions, as the University-WX mean).
    """
    curves = []
    for axis in axes:
        series: dict[str, list[float | None]] = {}
        counts = np.zeros(len(axis.edges) - 1, np.int64)
        for name, c in correct.items():
            arr = np.asarray(c, np.float64)
            if arr.ndim == 2:
                arr = arr.mean(axis=0)
            binned = bin_rate(axis.values, arr, axis.edges)
            series[name] = binned.rate
            counts = np.maximum(counts, binned.counts)
        curves.append(PostureCurve(axis, counts, series))
    return curves


def top1_correct(query: FeatureSet, query_labels: np.ndarray, gallery: FeatureSet,
                 gallery_labels: np.ndarray) -> np.ndarray:
    """Each query's R@1 as the evaluation scores it: 1.0 where the evaluation's ranking
    (:func:`~mcgf.retrieval.ranking.rank_and_score`: junk gallery items left out,
    unreadable gallery images absent) puts a true match first, 0.0 where not, NaN for a
    query image that could not be read."""
    qv, gv = np.asarray(query.valid, bool), np.asarray(gallery.valid, bool)
    ql, gl = np.asarray(query_labels), np.asarray(gallery_labels)
    out = np.full(len(ql), np.nan)
    if qv.any() and gv.any():
        ranked = rank_and_score(query.features[qv], ql[qv], gallery.features[gv], gl[gv])
        out[qv] = (ranked.first_good == 0).astype(np.float64)
    elif qv.any():
        out[qv] = 0.0
    return out
