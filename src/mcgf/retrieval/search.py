"""Top-k inner-product search with pluggable backends.

``topk_search(queries, gallery, k)`` returns, for every query, the ``k`` gallery items of
highest inner product (cosine similarity for L2-normalised features), best first, ties
broken by the lower gallery index. Inputs must be finite with row norms up to
:data:`MAX_NORM` (zero rows are fine); anything else is refused with an error naming the
side and the row. Backends (:data:`BACKENDS`, selected by name):

``exact``
    :mod:`mcgf.retrieval.exact`: exact for any data, never materialises the score matrix.
``faiss-flat``
    ``faiss.IndexFlatIP``: float32 brute force (near-ties within float32 rounding may
    come out in another order than the exact one).
``faiss-ivf``
    ``faiss.IndexIVFFlat``: approximate, for galleries too large for brute force.
``auto``
    ``exact`` when a fast low-precision kernel exists here (int8 on x86 CPUs, bf16 on
    GPUs and bf16-capable CPUs), otherwise ``faiss-flat`` if installed, else ``exact``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mcgf.errors import UserError
from mcgf.retrieval.candidates import default_precision

#: Largest feature norm a search accepts (2^63 ≈ 9.2e18). The low-precision passes and
#: their error bounds work in float32: a row's squared norm, and the product of a query's
#: and a gallery item's norms, must stay below float32's largest value (≈ 2^128).
MAX_NORM = 2.0**63


class UnsearchableFeatures(UserError, ValueError):
    """Feature rows the search cannot score (a norm beyond :data:`MAX_NORM`)."""


@dataclass
class SearchResult:
    """Top-k of every query: ``indices[i, j]`` is the ``j``-th best gallery row of query ``i``.

    ``scores`` are the inner products (float32). ``stats`` says which backend ran and,
    for the exact backend, the precision, time per stage (``*_seconds``), candidates and
    re-scored items (totals), and how many queries were redone (``overflow``,
    ``exhaustive``).
    """

    indices: np.ndarray
    scores: np.ndarray
    stats: dict[str, Any] = field(default_factory=dict)


Backend = Callable[..., SearchResult]
BACKENDS: dict[str, Backend] = {}


def register_backend(name: str) -> Callable[[Backend], Backend]:
    """Decorator: make a search function available as ``backend=name``."""

    def deco(fn: Backend) -> Backend:
        BACKENDS[name] = fn
        return fn

    return deco


def as_float_tensor(x: Any, what: str) -> torch.Tensor:
    """A 2-D float32 CPU tensor view of ``x`` (numpy or torch), checked to be finite."""
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else torch.as_tensor(x)
    if t.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (items x dims) array, got shape {tuple(t.shape)}")
    t = t.detach().to("cpu", torch.float32).contiguous()
    if not _all_finite(t):
        raise ValueError(f"{what} contain NaN or infinite values")
    return t


def check_norms(t: torch.Tensor, side: str, rows: int = 8192) -> None:
    """Refuse rows of a finite float32 matrix whose norm exceeds :data:`MAX_NORM`.

    Such rows (values of about 1e19 and more) overflow the float32 arithmetic of the
    search, which would otherwise return no item at all for them. Zero rows are accepted:
    they score 0 against every item (ties, so the lowest gallery indices come first).

    Raises:
        UnsearchableFeatures: naming ``side`` (``"query"`` or ``"gallery"``) and the
            first offending row.
    """
    for s in range(0, t.shape[0], rows):
        bad = ~(torch.linalg.vector_norm(t[s: s + rows], dim=1) <= MAX_NORM)
        if bool(bad.any()):
            i = s + int(bad.nonzero()[0, 0])
            norm = float(t[i].double().norm())
            raise UnsearchableFeatures(
                f"{side} features row {i} has norm {norm:.3g}, beyond the {MAX_NORM:.2g} the "
                "search can score in float32: L2-normalise the features before searching")


def _all_finite(t: torch.Tensor, rows: int = 8192) -> bool:
    """True if every value is finite, checked in slices without copying the matrix.

    A float32 sum is finite when every value is (it may also overflow for huge values, in
    which case the slice is checked element by element).
    """
    for s in range(0, t.shape[0], rows):
        part = t[s: s + rows]
        if not bool(torch.isfinite(part.sum())) and not bool(torch.isfinite(part).all()):
            return False
    return True


def topk_search(queries: Any, gallery: Any, k: int = 10, *, backend: str = "auto",
                **options: Any) -> SearchResult:
    """The ``k`` best gallery items of every query by inner product.

    Args:
        queries: ``(Q, D)`` float features.
        gallery: ``(G, D)`` float features.
        k: items per query; when ``k > G`` all ``G`` items are returned.
        backend: a name of :data:`BACKENDS`.
        **options: passed to the backend (e.g. ``threads``, ``precision``).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown search backend {backend!r}; choose one of {sorted(BACKENDS)}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    q = as_float_tensor(queries, "query features")
    g = as_float_tensor(gallery, "gallery features")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query features have {q.shape[1]} dims but gallery features {g.shape[1]}")
    if g.shape[0] == 0:
        raise ValueError("the gallery is empty")
    check_norms(q, "query")
    check_norms(g, "gallery")
    start = time.perf_counter()
    result = BACKENDS[backend](q, g, min(k, g.shape[0]), **options)
    result.stats.setdefault("backend", backend)
    result.stats["seconds"] = time.perf_counter() - start
    return result


@register_backend("auto")
def _auto(q: torch.Tensor, g: torch.Tensor, k: int, **options: Any) -> SearchResult:
    from mcgf.retrieval import faiss_backend

    device = torch.device(options.get("device", "cpu"))
    fast = device.type == "cuda" or default_precision(device) != "fp32"
    if fast or not faiss_backend.available():
        result = _exact(q, g, k, **options)
    else:
        options.pop("precision", None)
        options.pop("device", None)
        result = faiss_backend.flat_search(q, g, k, **options)
    result.stats["backend"] = f"auto -> {result.stats['backend']}"
    return result


@register_backend("exact")
def _exact(q: torch.Tensor, g: torch.Tensor, k: int, **options: Any) -> SearchResult:
    from mcgf.retrieval.exact import exact_search

    return exact_search(q, g, k, **options)


@register_backend("faiss-flat")
def _faiss_flat(q: torch.Tensor, g: torch.Tensor, k: int, **options: Any) -> SearchResult:
    from mcgf.retrieval import faiss_backend

    return faiss_backend.flat_search(q, g, k, **options)


@register_backend("faiss-ivf")
def _faiss_ivf(q: torch.Tensor, g: torch.Tensor, k: int, **options: Any) -> SearchResult:
    from mcgf.retrieval import faiss_backend

    return faiss_backend.ivf_search(q, g, k, **options)
