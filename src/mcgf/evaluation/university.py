"""University-1652 and University-WX evaluation protocols.

Directions:

* ``drone->satellite``: ``test/query_drone`` ranked against ``test/gallery_satellite``
  (all 951 tiles: the 250 distractors stay in the gallery);
* ``satellite->drone``: ``test/query_satellite`` ranked against ``test/gallery_drone``.

University-WX evaluates every weather condition separately (weather on every drone image,
satellite images untouched) and reports the mean over conditions. Weathered drone images
come either from a pre-rendered folder per condition (:func:`prerendered_conditions`) or
on the fly from :mod:`mcgf.weather` (deterministic per image key and seed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mcgf.data.datasets import Degrade
from mcgf.data.layout import (
    ClassFolderSet,
    ImageRecord,
    find_university1652_root,
    load_university1652,
    read_class_folders,
)
from mcgf.errors import UserError
from mcgf.evaluation.features import FeatureSet, extract_features, for_view
from mcgf.models.registry import Embedder
from mcgf.retrieval.metrics import PerQuery, summarize
from mcgf.retrieval.ranking import rank_and_score
from mcgf.weather.conditions import CONDITIONS

#: direction name -> (query folder, gallery folder) under ``test/``.
DIRECTIONS: dict[str, tuple[str, str]] = {
    "drone->satellite": ("query_drone", "gallery_satellite"),
    "satellite->drone": ("query_satellite", "gallery_drone"),
}
#: Folders whose images are drone views (weather applies to them only).
DRONE_FOLDERS = frozenset({"query_drone", "gallery_drone"})
#: The condition name of an evaluation without weather (the University-1652 protocol): the
#: row of a clean-only run and the tap of the clean features. Not a weather condition:
#: with weather, the clean images are also evaluated as condition ``mcgf.weather.CLEAN``.
NO_WEATHER = "clean"
#: Receives ``(condition, folder, records, features)`` of the folders a caller taps
#: (see :func:`evaluate_university`); ``condition`` is :data:`NO_WEATHER` for clean images.
FeatureTap = Callable[[str, str, Sequence[ImageRecord], FeatureSet], None]
#: The community's order of the ten weather conditions (normal first, composites last).
COMMUNITY_ORDER: tuple[str, ...] = CONDITIONS


@dataclass
class ExtractOptions:
    """How features are computed (shared by every folder of a run)."""

    batch_size: int = 32
    flip: bool = True
    device: str | None = None
    num_workers: int = 0
    cache_dir: str | Path | None = None
    on_bad_image: str = "stop"
    progress: bool = True


@dataclass
class Condition:
    """One evaluation condition: ``name`` plus how to get its drone images.

    ``folders`` replaces test folders by pre-rendered ones (``query_drone`` →
    ``DIR/<condition>``); ``transform``/``transform_id`` weather images on the fly.
    ``partial`` maps a pre-rendered folder that covers only part of its test folder to
    ``(images covered, images of the test folder)`` (accepted with ``allow_partial``).
    """

    name: str
    folders: dict[str, ClassFolderSet] = field(default_factory=dict)
    transform: Degrade | None = None
    transform_id: str = ""
    partial: dict[str, tuple[int, int]] = field(default_factory=dict)

    def unweathered(self, direction: str) -> list[str]:
        """Drone folders of ``direction`` that this pre-rendered condition has no weathered
        copy of (e.g. ``gallery_drone`` without ``DIR/<condition>/gallery_drone``): its row
        would be the clean result, so it is left out. Empty for on-the-fly and clean
        conditions."""
        if not self.folders:
            return []
        return [n for n in DIRECTIONS[direction] if n in DRONE_FOLDERS and n not in self.folders]


@dataclass
class EvaluationRow:
    """Metrics of one (condition, direction)."""

    condition: str
    direction: str
    metrics: dict[str, Any]


def missing_folders(root: str | Path, directions: Sequence[str]) -> dict[str, list[Path]]:
    """Per direction, the test folders it needs that are missing under the dataset ``root``
    (directions whose folders all exist are not listed)."""
    base = find_university1652_root(root) / "test"
    out = {}
    for direction in directions:
        missing = [base / n for n in DIRECTIONS[direction] if not (base / n).is_dir()]
        if missing:
            out[direction] = missing
    return out


def _records(folder: ClassFolderSet) -> tuple[list[ImageRecord], np.ndarray]:
    records = folder.records()
    return records, np.array([r.label for r in records], dtype=np.int64)


def view_of(folder_name: str) -> str:
    """``"drone"`` for drone test folders, ``"satellite"`` otherwise."""
    return "drone" if folder_name in DRONE_FOLDERS else "satellite"


def _features(folder: ClassFolderSet, embedder: Embedder, opts: ExtractOptions, *,
              view: str, transform: Degrade | None, transform_id: str, desc: str
              ) -> tuple[FeatureSet, np.ndarray]:
    embedder = for_view(embedder, view)
    records, labels = _records(folder)
    if not records:
        raise UserError(f"{folder.root} holds no image: nothing to evaluate")
    fs = extract_features(
        records, embedder, batch_size=opts.batch_size, flip=opts.flip, device=opts.device,
        num_workers=opts.num_workers, cache_dir=opts.cache_dir, transform=transform,
        transform_id=transform_id, on_bad_image=opts.on_bad_image, progress=opts.progress,
        desc=desc,
    )
    if not fs.valid.any():
        raise UserError(f"none of the {len(records)} images of {folder.root} could be read "
                        "(all skipped by --on-bad-image skip): nothing to evaluate")
    return fs, labels


def evaluate_direction(query: tuple[FeatureSet, np.ndarray], gallery: tuple[FeatureSet, np.ndarray],
                       *, no_match: str = "zero") -> dict[str, Any]:
    """Metrics of one direction from extracted features.

    A skipped (unreadable) query counts as a miss: it stays in every denominator with
    R@K 0 and AP 0, as the public script divides by all queries (its true matches still
    count, so ``no_match="exclude"`` does not drop it). A skipped gallery image is absent
    from the gallery. Both are counted (``skipped_query_images``,
    ``skipped_gallery_images``).
    """
    (qf, ql), (gf, gl) = query, gallery
    qv, gv = qf.valid, gf.valid
    if not qv.any() or not gv.any():
        side = "query" if not qv.any() else "gallery"
        raise UserError(f"no {side} image could be read: nothing to evaluate")
    ranked = rank_and_score(qf.features[qv], ql[qv], gf.features[gv], gl[gv])
    # Every query gets a row; skipped ones: no good item found, AP 0, and as many true
    # matches as the (readable) gallery holds for their label.
    labels, counts = np.unique(gl[gv], return_counts=True)
    at = np.clip(np.searchsorted(labels, ql), 0, len(labels) - 1)
    num_good = np.where(labels[at] == ql, counts[at], 0).astype(np.int64)
    first = np.full(len(ql), -1, np.int64)
    ap = np.zeros(len(ql), np.float64)
    first[qv], ap[qv], num_good[qv] = ranked.first_good, ranked.ap, ranked.num_good
    per = PerQuery(first, ap, num_good)
    summary = summarize(per, int(gv.sum()), no_match=no_match)  # type: ignore[arg-type]
    out = summary.as_dict()
    out["skipped_query_images"] = int((~qv).sum())
    out["skipped_gallery_images"] = int((~gv).sum())
    return out


def evaluate_university(
    root: str | Path,
    embedder: Embedder,
    *,
    directions: Sequence[str] = tuple(DIRECTIONS),
    conditions: Sequence[Condition] | None = None,
    options: ExtractOptions | None = None,
    no_match: str = "zero",
    log: Callable[[str], None] | None = None,
    tap: FeatureTap | None = None,
    tap_folders: Sequence[str] = (),
) -> list[EvaluationRow]:
    """Evaluate ``embedder`` on the University-1652 test split under ``root``.

    Args:
        root: the dataset (see :func:`mcgf.data.layout.load_university1652`).
        embedder: the model.
        directions: names from :data:`DIRECTIONS`.
        conditions: weather conditions (University-WX); ``None`` evaluates clean images.
        options: feature extraction settings.
        no_match: policy for queries without a true match (``"zero"`` or ``"exclude"``).
        log: receives one line per finished or left-out row.
        tap: receives the features of every folder in ``tap_folders``: the clean ones
            first (condition :data:`NO_WEATHER`, computed even when no condition uses them),
            then each condition's once, as they are extracted — so a caller can analyse
            them (e.g. :mod:`mcgf.evaluation.probes`) without a second pass. A tapped
            folder that no evaluated direction uses is only seen clean.
        tap_folders: test folder names (e.g. ``("query_drone",)``).

    Returns:
        One row per (condition, direction), conditions in the given order. A pre-rendered
        condition has no row for a direction whose drone folder it has no weathered copy
        of (see :meth:`Condition.unweathered`). A row of a partial pre-rendered folder has
        ``metrics["partial"] = {folder: {"images": n, "of": total}}``.
    """
    opts = options or ExtractOptions()
    unknown = [d for d in directions if d not in DIRECTIONS]
    if unknown:
        raise UserError(f"unknown direction {unknown[0]!r}: use {', '.join(DIRECTIONS)}")
    data = load_university1652(root, splits=("test",))
    conds = list(conditions) if conditions else [Condition(NO_WEATHER)]
    clean_cache: dict[str, tuple[FeatureSet, np.ndarray]] = {}

    def clean(name: str) -> tuple[FeatureSet, np.ndarray]:
        if name not in clean_cache:
            clean_cache[name] = _features(data.folder("test", name), embedder, opts, view=view_of(name),
                                          transform=None, transform_id="", desc=name)
        return clean_cache[name]

    tapped = set(tap_folders) if tap is not None else set()
    for name in tap_folders if tap is not None else ():
        tap(NO_WEATHER, name, data.folder("test", name).records(), clean(name)[0])

    rows: list[EvaluationRow] = []
    for cond in conds:
        for direction in directions:
            qname, gname = DIRECTIONS[direction]
            if cond.unweathered(direction):
                if log is not None:
                    log(f"{cond.name:>10} {direction}: left out (no weathered "
                        f"{', '.join(cond.unweathered(direction))})")
                continue
            sides = []
            for name in (qname, gname):
                if name in cond.folders:
                    folder = cond.folders[name]
                    sides.append(_features(folder, embedder, opts, view=view_of(name),
                                           transform=None,
                                           transform_id="", desc=f"{cond.name}/{name}"))
                elif cond.transform is not None and name in DRONE_FOLDERS:
                    folder = data.folder("test", name)
                    sides.append(_features(folder, embedder, opts, view=view_of(name),
                                           transform=cond.transform, transform_id=cond.transform_id,
                                           desc=f"{cond.name}/{name}"))
                else:
                    folder = data.folder("test", name)
                    sides.append(clean(name))
                if name in tapped and tap is not None:
                    tap(cond.name, name, folder.records(), sides[-1][0])
            metrics = evaluate_direction(sides[0], sides[1], no_match=no_match)
            # Whether each side's features came from the cache (nothing recomputed).
            metrics["query_features_cached"] = bool(sides[0][0].from_cache)
            metrics["gallery_features_cached"] = bool(sides[1][0].from_cache)
            partial = {n: {"images": cond.partial[n][0], "of": cond.partial[n][1]}
                       for n in (qname, gname) if n in cond.partial}
            if partial:
                metrics["partial"] = partial
            rows.append(EvaluationRow(cond.name, direction, metrics))
            if log is not None:
                log(f"{cond.name:>10} {direction}: R@1 {metrics['R@1']:.2f}  AP {metrics['AP']:.2f}")
    return rows


def prerendered_conditions(folder: str | Path, order: Sequence[str] = COMMUNITY_ORDER, *,
                           dataset: str | Path | None = None,
                           allow_partial: bool = False) -> list[Condition]:
    """Conditions of a pre-rendered University-WX folder.

    Accepted layouts, per condition: ``DIR/<condition>/<class>/<image>`` (weathered
    ``query_drone``), or ``DIR/<condition>/query_drone/...`` with an optional
    ``DIR/<condition>/gallery_drone/...`` (then satellite → drone is weathered too).
    Conditions named in ``order`` (e.g. the community order) come first, others follow
    sorted by name.

    With ``dataset`` (the University-1652 root), every pre-rendered folder is compared
    with its ``test/`` folder, class by class: one that covers fewer images is refused
    (a :class:`UserError` naming it and the counts) unless ``allow_partial``, which
    records it in :attr:`Condition.partial` instead.
    """
    base = Path(folder)
    if not base.is_dir():
        raise UserError(f"--wx-dir {base} is not a folder (expected DIR/<condition>/<class>/<image>)")
    names = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise UserError(f"--wx-dir {base} has no condition folder (expected DIR/<condition>/<class>/<image>)")
    ranked = [n for n in order if n in names] + [n for n in names if n not in order]
    reference = load_university1652(dataset, splits=("test",)).test if dataset is not None else {}
    out = []
    for name in ranked:
        cdir = base / name
        folders: dict[str, ClassFolderSet] = {}
        if (cdir / "query_drone").is_dir():
            folders["query_drone"] = read_class_folders(cdir / "query_drone", "drone")
            if (cdir / "gallery_drone").is_dir():
                folders["gallery_drone"] = read_class_folders(cdir / "gallery_drone", "drone")
        else:
            folders["query_drone"] = read_class_folders(cdir, "drone")
        if not folders["query_drone"].num_images:
            raise UserError(f"condition folder {cdir} holds no image")
        cond = Condition(name, folders=folders)
        for fname, fset in folders.items():
            if fname not in reference:
                continue
            covered, total = coverage(fset, reference[fname])
            if covered < total:
                if not allow_partial:
                    raise UserError(
                        f"--wx-dir folder {fset.root} has {covered} of the {total} images of "
                        f"{reference[fname].root}: complete it, or pass --allow-partial to "
                        "score the subset (marked partial)")
                cond.partial[fname] = (covered, total)
        out.append(cond)
    return out


def coverage(folder: ClassFolderSet, reference: ClassFolderSet) -> tuple[int, int]:
    """``(images of reference that folder has a counterpart for, images of reference)``,
    counted per class (a class cannot make up for another's missing images; names may
    differ, e.g. by extension)."""
    covered = sum(min(len(folder.classes.get(c, [])), len(paths))
                  for c, paths in reference.classes.items())
    return covered, reference.num_images


def on_the_fly_conditions(names: Sequence[str], seed: int, dark_variant: str = "train") -> list[Condition]:
    """Conditions rendered by :mod:`mcgf.weather` while features are extracted."""
    from mcgf.evaluation.features import weather_transform

    conds = []
    for name in names:
        transform, tid = weather_transform(name, seed, dark_variant)
        conds.append(Condition(name, transform=transform, transform_id=tid))
    return conds


def mean_over_conditions(rows: Sequence[EvaluationRow]) -> list[EvaluationRow]:
    """Per direction, the mean of the headline metrics over conditions (University-WX).

    Partial rows (see :func:`prerendered_conditions`) are in the mean and named in
    ``partial_conditions``."""
    out = []
    for direction in dict.fromkeys(r.direction for r in rows):
        sel = [r.metrics for r in rows if r.direction == direction]
        mean: dict[str, Any] = {"conditions": len(sel)}
        partial = [r.condition for r in rows if r.direction == direction and "partial" in r.metrics]
        if partial:
            mean["partial_conditions"] = partial
        for key in ("R@1", "R@5", "R@10", "R@top1%", "AP"):
            vals = [m[key] for m in sel if m.get(key) is not None]
            mean[key] = float(np.mean(vals)) if vals else None
        out.append(EvaluationRow("mean", direction, mean))
    return out
