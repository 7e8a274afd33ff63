"""The README's Python API: load a checkpoint, embed images, index a gallery, search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mcgf.evaluation.features import embed_images
from mcgf.models import load_embedder
from mcgf.retrieval import GalleryIndex
from tests.evaluation.conftest import tiny_u1652  # noqa: F401  (fixture)
from tests.models.test_checkpoint_embedder import save_tiny


def test_five_line_api(tmp_path: Path, tiny_u1652: Path) -> None:  # noqa: F811
    save_tiny(tmp_path / "ck")
    model = load_embedder(str(tmp_path / "ck"))
    tiles = sorted((tiny_u1652 / "test" / "gallery_satellite").glob("*/*"))
    index = GalleryIndex(embed_images(model, tiles, view="satellite"), names=[t.parent.name for t in tiles])
    drones = sorted((tiny_u1652 / "test" / "query_drone").glob("*/*"))[:2]
    top = index.top_names(embed_images(model, drones, view="drone"), k=3)
    assert len(top) == 2 and all(len(row) == 3 and len(set(row)) == 3 for row in top)
    assert set(top[0]) <= {t.parent.name for t in tiles}

    # The names follow the search's ranking, and features are unit vectors.
    feats = embed_images(model, tiles, view="satellite")
    assert np.allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    q = feats[:1]
    assert index.top_names(q, k=1) == [[tiles[0].parent.name]]
    result = index.search(q, k=len(tiles))
    assert np.all(np.diff(result.scores[0]) <= 1e-6)


def test_index_checks_names() -> None:
    with pytest.raises(ValueError, match="2 names for 3 gallery rows"):
        GalleryIndex(np.eye(3, dtype=np.float32), names=["a", "b"])
    idx = GalleryIndex(np.eye(3, dtype=np.float32))
    assert idx.top_names(np.array([[0, 1, 0]], np.float32), k=1) == [["1"]]


def test_top_names_never_names_a_missing_item(monkeypatch: pytest.MonkeyPatch) -> None:
    from mcgf.retrieval.search import SearchResult

    idx = GalleryIndex(np.eye(3, dtype=np.float32), names=["a", "b", "c"])
    missing = SearchResult(indices=np.array([[1, -1]]), scores=np.array([[1.0, -np.inf]],
                                                                       np.float32))
    monkeypatch.setattr(GalleryIndex, "search", lambda self, q, k, **kw: missing)
    with pytest.raises(ValueError, match="no item"):
        idx.top_names(np.array([[0, 1, 0]], np.float32), k=2)
