"""SDM@K's top-k ranking: the first k places of the full stable sort."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mcgf.retrieval import ranking
from mcgf.retrieval.geo import ranked_top


def _full_sort_top(q: np.ndarray, g: np.ndarray, k: int) -> np.ndarray:
    parts = [o[:, :k].numpy() for _, o in ranking.ranked_blocks(torch.as_tensor(q), torch.as_tensor(g), 7)]
    return np.concatenate(parts) if parts else np.zeros((0, k), np.int64)


@pytest.mark.parametrize("seed", range(3))
def test_ranked_top_is_the_head_of_the_full_stable_sort(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for case in range(60):
        size, nq, dim = int(rng.integers(1, 200)), int(rng.integers(0, 15)), int(rng.integers(1, 6))
        g = rng.standard_normal((size, dim)).astype(np.float32)
        q = rng.standard_normal((nq, dim)).astype(np.float32)
        if case % 3 == 0:
            g, q = np.round(g), np.round(q)  # many equal scores
        if case % 4 == 0 and size > 3:
            g[::3] = g[1]  # copies
        if case % 7 == 0:
            g[:] = 0.0  # everything ties
        for k in (1, 3, 10, size, size + 4):
            block = int(rng.integers(1, 9)) if case % 2 else None
            got = ranked_top(q, g, k, block=block)
            assert np.array_equal(got, _full_sort_top(q, g, k)), (case, k)


def test_ranked_top_blocks_follow_the_gallery_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """The float64 score block stays bounded whatever the gallery (a fixed 1024 queries
    would hold 1.4 GB of scores against a 168k-tile gallery)."""
    seen = []
    real = ranking.scored_blocks

    def spy(q, g, block):  # type: ignore[no-untyped-def]
        seen.append(block * g.shape[0])
        return real(q, g, block)

    monkeypatch.setattr(ranking, "scored_blocks", spy)
    rng = np.random.default_rng(0)
    g = rng.standard_normal((40000, 2)).astype(np.float32)
    top = ranked_top(rng.standard_normal((300, 2)).astype(np.float32), g, 5)
    assert top.shape == (300, 5) and max(seen) <= 4 * 1024 * 1024


def test_ranked_top_ranks_float64_features_as_the_recall_does() -> None:
    """Features given in float64 are ranked as rank_and_score ranks them (as float32):
    here items 0 and 1 are the same in float32, so item 0 comes first in both."""
    from mcgf.retrieval.ranking import rank_and_score

    g = np.array([[1.0, 0.0], [1.0 + 1e-9, 0.0], [0.0, 1.0]])
    q = np.array([[1.0, 0.0]])
    assert rank_and_score(q, [0], g, [0, 1, 2]).first_good.tolist() == [0]
    assert ranked_top(q, g, 2).tolist() == [[0, 1]]
    assert ranked_top(q.astype(np.float16), g.astype(np.float16), 3).tolist() == [[0, 1, 2]]
