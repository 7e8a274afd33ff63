"""Full-gallery ranking and per-query metrics for labelled galleries (University-1652).

The gallery is ranked completely for every query (951 satellite tiles, or 51,355 drone
views for satellite → drone), a block of queries at a time so that memory stays bounded
(``block × gallery`` scores), and the ranked labels go straight into the vectorised
metrics. Scores are float64 inner products of the (float32) features; equal scores are
ordered by gallery index (stable sort). Identical gallery features are scored once and
share that score, so they always tie (:func:`ranked_blocks`, which SDM@K's top-K uses
too).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from mcgf.retrieval.metrics import JUNK_LABEL, PerQuery, per_query_metrics
from mcgf.retrieval.search import as_float_tensor


def distinct_rows(features: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(a row of each distinct vector, which of them every row is)``, or ``None`` when
    no two rows of ``features`` are equal.

    A float64 matrix product may round the score of one vector differently at two gallery
    positions (the BLAS kernel's blocking depends on the position and on the number of
    queries), which would order identical gallery items by chance instead of by index.
    Scoring each distinct vector once and copying the score keeps them exact ties.
    """
    rows = np.ascontiguousarray(features)
    if rows.ndim != 2 or rows.shape[0] < 2 or rows.shape[1] == 0:
        return None
    rows = rows + rows.dtype.type(0)  # -0.0 becomes 0.0: equal vectors, equal bytes
    keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    _, first, which = np.unique(keys, return_index=True, return_inverse=True)
    if first.shape[0] == rows.shape[0]:
        return None
    return first, which.reshape(-1)


def ranked_blocks(query: torch.Tensor, gallery: torch.Tensor,
                  block: int) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, order)`` for each block of ``block`` queries from ``start``: ``order``
    ranks the whole gallery for every query of the block by descending float64 inner
    product, equal scores keeping the lower gallery index first (a stable sort).

    Identical gallery vectors are scored once and share the score (:func:`distinct_rows`),
    so they always tie, whatever the block.
    """
    shared = distinct_rows(gallery.numpy())
    g64 = (gallery if shared is None else gallery[torch.from_numpy(shared[0])]).double()
    copies = None if shared is None else torch.from_numpy(shared[1])
    for start in range(0, query.shape[0], block):
        with torch.inference_mode():
            scores = query[start: start + block].double() @ g64.T
            if copies is not None:
                scores = scores[:, copies]
            order = torch.argsort(scores, dim=1, descending=True, stable=True)
        yield start, order


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
        block: queries ranked at once (default: as many as fit in ~32 MiB of float64 scores).
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
    parts = [per_query_metrics(gl[order].numpy(), ql[s: s + step], junk_label=junk_label)
             for s, order in ranked_blocks(q, g, step)]
    return PerQuery.concatenate(parts)
