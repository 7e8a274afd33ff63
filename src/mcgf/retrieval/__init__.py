"""Retrieval: protocol metrics (:mod:`.metrics`), full-gallery ranking (:mod:`.ranking`)
and exact top-k search over large galleries (:mod:`.search`).

Nothing here knows about models, images or training: inputs are feature and label arrays.
"""

from mcgf.retrieval.index import GalleryIndex
from mcgf.retrieval.metrics import (
    JUNK_LABEL,
    PerQuery,
    Summary,
    cmc_curve,
    per_query_metrics,
    summarize,
    top1_percent_index,
)
from mcgf.retrieval.ranking import rank_and_score
from mcgf.retrieval.search import BACKENDS, SearchResult, register_backend, topk_search

__all__ = [
    "BACKENDS",
    "JUNK_LABEL",
    "GalleryIndex",
    "PerQuery",
    "SearchResult",
    "Summary",
    "cmc_curve",
    "per_query_metrics",
    "rank_and_score",
    "register_backend",
    "summarize",
    "top1_percent_index",
    "topk_search",
]
