"""GalleryIndex: the exact backend's scorer is prepared once and reused while valid."""

from __future__ import annotations

import numpy as np
import torch

from mcgf.retrieval import candidates
from mcgf.retrieval.index import GalleryIndex
from mcgf.retrieval.search import topk_search


def _counting(monkeypatch):  # type: ignore[no-untyped-def]
    made = []
    real = candidates.SCORERS["fp32"]

    class Counted(real):  # type: ignore[misc, valid-type]
        def __init__(self, *a, **kw):  # type: ignore[no-untyped-def]
            made.append(1)
            super().__init__(*a, **kw)

    monkeypatch.setitem(candidates.SCORERS, "fp32", Counted)
    return made


def test_searches_of_an_index_share_one_scorer_and_match_fresh_searches(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    made = _counting(monkeypatch)
    rng = np.random.default_rng(0)
    g = rng.standard_normal((3000, 24)).astype(np.float32)
    g[10:20] = g[5]  # ties
    index = GalleryIndex(g, backend="exact")
    for seed in range(4):
        q = np.random.default_rng(seed).standard_normal((7, 24)).astype(np.float32)
        got = index.search(q, 10, precision="fp32")
        ref = topk_search(q, g, 10, backend="exact", precision="fp32")
        assert np.array_equal(got.indices, ref.indices) and np.array_equal(got.scores, ref.scores)
    assert len(made) == 1 + 4  # one for the index, one per fresh search
    index.search(g[:3], 5, precision="fp32", gallery_chunk=512)  # other settings: another
    assert len(made) == 6


def test_a_modified_index_prepares_its_scorer_again(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    made = _counting(monkeypatch)
    rng = np.random.default_rng(1)
    g = rng.standard_normal((2000, 16))
    g = (g / np.linalg.norm(g, axis=1, keepdims=True)).astype(np.float32)
    g0 = g.copy()
    index = GalleryIndex(g, backend="exact")
    q = g[:4] * 1.0
    index.search(q, 3, precision="fp32")
    g[7] = q[0] * 3  # the array it was built from: the index keeps its own copy
    assert index.search(q, 3, precision="fp32").indices[0, 0] == 0
    with torch.no_grad():
        index.features[1500] = torch.from_numpy(q[0] * 2)  # now the best item of query 0
    assert index.search(q, 3, precision="fp32").indices[0, 0] == 1500
    index.features = torch.from_numpy(g0[::-1].copy())  # replaced: row 1999 is the old row 0
    assert index.search(q, 3, precision="fp32").indices[0, 0] == 1999
    assert len(made) == 3
    index.features.mul_(-1.0)  # in place: the next search sees it
    assert index.search(q, 3, precision="fp32").indices[0, 0] != 1999
    assert len(made) == 4


def test_an_index_searches_with_a_registered_backend_without_a_scorer_cache(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from mcgf.retrieval import search

    def plain(q, g, k, threads=None):  # type: ignore[no-untyped-def]
        s = (q @ g.T).numpy()
        i = np.argsort(-s, axis=1, kind="stable")[:, :k]
        return search.SearchResult(i, np.take_along_axis(s, i, 1), {})

    monkeypatch.setitem(search.BACKENDS, "plain", plain)
    g = np.eye(4, dtype=np.float32)
    assert GalleryIndex(g, backend="plain").search(g[2:3], 2).indices[0, 0] == 2


def test_assigning_the_features_again_drops_a_scorer_outdated_by_an_untracked_write() -> None:
    rng = np.random.default_rng(2)
    g = rng.standard_normal((2000, 16))
    g = (g / np.linalg.norm(g, axis=1, keepdims=True)).astype(np.float32)
    q = g[:2] * 1.0
    for write in ("numpy", "data"):
        index = GalleryIndex(g, backend="exact")
        assert index.search(q, 3, precision="bf16").indices[0, 0] == 0
        if write == "numpy":
            index.features.numpy()[1500] = q[0] * 2  # bypasses the version counter
        else:
            index.features.data[1500] = torch.from_numpy(q[0] * 2)
        index.features = index.features
        assert index.search(q, 3, precision="bf16").indices[0, 0] == 1500
