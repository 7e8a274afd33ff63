"""Features for the report, taken from the evaluation's cache whenever it has them.

``mcgf evaluate`` caches every folder it embeds (see :mod:`mcgf.evaluation.cache`). The
report asks for the same folders with the same embedder, preprocessing, flip and weather
transform, so it finds those entries and embeds nothing again. Folders that are not
cached are computed (and cached) when the caller allows it; expensive ones (every
weather condition of a large gallery) can be asked for "cached only".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mcgf.data.datasets import Degrade, degrade_image
from mcgf.data.images import read_image
from mcgf.data.layout import ImageRecord
from mcgf.evaluation.cache import FeatureCache
from mcgf.evaluation.features import (
    FeatureSet,
    extract_features,
    feature_cache_key,
    for_view,
    weather_transform,
)
from mcgf.evaluation.university import WX_JPEG_QUALITY
from mcgf.models.registry import Embedder
from mcgf.weather import CLEAN


@dataclass
class FeatureStore:
    """Features of record lists under weather conditions, through the feature caches.

    Args:
        embedder: the model (``for_view`` picks the encoder of each view).
        caches: cache folders searched for an entry, in order; new entries go to the first.
        flip: flip test-time augmentation (must match the evaluation to hit its cache).
        weather_seed, dark_variant, weather_jpeg: on-the-fly weather, as in ``mcgf evaluate``.
        device, batch_size, num_workers, progress: feature extraction settings.
    """

    embedder: Embedder
    caches: list[Path]
    flip: bool = True
    weather_seed: int = 0
    dark_variant: str = "test"
    weather_jpeg: int | None = WX_JPEG_QUALITY
    device: str | None = None
    batch_size: int = 32
    num_workers: int = 0
    progress: bool = True
    log: Callable[[str], None] | None = None
    computed: list[str] = field(default_factory=list)

    def transform(self, condition: str) -> tuple[Degrade | None, str]:
        """The per-image weather transform of ``condition`` and its cache description."""
        return weather_transform(condition, self.weather_seed, self.dark_variant, self.weather_jpeg)

    def image(self, record: ImageRecord, condition: str = CLEAN) -> np.ndarray:
        """The (H, W, 3) uint8 pixels of ``record`` under ``condition``, at its native size:
        decoded and weathered exactly as for its features (satellite views never carry
        weather)."""
        transform = self.transform(condition)[0] if record.view == "drone" else None
        return np.asarray(degrade_image(read_image(record.path), record.key, transform)[0])

    def cached(self, records: Sequence[ImageRecord], view: str, condition: str) -> FeatureSet | None:
        """The features if some cache holds them, else ``None`` (nothing is computed)."""
        emb = for_view(self.embedder, view)
        _, tid = self.transform(condition)
        key = feature_cache_key(records, emb, flip=self.flip, transform_id=tid, device=self.device)
        for folder in self.caches:
            hit = FeatureCache(folder).load(key)
            if hit is not None and hit.features.shape[0] == len(records):
                return FeatureSet(hit.features, hit.valid, from_cache=True)
        return None

    def get(self, records: Sequence[ImageRecord], view: str, condition: str = CLEAN, *,
            compute: bool = True, store: bool = True, desc: str = "") -> FeatureSet | None:
        """Features of ``records`` (all of one ``view``) under ``condition``.

        Args:
            compute: embed them when no cache has them (else return ``None``).
            store: write computed features to the first cache folder (whole folders are
                worth keeping; a handful of picked images is not).
            desc: progress label.
        """
        hit = self.cached(records, view, condition)
        if hit is not None or not compute:
            return hit
        transform, tid = self.transform(condition)
        cache_dir = self.caches[0] if (store and self.caches) else None
        if cache_dir is not None:  # a whole folder: worth a line (a few picked images are not)
            if self.log is not None:
                self.log(f"  embedding {len(records)} {view} images ({desc or view}, {condition}) "
                         f"-> cache {cache_dir}")
            self.computed.append(f"{desc or view} ({condition})")
        return extract_features(
            records, for_view(self.embedder, view), batch_size=self.batch_size, flip=self.flip,
            device=self.device, num_workers=self.num_workers, cache_dir=cache_dir,
            transform=transform, transform_id=tid, progress=self.progress and cache_dir is not None,
            desc=desc or view,
        )


def subset(features: FeatureSet, rows: np.ndarray) -> FeatureSet:
    """The rows ``rows`` of a feature set."""
    return FeatureSet(features.features[rows], features.valid[rows], features.from_cache)
