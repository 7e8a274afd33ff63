"""Distance-aware retrieval metrics of DenseUAV: SDM@K.

SDM@K (Spatial Distance Metric, Dai et al., IEEE TIP 2024) scores the ``K`` best gallery
items of a query by how close their locations are to the query's, not only whether
they are the same location. As the benchmark's ``evaluateDistance.py`` computes it, with
``d_i`` the Euclidean distance, in degrees, between the (longitude, latitude) of the
query's location and that of its ``i``-th ranked gallery item (``i = 1..K``)::

    SDM@K = sum_i w_i * exp(-5000 * d_i) / sum_i w_i,    w_i = 1 - (i - 1) / K

averaged over queries. A query ranked right (``d_1 = 0``) scores 1 at K = 1; a
neighbour ~22 m away (0.0002°) scores exp(-1) ≈ 0.37. Reported in percent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: The scale of the exponential, per degree of distance (the benchmark's ``M = 5e3``).
SDM_SCALE = 5000.0
#: The K the benchmark prints.
SDM_KS: tuple[int, ...] = (1, 3, 5, 10)


def sdm_at_k(query_xy: np.ndarray, top_xy: np.ndarray, ks: Sequence[int] = SDM_KS) -> dict[int, np.ndarray]:
    """Per-query SDM@K (in [0, 1]) for each ``K`` of ``ks``.

    Args:
        query_xy: ``(Q, 2)`` (longitude, latitude) of each query's location.
        top_xy: ``(Q, N, 2)`` (longitude, latitude) of each query's ``N`` best gallery
            items, best first. With ``N < K`` the first ``N`` weights are used.
        ks: the cut-offs.
    """
    q = np.asarray(query_xy, np.float64)
    t = np.asarray(top_xy, np.float64)
    if t.ndim != 3 or q.shape[0] != t.shape[0] or t.shape[2] != 2 or q.shape[-1] != 2:
        raise ValueError(f"shapes {q.shape} and {t.shape} are not (Q, 2) and (Q, N, 2)")
    score = np.exp(-SDM_SCALE * np.linalg.norm(t - q[:, None, :], axis=-1))
    out = {}
    for k in ks:
        n = min(int(k), t.shape[1])
        w = 1.0 - np.arange(n, dtype=np.float64) / k
        out[int(k)] = (score[:, :n] * w).sum(axis=1) / w.sum()
    return out


def ranked_top(query: np.ndarray, gallery: np.ndarray, k: int, block: int | None = None) -> np.ndarray:
    """``(Q, k)`` gallery rows of each query's ``k`` highest cosine scores, best first.

    Ranked like :func:`mcgf.retrieval.ranking.rank_and_score` ranks for R@K (float64
    scores of the float32 features by :func:`~mcgf.retrieval.ranking.scored_blocks`, equal scores keeping the
    lower gallery index first), so SDM@K reads the same order as the recall. Only the
    items scoring at least a query's ``k``-th best score are sorted, which gives the
    first ``k`` places of the stable sort of the whole gallery.

    Args:
        block: queries scored at once (default: ~32 MiB of float64 scores).
    """
    import torch

    from mcgf.retrieval.ranking import query_block, scored_blocks
    from mcgf.retrieval.rowops import row_sorted_topk
    from mcgf.retrieval.search import as_float_tensor

    # float32, as rank_and_score takes them: features given in another precision are
    # ranked as the recall ranks them.
    q = as_float_tensor(np.asarray(query), "query features")
    g = as_float_tensor(np.asarray(gallery), "gallery features")
    size = int(g.shape[0])
    kk = min(int(k), size)
    if q.shape[0] == 0:
        return np.zeros((0, k), np.int64)
    if kk <= 0:
        return np.zeros((int(q.shape[0]), 0), np.int64)
    step = query_block(size, block)
    parts = []
    for _, scores in scored_blocks(q, g, step):
        with torch.inference_mode():
            kth = scores.topk(kk, dim=1).values[:, -1:]
            rows, cols = (scores >= kth).nonzero(as_tuple=True)
            top, _ = row_sorted_topk(rows, scores[rows, cols], cols, scores.shape[0], kk)
        parts.append(top.numpy())
    return np.concatenate(parts)
