"""Top-k match grids: a query under each weather condition and its best gallery items.

The retrieval is computed once for all picked queries and conditions
(:func:`top_matches`: one :func:`~mcgf.retrieval.search.topk_search` call over the
stacked query features; each condition's folder is embedded once, or taken from the
evaluation's feature cache). Drawing (:func:`render_grid`) is separate and only turns
the retrieved records into a :func:`~mcgf.reporting.drawing.draw_grid` picture.

Directions:

* ``drone->satellite``: the drone query rendered under each condition, ranked against
  the clean satellite gallery (satellite images are never weathered);
* ``satellite->drone``: the clean satellite query ranked against the drone gallery
  weathered with each condition (the shown gallery drones carry that weather).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from mcgf.data.layout import ImageRecord
from mcgf.evaluation.features import FeatureSet
from mcgf.reporting.drawing import GridLayout, GridRow, Tile, draw_grid
from mcgf.reporting.featurestore import FeatureStore
from mcgf.retrieval.search import topk_search
from mcgf.weather import CLEAN

#: direction → (query folder, gallery folder, query view, gallery view).
GRID_DIRECTIONS: dict[str, tuple[str, str, str, str]] = {
    "drone->satellite": ("query_drone", "gallery_satellite", "drone", "satellite"),
    "satellite->drone": ("query_satellite", "gallery_drone", "satellite", "drone"),
}


@dataclass
class TopMatches:
    """Top-k of each query: gallery ``indices`` (rows of the gallery record list),
    ``scores`` (cosine) and ``is_match`` (gallery label == query label)."""

    indices: np.ndarray
    scores: np.ndarray
    is_match: np.ndarray


def top_matches(query: np.ndarray, query_labels: np.ndarray, gallery: FeatureSet,
                gallery_labels: np.ndarray, k: int = 5) -> TopMatches:
    """The ``k`` best valid gallery items of every query (rows of ``query``), best first.

    Gallery images that could not be read (``gallery.valid`` False) are left out, as in
    the evaluation; returned indices refer to the full gallery list.
    """
    kept = np.flatnonzero(gallery.valid)
    if kept.size == 0:
        raise ValueError("no readable gallery image")
    res = topk_search(query, gallery.features[kept], min(k, kept.size), backend="exact")
    idx = kept[res.indices]
    return TopMatches(idx, res.scores, gallery_labels[idx] == np.asarray(query_labels)[:, None])


@dataclass
class GridLine:
    """One row of a grid: the query (shown under ``condition``) and its best items."""

    condition: str
    query: ImageRecord
    items: list[ImageRecord]
    scores: list[float]
    is_match: list[bool]


@dataclass
class QueryGrid:
    """The grid of one query in one direction."""

    direction: str
    label: int
    lines: list[GridLine] = field(default_factory=list)


@dataclass
class GridSet:
    """Grids of every picked query in one direction, plus the conditions left out."""

    direction: str
    grids: list[QueryGrid]
    missing: list[str] = field(default_factory=list)


def drone_to_satellite(store: FeatureStore, queries: Sequence[ImageRecord],
                       gallery: Sequence[ImageRecord], conditions: Sequence[str],
                       k: int = 5) -> GridSet:
    """Grids of drone ``queries`` under each condition against the clean satellite gallery."""
    g = store.get(gallery, "satellite", desc="gallery_satellite")
    assert g is not None
    glabels = np.array([r.label for r in gallery], np.int64)
    feats, labels = [], []
    for cond in conditions:
        f = store.get(queries, "drone", cond, store=False, desc=f"queries/{cond}")
        assert f is not None
        feats.append(f.features)
        labels.append([r.label for r in queries])
    top = top_matches(np.concatenate(feats), np.concatenate(labels), g, glabels, k)
    grids = [QueryGrid("drone->satellite", q.label) for q in queries]
    n = len(queries)
    for ci, cond in enumerate(conditions):
        for qi, q in enumerate(queries):
            row = ci * n + qi
            grids[qi].lines.append(GridLine(
                cond, q, [gallery[i] for i in top.indices[row]],
                top.scores[row].tolist(), top.is_match[row].tolist()))
    return GridSet("drone->satellite", grids)


def satellite_to_drone(store: FeatureStore, queries: Sequence[ImageRecord],
                       gallery: Sequence[ImageRecord], conditions: Sequence[str], k: int = 5,
                       *, compute_weather: bool = False) -> GridSet:
    """Grids of clean satellite ``queries`` against the drone gallery under each condition.

    The clean gallery (:data:`~mcgf.weather.CLEAN`) is embedded when not cached; a weathered gallery only
    with ``compute_weather`` (it is as large as an evaluation), otherwise conditions the
    cache lacks are listed in :attr:`GridSet.missing`.
    """
    q = store.get(queries, "satellite", store=False, desc="satellite queries")
    assert q is not None
    qlabels = np.array([r.label for r in queries], np.int64)
    glabels = np.array([r.label for r in gallery], np.int64)
    grids = [QueryGrid("satellite->drone", r.label) for r in queries]
    missing = []
    for cond in conditions:
        g = store.get(gallery, "drone", cond, compute=cond == CLEAN or compute_weather,
                      desc="gallery_drone")
        if g is None:
            missing.append(cond)
            continue
        top = top_matches(q.features, qlabels, g, glabels, k)
        for qi, rec in enumerate(queries):
            grids[qi].lines.append(GridLine(
                cond, rec, [gallery[i] for i in top.indices[qi]],
                top.scores[qi].tolist(), top.is_match[qi].tolist()))
    return GridSet("satellite->drone", grids, missing)


ImageLoader = Callable[[ImageRecord, str], np.ndarray]


def render_grid(grid: QueryGrid, load: ImageLoader, *, layout: GridLayout | None = None) -> np.ndarray:
    """The picture of one query's grid.

    Args:
        grid: the retrieved rows.
        load: ``load(record, condition)`` → the (H, W, 3) uint8 image to show; drone
            images are shown under the row's condition, satellite images clean.
        layout: geometry of the picture.
    """
    drone_queries = grid.direction.startswith("drone")
    rows = []
    for line in grid.lines:
        tiles = [Tile(load(line.query, line.condition if drone_queries else CLEAN), "query",
                      f"query {line.query.path.parent.name}")]
        for rec, score, ok in zip(line.items, line.scores, line.is_match, strict=True):
            status = "match" if ok else ("unknown" if rec.label < 0 else "wrong")
            shown = CLEAN if drone_queries else line.condition
            tiles.append(Tile(load(rec, shown), status, f"{rec.path.parent.name}  {score:.3f}"))
        rows.append(GridRow(line.condition, tiles))
    k = max((len(line.items) for line in grid.lines), default=0)
    return draw_grid(rows, headers=["query", *(f"#{i + 1}" for i in range(k))], layout=layout)
