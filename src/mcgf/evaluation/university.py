"""University-1652 and University-WX evaluation protocols, on any dataset layout.

Directions, in every test set of the dataset's layout (:mod:`mcgf.data.layouts`: the
``test/`` folder of University-1652 and DenseUAV, each ``Testing/<height>`` of SUES-200):

* ``drone->satellite``: ``query_drone`` ranked against ``gallery_satellite``
  (the whole gallery: University-1652's 250 distractor tiles, DenseUAV's and SUES-200's
  training locations stay in it);
* ``satellite->drone``: ``query_satellite`` ranked against ``gallery_drone``.

A layout with several test sets gets a row per test set (its ``subset``, e.g. the
SUES-200 height) and direction; :func:`mean_over_subsets` averages them. A layout may
add metrics of its own (DenseUAV: SDM@K, see :mod:`mcgf.retrieval.geo`).

University-WX evaluates every weather condition separately (weather on every drone image,
satellite images untouched) and reports the mean over conditions. Weathered drone images
come either from a pre-rendered folder per condition (:func:`prerendered_conditions`) or
on the fly from :mod:`mcgf.weather` (deterministic per image key and seed).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mcgf.data.datasets import Degrade
from mcgf.data.layout import (
    JUNK_LABEL,
    ClassFolderSet,
    ImageRecord,
    list_subfolders,
    read_class_folders,
)
from mcgf.data.layouts import DIRECTIONS, DRONE_ROLES, DatasetLayout, find_dataset
from mcgf.errors import UserError
from mcgf.evaluation.features import FeatureSet, extract_features, for_view
from mcgf.evaluation.sharding import Shard
from mcgf.models.registry import Embedder
from mcgf.retrieval.metrics import PerQuery, summarize
from mcgf.retrieval.ranking import rank_and_score
from mcgf.weather.conditions import CONDITIONS

_log = logging.getLogger(__name__)

#: Folders whose images are drone views (weather applies to them only).
DRONE_FOLDERS = DRONE_ROLES
#: The condition name of an evaluation without weather (the University-1652 protocol): the
#: row of a clean-only run and the tap of the clean features. Not a weather condition:
#: with weather, the clean images are also evaluated as condition ``mcgf.weather.CLEAN``.
NO_WEATHER = "clean"
#: The ``subset`` of rows averaged over a layout's test sets (:func:`mean_over_subsets`).
MEAN = "mean"
#: Receives ``(condition, folder, records, features)`` of the folders a caller taps
#: (see :func:`evaluate_university`); ``condition`` is :data:`NO_WEATHER` for clean images.
FeatureTap = Callable[[str, str, Sequence[ImageRecord], FeatureSet], None]
#: The community's order of the ten weather conditions (normal first, composites last).
COMMUNITY_ORDER: tuple[str, ...] = CONDITIONS


@dataclass
class ExtractOptions:
    """How features are computed (shared by every folder of a run).

    ``shard``: split every folder's images over the ranks of a process group and gather
    the features (see :mod:`mcgf.evaluation.sharding`; no cache); every rank then
    computes the same rows.
    """

    batch_size: int = 32
    flip: bool = True
    device: str | None = None
    num_workers: int = 0
    cache_dir: str | Path | None = None
    on_bad_image: str = "stop"
    progress: bool = True
    shard: Shard | None = None


def subset_key(subset: str, role: str) -> str:
    """Key of a test folder in :attr:`Condition.folders`: the role, prefixed with the test
    set for a layout with several (``"150/query_drone"``)."""
    return f"{subset}/{role}" if subset else role


@dataclass
class Condition:
    """One evaluation condition: ``name`` plus how to get its drone images.

    ``folders`` replaces test folders by pre-rendered ones (``query_drone`` →
    ``DIR/<condition>``; keys as :func:`subset_key` makes them); ``transform``/
    ``transform_id`` weather images on the fly. ``partial`` maps a pre-rendered folder
    that covers only part of its test folder to ``(images covered, images of the test
    folder)`` (accepted with ``allow_partial``).
    """

    name: str
    folders: dict[str, ClassFolderSet] = field(default_factory=dict)
    transform: Degrade | None = None
    transform_id: str = ""
    partial: dict[str, tuple[int, int]] = field(default_factory=dict)

    def folders_of(self, subset: str = "") -> dict[str, ClassFolderSet]:
        """The pre-rendered folders of test set ``subset``, by role."""
        prefix = f"{subset}/" if subset else ""
        return {k[len(prefix):]: v for k, v in self.folders.items()
                if k.startswith(prefix) and "/" not in k[len(prefix):]}

    def unweathered(self, direction: str, subset: str = "") -> list[str]:
        """Drone folders of ``direction`` (in test set ``subset``) that this pre-rendered
        condition has no weathered copy of (e.g. ``gallery_drone`` without
        ``DIR/<condition>/gallery_drone``): its row would be the clean result, so it is
        left out. Empty for on-the-fly and clean conditions."""
        if not self.folders:
            return []
        own = self.folders_of(subset)
        return [n for n in DIRECTIONS[direction] if n in DRONE_FOLDERS and n not in own]


@dataclass
class EvaluationRow:
    """Metrics of one (condition, direction) of test set ``subset`` (``""`` for a layout
    with one test set; :data:`MEAN` for a mean over test sets)."""

    condition: str
    direction: str
    metrics: dict[str, Any]
    subset: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The row as ``metrics.json`` stores it (``subset`` only when there is one)."""
        out: dict[str, Any] = {"condition": self.condition, "direction": self.direction}
        if self.subset:
            out["subset"] = self.subset
        out["metrics"] = self.metrics
        return out


def missing_folders(root: str | Path, directions: Sequence[str],
                    layout: str | DatasetLayout | None = None) -> dict[str, list[Path]]:
    """Per direction, the test folders it needs that are missing under the dataset ``root``
    (in any of its layout's test sets; directions whose folders all exist are not
    listed)."""
    ds = layout if isinstance(layout, DatasetLayout) else find_dataset(root, layout)
    sets = ds.test_sets()
    out = {}
    for direction in directions:
        missing = [ts.path(n) for ts in sets for n in DIRECTIONS[direction] if not ts.has(n)]
        if not sets:
            missing = [ds.root / n for n in DIRECTIONS[direction]]
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
        desc=desc, shard=opts.shard,
    )
    if not fs.valid.any():
        raise UserError(f"none of the {len(records)} images of {folder.root} could be read "
                        "(all skipped by --on-bad-image skip): nothing to evaluate")
    skipped = np.flatnonzero(~fs.valid)
    if skipped.size:
        _note_unreadable(str(folder.root), int(skipped.size),
                         tuple(str(records[i].path) for i in skipped[:3]))
    return fs, labels


@functools.cache
def _note_unreadable(folder: str, count: int, examples: tuple[str, ...]) -> None:
    """Name the images ``--on-bad-image skip`` left out of ``folder``, once per process
    (each weather condition reads the folder again), so that they can be fixed; the
    metrics only count them."""
    more = f" and {count - len(examples)} more" if count > len(examples) else ""
    _log.warning("%s: %d unreadable image%s skipped (--on-bad-image skip): %s%s", folder, count,
                 "" if count == 1 else "s", ", ".join(examples), more)


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
    layout: str | DatasetLayout | None = None,
) -> list[EvaluationRow]:
    """Evaluate ``embedder`` on the test split(s) of the dataset under ``root``.

    Args:
        root: the dataset (see :func:`mcgf.data.layouts.find_dataset`).
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
            folder that no evaluated direction uses is only seen clean. Only the first
            test set of a layout with several is tapped.
        tap_folders: test folder names (e.g. ``("query_drone",)``).
        layout: the dataset layout (a name, ``sues200:150``, or an opened layout);
            ``None``: detected from the folder tree.

    Returns:
        One row per (test set, condition, direction): test sets in the layout's order,
        then conditions in the given order. A pre-rendered condition has no row for a
        direction whose drone folder it has no weathered copy of (see
        :meth:`Condition.unweathered`). A row of a partial pre-rendered folder has
        ``metrics["partial"] = {folder: {"images": n, "of": total}}``.
    """
    opts = options or ExtractOptions()
    unknown = [d for d in directions if d not in DIRECTIONS]
    if unknown:
        raise UserError(f"unknown direction {unknown[0]!r}: use {', '.join(DIRECTIONS)}")
    ds = layout if isinstance(layout, DatasetLayout) else find_dataset(root, layout)
    sets = ds.test_sets()
    if not sets:
        raise UserError(f"{ds.root} has no test split ({ds.title} layout): nothing to evaluate")
    conds = list(conditions) if conditions else [Condition(NO_WEATHER)]
    rows: list[EvaluationRow] = []
    for index, ts in enumerate(sets):
        rows += _evaluate_test_set(ds, ts.name, ds.read_test(ts), embedder, directions, conds, opts,
                                   no_match, log, tap if index == 0 else None, tap_folders)
    return rows


def _evaluate_test_set(ds: DatasetLayout, subset: str, data: Any, embedder: Embedder,
                       directions: Sequence[str], conds: Sequence[Condition], opts: ExtractOptions,
                       no_match: str, log: Callable[[str], None] | None, tap: FeatureTap | None,
                       tap_folders: Sequence[str]) -> list[EvaluationRow]:
    """The rows of one test set (``data``: its :class:`~mcgf.data.layouts.TestFolders`)."""
    clean_cache: dict[str, tuple[FeatureSet, np.ndarray]] = {}
    title = ds.subset_title(subset)
    prefix = f"{title} " if title else ""

    def clean(name: str) -> tuple[FeatureSet, np.ndarray]:
        if name not in clean_cache:
            clean_cache[name] = _features(data.folder(name), embedder, opts, view=view_of(name),
                                          transform=None, transform_id="",
                                          desc=subset_key(subset, name))
        return clean_cache[name]

    tapped = set(tap_folders) if tap is not None else set()
    for name in tap_folders if tap is not None else ():
        tap(NO_WEATHER, name, data.folder(name).records(), clean(name)[0])

    rows: list[EvaluationRow] = []
    for cond in conds:
        own = cond.folders_of(subset)
        for direction in directions:
            qname, gname = DIRECTIONS[direction]
            if cond.unweathered(direction, subset):
                if log is not None:
                    log(f"{prefix}{cond.name:>10} {direction}: left out (no weathered "
                        f"{', '.join(cond.unweathered(direction, subset))})")
                continue
            sides = []
            for name in (qname, gname):
                if name in own:
                    folder = own[name]
                    sides.append(_features(folder, embedder, opts, view=view_of(name),
                                           transform=None, transform_id="",
                                           desc=f"{cond.name}/{subset_key(subset, name)}"))
                elif cond.transform is not None and name in DRONE_FOLDERS:
                    folder = data.folder(name)
                    sides.append(_features(folder, embedder, opts, view=view_of(name),
                                           transform=cond.transform, transform_id=cond.transform_id,
                                           desc=f"{cond.name}/{subset_key(subset, name)}"))
                else:
                    folder = data.folder(name)
                    sides.append(clean(name))
                if name in tapped and tap is not None:
                    tap(cond.name, name, folder.records(), sides[-1][0])
            metrics = evaluate_direction(sides[0], sides[1], no_match=no_match)
            if ds.extra_topk:
                metrics.update(_extra_metrics(ds, direction, sides[0], sides[1]))
            # Whether each side's features came from the cache (nothing recomputed).
            metrics["query_features_cached"] = bool(sides[0][0].from_cache)
            metrics["gallery_features_cached"] = bool(sides[1][0].from_cache)
            keys = {n: subset_key(subset, n) for n in (qname, gname)}
            partial = {n: {"images": cond.partial[k][0], "of": cond.partial[k][1]}
                       for n, k in keys.items() if k in cond.partial}
            if partial:
                metrics["partial"] = partial
            rows.append(EvaluationRow(cond.name, direction, metrics, subset))
            if log is not None:
                log(f"{prefix}{cond.name:>10} {direction}: R@1 {metrics['R@1']:.2f}  AP {metrics['AP']:.2f}")
    return rows


def _extra_metrics(ds: DatasetLayout, direction: str, query: tuple[FeatureSet, np.ndarray],
                   gallery: tuple[FeatureSet, np.ndarray]) -> dict[str, Any]:
    """The layout's own metrics of one direction, from each readable query's best
    :attr:`~mcgf.data.layouts.DatasetLayout.extra_topk` gallery labels (ranked as the
    R@K are: descending cosine, ties to the lower gallery index, junk left out)."""
    from mcgf.retrieval.geo import ranked_top

    (qf, ql), (gf, gl) = query, gallery
    keep = gf.valid & (gl != JUNK_LABEL)
    k = min(ds.extra_topk, int(keep.sum()))
    top = np.full((len(ql), k), -1, np.int64)
    qv = qf.valid
    if k and qv.any():
        top[qv] = gl[keep][ranked_top(qf.features[qv], gf.features[keep], k)]
    return ds.extra_metrics(direction, ql, qv, top)


def prerendered_conditions(folder: str | Path, order: Sequence[str] = COMMUNITY_ORDER, *,
                           dataset: str | Path | None = None,
                           allow_partial: bool = False,
                           layout: str | DatasetLayout | None = None) -> list[Condition]:
    """Conditions of a pre-rendered University-WX folder.

    Accepted layouts, per condition: ``DIR/<condition>/<class>/<image>`` (weathered
    ``query_drone``), or ``DIR/<condition>/query_drone/...`` with an optional
    ``DIR/<condition>/gallery_drone/...`` (then satellite → drone is weathered too).
    For a dataset whose layout has several test sets (SUES-200), each has its own
    folder: ``DIR/<condition>/<test set>/query_drone/...`` (and ``gallery_drone``), as
    ``mcgf weather render DATASET DIR`` writes them; a test set without one is left out
    of that condition. Conditions named in ``order`` (e.g. the community order) come
    first, others follow sorted by name.

    With ``dataset`` (the dataset root; ``layout`` as in :func:`evaluate_university`),
    every pre-rendered folder is compared with its test folder, class by class: one that
    covers fewer images is refused (a :class:`UserError` naming it and the counts)
    unless ``allow_partial``, which records it in :attr:`Condition.partial` instead.
    """
    base = Path(folder)
    if not base.is_dir():
        raise UserError(f"--wx-dir {base} is not a folder (expected DIR/<condition>/<class>/<image>)")
    # Hidden and system folders (__MACOSX of a zip unpacked on macOS, ~ copies) are no
    # condition: listed as every dataset folder is.
    names = [e.name for e in list_subfolders(base)]
    if not names:
        raise UserError(f"--wx-dir {base} has no condition folder (expected DIR/<condition>/<class>/<image>)")
    ranked = [n for n in order if n in names] + [n for n in names if n not in order]
    reference: dict[str, ClassFolderSet] = {}
    subsets = [""]
    read = read_class_folders
    ds: DatasetLayout | None = None
    if dataset is not None:
        ds = layout if isinstance(layout, DatasetLayout) else find_dataset(dataset, layout)
        subsets = [ts.name for ts in ds.test_sets()] or [""]
        for ts in ds.test_sets():
            reference.update({subset_key(ts.name, r): f for r, f in ds.read_test(ts).folders.items()})
        read = ds.read_folder  # type: ignore[assignment]
    out = []
    for name in ranked:
        cdir = base / name
        folders: dict[str, ClassFolderSet] = {}
        if subsets == [""]:
            if (cdir / "query_drone").is_dir():
                folders["query_drone"] = read(cdir / "query_drone", "drone")
                if (cdir / "gallery_drone").is_dir():
                    folders["gallery_drone"] = read(cdir / "gallery_drone", "drone")
            else:
                folders["query_drone"] = read(cdir, "drone")
        else:
            for sub in subsets:
                for role in ("query_drone", "gallery_drone"):
                    if (cdir / sub / role).is_dir():
                        folders[subset_key(sub, role)] = read(cdir / sub / role, "drone")
            if not folders:
                assert ds is not None
                raise UserError(f"condition folder {cdir} has no <{ds.subset_label}>/query_drone folder "
                                f"(expected DIR/<condition>/<{ds.subset_label}>/query_drone/<class>/<image> "
                                f"for {ds.title}: {', '.join(subsets)})")
        for key, fset in folders.items():
            if key.endswith("query_drone") and not fset.num_images:
                raise UserError(f"condition folder {fset.root if subsets != [''] else cdir} holds no image")
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
    counted per location (a location cannot make up for another's missing images; file
    names may differ, e.g. by extension, and folder names may spell the id otherwise,
    ``7`` for ``0007``, as labels are the folder name read as a number)."""
    per_id = {int(c): len(paths) for c, paths in folder.classes.items()}
    covered = sum(min(per_id.get(int(c), 0), len(paths))
                  for c, paths in reference.classes.items())
    return covered, reference.num_images


#: JPEG quality of on-the-fly weathered queries in ``mcgf evaluate``: the published
#: weathered test sets are JPEG files written after the weather (``mcgf weather render``
#: writes 95 too), and the second compression takes the faint colour a veil leaves.
WX_JPEG_QUALITY = 95


def on_the_fly_conditions(names: Sequence[str], seed: int, dark_variant: str = "train",
                          jpeg_quality: int | None = None) -> list[Condition]:
    """Conditions rendered by :mod:`mcgf.weather` while features are extracted (each
    weathered image stored as a JPEG of ``jpeg_quality`` and decoded again, unless ``None``)."""
    from mcgf.evaluation.features import weather_transform

    conds = []
    for name in names:
        transform, tid = weather_transform(name, seed, dark_variant, jpeg_quality)
        conds.append(Condition(name, transform=transform, transform_id=tid))
    return conds


_MEAN_KEYS: tuple[str, ...] = ("R@1", "R@5", "R@10", "R@top1%", "AP")


def _mean_metrics(sel: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean of the headline metrics (and of any ``SDM@K`` the rows have)."""
    keys = list(_MEAN_KEYS) + [k for k in dict.fromkeys(k for m in sel for k in m)
                               if k.startswith("SDM@")]
    mean: dict[str, Any] = {}
    for key in keys:
        vals = [m[key] for m in sel if m.get(key) is not None]
        mean[key] = float(np.mean(vals)) if vals else None
    return mean


def mean_over_conditions(rows: Sequence[EvaluationRow]) -> list[EvaluationRow]:
    """Per test set and direction, the mean of the headline metrics over conditions
    (University-WX).

    Partial rows (see :func:`prerendered_conditions`) are in the mean and named in
    ``partial_conditions``."""
    out = []
    for subset, direction in dict.fromkeys((r.subset, r.direction) for r in rows):
        mine = [r for r in rows if r.direction == direction and r.subset == subset]
        sel = [r.metrics for r in mine]
        mean: dict[str, Any] = {"conditions": len(sel)}
        partial = [r.condition for r in mine if "partial" in r.metrics]
        if partial:
            mean["partial_conditions"] = partial
        mean.update(_mean_metrics(sel))
        out.append(EvaluationRow("mean", direction, mean, subset))
    return out


def mean_over_subsets(rows: Sequence[EvaluationRow]) -> list[EvaluationRow]:
    """Per condition and direction, the mean over a layout's test sets (SUES-200: the
    mean over heights), as rows of subset :data:`MEAN`; ``[]`` when the rows come from
    fewer than two test sets."""
    named = [r for r in rows if r.subset and r.subset != MEAN]
    if len({r.subset for r in named}) < 2:
        return []
    out = []
    for condition, direction in dict.fromkeys((r.condition, r.direction) for r in named):
        mine = [r for r in named if r.condition == condition and r.direction == direction]
        mean: dict[str, Any] = {"subsets": [r.subset for r in mine]}
        mean.update(_mean_metrics([r.metrics for r in mine]))
        out.append(EvaluationRow(condition, direction, mean, MEAN))
    return out
