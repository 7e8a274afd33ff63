"""LPN: square rings, their pooling, the last-stride change, the objective and the
retrieval embedding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mcgf.errors import UserError
from mcgf.models.lpn import LPNModel, ring_index, ring_pool, upsampled_side
from mcgf.models.model_registry import create_model

ARGS = {"layers": [1, 1, 1, 1], "channels": [8, 8, 16, 16], "stem_width": 8}


def tiny(**kw: object) -> LPNModel:
    torch.manual_seed(0)
    opts = {"backbone_name": "resnet18", "img_size": 64, "backbone_args": ARGS, "num_classes": 3,
            "bottleneck_dim": 8, "dropout": 0.0, **kw}
    return create_model("lpn", **opts)  # type: ignore[return-value]


def test_rings_are_concentric_squares() -> None:
    index = ring_index(8, 8, 4)
    # One cell per ring step (8 / (2·4)): a 2x2 centre, then squares of side 4, 6 and 8.
    expected = torch.tensor([[3, 3, 3, 3, 3, 3, 3, 3],
                             [3, 2, 2, 2, 2, 2, 2, 3],
                             [3, 2, 1, 1, 1, 1, 2, 3],
                             [3, 2, 1, 0, 0, 1, 2, 3],
                             [3, 2, 1, 0, 0, 1, 2, 3],
                             [3, 2, 1, 1, 1, 1, 2, 3],
                             [3, 2, 2, 2, 2, 2, 2, 3],
                             [3, 3, 3, 3, 3, 3, 3, 3]])
    assert torch.equal(index, expected)
    assert torch.bincount(ring_index(16, 16, 4).flatten()).tolist() == [16, 48, 80, 112]
    # A map whose side is not a multiple of 2·blocks: the remainder joins the outer ring.
    assert torch.bincount(ring_index(10, 10, 4).flatten()).tolist() == [4, 12, 20, 64]
    assert torch.equal(ring_index(6, 6, 1), torch.zeros(6, 6, dtype=torch.long))
    with pytest.raises(ValueError):
        ring_index(6, 6, 4)


def test_ring_pool_is_the_mean_of_each_ring_and_the_public_pooling_up_to_a_factor() -> None:
    g = torch.Generator().manual_seed(0)
    fmap = torch.randn(2, 5, 8, 8, generator=g)
    pooled = ring_pool(fmap, 4)
    assert pooled.shape == (2, 5, 4)
    index = ring_index(8, 8, 4)
    for r in range(4):
        torch.testing.assert_close(pooled[:, :, r], fmap[:, :, index == r].mean(-1))
    # The public code averages each ring over its bounding square with the inside zeroed:
    # the sum over the ring divided by the square's area (the whole map for the last).
    squares = [4, 16, 36, 64]
    counts = torch.bincount(index.flatten()).tolist()
    for r in range(4):
        public = fmap[:, :, index == r].sum(-1) / squares[r]
        torch.testing.assert_close(pooled[:, :, r] * counts[r] / squares[r], public)


def test_small_maps_are_upsampled_first() -> None:
    fmap = torch.arange(4.0).view(1, 1, 2, 2)
    pooled = ring_pool(fmap, 4)  # 2x2 < 8: bilinear (corners kept) to 8x8, then rings
    assert pooled.shape == (1, 1, 4) and torch.isfinite(pooled).all()
    # Corners aligned: the map's mean is kept by the centre ring, values stay in range.
    torch.testing.assert_close(pooled[0, 0, 0], torch.tensor(1.5))
    assert float(pooled.min()) >= 0 and float(pooled.max()) <= 3
    torch.testing.assert_close(ring_pool(torch.full((1, 2, 3, 3), 2.0), 2), torch.full((1, 2, 2), 2.0))


def test_odd_rings_are_cut_as_the_public_code_cuts_them() -> None:
    # Centre h // 2, step h // (2·blocks): on an odd side the squares sit one cell towards
    # the top left and the spare row and column join the outer ring.
    expected5 = torch.tensor([[1, 1, 1, 1, 1],
                              [1, 0, 0, 1, 1],
                              [1, 0, 0, 1, 1],
                              [1, 1, 1, 1, 1],
                              [1, 1, 1, 1, 1]])
    assert torch.equal(ring_index(5, 5, 2), expected5)
    expected6 = torch.tensor([[1, 1, 1, 1, 1, 1],
                              [1, 1, 1, 1, 1, 1],
                              [1, 1, 0, 0, 1, 1],
                              [1, 1, 0, 0, 1, 1],
                              [1, 1, 1, 1, 1, 1],
                              [1, 1, 1, 1, 1, 1]])
    assert torch.equal(ring_index(6, 6, 2), expected6)
    assert torch.bincount(ring_index(9, 9, 4).flatten()).tolist() == [4, 12, 20, 45]


def test_small_maps_are_upsampled_to_the_public_size() -> None:
    # The public code moves the centre side // 2 to blocks: 2·blocks cells on an even
    # side, 2·blocks + 1 on an odd one.
    assert [upsampled_side(s, 4) for s in (2, 3, 5, 6, 7, 8, 9)] == [8, 9, 9, 8, 9, 8, 9]
    g = torch.Generator().manual_seed(0)
    for side, up in ((7, 9), (5, 9), (6, 8)):
        fmap = torch.randn(2, 3, side, side, generator=g)
        big = F.interpolate(fmap, size=(up, up), mode="bilinear", align_corners=True)
        index = ring_index(up, up, 4)
        expected = torch.stack([big[:, :, index == r].mean(-1) for r in range(4)], dim=-1)
        torch.testing.assert_close(ring_pool(fmap, 4), expected)
    # Only the short side of a non-square map grows.
    fmap = torch.randn(1, 2, 7, 12, generator=g)
    big = F.interpolate(fmap, size=(9, 12), mode="bilinear", align_corners=True)
    index = ring_index(9, 12, 4)
    expected = torch.stack([big[:, :, index == r].mean(-1) for r in range(4)], dim=-1)
    torch.testing.assert_close(ring_pool(fmap, 4), expected)


def test_last_stride_one_doubles_the_final_map() -> None:
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert tiny(last_stride=1).feature_map(images).shape[-2:] == (4, 4)
        assert tiny(last_stride=2).feature_map(images).shape[-2:] == (2, 2)
    with pytest.raises(UserError, match=r"model\.last_stride: 2"):
        create_model("lpn", backbone_name="vit_tiny_patch16_224", img_size=32, num_classes=3)
    # A ViT works with its map as it is.
    vit = create_model("lpn", backbone_name="vit_tiny_patch16_224", img_size=32, num_classes=3,
                       last_stride=2, blocks=1, bottleneck_dim=4)
    assert vit.eval().embed(torch.randn(2, 3, 32, 32), "drone").shape == (2, 4)


def test_loss_sums_every_ring_and_view() -> None:
    model = tiny(blocks=2, label_smoothing=0.1).train()
    g = torch.Generator().manual_seed(1)
    batch = {"drone": torch.randn(4, 3, 64, 64, generator=g), "drone_label": torch.tensor([0, 0, 1, 2]),
             "satellite": torch.randn(3, 3, 64, 64, generator=g), "satellite_label": torch.tensor([0, 1, 2])}
    terms = model.loss(batch)
    assert set(terms) == {"ce", "total"} and model.loss_weights == {"ce": 1.0}
    expected = torch.zeros(())
    for view in ("drone", "satellite"):
        rings = model.rings(batch[view])
        for r, head in enumerate(model.heads):
            expected = expected + F.cross_entropy(head(rings[:, :, r])[1], batch[f"{view}_label"],
                                                  label_smoothing=0.1)
    torch.testing.assert_close(terms["ce"], expected)
    torch.testing.assert_close(terms["total"], terms["ce"])


def test_embedding_weighs_every_ring_alike() -> None:
    model = tiny(blocks=4).eval()
    with torch.no_grad():
        emb = model.embed(torch.randn(3, 3, 64, 64), "satellite")
    assert emb.shape == (3, 4 * 8)
    torch.testing.assert_close(emb.view(3, 4, 8).norm(dim=2), torch.full((3, 4), 0.5))


def test_encoder_trains_at_a_fraction_of_the_rate() -> None:
    model = tiny(encoder_lr_scale=0.1)
    groups = model.param_groups(0.01, 5e-4)
    encoder = {id(p) for p in model.encoder.parameters()}
    for g in groups:
        in_encoder = {id(p) in encoder for p in g["params"]}
        assert len(in_encoder) == 1  # a group is all encoder or all heads
        assert g["lr"] == pytest.approx(0.001 if in_encoder == {True} else 0.01)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
