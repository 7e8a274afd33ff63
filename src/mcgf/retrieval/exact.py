"""The ``exact`` search backend: exact top-k inner products over large galleries.

"Exact" means: ranked by the dot products of the float32 features evaluated in float64
(products of float32 numbers are exact in float64; sums of a few thousand terms are
accurate to ~1e-15), with every pair scored by the same kernel, so identical gallery
vectors always tie and ties go to the lower index.

How it works, per block of queries (``t`` = approximate score of a low-precision scorer
from :mod:`mcgf.retrieval.candidates`, ``β`` its proven bound ``|s − t| ≤ β``, ``s`` the
exact score):

1. *Pass*: the gallery is scored chunk by chunk (int8 GEMM by default). Two lower bounds
   of the ``k``-th exact score ``s_k`` are kept: ``L − β_all``, with ``L`` a running
   lower bound of the ``k``-th largest ``t`` (from values of distinct items: each
   chunk's top values or maxima of disjoint column sets), and ``S``, the ``k``-th best
   exact score among the ``2k`` best items of the first chunks (up to
   :data:`HOLD_BYTES` of kernel output; those chunks are held until ``S`` is known, so
   that they too are filtered tightly). An item with
   ``t + β_chunk < max(S, L − β_all)`` has ``s < s_k`` and is dropped. Groups of
   :data:`GROUP` columns (strided column sets, see :func:`_group_max`) whose maximum is
   below the threshold are skipped wholesale.
2. *Lower bound*: the ``2k`` best collected items are scored exactly; the ``k``-th best of
   those exact scores raises ``S`` (it is still at most ``s_k``).
3. *Survivors*: an item with ``t + β_pair < S`` is strictly below the top ``k``; the rest
   are scored in float32 (error ``≤ γ_D·‖q‖·‖g‖``), and those within twice that of the
   ``k``-th float32 score get float64 scores and are sorted by (score desc, index asc).

No step can drop an item of the exact top ``k`` (or one tied with its ``k``-th item), so
the result is exact whatever the precision of the pass; the precision only changes how
many items survive. A query with more than ``cap`` collected items is almost always one
with hundreds of exact duplicates at the ``k``-th place (a collapsed model embeds many
images alike): when the gallery holds duplicates, such queries are searched over its
distinct vectors and each hit expands into its first ``k`` copies (:func:`_via_distinct`).
Otherwise they are redone with float32 candidates, and in the last resort by scoring the
whole gallery in float64.

Peak extra memory: the scorer's copy of the gallery (int8: a quarter of the float32
gallery, ordered by rounding error so that most chunks get a small bound), the held
tiles of kernel output (at most :data:`HOLD_BYTES`, or one tile if that is larger), and
the collected candidates. The GEMMs use ``threads``; the selection and re-ranking use
``aux_threads`` (default: the same), which on a machine shared with other jobs is best
set to one, so that no thread team is woken for each small step.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from mcgf.retrieval.candidates import (
    SCORERS,
    U_FP32,
    Fp32Scorer,
    Int8Scorer,
    Scorer,
    default_precision,
    dot_rounding_bound,
    int8_available,
    strict_matmul,
)
from mcgf.retrieval.ranking import distinct_rows
from mcgf.retrieval.rowops import (
    exact_scores,
    pair_dot,
    row_sorted_topk,
    row_topk,
    sort_candidates,
)
from mcgf.retrieval.search import SearchResult
from mcgf.runtime import torch_threads

#: Columns per group in the within-chunk pre-selection (see :func:`_group_max`).
GROUP = 16
#: Galleries up to this size are simply scored exactly in full.
SMALL_GALLERY = 64


def _exact_topk_of_pairs(qb: torch.Tensor, gallery: torch.Tensor, rows: torch.Tensor,
                         cols: torch.Tensor, m: int, k: int, gallery_norm_max: float
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``k`` per row among candidate pairs.

    Float32 dot products first (error ``≤ γ_D·‖q‖·‖g‖`` in any summation order); only pairs
    within twice that of the row's ``k``-th float32 score can still be in the top ``k``
    and get float64 scores.
    """
    f32 = pair_dot(qb, gallery, rows, cols, torch.float32)
    beta = (dot_rounding_bound(qb.shape[1], U_FP32) + 2 * U_FP32) * qb.double().norm(dim=1) * gallery_norm_max
    kth_slot = row_topk(rows, f32, m, k)
    kth = torch.where(kth_slot >= 0, f32[kth_slot.clamp_min(0)].double(),
                      torch.full_like(beta[:, None], -math.inf)).amin(dim=1)
    near = f32.double() >= kth[rows] - 2.0 * beta[rows] - 1e-30
    rows, cols = rows[near], cols[near]
    ex = pair_dot(qb, gallery, rows, cols, torch.float64)
    return row_sorted_topk(rows, ex, cols, m, k)


#: Kernel output held before any candidate is collected (bytes): the best items of the
#: first chunks give an exact lower bound of the k-th score, and the more of the gallery
#: they cover, the tighter it is and the fewer candidates every chunk yields.
HOLD_BYTES = 256 * 2**20


class _Collector:
    """Candidates of one query block: flat (row, gallery row, kernel value, chunk)."""

    def __init__(self, m: int, cap: int, dev: torch.device) -> None:
        self.rows: list[torch.Tensor] = []
        self.cols: list[torch.Tensor] = []
        self.vals: list[torch.Tensor] = []
        self.chunk: list[torch.Tensor] = []
        self.count = torch.zeros(m, dtype=torch.int64, device=dev)
        self.over = torch.zeros(m, dtype=torch.bool, device=dev)
        self.m, self.cap = m, cap

    def add(self, out: torch.Tensor, gmax: torch.Tensor, thr: torch.Tensor, base: int,
            scorer: Scorer, c: int) -> None:
        """Collect the values of ``out`` at or above each row's threshold.

        Groups are the strided column sets of :func:`_group_max`; a group whose maximum
        is below the threshold is skipped wholesale. Everything is addressed by flat
        positions and ``index_select``, several times faster than 2-D advanced indexing.
        """
        thr = thr.masked_fill(self.over, math.inf)
        groups = (gmax >= thr[:, None]).view(-1).nonzero().squeeze(1)  # flat (row, group) ids
        if groups.numel() == 0:
            return
        width = out.shape[1]
        pos = _group_positions(groups, width)  # (hits, GROUP) flat tile positions
        vals = out.view(-1).index_select(0, pos.view(-1))
        row_of_group = torch.div(groups, width // GROUP, rounding_mode="floor")
        thr_hit = thr.index_select(0, row_of_group)[:, None].expand(-1, GROUP).reshape(-1)
        ok = (vals >= thr_hit).nonzero().squeeze(1)
        pos = pos.view(-1).index_select(0, ok)
        r = torch.div(pos, width, rounding_mode="floor")
        self.rows.append(r)
        self.cols.append(scorer.gallery_rows(base + pos - r * width))
        self.vals.append(vals.index_select(0, ok))
        self.chunk.append(torch.full_like(r, c))
        self.count += torch.bincount(r, minlength=self.m)
        self.over |= self.count > self.cap

    def flat(self) -> tuple[torch.Tensor, ...]:
        if not self.rows:
            e = torch.empty(0, dtype=torch.int64, device=self.count.device)
            return e, e, torch.empty(0, device=self.count.device), e
        return (torch.cat(self.rows), torch.cat(self.cols), torch.cat(self.vals),
                torch.cat(self.chunk))


def _held_top(held: list[tuple[int, torch.Tensor, torch.Tensor]], scorer: Scorer, n: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the ``n`` best group maxima over the held tiles and their gallery rows.

    A cheap stand-in for a top-``n`` over all held columns: it ranks the group maxima,
    then finds each winning group's argmax, so the values belong to distinct items.
    Entries without an item (padding, or fewer groups than ``n``) have value ``-inf``.
    """
    gmax = torch.cat([h[2] for h in held], 1)
    m, groups = held[0][2].shape
    v, gi = gmax.topk(n, dim=1)
    tile, group = torch.div(gi, groups, rounding_mode="floor"), gi % groups
    flat = group + torch.arange(m, device=gi.device)[:, None] * groups
    member = torch.zeros_like(gi)
    width = held[0][1].shape[1]
    for h, (_, out, _) in enumerate(held):
        sel = tile == h
        if sel.any():
            at = _group_positions(flat[sel], width)
            member[sel] = out.view(-1).index_select(0, at.view(-1)).view(at.shape).argmax(dim=1)
    starts = torch.tensor([scorer.chunk_range(c)[0] for c, _, _ in held], device=gi.device)
    pos = starts[tile] + group + member * groups
    ok = (v > -math.inf) & (pos < scorer.size)
    v = v.masked_fill(~ok, -math.inf)
    return v, scorer.gallery_rows(pos.masked_fill(~ok, 0))


def _group_max(out: torch.Tensor) -> torch.Tensor:
    """Maximum of each group of ``GROUP`` columns: ``(m, n) -> (m, n / GROUP)``.

    Group ``j`` holds the columns ``j, j + n/GROUP, j + 2n/GROUP, ...``: any disjoint
    column sets would do, and this choice makes the reduction an elementwise maximum of
    ``GROUP`` contiguous row slices, which runs near memory speed (a pooling over
    adjacent columns is about 1.5× slower).
    """
    m, n = out.shape
    return out.view(m, GROUP, n // GROUP).amax(dim=1)


def _group_positions(groups: torch.Tensor, width: int) -> torch.Tensor:
    """Flat tile positions ``(len(groups), GROUP)`` of flat (row, group) ids."""
    per_row = width // GROUP
    row = torch.div(groups, per_row, rounding_mode="floor")
    start = row * width + (groups - row * per_row)
    return start[:, None] + torch.arange(GROUP, device=groups.device) * per_row


def _threshold_pass(scorer: Scorer, gallery: torch.Tensor, queries: torch.Tensor, k: int,
                    query_block: int, cap: int, timing: dict[str, float],
                    gemm_threads: int | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact top-``k`` of ``queries``: (indices, float64 scores, overflow mask).

    Rows whose candidate set grew beyond ``cap`` per query (masses of near-equal scores
    at the ``k``-th place) are flagged in the overflow mask and left for a more precise
    scorer. See the module docstring for why the result is exact.

    It stays over 80 lines on purpose: which temporaries are alive while the next query
    block's tiles are allocated decides whether the CPU allocator keeps the freed tiles
    or hands them back to the system and faults them in again, and split into helpers it
    ran about 20 % slower (int8, three query blocks, one thread).
    """
    nq, dev = queries.shape[0], queries.device
    out_idx = torch.full((nq, k), -1, dtype=torch.int64, device=dev)
    out_sc = torch.full((nq, k), -math.inf, dtype=torch.float64, device=dev)
    overflow = torch.zeros(nq, dtype=torch.bool, device=dev)
    clock = {"gemm": 0.0, "select": 0.0, "rerank": 0.0}
    if scorer.chunk % (GROUP * GROUP):
        raise ValueError(f"gallery chunk must be a multiple of {GROUP * GROUP}")
    gnorm_max = float(scorer.norm.max()) if scorer.size else 0.0
    tile_bytes = min(query_block, nq) * scorer.chunk * 4
    pre = max(1, min(scorer.num_chunks, HOLD_BYTES // max(1, tile_bytes)))
    for qs in range(0, nq, query_block):
        qb = queries[qs: qs + query_block]
        m = qb.shape[0]
        prep = scorer.prepare_queries(qb)
        beta32 = (dot_rounding_bound(qb.shape[1], U_FP32) + 2 * U_FP32) * qb.double().norm(dim=1) * gnorm_max
        # Bounds in kernel units: of the whole gallery, and of each chunk.
        whole = scorer.row_bound(prep) / prep.scale
        chunk_b = torch.stack([scorer.row_bound(prep, c) / prep.scale for c in range(scorer.num_chunks)])
        best = torch.full((m, k), -math.inf, device=dev)  # k largest values of distinct items
        lower = torch.full((m,), -math.inf, dtype=torch.float64, device=dev)  # ≤ k-th exact score
        coll = _Collector(m, cap, dev)
        held: list[tuple[int, torch.Tensor, torch.Tensor]] = []

        for c in range(scorer.num_chunks):
            t0 = time.perf_counter()
            with torch_threads(gemm_threads):
                out = scorer.scores(prep, c)
            t1 = time.perf_counter()
            gmax = _group_max(out)
            held.append((c, out, gmax))
            # ``best`` only ever merges values of distinct items (each chunk's own top
            # values, or maxima of disjoint column sets), so its k-th entry never exceeds
            # the k-th largest approximate score.
            if c < pre - 1:
                clock["gemm"] += t1 - t0
                clock["select"] += time.perf_counter() - t1
                continue
            if c == pre - 1:
                # The 2k best items of the held chunks, scored exactly, give a lower bound
                # of the k-th exact score before anything is collected.
                v, items = _held_top(held, scorer, min(2 * k, sum(h[2].shape[1] for h in held)))
                best = torch.cat([best, v[:, :k].float()], 1).topk(k, dim=1).values
                valid = v > -math.inf
                rows = torch.arange(m, device=dev)[:, None].expand_as(items)[valid]
                lo = torch.full(items.shape, -math.inf, dtype=torch.float64, device=dev)
                lo[valid] = pair_dot(qb, gallery, rows, items[valid], torch.float32).double() - beta32[rows]
                lower = lo.topk(min(k, lo.shape[1]), dim=1).values[:, -1]
                if lo.shape[1] < k:
                    lower = torch.full_like(lower, -math.inf)
            else:
                coarse = gmax.view(m, GROUP, -1).amax(dim=1)  # maxima of disjoint column sets
                best = torch.cat([best, coarse.float()], 1).topk(k, dim=1).values
            # Drop items strictly below the k-th exact score: t + β_chunk < max(lower,
            # L − β_all), with L a lower bound of the k-th largest approximate score.
            floor = torch.maximum(lower / prep.scale, best[:, -1].double() - whole)
            for hc, hout, hg in held:
                coll.add(hout, hg, _threshold(floor - chunk_b[hc]), scorer.chunk_range(hc)[0], scorer, hc)
            held.clear()
            clock["gemm"] += t1 - t0
            clock["select"] += time.perf_counter() - t1
        t2 = time.perf_counter()
        r, c, v, ch = coll.flat()
        over = coll.over
        overflow[qs: qs + m] = over
        floor = torch.maximum(lower / prep.scale, best[:, -1].double() - whole)
        nb = chunk_b.shape[1]
        limit = (floor.index_select(0, r) - chunk_b.view(-1).index_select(0, ch * nb + r))
        keep = ((v >= _threshold(limit)) & ~over.index_select(0, r)).nonzero().squeeze(1)
        r, c, v = r.index_select(0, keep), c.index_select(0, keep), v.index_select(0, keep)
        if r.numel():  # (every row overflowed otherwise)
            # The k-th largest exact score among each row's 2k best approximate items is a
            # lower bound of its k-th exact score.
            a = row_topk(r, v, m, 2 * k)
            ok = a >= 0
            lo = torch.full((m, 2 * k), -math.inf, dtype=torch.float64, device=dev)
            ar = torch.arange(m, device=dev)[:, None].expand_as(a)[ok]
            lo[ok] = pair_dot(qb, gallery, ar, c[a[ok]], torch.float32).double() - beta32[ar]
            lower = torch.maximum(lower, lo.topk(k, dim=1).values[:, -1])
            # Survivors: approximate score + proven error still reaches that bound.
            t = v.double() * prep.scale.index_select(0, r)
            low = lower.index_select(0, r)
            keep = (t + scorer.pair_bound(prep, r, c) >= low - 1e-12 * (1 + low.abs())).nonzero().squeeze(1)
            timing["candidates"] = timing.get("candidates", 0.0) + float(r.numel())
            r, c = r.index_select(0, keep), c.index_select(0, keep)
            timing["survivors"] = timing.get("survivors", 0.0) + float(r.numel())
            best_i, best_s = _exact_topk_of_pairs(qb, gallery, r, c, m, k, gnorm_max)
            out_idx[qs: qs + m] = best_i
            out_sc[qs: qs + m] = best_s
        clock["rerank"] += time.perf_counter() - t2
    for key, value in clock.items():
        timing[key] = timing.get(key, 0.0) + value
    return out_idx.cpu(), out_sc.cpu(), overflow.cpu()


def _chunk_size(requested: int, gallery_size: int) -> int:
    """A chunk size the pass accepts: a multiple of ``GROUP²`` no larger than needed."""
    unit = GROUP * GROUP
    need = -(-gallery_size // unit) * unit
    return max(unit, min(requested // unit * unit, need))


def _threshold(x: torch.Tensor) -> torch.Tensor:
    """A float32 threshold never above the float64 one (relative slack for rounding).

    It is at least the lowest finite float32, so the ``-inf`` padding of the last chunk
    is never collected, even before any bound is known (kernel values are finite).
    """
    return (x - 1e-6 * (1.0 + x.abs())).float().clamp_min(torch.finfo(torch.float32).min)


#: Float64 score-matrix entries per query block of :func:`_exhaustive` (~128 MiB).
_EXHAUSTIVE_ENTRIES = 1 << 24


def _exhaustive(gallery: torch.Tensor, queries: torch.Tensor, k: int, chunk: int = 8192
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``k`` of every query by the float64 scores of :func:`exact_scores` over the
    whole gallery (last resort), ties by lower index.

    Every item is scored by a float64 matrix product first (error ``≤ β = γ_D·‖q‖·‖g‖``
    in any summation order, as is :func:`exact_scores`' own). With ``K`` the ``k``-th
    largest product, the ``k``-th best exact score is at least ``K − 2β``, so an item of
    the top ``k`` (or tied with its ``k``-th) has a product of at least ``K − 4β``; only
    those items get :func:`exact_scores`, which gives the ranking of scoring them all.
    """
    ng, dim = gallery.shape
    bound = 4.0 * (dot_rounding_bound(dim, 2.0**-53) + 4 * 2.0**-53)
    gnorm = max(float(torch.linalg.vector_norm(gallery[s: s + chunk].double(), dim=1).max())
                for s in range(0, ng, chunk))
    step = max(1, _EXHAUSTIVE_ENTRIES // ng)
    idx_l, sc_l = [], []
    for qs in range(0, queries.shape[0], step):
        qb = queries[qs: qs + step]
        q64 = qb.double()
        s64 = torch.empty((qb.shape[0], ng), dtype=torch.float64)
        for s in range(0, ng, chunk):
            torch.matmul(q64, gallery[s: s + chunk].double().T, out=s64[:, s: s + chunk])
        kth = s64.topk(k, dim=1).values[:, -1]
        slack = bound * torch.linalg.vector_norm(q64, dim=1) * gnorm * (1 + 1e-6) + 1e-300
        rows, cols = (s64 >= (kth - slack)[:, None]).nonzero(as_tuple=True)
        del s64
        ex = torch.empty(rows.numel(), dtype=torch.float64)
        per = max(1, (1 << 22) // max(1, dim))  # ~32 MiB float64 temporaries
        for s in range(0, rows.numel(), per):
            r, c = rows[s: s + per], cols[s: s + per]
            ex[s: s + per] = exact_scores(qb.index_select(0, r), gallery.index_select(0, c)[:, None, :])[:, 0]
        bi, bs = row_sorted_topk(rows, ex, cols, qb.shape[0], k)
        idx_l.append(bi)
        sc_l.append(bs)
    return torch.cat(idx_l), torch.cat(sc_l)


def _score_all(q: torch.Tensor, g: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``k`` of every query by float64 scores of the whole (small) gallery."""
    ng = g.shape[0]
    idx_l, sc_l = [], []
    for s in range(0, q.shape[0], 64):
        qb = q[s: s + 64]
        ex = exact_scores(qb, g[None].expand(qb.shape[0], ng, g.shape[1]))
        bi, bs = sort_candidates(ex, torch.arange(ng)[None].expand(qb.shape[0], ng), k)
        idx_l.append(bi)
        sc_l.append(bs)
    if not idx_l:
        return torch.empty((0, k), dtype=torch.int64), torch.empty((0, k), dtype=torch.float64)
    return torch.cat(idx_l), torch.cat(sc_l)


def _first_copies(g: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The distinct rows of ``g``, in order of first occurrence, and the indices of each
    one's first ``k`` copies ``(U, k)`` (``-1`` past its count); ``None``: no duplicates."""
    found = distinct_rows(g.numpy())
    if found is None:
        return None
    first, which = (torch.from_numpy(a).long() for a in found)
    n, u = g.shape[0], first.shape[0]
    order = torch.argsort(first)
    label = torch.empty_like(order)
    label[order] = torch.arange(u)
    label = label[which]
    # Rows grouped by label, in index order within each group (stable sort).
    by = torch.argsort(label, stable=True)
    count = torch.bincount(label, minlength=u)
    pos = torch.arange(n) - (torch.cumsum(count, 0) - count)[label[by]]
    keep = pos < k
    copies = torch.full((u, k), -1, dtype=torch.int64)
    copies[label[by][keep], pos[keep]] = by[keep]
    return g[first[order]], copies


def _via_distinct(q: torch.Tensor, g: torch.Tensor, k: int, **options: Any
                  ) -> tuple[torch.Tensor, torch.Tensor, int] | None:
    """Exact top ``k`` of ``q`` over ``g`` through ``g``'s distinct vectors (``None``: ``g``
    has no duplicates): ``(indices, float64 scores, number of distinct vectors)``.

    Distinct vectors are labelled in order of first occurrence, so the top ``k`` of them
    by (score desc, label asc) hold the top ``k`` rows by (score desc, index asc): each of
    the ``k`` vectors ranked above a missing one has a first copy ranked above every copy
    of it. Copies share their vector's score, so each hit's first ``k`` copies suffice.
    """
    found = _first_copies(g, k)
    if found is None:
        return None
    uniq, copies = found
    top = exact_search(q, uniq, min(k, uniq.shape[0]), distinct=False, **options).indices
    top = torch.from_numpy(top)
    idx_l, sc_l = [], []
    for s in range(0, q.shape[0], 256):  # float64 re-scoring in blocks bounds the memory
        labels = top[s: s + 256]
        scores = exact_scores(q[s: s + 256], uniq[labels])
        cand = copies[labels].flatten(1)
        bi, bs = sort_candidates(scores.repeat_interleave(k, dim=1), cand, k)
        idx_l.append(bi)
        sc_l.append(bs)
    return torch.cat(idx_l), torch.cat(sc_l), int(uniq.shape[0])


def _prepared_scorer(gallery: torch.Tensor, source: torch.Tensor, precision: str, chunk: int,
                     block: int, cache: dict[Any, Any] | None) -> Scorer:
    """The scorer of ``gallery`` (``source`` on the device the pass runs on) for these
    settings: from ``cache`` when it holds one made from the same, unmodified ``source``
    (same storage, same version counter), else prepared (and stored there, one per
    settings; the entry keeps ``source`` alive, so its storage is never another's)."""
    key = (precision, chunk, block, str(gallery.device))
    entry = cache.get(key) if cache is not None else None
    if entry is not None and (entry[0].data_ptr(), entry[0].shape, entry[1]) == (
            source.data_ptr(), source.shape, source._version):
        return entry[2]
    scorer = (Int8Scorer(gallery, chunk=chunk, query_block=block) if precision == "int8"
              else SCORERS[precision](gallery, chunk=chunk))
    if cache is not None:
        cache[key] = (source, source._version, scorer)
    return scorer


def exact_search(q: torch.Tensor, g: torch.Tensor, k: int, *, precision: str = "auto",
                 threads: int | None = None, query_block: int | None = None,
                 gallery_chunk: int | None = None, cap: int = 4096, device: str = "cpu",
                 scorer: Scorer | None = None, aux_threads: int | None = None,
                 distinct: bool = True, scorer_cache: dict[Any, Any] | None = None
                 ) -> SearchResult:
    """Exact top-``k`` by a low-precision pass and exact re-ranking (module docstring).

    Args:
        q, g: float32 CPU tensors ``(Q, D)`` and ``(G, D)``.
        precision: candidate precision ``"int8" | "bf16" | "fp32" | "auto"``.
        threads: intra-op threads (``None``: PyTorch's current setting).
        query_block, gallery_chunk: tile sizes (defaults tuned per precision).
        cap: candidates per query beyond which a query is passed to a more precise scorer.
        device: where the candidate pass runs (``"cuda"`` moves both matrices there).
        scorer: a prepared scorer to reuse (its gallery must be ``g``).
        aux_threads: threads for everything but the GEMMs (``None``: same as ``threads``).
            On an idle 2-core machine two threads were 11 % faster overall than one; on
            a busy one, one thread avoids waking a thread team for each small step.
        distinct: search the queries that collect too many candidates over the gallery's
            distinct vectors when it has duplicates (``False``: the slower fallbacks).
        scorer_cache: a dict kept by the caller between searches of one gallery (see
            :class:`~mcgf.retrieval.index.GalleryIndex`): the prepared scorer is taken
            from it, or stored in it, instead of being prepared again for every search.
    """
    dev = torch.device(device)
    if precision == "auto":
        precision = default_precision(dev)
    if precision not in SCORERS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {sorted(SCORERS)} or 'auto'")
    if precision == "int8" and (dev.type != "cpu" or not int8_available()):
        raise ValueError("precision 'int8' needs the x86 oneDNN int8 kernel on the CPU")
    stats: dict[str, Any] = {"backend": "exact", "precision": precision, "queries": int(q.shape[0])}
    nq, ng = q.shape[0], g.shape[0]
    gemm_threads = threads if threads is not None else torch.get_num_threads()
    aux = aux_threads if aux_threads is not None else gemm_threads
    # strict_matmul: the float32 re-scoring's rounding bound holds only for true float32
    # products (the candidate GEMMs also enter it themselves).
    with torch_threads(aux), torch.inference_mode(), strict_matmul():
        if ng <= SMALL_GALLERY or nq == 0:
            idx, sc = _score_all(q, g, k)
            stats.update(precision="float64", overflow=0, exhaustive=0)
            return SearchResult(idx.numpy(), sc.float().numpy(), stats)

        qd, gd = (q.to(dev), g.to(dev)) if dev.type == "cuda" else (q, g)
        block = query_block or (1024 if precision == "int8" else 512)
        chunk = gallery_chunk or (4096 if precision == "int8" else 8192)
        chunk = _chunk_size(chunk, ng)
        t0 = time.perf_counter()
        if scorer is None:
            with torch_threads(gemm_threads):  # large elementwise passes: use every thread
                scorer = _prepared_scorer(gd, g, precision, chunk, block, scorer_cache)
        timing: dict[str, float] = {"prepare": time.perf_counter() - t0}
        idx, sc, over = _threshold_pass(scorer, gd, qd, k, block, cap, timing, gemm_threads)
        todo = over.nonzero().flatten()
        stats["overflow"] = int(todo.numel())
        if todo.numel() and distinct:
            found = _via_distinct(q[todo], g, k, precision=precision, threads=threads,
                                  cap=cap, device=device, aux_threads=aux_threads)
            if found is not None:
                idx[todo], sc[todo], stats["distinct"] = found
                todo = todo[:0]
        if todo.numel() and precision != "fp32":
            fp = Fp32Scorer(g, chunk=_chunk_size(8192, ng))
            i2, s2, o2 = _threshold_pass(fp, g, q[todo], k, 512, cap, timing, gemm_threads)
            idx[todo], sc[todo] = i2, s2
            todo = todo[o2]
        stats["exhaustive"] = int(todo.numel())
        t3 = time.perf_counter()
        if todo.numel():
            idx[todo], sc[todo] = _exhaustive(g, q[todo], k)
        timing["exhaustive"] = time.perf_counter() - t3
        for key, v in timing.items():
            if key in ("candidates", "survivors"):
                stats[key] = int(v)
            else:
                stats[f"{key}_seconds"] = round(v, 3)
    return SearchResult(idx.numpy(), sc.float().numpy(), stats)
