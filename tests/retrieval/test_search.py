"""Exact top-k search against float64 brute force, including ties and near-ties."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mcgf.retrieval import candidates
from mcgf.retrieval.candidates import SCORERS, int8_available
from mcgf.retrieval.rowops import exact_scores
from mcgf.retrieval.search import BACKENDS, topk_search

PRECISIONS = ["fp32", "bf16"] + (["int8"] if int8_available() else [])


def brute_force(q: np.ndarray, g: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Float64 scores, ties by lower gallery index: the definition of the exact answer."""
    s = q.astype(np.float64) @ g.astype(np.float64).T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(s, order, 1)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(seed: int, nq: int = 150, ng: int = 3000, d: int = 48):
    rng = np.random.default_rng(seed)
    g = unit(rng.standard_normal((ng, d)))
    truth = rng.integers(0, ng, nq)
    q = unit(g[truth] + 0.6 * unit(rng.standard_normal((nq, d))))
    g[100:110] = g[truth[0]]  # ten exact duplicates of query 0's tile: ties at the top
    return q, g


@pytest.mark.parametrize("precision", PRECISIONS)
def test_bound_holds_for_every_pair(precision: str) -> None:
    """The proven |exact - approximate| bound must hold on hostile data too."""
    rng = np.random.default_rng(1)
    g = rng.standard_normal((700, 40)).astype(np.float32)
    g[:50, 0] *= 30  # a dominant coordinate (large int8 step)
    g[50:60] *= 1e-3  # tiny vectors
    g[60] = 0  # zero vector
    g[61:70] = np.round(g[61:70] * 4) / 4  # exactly representable values
    q = rng.standard_normal((90, 40)).astype(np.float32) * rng.uniform(0.01, 5, (90, 1)).astype(np.float32)
    q[0] = 0
    q[1] = g[0]
    gt, qt = torch.from_numpy(g), torch.from_numpy(q)
    scorer = SCORERS[precision](gt, chunk=256)
    block = scorer.prepare_queries(qt)
    exact = q.astype(np.float64) @ g.astype(np.float64).T
    approx = np.zeros_like(exact)
    for c in range(scorer.num_chunks):
        start, stop = scorer.chunk_range(c)
        rows = scorer.gallery_rows(torch.arange(start, stop)).numpy()
        approx[:, rows] = scorer.scores(block, c)[:, : stop - start].double().numpy()
    approx *= block.scale.numpy()[:, None]
    err = np.abs(approx - exact)
    qi, gi = np.meshgrid(np.arange(q.shape[0]), np.arange(g.shape[0]), indexing="ij")
    pair = scorer.pair_bound(block, torch.from_numpy(qi.ravel()), torch.from_numpy(gi.ravel()))
    pair = pair.numpy().reshape(err.shape)
    assert np.all(err <= pair), float((err - pair).max())
    for c in range(scorer.num_chunks):  # chunk and gallery-wide bounds cover the pair bounds
        rows = scorer.gallery_rows(torch.arange(*scorer.chunk_range(c))).numpy()
        assert np.all(pair[:, rows] <= scorer.row_bound(block, c).numpy()[:, None] + 1e-15)
    assert np.all(pair <= scorer.row_bound(block).numpy()[:, None] + 1e-15)
    # ...and is not vacuous. The float32 bound is the worst-case rounding bound, far above
    # the typical (random-walk) error; the quantisation bounds are Cauchy-Schwarz bounds.
    factor = 3000 if precision == "fp32" else 50
    assert np.median(pair) < factor * np.median(err + 1e-12)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_tiny_rows_keep_their_bounds_and_their_ranking(precision: str) -> None:
    """Rows of norm below about 1e-19 square to below float32's smallest normal: their
    measured norms must still be upper bounds, and the search still exact."""
    rng = np.random.default_rng(2)
    g = rng.standard_normal((3000, 48)).astype(np.float32)
    q = rng.standard_normal((100, 48)).astype(np.float32)
    g[::5] *= np.float32(1e-22)
    q[::2] *= np.float32(1e-25)
    scorer = SCORERS[precision](torch.from_numpy(g), chunk=512)
    assert np.all(scorer.norm.numpy() >= np.linalg.norm(g.astype(np.float64), axis=1))
    ref_i, _ = brute_force(q, g, 10)
    res = topk_search(q, g, 10, backend="exact", precision=precision, gallery_chunk=512, query_block=64)
    assert np.array_equal(res.indices, ref_i)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("seed", [0, 1])
def test_exact_search_equals_brute_force(precision: str, seed: int) -> None:
    q, g = clustered(seed)
    ref_i, ref_s = brute_force(q, g, 10)
    res = topk_search(q, g, 10, backend="exact", precision=precision, gallery_chunk=512, query_block=64)
    assert np.array_equal(res.indices, ref_i)
    assert np.allclose(res.scores, ref_s, atol=1e-6)
    assert res.stats["precision"] == precision and res.stats["overflow"] == 0


def test_ties_are_broken_by_lower_index() -> None:
    rng = np.random.default_rng(5)
    g = unit(rng.standard_normal((2000, 32)))
    dup = [1500, 3, 999, 42, 1200, 7, 64, 1999, 500, 501, 502, 17]
    g[dup] = g[250]
    q = g[[250]] + 0.0
    res = topk_search(q, g, 10, backend="exact", gallery_chunk=256)
    assert res.indices[0].tolist() == sorted([250, *dup])[:10]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_low_precision_adversarial_near_ties(precision: str) -> None:
    """Items whose scores differ by less than the candidate precision's error."""
    rng = np.random.default_rng(2)
    d = 64
    base = unit(rng.standard_normal((1, d)))[0]
    g = unit(rng.standard_normal((4000, d)))
    # 40 items at nearly the same score: base plus perturbations of size ~1e-4..1e-6
    eps = rng.standard_normal((40, d)).astype(np.float32) * np.logspace(-6, -4, 40, dtype=np.float32)[:, None]
    idx = rng.choice(4000, 40, replace=False)
    g[idx] = unit(base[None, :] + eps)
    q = base[None, :].repeat(3, 0)
    q[1] = unit(base[None, :] + 1e-5)[0]
    ref_i, _ = brute_force(q, g, 10)
    res = topk_search(q, g, 10, backend="exact", precision=precision, gallery_chunk=512)
    assert np.array_equal(res.indices, ref_i)
    # the near-ties are all candidates and went through the exact re-ranking
    assert res.stats["survivors"] >= 3 * 10


def test_exhaustive_fallback_on_many_ties() -> None:
    rng = np.random.default_rng(9)
    g = unit(rng.standard_normal((3000, 16)))
    g[::10] = g[0]  # 300 exact copies: more ties at the 10th place than any k'
    q = g[:1] * 1.0
    res = topk_search(q, g, 10, backend="exact", precision="fp32", gallery_chunk=512, cap=64,
                      distinct=False)
    assert res.indices[0].tolist() == list(range(0, 100, 10))
    assert res.stats["overflow"] == 1 and res.stats["exhaustive"] == 1
    if int8_available():  # int8 overflows, then float32 overflows too, then exhaustive
        res8 = topk_search(q, g, 10, backend="exact", precision="int8", gallery_chunk=512, cap=64,
                           distinct=False)
        assert res8.indices[0].tolist() == list(range(0, 100, 10))
    # By default the gallery's distinct vectors are searched instead: same answer.
    res = topk_search(q, g, 10, backend="exact", precision="fp32", gallery_chunk=512, cap=64)
    assert res.indices[0].tolist() == list(range(0, 100, 10))
    assert res.stats["exhaustive"] == 0 and res.stats["distinct"] == 2701


@pytest.mark.parametrize("precision", PRECISIONS)
def test_a_gallery_of_copies_is_searched_over_its_distinct_vectors(precision: str) -> None:
    """A collapsed model: masses of exact copies, and distinct vectors that tie too (they
    differ only where the queries are zero); the answer is still the brute force's."""
    rng = np.random.default_rng(3)
    base = unit(rng.standard_normal((40, 16)))
    twins = base.copy()
    twins[:, 8:] = -twins[:, 8:]  # other vectors, same scores for the queries below
    g = np.concatenate([base, twins])[rng.integers(0, 80, 3000)]
    q = unit(rng.standard_normal((50, 16)))
    q[:, 8:] = 0.0
    q = np.concatenate([q, g[:5]])
    for k in (1, 10, 200):
        ref_i, ref_s = brute_force(q, g, k)
        res = topk_search(q, g, k, backend="exact", precision=precision, gallery_chunk=512, cap=64)
        assert np.array_equal(res.indices, ref_i), k
        assert np.allclose(res.scores, ref_s, atol=1e-6)
        assert res.stats["exhaustive"] == 0 and res.stats["distinct"] == len(np.unique(g, axis=0))
    collapsed = np.repeat(base[:1], 2000, axis=0)
    res = topk_search(q, collapsed, 10, backend="exact", precision=precision, cap=64)
    assert (res.indices == np.arange(10)).all() and res.stats["distinct"] == 1


def test_k_larger_than_gallery_and_small_galleries() -> None:
    rng = np.random.default_rng(4)
    g = rng.standard_normal((7, 5)).astype(np.float32)
    q = rng.standard_normal((3, 5)).astype(np.float32)
    res = topk_search(q, g, 10, backend="exact")
    ref_i, _ = brute_force(q, g, 7)
    assert res.indices.shape == (3, 7) and np.array_equal(res.indices, ref_i)


def test_faiss_backends_agree_on_separated_data() -> None:
    pytest.importorskip("faiss")
    q, g = clustered(3)
    g = g[200:]  # drop the duplicate block so float32 rounding cannot reorder ties
    ref_i, _ = brute_force(q, g, 10)
    flat = topk_search(q, g, 10, backend="faiss-flat")
    assert np.mean(np.all(flat.indices == ref_i, axis=1)) > 0.95
    ivf = topk_search(q, g, 10, backend="faiss-ivf", nlist=8, nprobe=8)  # all lists: exact
    assert np.mean(np.all(ivf.indices == ref_i, axis=1)) > 0.95
    auto = topk_search(q, g, 10, backend="auto")
    assert "auto" in auto.stats["backend"]


def test_exact_scores_are_identical_for_identical_rows() -> None:
    rng = np.random.default_rng(0)
    row = torch.from_numpy(rng.standard_normal((1, 1, 300)).astype(np.float32))
    items = row.repeat(3, 17, 1)
    s = exact_scores(torch.from_numpy(rng.standard_normal((3, 300)).astype(np.float32)), items)
    assert bool((s == s[:, :1]).all())


def test_bad_inputs() -> None:
    g = np.ones((5, 3), np.float32)
    with pytest.raises(ValueError, match="backend"):
        topk_search(g, g, 2, backend="nope")
    with pytest.raises(ValueError, match="dims"):
        topk_search(np.ones((2, 4), np.float32), g, 2)
    with pytest.raises(ValueError, match="NaN"):
        topk_search(np.full((2, 3), np.nan, np.float32), g, 2)
    with pytest.raises(ValueError, match="k must"):
        topk_search(g, g, 0)
    assert {"auto", "exact", "faiss-flat", "faiss-ivf"} <= set(BACKENDS)


def test_int8_self_test_is_cached_and_boolean() -> None:
    assert isinstance(candidates.int8_available(), bool)
    assert candidates.default_precision(torch.device("cpu")) in SCORERS


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("hold", [1, 1 << 40])
def test_exact_for_any_held_share(monkeypatch, precision: str, hold: int) -> None:
    """One held chunk or all of them: the first bound changes, the answer must not."""
    from mcgf.retrieval import exact

    monkeypatch.setattr(exact, "HOLD_BYTES", hold)
    q, g = clustered(3, nq=70, ng=2900)  # the last chunk is padded
    for k in (1, 10, 37):
        ref_i, _ = brute_force(q, g, k)
        res = topk_search(q, g, k, backend="exact", precision=precision, gallery_chunk=256, query_block=32)
        assert np.array_equal(res.indices, ref_i), k


def test_group_positions_cover_each_column_once() -> None:
    from mcgf.retrieval.exact import GROUP, _group_max, _group_positions

    m, n = 3, 4 * GROUP * GROUP
    out = torch.randn(m, n)
    gmax = _group_max(out)
    groups = torch.arange(gmax.numel())
    pos = _group_positions(groups, n)
    assert sorted(pos.flatten().tolist()) == list(range(m * n))
    assert torch.equal(out.view(-1)[pos].amax(dim=1), gmax.view(-1))
    # every group lies within one row of the tile
    assert torch.equal(pos // n, (groups // (n // GROUP))[:, None].expand_as(pos))


def test_held_top_returns_distinct_real_items() -> None:
    from mcgf.retrieval.candidates import Fp32Scorer
    from mcgf.retrieval.exact import _group_max, _held_top

    rng = np.random.default_rng(6)
    g = torch.from_numpy(unit(rng.standard_normal((600, 24))))  # chunks of 256: last one padded
    q = torch.from_numpy(unit(rng.standard_normal((5, 24))))
    scorer = Fp32Scorer(g, chunk=256)
    prep = scorer.prepare_queries(q)
    held = []
    for c in range(scorer.num_chunks):
        out = scorer.scores(prep, c)
        held.append((c, out, _group_max(out)))
    v, items = _held_top(held, scorer, 40)
    exact = (q.double() @ g.double().T).numpy()
    for r in range(q.shape[0]):
        ok = v[r] > -np.inf
        assert len(set(items[r][ok].tolist())) == int(ok.sum())  # distinct items
        assert np.allclose(v[r][ok].numpy(), exact[r, items[r][ok].numpy()], atol=1e-5)
        # the best of them is the row's best item
        assert int(items[r, 0]) == int(np.argmax(exact[r]))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_k_larger_than_the_groups_of_a_chunk(precision: str) -> None:
    """k above the number of column groups: no first bound, padding must stay out."""
    rng = np.random.default_rng(8)
    g = unit(rng.standard_normal((300, 12)))
    q = unit(rng.standard_normal((4, 12)))
    for k in (150, 300):
        ref_i, _ = brute_force(q, g, k)
        res = topk_search(q, g, k, backend="exact", precision=precision)
        assert np.array_equal(res.indices, ref_i)


@pytest.mark.parametrize("backend", ["exact", "auto"])
def test_unsearchable_norms_are_refused_naming_side_and_row(backend: str) -> None:
    from mcgf.errors import UserError
    from mcgf.retrieval import GalleryIndex

    rng = np.random.default_rng(3)
    g = unit(rng.standard_normal((300, 16)))
    q = unit(rng.standard_normal((4, 16)))
    huge = g.copy()
    huge[7] *= np.float32(1e19)  # squared norm overflows float32: used to return -1 everywhere
    huge[9] *= np.float32(1e30)
    with pytest.raises(UserError, match=r"gallery features row 7 has norm 1e\+19"):
        topk_search(q, huge, 5, backend=backend)
    bad_q = q.copy()
    bad_q[2] *= np.float32(3e38)
    with pytest.raises(ValueError, match=r"query features row 2 "):  # also a ValueError
        topk_search(bad_q, g, 5, backend=backend)
    with pytest.raises(UserError, match="gallery features row 7"):
        GalleryIndex(huge)
    # Large but representable norms, and zero rows, are searched exactly.
    big = g * np.float32(2.0**62)
    ref_i, _ = brute_force(q, big, 5)
    assert np.array_equal(topk_search(q, big, 5, backend=backend).indices, ref_i)
    zero = topk_search(np.zeros_like(q), g, 3, backend=backend)
    assert zero.indices.tolist() == [[0, 1, 2]] * 4


def test_exhaustive_queries_match_scoring_every_item() -> None:
    """Near-collapsed features (all scores within float32 rounding of each other) pass
    every candidate stage and are ranked by float64 scores of the whole gallery: the
    answer is the one of scoring every item with exact_scores and a stable sort."""
    rng = np.random.default_rng(12)
    d = 96
    base = rng.standard_normal(d)
    g = (base + 1e-7 * rng.standard_normal((5000, d))).astype(np.float32)
    g[4000:4100] *= np.float32(1e-20)  # tiny rows
    q = (base + 1e-7 * rng.standard_normal((70, d))).astype(np.float32)
    q[3] = 0.0  # every item ties at 0: the first k indices
    q[4] *= np.float32(1e12)
    gt, qt = torch.from_numpy(g), torch.from_numpy(q)
    for k in (1, 10, 37):
        res = topk_search(q, g, k, backend="exact", precision="fp32", gallery_chunk=512, cap=64)
        assert res.stats["exhaustive"] == len(q)
        for i in range(len(q)):
            s = exact_scores(qt[i: i + 1], gt[None])[0]
            order = torch.argsort(s, descending=True, stable=True)[:k]
            assert res.indices[i].tolist() == order.tolist(), (k, i)
            assert np.array_equal(res.scores[i], s[order].float().numpy())
    assert res.indices[3].tolist() == list(range(37))
