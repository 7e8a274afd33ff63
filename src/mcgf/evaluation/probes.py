"""Weather-invariance probes of an evaluation: the ``invariance`` section of metrics.json.

:class:`InvarianceProbes` is a feature tap for
:func:`mcgf.evaluation.university.evaluate_university`: it receives the clean
``query_drone`` features and then each condition's as the evaluation extracts them, so
the probes cost no second embedding pass. Per condition it aligns the weathered images
with the clean ones by image key (``<class>/<file>``; else by location and file name
without its image extension), computes the clean–weathered
cosine at once (:func:`mcgf.evaluation.invariance.cosine_invariance`) and keeps the
features of a seeded sample of images for the condition probe
(:func:`mcgf.evaluation.invariance.condition_probe`), run by :meth:`result`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from mcgf.data.layout import ImageRecord, without_image_extension
from mcgf.evaluation.features import FeatureSet
from mcgf.evaluation.invariance import (
    PROBE_FOLDS,
    PROBE_L2,
    PROBE_MAX_ITER,
    condition_probe,
    cosine_invariance,
)
from mcgf.evaluation.university import NO_WEATHER

#: The folder whose images the probes look at.
PROBE_FOLDER = "query_drone"
#: Images (each under every condition) the probe classifier is trained on at most: the
#: 37,855 University-1652 queries × 10 conditions would hold 1.5 GB of float64 features.
PROBE_MAX_IMAGES = 5000


def _loose_key(record: ImageRecord) -> str:
    """``<key prefix><location id>/<file name without image extension>``."""
    return f"{record.key_prefix}{record.label}/{without_image_extension(record.path.name)}"


def _align_keys(clean: np.ndarray, keys: np.ndarray) -> np.ndarray | None:
    """Row in ``keys`` of each of ``clean`` (-1: absent), or ``None`` when ``keys`` holds
    one twice or one that ``clean`` lacks."""
    order = np.argsort(keys, kind="stable")
    pos = np.searchsorted(keys[order], clean)
    pos = np.minimum(pos, max(len(keys) - 1, 0))
    found = (keys[order][pos] == clean) if len(keys) else np.zeros(len(clean), bool)
    if int(found.sum()) != len(np.unique(keys)) or len(np.unique(keys)) != len(keys):
        return None
    return np.where(found, order[pos], -1)


class InvarianceProbes:
    """Collects tapped features and turns them into the ``invariance`` section.

    Args:
        folds: folds of the condition probe (split by location).
        seed: fixes the folds and the image sample.
        max_images: images the probe uses at most (a seeded sample; the cosine always
            uses every image).
        l2, max_iter: the probe classifier's penalty and L-BFGS iterations.
    """

    def __init__(self, *, folds: int = PROBE_FOLDS, seed: int = 0,
                 max_images: int = PROBE_MAX_IMAGES, l2: float = PROBE_L2,
                 max_iter: int = PROBE_MAX_ITER) -> None:
        self.folds, self.seed, self.max_images = folds, seed, max_images
        self.l2, self.max_iter = l2, max_iter
        self.notes: list[str] = []
        self._clean: FeatureSet | None = None
        self._keys: np.ndarray = np.empty(0, str)
        self._loose_keys: list[str] = []
        self._labels: np.ndarray = np.empty(0, np.int64)
        self._sample: np.ndarray = np.empty(0, np.int64)
        self._cosine: dict[str, dict[str, Any]] = {}
        self._probe_rows: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    # ------------------------------------------------------------------ tap

    def __call__(self, condition: str, folder: str, records: Sequence[ImageRecord],
                 features: FeatureSet) -> None:
        """The :data:`~mcgf.evaluation.university.FeatureTap` (only ``query_drone`` is used)."""
        if folder != PROBE_FOLDER:
            return
        if condition == NO_WEATHER:
            self._set_clean(records, features)
        elif self._clean is not None:
            self._add(condition, records, features)

    def _set_clean(self, records: Sequence[ImageRecord], features: FeatureSet) -> None:
        self._clean = features
        self._keys = np.array([r.key for r in records])
        self._loose_keys = [_loose_key(r) for r in records]
        self._labels = np.array([r.label for r in records], np.int64)
        n = len(records)
        rng = np.random.default_rng(self.seed)
        self._sample = (np.arange(n) if n <= self.max_images
                        else np.sort(rng.choice(n, self.max_images, replace=False)))

    def _align(self, records: Sequence[ImageRecord]) -> np.ndarray | None:
        """Row of each clean image in ``records`` (-1: absent), or ``None`` when some of
        ``records`` has no clean counterpart.

        Images are matched by key; failing that, by location and file name without its
        image extension (a condition saved as ``.png`` in a folder ``7`` for ``0007``),
        when that names every image on both sides once."""
        rows = _align_keys(self._keys, np.array([r.key for r in records]))
        if rows is None:
            clean = np.array(self._loose_keys)
            if len(np.unique(clean)) == len(clean):
                rows = _align_keys(clean, np.array([_loose_key(r) for r in records]))
        return rows

    def _add(self, condition: str, records: Sequence[ImageRecord], features: FeatureSet) -> None:
        clean = self._clean
        assert clean is not None
        if features is clean:
            rows = np.arange(len(self._keys))
        else:
            aligned = self._align(records)
            if aligned is None or not (aligned >= 0).any():
                self.notes.append(f"{condition}: its images do not align by key (<class>/<file>) with "
                                  f"test/{PROBE_FOLDER}; left out of the invariance probes")
                return
            rows = aligned
        present = rows >= 0
        ok = present & clean.valid
        ok[present] &= features.valid[rows[present]]
        if not ok.any() or clean.features.shape[1] != features.features.shape[1]:
            self.notes.append(f"{condition}: no image with both a clean and a weathered feature; "
                              "left out of the invariance probes")
            return
        weathered = np.zeros_like(clean.features)
        weathered[present] = features.features[rows[present]]
        cos = cosine_invariance(clean.features, weathered, self._labels, ok)
        entry: dict[str, Any] = {"condition": condition, **asdict(cos)}
        entry["same_as_clean"] = features is clean
        self._cosine[condition] = entry
        self._probe_rows[condition] = (weathered[self._sample], ok[self._sample])

    # ------------------------------------------------------------------ result

    def result(self) -> dict[str, Any] | None:
        """The ``invariance`` section (see docs/evaluation.md), or ``None`` when nothing
        was collected (no clean ``query_drone`` features)."""
        if self._clean is None:
            return None
        section: dict[str, Any] = {
            "folder": PROBE_FOLDER,
            "images": len(self._keys),
            "baseline": "mean cosine between an image's weathered embedding and the clean "
                        "embeddings of the images of all other locations",
            "normalised": "(cosine - baseline) / (1 - baseline)",
            "per_condition": list(self._cosine.values()),
            "probe": None,
            "notes": list(self.notes),
        }
        names = list(self._probe_rows)
        if len(names) < 2:
            section["notes"].append("condition probe skipped: it needs at least two conditions")
            return section
        ok = np.logical_and.reduce([self._probe_rows[c][1] for c in names])
        labels = self._labels[self._sample][ok]
        if len(np.unique(labels)) < 2:
            section["notes"].append("condition probe skipped: it needs images of at least two "
                                    "locations (folds are split by location)")
            return section
        x = np.concatenate([self._probe_rows[c][0][ok] for c in names])
        y = np.repeat(np.arange(len(names)), int(ok.sum()))
        groups = np.tile(labels, len(names))
        probe = condition_probe(x, y, groups, folds=self.folds, seed=self.seed, l2=self.l2,
                                max_iter=self.max_iter, names=names)
        section["probe"] = {
            "accuracy": probe.accuracy, "accuracy_std": probe.accuracy_std,
            "fold_accuracies": list(probe.fold_accuracies), "chance": probe.chance,
            "folds": probe.folds, "n": probe.n, "images": int(ok.sum()), "groups": probe.groups,
            "grouping": "location", "seed": probe.seed, "l2": probe.l2, "max_iter": probe.max_iter,
            "conditions": names,
        }
        for name, recall in zip(names, probe.class_recall, strict=True):
            self._cosine[name]["probe_recall"] = recall
        section["per_condition"] = list(self._cosine.values())
        return section


def summary_line(section: dict[str, Any]) -> str:
    """One line about an ``invariance`` section (printed by ``mcgf evaluate``)."""
    rows = [r for r in section.get("per_condition", []) if not r.get("same_as_clean")]
    parts = [f"invariance ({section.get('folder')}, {section.get('images')} images):"]
    if rows:
        cos = float(np.mean([r["cosine"] for r in rows]))
        base = [r["baseline"] for r in rows if r.get("baseline") is not None]
        text = f"clean-weathered cosine {cos:.3f}"
        if base:
            text += f" (other locations {float(np.mean(base)):.3f})"
        plural = "s" if len(rows) != 1 else ""
        parts.append(text + f" over {len(rows)} weathered condition{plural};")
    probe = section.get("probe")
    if probe:
        parts.append(f"condition probe {probe['accuracy']:.1f} ± {probe['accuracy_std']:.1f} % "
                     f"(chance {probe['chance']:.1f} %, {probe['folds']} folds by location)")
    else:
        parts.append("no condition probe")
    return " ".join(parts)
