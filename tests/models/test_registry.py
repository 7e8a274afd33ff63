"""Embedder registry and the training-free thumbnail baseline."""

from __future__ import annotations

import pytest
import torch

from mcgf.errors import UserError
from mcgf.models import (
    CHECKPOINT_EMBEDDER,
    Embedder,
    available_embedders,
    build_embedder,
    parse_embedder_args,
    register_embedder,
)
from mcgf.models.baselines import ThumbnailEmbedder


def test_thumbnail_is_registered_and_well_formed() -> None:
    assert "thumbnail" in available_embedders()
    emb = build_embedder("thumbnail", grid=4, size=16)
    assert isinstance(emb, Embedder)
    assert emb.input_size == (16, 16) and "grid=4" in emb.identity
    x = torch.rand(5, 3, 16, 16)
    f = emb.embed(x)
    assert f.shape == (5, 48)
    assert torch.allclose(f.norm(dim=1), torch.ones(5), atol=1e-5)
    # per-channel standardisation: brightness/contrast changes leave the feature unchanged
    assert torch.allclose(emb.embed(0.3 * x + 0.1), f, atol=1e-4)
    # but the layout matters
    assert not torch.allclose(emb.embed(torch.flip(x, dims=[3])), f, atol=1e-3)


def test_identity_differs_by_options() -> None:
    assert build_embedder("thumbnail", grid=4).identity != build_embedder("thumbnail", grid=8).identity


def test_registry_errors() -> None:
    with pytest.raises(UserError, match="unknown embedder"):
        build_embedder("nope")
    with pytest.raises(UserError, match="no option 'colour'"):
        build_embedder("thumbnail", colour=1)
    with pytest.raises(UserError, match="grid"):
        build_embedder("thumbnail", grid=100, size=16)
    if CHECKPOINT_EMBEDDER not in available_embedders():
        with pytest.raises(UserError, match="checkpoint"):
            build_embedder(CHECKPOINT_EMBEDDER, checkpoint="x.pt")


def test_register_custom_embedder() -> None:
    @register_embedder("unit-test-constant")
    def make(dim: int = 3) -> ThumbnailEmbedder:
        return ThumbnailEmbedder(grid=1, size=dim)

    assert build_embedder("unit-test-constant", dim=4).input_size == (4, 4)
    with pytest.raises(ValueError):
        register_embedder("unit-test-constant")(lambda: None)  # type: ignore[arg-type,return-value]


def test_parse_embedder_args() -> None:
    assert parse_embedder_args(["grid=8", "scale=0.5", "flag=true", "name=x-y", "my-opt=1"]) == {
        "grid": 8, "scale": 0.5, "flag": True, "name": "x-y", "my_opt": 1,
    }
    with pytest.raises(UserError):
        parse_embedder_args(["novalue"])


def test_embedder_args_read_values_like_set_overrides() -> None:
    """--embedder-arg and --set spell values the same way."""
    from mcgf.config import apply_overrides

    raw = {"a": "1e-3", "b": "null", "c": "[1, 2]", "d": "False", "e": "", "f": "a: b: c"}
    from_args = parse_embedder_args([f"{k}={v}" for k, v in raw.items()])
    from_set = apply_overrides({}, [f"s.{k}={v}" for k, v in raw.items()])["s"]
    assert from_args == from_set == {"a": 1e-3, "b": None, "c": [1, 2], "d": False, "e": "", "f": "a: b: c"}
