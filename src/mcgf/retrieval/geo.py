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


def ranked_top(query: np.ndarray, gallery: np.ndarray, k: int, block: int = 1024) -> np.ndarray:
    """``(Q, k)`` gallery rows of each query's ``k`` highest cosine scores, best first.

    Ranked like :func:`mcgf.retrieval.ranking.rank_and_score` ranks for R@K (float64
    scores, a stable descending sort: equal scores keep the lower gallery index first),
    so SDM@K reads the same order as the recall.
    """
    import torch

    from mcgf.retrieval.ranking import ranked_blocks

    q = torch.as_tensor(np.asarray(query))
    g = torch.as_tensor(np.asarray(gallery))
    parts = [order[:, :k].numpy() for _, order in ranked_blocks(q, g, block)]
    return np.concatenate(parts) if parts else np.zeros((0, k), np.int64)
