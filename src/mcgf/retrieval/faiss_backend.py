"""faiss backends: ``IndexFlatIP`` (float32 brute force) and ``IndexIVFFlat`` (approximate).

faiss is used as the well-kept reference implementation it is; the flat index is also
the baseline the exact search is benchmarked against. Both return the same
:class:`~mcgf.retrieval.search.SearchResult` as the other backends. faiss is imported
lazily so the rest of the package works without it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch


def available() -> bool:
    """True if faiss can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise RuntimeError("faiss is not installed: pip install faiss-cpu, or use backend='exact'") from None
    return faiss


@contextlib.contextmanager
def faiss_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` OpenMP threads in faiss (``None``: unchanged)."""
    faiss = _faiss()
    if threads is None:
        yield
        return
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(1, int(threads)))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def _numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    arr = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return np.ascontiguousarray(arr, dtype=np.float32)


def _result(distances: np.ndarray, labels: np.ndarray, stats: dict[str, Any]) -> Any:
    from mcgf.retrieval.search import SearchResult

    return SearchResult(labels.astype(np.int64), distances.astype(np.float32), stats)


def flat_search(q: torch.Tensor | np.ndarray, g: torch.Tensor | np.ndarray, k: int, *,
                threads: int | None = None, **_: Any) -> Any:
    """Brute-force inner-product top-``k`` with ``faiss.IndexFlatIP``."""
    faiss = _faiss()
    qn, gn = _numpy(q), _numpy(g)
    with faiss_threads(threads):
        index = faiss.IndexFlatIP(gn.shape[1])
        index.add(gn)
        distances, labels = index.search(qn, k)
    return _result(distances, labels, {"backend": "faiss-flat"})


def ivf_search(q: torch.Tensor | np.ndarray, g: torch.Tensor | np.ndarray, k: int, *,
               threads: int | None = None, nlist: int | None = None, nprobe: int = 32,
               seed: int = 0, **_: Any) -> Any:
    """Approximate top-``k`` with ``faiss.IndexIVFFlat`` (inner product).

    ``nlist`` defaults to about ``4·sqrt(G)`` lists; ``nprobe`` lists are visited per
    query. The k-means training uses ``seed``. Missing results (a query whose probed lists
    hold fewer than ``k`` items) are index ``-1``.
    """
    faiss = _faiss()
    qn, gn = _numpy(q), _numpy(g)
    ng, dim = gn.shape
    lists = nlist or max(1, min(ng // 39, int(4 * math.sqrt(ng))))
    with faiss_threads(threads):
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = int(seed)
        index.train(gn)
        index.add(gn)
        index.nprobe = max(1, min(int(nprobe), lists))
        distances, labels = index.search(qn, k)
    return _result(distances, labels, {"backend": "faiss-ivf", "nlist": lists, "nprobe": index.nprobe})
