"""Full-gallery ranking and per-query metrics for labelled galleries (University-1652).

Every query is scored against the whole gallery (951 satellite tiles, or 51,355 drone
views for satellite → drone), a block of queries at a time so that memory stays bounded
(``block × gallery`` scores). Scores are float64 inner products of the (float32)
features; the ranking orders them descending, equal scores by gallery index (a stable
sort). Identical gallery features are scored once and share that score, so they always
tie (:func:`scored_blocks`, whose blocks SDM@K's top-K also selects from;
:func:`ranked_blocks` sorts them).
The metrics need only where each good item lands, which :func:`block_metrics` counts
without sorting the gallery, giving the numbers of the sorted ranking.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from mcgf.retrieval.metrics import JUNK_LABEL, PerQuery, per_query_metrics, trapezoid_ap
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
    if _hashes_all_differ(rows):
        return None
    rows = rows + rows.dtype.type(0)  # -0.0 becomes 0.0: equal vectors, equal bytes
    keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    _, first, which = np.unique(keys, return_index=True, return_inverse=True)
    if first.shape[0] == rows.shape[0]:
        return None
    return first, which.reshape(-1)


def _hashes_all_differ(rows: np.ndarray, chunk: int = 8192) -> bool:
    """True when a hash of each row's bytes (``-0.0`` read as ``0.0``) differs from every
    other row's, which proves the rows distinct; ``False`` says nothing (equal hashes, or
    rows it does not hash). Much faster than sorting the rows for the usual gallery of
    distinct vectors; equal rows always hash alike, so no duplicate is ever missed.

    The hash is ``Σ w_j·m_j mod 2^64`` over the row's bytes read as 64-bit words ``w_j``,
    with fixed random odd multipliers ``m_j``.
    """
    width = rows.shape[1] * rows.dtype.itemsize
    if rows.dtype.kind not in "fiu" or width % 8:
        return False
    mult = np.random.default_rng(0x5EED).integers(0, 2**63, width // 8, dtype=np.uint64) * 2 + 1
    hashes = np.empty(rows.shape[0], np.uint64)
    for s in range(0, rows.shape[0], chunk):
        part = (rows[s: s + chunk] + rows.dtype.type(0)).view(np.uint64)
        part *= mult
        hashes[s: s + chunk] = part.sum(axis=1, dtype=np.uint64)
    return bool(np.unique(hashes).shape[0] == rows.shape[0])


def scored_blocks(query: torch.Tensor, gallery: torch.Tensor,
                  block: int) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, scores)`` for each block of ``block`` queries from ``start``: the float64
    inner products of the block's queries with the whole gallery, identical gallery
    vectors scored once and sharing the score (:func:`distinct_rows`), so they always tie,
    whatever the block."""
    shared = distinct_rows(gallery.numpy())
    g64 = (gallery if shared is None else gallery[torch.from_numpy(shared[0])]).double()
    copies = None if shared is None else torch.from_numpy(shared[1])
    for start in range(0, query.shape[0], block):
        with torch.inference_mode():
            scores = query[start: start + block].double() @ g64.T
            if copies is not None:
                scores = scores[:, copies]
        yield start, scores


def ranked_blocks(query: torch.Tensor, gallery: torch.Tensor,
                  block: int) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, order)`` for each block of ``block`` queries from ``start``: ``order``
    ranks the whole gallery for every query of the block by descending float64 inner
    product, equal scores keeping the lower gallery index first (a stable sort).

    Identical gallery vectors are scored once and share the score (:func:`distinct_rows`),
    so they always tie, whatever the block.
    """
    for start, scores in scored_blocks(query, gallery, block):
        yield start, _ranked(scores)


def _ranked(scores: torch.Tensor) -> torch.Tensor:
    """Gallery indices of each row of ``scores``, best first, equal scores keeping the
    lower index first (a stable sort): the ranking's order."""
    with torch.inference_mode():
        return torch.argsort(scores, dim=1, descending=True, stable=True)


def _sorted_metrics(scores: torch.Tensor, query_labels: np.ndarray, gallery_labels: torch.Tensor,
                    junk_label: int) -> PerQuery:
    """:func:`~mcgf.retrieval.metrics.per_query_metrics` of the rows of ``scores`` ranked
    by :func:`ranked_blocks`' order (the whole gallery sorted)."""
    return per_query_metrics(gallery_labels[_ranked(scores)].numpy(), query_labels,
                             junk_label=junk_label)


def _good_columns(query_labels: np.ndarray, gallery_labels: np.ndarray) -> np.ndarray:
    """``(Q, n)`` gallery indices of each query's good items in index order, ``-1`` after
    them (``n``: the most any query has)."""
    order = np.argsort(gallery_labels, kind="stable")
    sorted_labels = gallery_labels[order]
    lo = np.searchsorted(sorted_labels, query_labels, side="left")
    count = np.searchsorted(sorted_labels, query_labels, side="right") - lo
    width = int(count.max(initial=0))
    slot = np.arange(width)[None, :]
    cols = order[np.minimum(lo[:, None] + slot, max(len(order) - 1, 0))] if len(order) else slot
    return np.where(slot < count[:, None], cols, -1)


def block_metrics(scores: torch.Tensor, query_labels: np.ndarray, gallery_labels: np.ndarray, *,
                  junk_label: int = JUNK_LABEL) -> PerQuery:
    """Per-query CMC/AP data of the rows of float64 ``scores`` ranked as :func:`ranked_blocks`
    ranks them (score descending, then gallery index), without sorting the gallery.

    The rank of each good item is counted instead: every kept (not junk) gallery item is
    placed among the query's few good scores by a binary search, and a histogram of those
    places gives, for the ``k``-th best good item, the number of kept items above it. A
    row where a kept item scores exactly as one of its good items (where the index decides
    the order), or whose query carries the junk label, is ranked by the sort instead. Both
    give the numbers of :func:`~mcgf.retrieval.metrics.per_query_metrics` on the sorted
    labels, bit for bit (the AP terms are summed in the same order).
    """
    ql = np.asarray(query_labels, dtype=np.int64).reshape(-1)
    gl = np.asarray(gallery_labels, dtype=np.int64).reshape(-1)
    nq = ql.shape[0]
    kept = np.flatnonzero(gl != junk_label)
    cols = torch.from_numpy(_good_columns(ql, gl[kept]))
    width = cols.shape[1]
    n = (cols >= 0).sum(1)
    with torch.inference_mode():
        s = scores if len(kept) == len(gl) else scores[:, torch.from_numpy(kept)]
        good_scores = s.gather(1, cols.clamp_min(0)).masked_fill(cols < 0, -math.inf)
        ascending = good_scores.sort(dim=1).values.contiguous()
        after = torch.searchsorted(ascending, s, right=True)  # goods scoring <= the item
        # Each good item equals itself; any other equality is a tie the index decides.
        equal = (after - torch.searchsorted(ascending, s)).sum(1)
        sort_rows = (equal != n).numpy() | (ql == junk_label)
        # Goods above an item: it precedes the k-th best good when that is <= k. The
        # goods themselves fill places 0..n-1 once each (taken off below).
        place = (torch.arange(nq) * (width + 1) + width)[:, None] - after
        hist = torch.bincount(place.view(-1), minlength=nq * (width + 1)).view(nq, width + 1)
    num = n.numpy().astype(np.int64)
    k = np.arange(width)
    valid = k[None, :] < num[:, None]
    before = hist.cumsum(1)[:, :width].numpy() - (k + 1)[None, :]  # other kept items above
    rows, ks = np.nonzero(valid)
    ap = trapezoid_ap(rows, ks, ks + before[rows, ks], num)
    first = np.where(num > 0, before[:, 0] if width else 0, -1).astype(np.int64)
    if sort_rows.any():
        idx = np.flatnonzero(sort_rows)
        exact = _sorted_metrics(scores[torch.from_numpy(idx)], ql[idx], torch.from_numpy(gl), junk_label)
        first[idx], ap[idx], num[idx] = exact.first_good, exact.ap, exact.num_good
    return PerQuery(first, ap, num)


#: Score-matrix entries per block: ~32 MiB of float64 scores (plus sort and label arrays).
_BLOCK_ENTRIES = 4 * 1024 * 1024


def query_block(gallery_size: int, block: int | None = None) -> int:
    """Queries scored at once against a gallery of ``gallery_size`` rows: ``block``, else
    as many as fit in ~32 MiB of float64 scores."""
    return block or max(1, _BLOCK_ENTRIES // max(1, gallery_size))


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
    gl = np.asarray(gallery_labels, dtype=np.int64).reshape(-1)
    if q.shape[0] != ql.shape[0] or g.shape[0] != gl.shape[0]:
        raise ValueError("features and labels disagree in length")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query features have {q.shape[1]} dims but gallery features {g.shape[1]}")
    step = query_block(int(g.shape[0]), block)
    parts = [block_metrics(scores, ql[s: s + step], gl, junk_label=junk_label)
             for s, scores in scored_blocks(q, g, step)]
    return PerQuery.concatenate(parts)
