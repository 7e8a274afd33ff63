"""Top-10 search at University-160k scale: mcgf exact search vs faiss vs the per-query loop.

Builds synthetic L2-normalised features shaped like real embeddings and times, in one
process on the same cores:

* ``mcgf exact``  — :func:`mcgf.retrieval.search.topk_search` (exact search, ``backend="exact"``);
* ``faiss flat``  — ``faiss.IndexFlatIP`` (the baseline of the ratios);
* ``torch fp32`` (``--torch-baseline``) — a chunked float32 matrix product + ``topk``;
* ``per-query loop`` — what the public scripts do (a matrix-vector product and a full
  sort per query), timed on ``--sample`` queries and extrapolated.

It checks that mcgf's top-10 lists are identical to a float64 brute-force ranking (ties by
lower gallery index) on the sample and counts where faiss differs from mcgf (float32
rounding reorders near-ties). Peak memory is the rise of the process's resident set
(``VmHWM`` in ``/proc/self/status``, reset before each method through ``clear_refs``),
which, unlike tracemalloc, sees torch and faiss allocations.

Features: ``--locations`` true locations, each with one gallery tile and
``queries/locations`` drone views; all other tiles are distractors. Vectors have a shared
mean direction and a decaying spectrum in a random basis (pairwise cosine ~0.3 ± 0.1,
like trained embeddings); queries are noisy copies of their tile, so the true tile is
usually but not always first. A few gallery vectors are exact duplicates (true ties).
``--isotropic`` draws plain random unit vectors instead (the hardest case for any
low-precision candidate pass: all top-10 scores lie within a few hundredths).

Usage (full scale, takes minutes)::

    python benchmarks/retrieval.py --queries 37855 --gallery 168437 --dim 512 --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from mcgf.retrieval.search import topk_search


def make_features(n_queries: int, n_gallery: int, dim: int, *, locations: int = 701,
                  isotropic: bool = False, duplicates: int = 20, seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic (queries, gallery, true gallery index per query), float32 unit rows."""
    rng = np.random.default_rng(seed)
    locations = max(1, min(locations, n_gallery, n_queries))

    if isotropic:
        def draw(n: int) -> np.ndarray:
            return rng.standard_normal((n, dim), dtype=np.float32)
    else:
        basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        spectrum = (np.arange(1, dim + 1) ** -0.9).astype(np.float64)
        spectrum /= spectrum.sum()
        mix = (basis * np.sqrt(spectrum)[None, :]).T.astype(np.float32)  # (dim, dim)
        mean = rng.standard_normal(dim).astype(np.float32)
        mean *= 0.6 / np.linalg.norm(mean)

        def draw(n: int) -> np.ndarray:
            out = np.empty((n, dim), np.float32)
            for s in range(0, n, 32768):
                z = rng.standard_normal((min(32768, n - s), dim), dtype=np.float32)
                out[s: s + z.shape[0]] = z @ mix + mean
            return out

    def unit(x: np.ndarray) -> np.ndarray:
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    gallery = unit(draw(n_gallery))
    true_tiles = rng.choice(n_gallery, size=locations, replace=False)
    loc_of_query = np.arange(n_queries) % locations
    rng.shuffle(loc_of_query)
    truth = true_tiles[loc_of_query]
    # Each location's views share a location-specific offset plus per-view noise.
    loc_noise = unit(draw(locations))
    view_noise = unit(draw(n_queries))
    queries = gallery[truth] + 0.45 * loc_noise[loc_of_query] + 0.55 * view_noise
    queries = unit(queries.astype(np.float32))
    # Exact duplicates: some true tiles get an identical twin elsewhere in the gallery.
    dup_src = true_tiles[: min(duplicates, locations)]
    others = np.setdiff1d(np.arange(n_gallery), true_tiles)
    dup_dst = rng.choice(others, size=min(len(dup_src), len(others)), replace=False)
    gallery[dup_dst] = gallery[dup_src[: len(dup_dst)]]
    return queries, gallery, truth


def _status(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` in bytes (0 where unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _reset_peak() -> int:
    """Reset the resident-set high-water mark; returns the current resident set."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return _status("VmRSS")


def timed(fn, *args, **kwargs):
    """(result, seconds, peak extra bytes) of one call."""
    base = _reset_peak()
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    seconds = time.perf_counter() - start
    return out, seconds, max(0, _status("VmHWM") - base)


def reference_top10(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Float64 brute force, ties by lower gallery index (the definition of exact)."""
    scores = queries.astype(np.float64) @ gallery.astype(np.float64).T
    return np.argsort(-scores, axis=1, kind="stable")[:, :10]


def per_query_loop(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """The public scripts' method: one matrix-vector product and a full sort per query."""
    out = np.empty((queries.shape[0], 10), np.int64)
    for i, q in enumerate(queries):
        score = gallery @ q
        out[i] = np.argsort(score)[::-1][:10]
    return out


def torch_chunked_top10(queries: np.ndarray, gallery: np.ndarray, rows: int = 512) -> np.ndarray:
    """float32 brute force without faiss: a chunked matrix product and ``topk`` per block
    of query rows (the plain PyTorch way; float32 near-ties may come out in any order)."""
    q, g = torch.from_numpy(queries), torch.from_numpy(gallery)
    out = np.empty((q.shape[0], 10), np.int64)
    for s in range(0, q.shape[0], rows):
        out[s: s + rows] = (q[s: s + rows] @ g.T).topk(10, dim=1).indices.numpy()
    return out


def gemm_rates(dim: int, threads: int) -> str:
    """GFLOP/s of float32, bfloat16 and (oneDNN u8×s8) int8 matrix products here."""
    from mcgf.retrieval.candidates import int8_available

    torch.set_num_threads(threads)
    m, n = 1024, 4096
    a, b = torch.randn(m, dim), torch.randn(n, dim)
    flop = 2.0 * m * n * dim

    def rate(fn) -> float:
        fn()
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        return flop / best / 1e9

    ab, bb = a.bfloat16(), b.bfloat16()
    parts = [f"fp32 {rate(lambda: a @ b.T):.0f}", f"bf16 {rate(lambda: ab @ bb.T):.0f}"]
    if int8_available():
        x = torch.randint(1, 128, (m, dim), dtype=torch.uint8)
        w = torch.ops.onednn.qlinear_prepack(torch.randint(-127, 128, (n, dim), dtype=torch.int8), [m, dim])
        scale, zero = torch.ones(n), torch.zeros(n, dtype=torch.int64)
        parts.append("int8 {:.0f}".format(rate(lambda: torch.ops.onednn.qlinear_pointwise(
            x, 1.0, 64, w, scale, zero, None, 1.0, 0, torch.float32, "none", [], ""))))
    return ", ".join(parts) + f" GFLOP/s ({m}x{n}x{dim})"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                flags = next(x for x in Path("/proc/cpuinfo").read_text().splitlines()
                             if x.startswith("flags")).split()
                simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8",
                                    "avx_vnni", "avx512_vnni") if f in flags]
                return f"{name} ({', '.join(simd)}), {os.cpu_count()} logical CPUs"
    except (OSError, StopIteration):
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=37855)
    ap.add_argument("--gallery", type=int, default=168437)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--aux-threads", type=int, default=None,
                    help="threads of mcgf's selection steps (default: --threads)")
    ap.add_argument("--sample", type=int, default=200, help="queries for the loop and the check")
    ap.add_argument("--locations", type=int, default=701)
    ap.add_argument("--precision", default="auto",
                    help="mcgf candidate precision(s), comma-separated: auto, int8, bf16, fp32")
    ap.add_argument("--isotropic", action="store_true", help="plain random unit vectors")
    ap.add_argument("--skip-faiss", action="store_true")
    ap.add_argument("--torch-baseline", action="store_true",
                    help="also time a chunked float32 torch matmul + topk (adds about a faiss run)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if min(args.queries, args.dim, args.threads, args.sample, args.locations) < 1 \
            or args.gallery < 10 or (args.aux_threads is not None and args.aux_threads < 1):
        ap.error("--queries, --dim, --threads, --aux-threads, --sample and --locations must be "
                 ">= 1, --gallery >= 10 (top-10 search)")
    unknown = sorted(set(args.precision.split(",")) - {"auto", "int8", "bf16", "fp32"})
    if unknown:
        ap.error(f"--precision: unknown {', '.join(map(repr, unknown))}; "
                 "choose from auto, int8, bf16, fp32")

    torch.set_num_threads(args.threads)
    print(f"hardware: {cpu_name()}; threads used: {args.threads}; torch {torch.__version__}")
    print(f"matrix products: {gemm_rates(args.dim, args.threads)}")
    t = time.perf_counter()
    q, g, truth = make_features(args.queries, args.gallery, args.dim, locations=args.locations,
                                isotropic=args.isotropic, seed=args.seed)
    kind = "isotropic" if args.isotropic else "embedding-like"
    print(f"features: {args.queries} queries x {args.gallery} gallery x {args.dim} dims "
          f"({kind}), built in {time.perf_counter() - t:.1f}s")

    rng = np.random.default_rng(args.seed + 1)
    sample = np.sort(rng.choice(args.queries, size=min(args.sample, args.queries), replace=False))
    ref = reference_top10(q[sample], g)
    ours: dict[str, float] = {}
    for precision in args.precision.split(","):
        res, t_ours, m_ours = timed(topk_search, q, g, 10, backend="exact", precision=precision,
                                    threads=args.threads, aux_threads=args.aux_threads)
        st = res.stats
        ours[st["precision"]] = t_ours
        r1 = float(np.mean(res.indices[:, 0] == truth))
        nq = max(1, st["queries"])
        print(f"mcgf exact   : {t_ours:8.1f} s  peak +{m_ours / 2**20:7.0f} MiB  precision={st['precision']}")
        print(f"               stages: prepare {st.get('prepare_seconds', 0):.1f}s, GEMM "
              f"{st.get('gemm_seconds', 0):.1f}s, selection {st.get('select_seconds', 0):.1f}s, "
              f"re-ranking {st.get('rerank_seconds', 0):.1f}s; per query {st.get('candidates', 0) / nq:.0f} "
              f"candidates, {st.get('survivors', 0) / nq:.0f} re-scored; redone: {st['overflow']} "
              f"(exhaustive {st['exhaustive']}); R@1 of these features {100 * r1:.1f}%")
        same = float(np.mean(np.all(res.indices[sample] == ref, axis=1)))
        print(f"check        : mcgf top-10 identical to float64 brute force on {len(sample)} "
              f"sampled queries: {100 * same:.1f}%")

    if not args.skip_faiss:
        fres, t_faiss, m_faiss = timed(topk_search, q, g, 10, backend="faiss-flat",
                                       threads=args.threads)
        diff = ~np.all(fres.indices == res.indices, axis=1)
        # Do faiss's differing lists only reorder near-ties (float32 rounding)?
        gap = np.abs(fres.scores[diff] - res.scores[diff]).max() if diff.any() else 0.0
        print(f"faiss flat   : {t_faiss:8.1f} s  peak +{m_faiss / 2**20:7.0f} MiB  "
              f"(lists differing from mcgf: {int(diff.sum())}, max score gap there {gap:.2e})")

    if args.torch_baseline:
        tres, t_torch, m_torch = timed(torch_chunked_top10, q, g)
        diff = int((~np.all(tres == res.indices, axis=1)).sum())
        print(f"torch fp32   : {t_torch:8.1f} s  peak +{m_torch / 2**20:7.0f} MiB  "
              f"(chunked matmul + topk; lists differing from mcgf: {diff})")

    loop_q = sample[: min(len(sample), 50)]
    _, t_loop, _ = timed(per_query_loop, q[loop_q], g)
    t_loop_full = t_loop / len(loop_q) * args.queries
    print(f"per-query loop: {t_loop_full:8.1f} s  (extrapolated from {len(loop_q)} queries)")
    print("ratios (higher = mcgf faster):")
    for precision, t_ours in ours.items():
        if not args.skip_faiss:
            print(f"  faiss flat / mcgf exact ({precision})     = {t_faiss / t_ours:5.2f}x")
        if args.torch_baseline:
            print(f"  torch fp32 / mcgf exact ({precision})     = {t_torch / t_ours:5.2f}x")
        print(f"  per-query loop / mcgf exact ({precision}) = {t_loop_full / t_ours:5.1f}x")


if __name__ == "__main__":
    main()
