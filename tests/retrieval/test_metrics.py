"""Protocol metrics against a naive loop implementation written from the University-1652 definitions (trapezoid AP, junk dropped)."""

from __future__ import annotations

import numpy as np
import pytest

from mcgf.retrieval.metrics import (
    PerQuery,
    cmc_curve,
    per_query_metrics,
    summarize,
    top1_percent_index,
)
from mcgf.retrieval.ranking import rank_and_score


def naive_query(ranked: list[int], label: int, junk: int = -1, n_total: int | None = None):
    """(first good position or -1, AP) by the definition, one item at a time."""
    kept = [x for x in ranked if x != junk]
    positions = [r for r, x in enumerate(kept) if x == label]
    n = len(positions) if n_total is None else n_total
    if n == 0:
        return -1, 0.0
    ap = 0.0
    for i, r in enumerate(positions):
        p = (i + 1) / (r + 1)
        p_prev = 1.0 if r == 0 else i / r
        ap += (1.0 / n) * (p_prev + p) / 2.0
    return (positions[0] if positions else -1), ap


def random_case(rng: np.random.Generator, nq: int, width: int, n_labels: int):
    ranked = rng.integers(-1, n_labels, size=(nq, width))
    labels = rng.integers(0, n_labels + 2, size=nq)  # some labels absent everywhere
    return ranked, labels


@pytest.mark.parametrize("seed", range(5))
def test_per_query_matches_naive(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ranked, labels = random_case(rng, 40, 25, 4)
    ranked[0, :] = labels[0]  # every item good
    ranked[1, :] = -1  # only junk
    ranked[2, 0] = -1
    ranked[2, 1] = labels[2]  # good right after a junk item: position 0 after removal
    got = per_query_metrics(ranked, labels)
    for i in range(len(labels)):
        first, ap = naive_query(ranked[i].tolist(), int(labels[i]))
        assert got.first_good[i] == first
        assert got.ap[i] == pytest.approx(ap, abs=1e-12)
    assert got.first_good[2] == 0 and got.ap[0] == pytest.approx(1.0)
    assert got.num_good[1] == 0 and got.ap[1] == 0.0 and got.first_good[1] == -1


def test_single_good_item_scores_half_reciprocal() -> None:
    # One good item at rank r > 0: AP = 1/(2(r+1)), not 1/(r+1).
    for r in range(6):
        ranked = np.zeros((1, 8), np.int64)
        ranked[0, r] = 7
        ap = per_query_metrics(ranked, [7]).ap[0]
        assert ap == pytest.approx(1.0 if r == 0 else 1.0 / (2 * (r + 1)))


def test_worked_example_two_good_items() -> None:
    # good at positions 1 and 3 (0-based), n = 2:
    # i=0: p_prev=0/1=0, p=1/2  -> 0.25 ; i=1: p_prev=1/3, p=2/4 -> (1/3+1/2)/2
    ranked = np.array([[0, 5, 0, 5, 0]])
    ap = per_query_metrics(ranked, [5]).ap[0]
    assert ap == pytest.approx(0.5 * 0.25 + 0.5 * (1 / 3 + 1 / 2) / 2)


def test_truncated_ranking_with_num_good() -> None:
    rng = np.random.default_rng(3)
    ranked, labels = random_case(rng, 30, 10, 3)
    n_total = (ranked == labels[:, None]).sum(1) + rng.integers(0, 3, size=30)
    got = per_query_metrics(ranked, labels, num_good=n_total)
    for i in range(30):
        first, ap = naive_query(ranked[i].tolist(), int(labels[i]), n_total=int(n_total[i]))
        assert got.first_good[i] == first
        assert got.ap[i] == pytest.approx(ap, abs=1e-12)
    with pytest.raises(ValueError):
        per_query_metrics(ranked, labels, num_good=np.zeros(30, np.int64))


def test_cmc_and_summary_against_naive() -> None:
    rng = np.random.default_rng(7)
    ranked, labels = random_case(rng, 50, 30, 5)
    per = per_query_metrics(ranked, labels)
    for policy in ("zero", "exclude"):
        s = summarize(per, 30, ks=(1, 5, 10, 40), no_match=policy)
        firsts, aps = zip(*(naive_query(ranked[i].tolist(), int(labels[i])) for i in range(50)),
                          strict=True)
        has = [f >= 0 for f in firsts]
        sel = range(50) if policy == "zero" else [i for i in range(50) if has[i]]
        denom = len(sel)
        for k in (1, 5, 10, 40):  # k larger than the gallery: recall over everything
            expect = 100.0 * sum(1 for i in sel if 0 <= firsts[i] < k) / denom
            assert s.recall[k] == pytest.approx(expect)
        assert s.map == pytest.approx(100.0 * sum(aps[i] for i in sel) / denom)
        assert s.num_without_match == sum(1 for h in has if not h)
        assert s.num_queries == 50 and s.num_evaluated == denom
        t1 = top1_percent_index(30)
        assert s.recall_top1 == pytest.approx(100.0 * sum(1 for i in sel if 0 <= firsts[i] <= t1) / denom)


def test_top1_percent_index_convention() -> None:
    assert top1_percent_index(951) == 10  # the public script prints CMC[10] = Recall@11
    assert top1_percent_index(51355) == 514
    assert top1_percent_index(50) == 0  # round half to even, like Python's round
    assert top1_percent_index(150) == 2


def test_truncated_summary_reports_unknown_recall_as_none() -> None:
    per = per_query_metrics(np.array([[1, 0, 0]]), [1], num_good=[1])
    s = summarize(per, 1000, ks=(1, 5), ranking_length=3)
    assert s.recall[1] == 100.0 and s.recall[5] is None and s.recall_top1 is None


def test_cmc_curve_counts_first_hits() -> None:
    c = cmc_curve([0, 2, -1, 1], 4)
    assert np.allclose(c, [0.25, 0.5, 0.75, 0.75])


def test_empty_inputs() -> None:
    per = per_query_metrics(np.zeros((2, 0), np.int64), [1, 2])
    assert list(per.first_good) == [-1, -1]
    cat = PerQuery.concatenate([per, per])
    assert len(cat) == 4
    with pytest.raises(ValueError):
        per_query_metrics(np.zeros((2, 3)), [1])


def test_rank_and_score_matches_naive_ranking() -> None:
    rng = np.random.default_rng(11)
    g = rng.standard_normal((40, 6)).astype(np.float32)
    g[7] = g[3]  # exact tie: lower index first
    gl = rng.integers(-1, 6, size=40)
    q = rng.standard_normal((25, 6)).astype(np.float32)
    q[0] = g[3]
    ql = rng.integers(0, 7, size=25)
    per = rank_and_score(q, ql, g, gl, block=7)
    s = q.astype(np.float64) @ g.astype(np.float64).T
    for i in range(25):
        order = sorted(range(40), key=lambda j: (-s[i, j], j))
        first, ap = naive_query([int(gl[j]) for j in order], int(ql[i]))
        assert per.first_good[i] == first
        assert per.ap[i] == pytest.approx(ap, abs=1e-12)


@pytest.mark.parametrize("block", [None, 1, 3])
def test_identical_gallery_features_tie_whatever_the_block(block: int | None) -> None:
    # A float64 matrix product can round the score of one vector differently at two
    # gallery positions; identical features must still tie (lower index first).
    rng = np.random.default_rng(1)
    for size in (16, 64, 256):
        g = rng.standard_normal((size, 64)).astype(np.float32)
        g /= np.linalg.norm(g, axis=1, keepdims=True)
        g[-1] = g[0]
        q = rng.standard_normal((8, 64)).astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        gl = np.arange(size)
        gl[-1] = size  # the copy at the end is every query's only true match
        per = rank_and_score(q, np.full(8, size), g, gl, block=block)
        exact = np.array([[np.dot(qi.astype(np.float64), gj.astype(np.float64)) for gj in g] for qi in q])
        # the copy comes right after the original, whose exact score is the same
        above = (exact[:, :-1] > exact[:, :1]).sum(axis=1)
        assert per.first_good.tolist() == (above + 1).tolist()
        assert per.ap == pytest.approx(0.5 / (above + 2), abs=1e-15)


def test_ranked_top_ties_identical_gallery_features() -> None:
    # SDM@K reads the same order as the recall: identical features tie, lower index first.
    from mcgf.retrieval.geo import ranked_top

    rng = np.random.default_rng(1)
    for size in (16, 64, 256):
        g = rng.standard_normal((size, 64)).astype(np.float32)
        g[-1] = g[0]
        q = rng.standard_normal((8, 64)).astype(np.float32)
        top = ranked_top(q, g, size)
        pos = np.argsort(top, axis=1)  # position of every gallery row in each ranking
        assert (pos[:, -1] == pos[:, 0] + 1).all()


@pytest.mark.parametrize("seed", range(4))
def test_rank_and_score_is_the_metrics_of_the_full_sort_bit_for_bit(seed: int) -> None:
    # The counted ranks give exactly what the metrics of the whole sorted gallery give:
    # ties with good items (copies, rounded features), junk items, queries with the junk
    # label or a label the gallery lacks, any block.
    from mcgf.retrieval.ranking import ranked_blocks
    from mcgf.retrieval.search import as_float_tensor

    rng = np.random.default_rng(seed)
    for case in range(40):
        size, nq, dim = int(rng.integers(1, 90)), int(rng.integers(1, 25)), int(rng.integers(1, 6))
        g = rng.standard_normal((size, dim)).astype(np.float32)
        q = rng.standard_normal((nq, dim)).astype(np.float32)
        if case % 2:
            g, q = np.round(g), np.round(q)  # many equal scores
        if case % 3 == 0:
            g[rng.integers(0, size, size // 3 + 1)] = g[0]
        gl = rng.integers(-1, 7, size)
        ql = rng.integers(-1, 9, nq)
        block = [None, 1, 4][case % 3]
        got = rank_and_score(q, ql, g, gl, block=block)
        gt, qt = as_float_tensor(g, "g"), as_float_tensor(q, "q")
        want = PerQuery.concatenate([
            per_query_metrics(gl[order.numpy()], ql[s: s + order.shape[0]])
            for s, order in ranked_blocks(qt, gt, block or nq)])
        assert np.array_equal(got.first_good, want.first_good)
        assert np.array_equal(got.num_good, want.num_good)
        assert np.array_equal(got.ap, want.ap)  # same float64 values, not approximately
