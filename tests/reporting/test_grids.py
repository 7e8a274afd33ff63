"""Match grids: the retrieval behind them and the frames they draw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mcgf.data.layout import load_university1652
from mcgf.evaluation.features import extract_features
from mcgf.models.baselines import ThumbnailEmbedder
from mcgf.panels import fit_square
from mcgf.reporting.drawing import COLOURS, GridLayout
from mcgf.reporting.featurestore import FeatureStore
from mcgf.reporting.grids import drone_to_satellite, render_grid, satellite_to_drone
from tests.reporting.conftest import make_dataset

CONDITIONS = ("normal", "fog", "dark")


@pytest.fixture
def setup(tmp_path: Path) -> tuple[FeatureStore, dict]:
    root = make_dataset(tmp_path / "data", views=2)
    test = load_university1652(root, splits=("test",)).test
    store = FeatureStore(ThumbnailEmbedder(grid=4, size=16), [tmp_path / "cache"], weather_seed=1,
                         device="cpu", progress=False)
    return store, test


def brute_force(store: FeatureStore, queries, gallery, condition_q: str, condition_g: str) -> np.ndarray:
    """Independent ranking: embed both sides, sort by score (stable: ties by index)."""
    tq, idq = store.transform(condition_q)
    tg, idg = store.transform(condition_g)
    q = extract_features(queries, store.embedder, transform=tq, transform_id=idq or "", progress=False,
                         device="cpu").features
    g = extract_features(gallery, store.embedder, transform=tg, transform_id=idg or "", progress=False,
                         device="cpu").features
    scores = q.astype(np.float64) @ g.astype(np.float64).T
    return np.argsort(-scores, axis=1, kind="stable")[:, :5]


def test_drone_to_satellite_rows_follow_the_retrieval(setup) -> None:
    store, test = setup
    queries = [test["query_drone"].records()[i] for i in (0, 3, 8)]  # 0101, 0102, 0105 (no tile)
    gallery = test["gallery_satellite"].records()
    gs = drone_to_satellite(store, queries, gallery, CONDITIONS, k=5)
    assert [g.label for g in gs.grids] == [101, 102, 105] and not gs.missing
    for cond in CONDITIONS:
        expect = brute_force(store, queries, gallery, cond, "normal")
        for qi, grid in enumerate(gs.grids):
            line = next(li for li in grid.lines if li.condition == cond)
            assert [gallery.index(r) for r in line.items] == expect[qi].tolist()
            assert line.is_match == [r.label == grid.label for r in line.items]
            assert line.scores == sorted(line.scores, reverse=True)
    # The location without a tile never has a match; the others have theirs somewhere in
    # the 5-tile gallery (all 5 tiles are shown).
    assert not any(any(li.is_match) for li in gs.grids[2].lines)
    assert all(sum(li.is_match) == 1 for g in gs.grids[:2] for li in g.lines)


def test_the_picture_marks_the_true_match_where_the_retrieval_says(setup) -> None:
    store, test = setup
    queries = [test["query_drone"].records()[i] for i in (0, 5)]
    gs = drone_to_satellite(store, queries, test["gallery_satellite"].records(), CONDITIONS, k=4)
    lay = GridLayout(tile=40, border=3)
    shown = []

    def load(record, condition):
        shown.append((record.view, condition))
        return fit_square(np.full((8, 8, 3), 128, np.uint8), 8)

    for grid in gs.grids:
        pic = render_grid(grid, load, layout=lay)
        for r, line in enumerate(grid.lines):
            y, x = lay.cell(r, 0)
            assert tuple(pic[y + 1, x + 1]) == COLOURS["query"]
            for c, ok in enumerate(line.is_match, start=1):
                y, x = lay.cell(r, c)
                assert tuple(pic[y + 1, x + 1]) == COLOURS["match" if ok else "wrong"]
    # Drone queries are shown under the row's condition, satellite tiles always clean.
    assert {c for v, c in shown if v == "drone"} == set(CONDITIONS)
    assert {c for v, c in shown if v == "satellite"} == {"normal"}


def test_satellite_to_drone_uses_the_cache_for_weathered_galleries(setup) -> None:
    store, test = setup
    sat = [test["query_satellite"].records()[i] for i in (0, 2)]
    gallery = test["gallery_drone"].records()
    gs = satellite_to_drone(store, sat, gallery, CONDITIONS, k=5)
    # Only the clean gallery is computed unasked; weathered ones need the cache or consent.
    assert gs.missing == ["fog", "dark"]
    assert [li.condition for li in gs.grids[0].lines] == ["normal"]
    full = satellite_to_drone(store, sat, gallery, CONDITIONS, k=5, compute_weather=True)
    assert not full.missing
    again = satellite_to_drone(store, sat, gallery, CONDITIONS, k=5)  # now cached
    assert not again.missing
    for cond in CONDITIONS:
        expect = brute_force(store, sat, gallery, "normal", cond)
        for qi, grid in enumerate(again.grids):
            line = next(li for li in grid.lines if li.condition == cond)
            assert [gallery.index(r) for r in line.items] == expect[qi].tolist()


def test_feature_key_finds_what_extract_features_stored(setup, tmp_path: Path) -> None:
    store, test = setup
    records = test["gallery_drone"].records()
    assert store.cached(records, "drone", "fog") is None
    transform, tid = store.transform("fog")
    fs = extract_features(records, store.embedder, transform=transform, transform_id=tid,
                          cache_dir=store.caches[0], progress=False, device="cpu")
    hit = store.cached(records, "drone", "fog")
    assert hit is not None and hit.from_cache
    np.testing.assert_array_equal(hit.features, fs.features)
    # Another seed is another entry.
    other = FeatureStore(store.embedder, store.caches, weather_seed=2)
    assert other.cached(records, "drone", "fog") is None
