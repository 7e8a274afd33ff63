"""Per-row operations on flat (query row, gallery row) pair lists.

The exact search (:mod:`mcgf.retrieval.exact`) keeps its candidates as flat lists of
pairs, a variable number per query; these helpers lay them out per row, pick per-row
top-k and compute dot products without Python loops over queries.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch


def exact_scores(queries: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Float64 inner products of each query with its own candidate rows.

    ``queries`` ``(m, D)``, ``items`` ``(m, c, D)`` → ``(m, c)``. Products of float32 values
    are exact in float64, and every pair is reduced by the same elementwise-sum kernel, so
    identical gallery vectors always get identical scores (true ties stay ties).
    """
    return (items.double() * queries.double()[:, None, :]).sum(dim=-1)


def sort_candidates(scores: torch.Tensor, index: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``k`` of each row by (score desc, index asc); ``index < 0`` marks no candidate."""
    scores = scores.masked_fill(index < 0, -math.inf)
    index = index.masked_fill(index < 0, torch.iinfo(torch.int64).max)
    by_index = torch.argsort(index, dim=1, stable=True)
    scores = scores.gather(1, by_index)
    index = index.gather(1, by_index)
    order = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :k]
    return index.gather(1, order), scores.gather(1, order)


def dense_rows(rows: torch.Tensor, nrows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lay flat entries out per row: ``(slot (nrows, width) -> flat index or -1, count)``."""
    order = torch.argsort(rows, stable=True)
    r = rows[order]
    count = torch.bincount(r, minlength=nrows)
    start = torch.cumsum(count, 0) - count
    pos = torch.arange(r.numel(), device=r.device) - start[r]
    width = int(count.max()) if r.numel() else 0
    slot = torch.full((nrows, max(width, 1)), -1, dtype=torch.int64, device=r.device)
    slot[r, pos] = order
    return slot, count


def row_topk(rows: torch.Tensor, keys: torch.Tensor, nrows: int, k: int) -> torch.Tensor:
    """Flat indices of the ``k`` largest ``keys`` of each row (``-1`` where fewer)."""
    slot, _ = dense_rows(rows, nrows)
    dense = torch.where(slot >= 0, keys[slot.clamp_min(0)], torch.full_like(slot, 0, dtype=keys.dtype) - math.inf)
    kk = min(k, dense.shape[1])
    _, pos = dense.topk(kk, dim=1)
    picked = slot.gather(1, pos)
    if kk < k:
        picked = torch.cat([picked, picked.new_full((nrows, k - kk), -1)], 1)
    return picked


def row_sorted_topk(rows: torch.Tensor, scores: torch.Tensor, cols: torch.Tensor, nrows: int,
                     k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the ``k`` best ``(cols, scores)`` by score desc, then col asc."""
    slot, _ = dense_rows(rows, nrows)
    valid = slot >= 0
    flat = slot.clamp_min(0)
    sc = torch.where(valid, scores[flat], torch.full_like(scores[flat], -math.inf))
    ix = torch.where(valid, cols[flat], torch.full_like(cols[flat], torch.iinfo(torch.int64).max))
    by_col = torch.argsort(ix, dim=1, stable=True)
    sc, ix = sc.gather(1, by_col), ix.gather(1, by_col)
    order = torch.argsort(sc, dim=1, descending=True, stable=True)[:, :k]
    ix, sc = ix.gather(1, order), sc.gather(1, order)
    ix = ix.masked_fill(sc == -math.inf, -1)
    if ix.shape[1] < k:
        pad = k - ix.shape[1]
        ix = torch.cat([ix, ix.new_full((nrows, pad), -1)], 1)
        sc = torch.cat([sc, sc.new_full((nrows, pad), -math.inf)], 1)
    return ix, sc


def pair_dot(queries: torch.Tensor, gallery: torch.Tensor, rows: torch.Tensor,
             cols: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Dot products of the flat (query row, gallery row) pairs, multiplied and summed in
    ``dtype`` (float64: products of float32 values are exact; see :func:`exact_scores`).

    On the CPU, float32 pairs go through a sampled matrix product (:func:`_sampled_dot`);
    float64 pairs are gathered and reduced by numpy (``take`` + ``einsum``), several times
    faster than the equivalent torch indexing, and every pair of the same length is
    reduced in the same order, so identical rows give identical scores.
    """
    n = rows.numel()
    if dtype == torch.float32 and queries.device.type == "cpu" and n:
        return _sampled_dot(queries, gallery, rows, cols)
    step = max(1, (1 << 22) // max(1, queries.shape[1]))  # ~32 MiB per float64 temporary
    if queries.device.type == "cpu":
        npd = np.float64 if dtype == torch.float64 else np.float32
        qn, gn = queries.numpy(), gallery.numpy()
        rn, cn = rows.numpy(), cols.numpy()
        out_np = np.empty(n, dtype=npd)
        for s in range(0, n, step):
            g = np.take(gn, cn[s: s + step], axis=0).astype(npd, copy=False)
            q = np.take(qn, rn[s: s + step], axis=0).astype(npd, copy=False)
            out_np[s: s + step] = np.einsum("ij,ij->i", g, q)
        return torch.from_numpy(out_np)
    out = torch.empty(n, dtype=dtype, device=rows.device)
    for s in range(0, n, step):
        r, c = rows[s: s + step], cols[s: s + step]
        out[s: s + step] = (gallery[c].to(dtype) * queries[r].to(dtype)).sum(dim=1)
    return out


def _sampled_dot(queries: torch.Tensor, gallery: torch.Tensor, rows: torch.Tensor,
                 cols: torch.Tensor) -> torch.Tensor:
    """Float32 dot products of (row, col) pairs as ``(Q Gᵀ)`` sampled at those pairs.

    ``torch.sparse.sampled_addmm`` computes only the requested entries and reads each
    gallery row in place: about 5× faster than gathering both sides into temporaries.
    The pairs are put in canonical CSR order (by row, then column; pairs are distinct)
    and the results returned in the callers' order. Its summation order is the kernel's,
    which the float32 rounding bound of the callers covers whatever it is.
    """
    m, size = queries.shape[0], gallery.shape[0]
    order = torch.argsort(rows * size + cols)
    r, c = rows.index_select(0, order), cols.index_select(0, order)
    crow = torch.zeros(m + 1, dtype=torch.int64)
    crow[1:] = torch.cumsum(torch.bincount(r, minlength=m), 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        pattern = torch.sparse_csr_tensor(crow, c, torch.zeros(r.numel()), size=(m, size),
                                          check_invariants=False)
        vals = torch.sparse.sampled_addmm(pattern, queries.float(), gallery.float().T, beta=0.0).values()
    out = torch.empty_like(vals)
    out[order] = vals
    return out
