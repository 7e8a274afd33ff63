"""Feature cache entries are written straight to disk, in the same bytes as before."""

from __future__ import annotations

import io
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from mcgf.evaluation import cache as cache_mod
from mcgf.evaluation.cache import CachedFeatures, FeatureCache


@pytest.mark.parametrize("with_safetensors", [True, False])
def test_store_writes_the_file_without_an_image_of_it_in_memory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_safetensors: bool) -> None:
    st = cache_mod._safetensors()
    if with_safetensors and st is None:
        pytest.skip("safetensors is not installed")
    if not with_safetensors:
        monkeypatch.setattr(cache_mod, "_safetensors", lambda: None)
    rng = np.random.default_rng(0)
    features = rng.standard_normal((4000, 256)).astype(np.float32)  # 4 MB
    valid = rng.random(4000) > 0.1
    features[~valid] = 0.0
    store = FeatureCache(tmp_path)
    tracemalloc.start()
    try:
        path = store.store("k", CachedFeatures(features, valid), {"what": "test"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < features.nbytes // 4
    got = store.load("k")
    assert got is not None
    assert np.array_equal(got.features, features) and np.array_equal(got.valid, valid)
    if with_safetensors:  # the bytes the in-memory form gives
        blob = st.save({"features": features, "valid": valid.astype(np.uint8)},
                       metadata={"description": json.dumps({"what": "test"})})
        assert path.read_bytes() == blob
    else:
        buf = io.BytesIO()
        np.save(buf, features, allow_pickle=False)
        assert path.read_bytes() == buf.getvalue()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["k.safetensors"] if with_safetensors else ["k.npy", "k.json"])
