"""Full-gallery ranking and per-query metrics for labelled galleries (University-1652).

The gallery is ranked completely for every query (951 satellite tiles, or 51,355 drone
views for satellite → drone), a block of queries at a time so that memory stays bounded
(``block × gallery`` scores), and the ranked labels go straight into the vectorised
metrics. Scores are float64 inner products of the (float32) features; equal scores are
ordered by gallery index (stable sort).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mcgf.retrieval.metrics import JUNK_LABEL, PerQuery, per_query_metrics
from mcgf.retrieval.search import as_float_tensor

#: Score-matrix entries per block: ~32 MiB of float64 scores (plus sort and label arrays).
_BLOCK_ENTRIES = 4 * 1024 * 1024


def rank_and_score(query_features: Any, query_labels: Any, gallery_features: Any,
                   gallery_labels: Any, *, junk_label: int = JUNK_LABEL,
                   block: int | None = None) -> PerQuery:
    """Rank the whole gallery for every query and return per-query CMC/AP data.

    Args:
        query_features: ``(Q, D)`` features (L2-normalised for cosine similarity).
        query_labels: ``(Q,)`` integer labels.
        gallery_features: ``(G, D)`` features.
        gallery_labels: ``(G,)`` labels; ``junk_label`` items are dropped from rankings.
        junk_label: label of junk gallery items.
        block: queries ranked at once (default: as many as fit in ~256 MiB of scores).
    """
    q = as_float_tensor(query_features, "query features")
    g = as_float_tensor(gallery_features, "gallery features")
    ql = np.asarray(query_labels, dtype=np.int64).reshape(-1)
    gl = torch.as_tensor(np.asarray(gallery_labels, dtype=np.int64).reshape(-1))
    if q.shape[0] != ql.shape[0] or g.shape[0] != gl.shape[0]:
        raise ValueError("features and labels disagree in length")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query features have {q.shape[1]} dims but gallery features {g.shape[1]}")
    step = block or max(1, _BLOCK_ENTRIES // max(1, g.shape[0]))
    g64 = g.double()
    parts = []
    with torch.inference_mode():
        for s in range(0, q.shape[0], step):
            scores = q[s: s + step].double() @ g64.T
            order = torch.argsort(scores, dim=1, descending=True, stable=True)
            ranked = gl[order].numpy()
            parts.append(per_query_metrics(ranked, ql[s: s + step], junk_label=junk_label))
    return PerQuery.concatenate(parts)
