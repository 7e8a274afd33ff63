"""A gallery index: embedded gallery items with their names, searched by inner product.

A thin holder over :func:`~mcgf.retrieval.search.topk_search` so that an application
embeds its gallery once, keeps the names beside the features, and asks for the names of
the best matches. Features are expected L2-normalised (inner product = cosine).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mcgf.retrieval.search import SearchResult, as_float_tensor, check_norms, topk_search


class GalleryIndex:
    """Gallery features ``(G, D)`` and optional names, searchable with :meth:`search`.

    The exact backend's scorer (a bfloat16 or int8 copy of the features, with bounds) is
    prepared at the first search and kept for the next ones. The index holds its own
    copy of the features as they were when it was built (a later in-place change of the
    array it was built from does not reach it); a change of :attr:`features` made by
    PyTorch operations that count as changes of the tensor (in place, on it or on a view
    of it: its version counter), or any assignment to it, makes the next search prepare
    the scorer again. Writes that bypass the version counter (through ``.numpy()``,
    ``.data`` or ``torch.from_numpy`` aliases of its memory) are not seen, and a search
    with the outdated scorer can miss the best items: after such writes, assign the
    features again (``index.features = index.features``).

    Args:
        features: the gallery embeddings.
        names: one name per row (e.g. file stems or location ids); defaults to row numbers.
        backend: search backend (``auto``, ``exact``, ``faiss-flat``, ...).
    """

    def __init__(self, features: Any, names: Sequence[str] | None = None, *, backend: str = "auto") -> None:
        self._scorers: dict[Any, Any] = {}  # the exact backend's, kept between searches
        self.features = as_float_tensor(features, "gallery features").contiguous()
        if _shares_memory(self.features, features):
            self.features = self.features.clone()
        if self.features.shape[0] == 0:
            raise ValueError("the gallery is empty")
        check_norms(self.features, "gallery")  # refused when built, not at the first search
        if names is not None and len(names) != self.features.shape[0]:
            raise ValueError(f"{len(names)} names for {self.features.shape[0]} gallery rows")
        self.names = [str(n) for n in names] if names is not None else [str(i) for i in range(len(self))]
        self.backend = backend

    @property
    def features(self) -> torch.Tensor:
        """The gallery features ``(G, D)``; assigning them drops the kept scorer."""
        return self._features

    @features.setter
    def features(self, value: torch.Tensor) -> None:
        self._features = value
        self._scorers.clear()

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def search(self, queries: Any, k: int = 10, **options: Any) -> SearchResult:
        """The ``k`` best gallery rows of every query (see :func:`topk_search`)."""
        if self.backend in _CACHING_BACKENDS:  # a registered backend may not take it
            options.setdefault("scorer_cache", self._scorers)
        return topk_search(queries, self.features, k, backend=self.backend, **options)

    def top_names(self, queries: Any, k: int = 10, **options: Any) -> list[list[str]]:
        """Names of the ``k`` best gallery items of every query, best first."""
        result = self.search(queries, k, **options)
        # A search marks "no item" with -1; indexing with it would name the last item.
        if (result.indices < 0).any():
            raise ValueError("the search returned no item for some queries (non-finite or "
                             "zero features?): refusing to name gallery items for them")
        names = np.asarray(self.names, dtype=object)
        return [list(row) for row in names[result.indices]]


#: Backends that take the exact backend's ``scorer_cache`` (``auto`` may run ``exact``).
_CACHING_BACKENDS = frozenset({"auto", "exact"})


def _shares_memory(tensor: Any, source: Any) -> bool:
    """Whether ``tensor`` may be a view of the memory of ``source`` (an array or tensor)."""
    if isinstance(source, np.ndarray):
        return bool(np.shares_memory(tensor.numpy(), source))
    return isinstance(source, torch.Tensor) and source.device.type == "cpu" and (
        tensor.untyped_storage().data_ptr() == source.untyped_storage().data_ptr())


__all__ = ["GalleryIndex"]
