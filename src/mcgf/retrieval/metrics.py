"""Retrieval metrics exactly as the University-1652 protocol defines them.

Everything here is a pure function of *ranked label matrices*: row ``i`` holds the
labels of the gallery items in the order query ``i`` ranked them (best first). No
feature, model or search code is involved, so the same functions score a full
University-1652 ranking and a 10-long University-160k answer line.

Definitions (``docs/evaluation.md`` has the worked examples):

* junk items (label ``-1`` by default) are removed from the ranking before positions are
  counted; good items are those whose label equals the query's label;
* ``r_i`` is the 0-based position of the ``i``-th good item after junk removal and ``n``
  the number of good items of the query;
* CMC@K (Recall@K) is 1 when ``r_0 < K``;
* AP uses the trapezoid rule of the Market-1501 / University-1652 evaluation:
  ``AP = sum_i (1/n) * (p_prev_i + p_i) / 2`` with ``p_i = (i+1)/(r_i+1)`` and
  ``p_prev_i = i/r_i`` (``1.0`` when ``r_i == 0``). One good item at rank ``r > 0``
  therefore scores ``1/(2(r+1))``, not ``1/(r+1)``.

Queries without any good item are a policy decision (``no_match``): ``"zero"`` keeps them
in every denominator with CMC 0 and AP 0 (what the public script does: it skips them in
the sums but divides by the number of all queries), ``"exclude"`` drops them from the
means. Either way they are counted and reported.

Written here rather than taken from a library because the trapezoid AP, the junk rule
and the top-1% index convention are specific to this protocol (general-purpose metric
libraries compute the rectangle-rule AP and would silently give different numbers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

JUNK_LABEL = -1
NoMatchPolicy = Literal["zero", "exclude"]
NO_MATCH_POLICIES: tuple[str, ...] = ("zero", "exclude")


@dataclass(frozen=True)
class PerQuery:
    """Per-query outcome of a ranking.

    Attributes:
        first_good: 0-based position of the first good item after junk removal, ``-1`` if
            no good item appears in the ranking.
        ap: average precision of each query (0 when no good item appears).
        num_good: number of good items ``n`` each query has (0: the query has no match).
    """

    first_good: np.ndarray
    ap: np.ndarray
    num_good: np.ndarray

    def __len__(self) -> int:
        return int(self.first_good.shape[0])

    @staticmethod
    def concatenate(parts: Sequence[PerQuery]) -> PerQuery:
        """Join the results of consecutive query chunks."""
        if not parts:
            return PerQuery(np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.int64))
        return PerQuery(
            np.concatenate([p.first_good for p in parts]),
            np.concatenate([p.ap for p in parts]),
            np.concatenate([p.num_good for p in parts]),
        )


def per_query_metrics(
    ranked_labels: Any,
    query_labels: Any,
    *,
    num_good: Any = None,
    junk_label: int = JUNK_LABEL,
) -> PerQuery:
    """First-good position and trapezoid AP of every query, vectorised over the matrix.

    Args:
        ranked_labels: ``(Q, R)`` integer labels of the ranked gallery, best first. ``R``
            may be the whole gallery or a truncated list (e.g. a top-10 answer).
        query_labels: ``(Q,)`` label of each query.
        num_good: ``(Q,)`` number of good items each query has in the *whole* gallery.
            Needed only for truncated rankings (good items beyond the list then add 0 to
            AP); by default it is counted from the rows, which is exact for full rankings.
        junk_label: label of items removed from the ranking before positions are counted.

    Returns:
        A :class:`PerQuery` with one entry per query.
    """
    ranked = np.asarray(ranked_labels)
    qlab = np.asarray(query_labels).reshape(-1)
    if ranked.ndim != 2:
        raise ValueError(f"ranked_labels must be 2-D (queries x ranking), got shape {ranked.shape}")
    if ranked.shape[0] != qlab.shape[0]:
        raise ValueError(
            f"{ranked.shape[0]} ranking rows but {qlab.shape[0]} query labels"
        )
    nq, width = ranked.shape
    good = ranked == qlab[:, None]
    counted = np.zeros(nq, np.int64) if width == 0 else good.sum(axis=1, dtype=np.int64)
    n = counted if num_good is None else np.asarray(num_good, dtype=np.int64).reshape(-1)
    if n.shape[0] != nq:
        raise ValueError(f"num_good has {n.shape[0]} entries for {nq} queries")
    if np.any(counted > n):
        raise ValueError("num_good is smaller than the number of good items in the ranking")
    if width == 0:
        return PerQuery(np.full(nq, -1, np.int64), np.zeros(nq), n)

    # Position of every entry once junk is removed; junk entries themselves are never good
    # (a query's own label is never the junk label in practice; we mask to be sure).
    keep = ranked != junk_label
    good &= keep
    pos = np.cumsum(keep, axis=1, dtype=np.int32) - 1  # r of each kept entry

    has_good = good.any(axis=1)
    first = np.where(has_good, np.take_along_axis(pos, good.argmax(axis=1)[:, None], 1)[:, 0], -1)

    # Only good entries contribute to AP: gather their (query, i, r) sparsely.
    rows, cols = np.nonzero(good)
    i = np.cumsum(good, axis=1, dtype=np.int32)[rows, cols] - 1
    return PerQuery(first.astype(np.int64), trapezoid_ap(rows, i, pos[rows, cols], n), n)


def trapezoid_ap(rows: np.ndarray, i: Any, r: Any, num_good: np.ndarray) -> np.ndarray:
    """AP of every query from its good items found in the ranking: the ``i``-th good item
    (0-based) of query ``rows[j]`` at position ``r`` after junk removal, listed query by
    query, each query's in ranking order (the order of the sum); ``num_good`` ``n`` per
    query. Queries with ``n = 0`` score 0."""
    r = np.asarray(r).astype(np.float64)
    i = np.asarray(i).astype(np.float64)
    precision = (i + 1.0) / (r + 1.0)
    old_precision = np.where(r == 0, 1.0, i / np.maximum(r, 1.0))
    sums = np.bincount(rows, weights=(old_precision + precision) * 0.5, minlength=len(num_good))
    return np.where(num_good > 0, sums / np.maximum(num_good, 1), 0.0)


def cmc_curve(first_good: Any, length: int, *, mask: Any = None) -> np.ndarray:
    """CMC curve: ``cmc[j]`` is the fraction of queries whose first good item is at
    position ``<= j`` (``j`` 0-based), for ``j < length``.

    Args:
        first_good: ``(Q,)`` first-good positions, ``-1`` for none.
        length: number of curve points (usually the gallery size).
        mask: optional boolean ``(Q,)``: only these queries are averaged.
    """
    first = np.asarray(first_good, dtype=np.int64).reshape(-1)
    if mask is not None:
        first = first[np.asarray(mask, dtype=bool)]
    if length <= 0:
        return np.zeros(0)
    if first.size == 0:
        return np.zeros(length)
    hits = first[(first >= 0) & (first < length)]
    counts = np.bincount(hits, minlength=length)[:length]
    return np.cumsum(counts) / first.size


def top1_percent_index(gallery_size: int) -> int:
    """0-based CMC index printed as "R@top1%": ``round(0.01 * gallery_size)``.

    This is the public University-1652 script's convention (``CMC[round(len(gallery)*0.01)]``).
    Because the index is 0-based it is Recall@(round(0.01·G) + 1): for the 951-tile gallery
    it reports Recall@11, one more than a literal "top 1%". Python's round (half to even)
    is used, as in that script.
    """
    return round(gallery_size * 0.01)


@dataclass(frozen=True)
class Summary:
    """Headline numbers of one ranking, in percent (``recall``/``map``).

    ``recall`` maps K to Recall@K; ``recall_top1`` is the CMC at
    :func:`top1_percent_index` (``None`` when the ranking is shorter than that).
    """

    recall: dict[int, float | None]
    recall_top1: float | None
    top1_index: int
    map: float
    num_queries: int
    num_without_match: int
    num_evaluated: int
    gallery_size: int
    no_match: str

    def as_dict(self) -> dict[str, Any]:
        """Flat JSON-friendly view (keys ``R@1``, ``R@5``, ..., ``R@top1%``, ``AP``)."""
        out: dict[str, Any] = {f"R@{k}": v for k, v in self.recall.items()}
        out["R@top1%"] = self.recall_top1
        out["AP"] = self.map
        out["top1%_cmc_index"] = self.top1_index
        out["num_queries"] = self.num_queries
        out["queries_without_match"] = self.num_without_match
        out["queries_in_mean"] = self.num_evaluated
        out["gallery_size"] = self.gallery_size
        out["no_match_policy"] = self.no_match
        return out


def summarize(
    per_query: PerQuery,
    gallery_size: int,
    *,
    ks: Sequence[int] = (1, 5, 10),
    ranking_length: int | None = None,
    no_match: NoMatchPolicy = "zero",
) -> Summary:
    """Recall@K, R@top1% and mAP (percent) of a set of queries.

    Args:
        per_query: output of :func:`per_query_metrics` (possibly concatenated).
        gallery_size: number of gallery items (junk included), for the top-1% index.
        ks: the K of the reported Recall@K.
        ranking_length: length of the rankings the metrics came from; recalls beyond it
            are undefined and reported as ``None`` (defaults to ``gallery_size``).
        no_match: ``"zero"`` keeps queries without a good item in the denominators (score
            0, the public script's behaviour); ``"exclude"`` leaves them out.
    """
    if no_match not in NO_MATCH_POLICIES:
        raise ValueError(f"no_match must be one of {NO_MATCH_POLICIES}, got {no_match!r}")
    length = gallery_size if ranking_length is None else ranking_length
    has_match = per_query.num_good > 0
    mask = np.ones(len(per_query), bool) if no_match == "zero" else has_match
    evaluated = int(mask.sum())
    t1 = top1_percent_index(gallery_size)
    curve_len = max([length, *ks, t1 + 1])
    cmc = cmc_curve(per_query.first_good, curve_len, mask=mask)

    def at(index: int) -> float | None:
        if index >= length and length < gallery_size:
            return None
        return float(100.0 * cmc[index]) if evaluated else 0.0

    ap = per_query.ap[mask]
    return Summary(
        recall={int(k): at(int(k) - 1) for k in ks},
        recall_top1=at(t1),
        top1_index=t1,
        map=float(100.0 * ap.mean()) if evaluated else 0.0,
        num_queries=len(per_query),
        num_without_match=int((~has_match).sum()),
        num_evaluated=evaluated,
        gallery_size=int(gallery_size),
        no_match=no_match,
    )
