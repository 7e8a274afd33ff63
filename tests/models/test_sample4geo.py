"""Sample4Geo: the symmetric, label-smoothed InfoNCE with a learnable logit scale, and no
classifier."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mcgf.models.model_registry import create_model
from mcgf.models.sample4geo import Sample4GeoModel, soft_infonce

ARGS = {"depths": [1, 1, 1, 1], "dims": [8, 8, 16, 16]}


def tiny(**kw: object) -> Sample4GeoModel:
    torch.manual_seed(0)
    opts = {"backbone_name": "convnext_atto", "img_size": 32, "backbone_args": ARGS,
            "num_classes": 3, **kw}
    return create_model("sample4geo", **opts)  # type: ignore[return-value]


def test_one_positive_per_row_is_clips_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 5, generator=g)
    target = torch.tensor([2, 0, 4, 1, 3])
    positives = F.one_hot(target, 5).bool()
    for eps in (0.0, 0.1):
        torch.testing.assert_close(soft_infonce(logits, positives, eps),
                                   F.cross_entropy(logits, target, label_smoothing=eps))


def test_several_positives_share_the_target() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    positives = torch.tensor([[True, True, False], [False, False, False]])  # row 2: skipped
    logp = F.log_softmax(logits[0], dim=0)
    expected = -(0.9 * 0.5 * (logp[0] + logp[1]) + 0.1 / 3 * logp.sum())
    torch.testing.assert_close(soft_infonce(logits, positives, 0.1), expected)
    assert float(soft_infonce(logits, torch.zeros(2, 3, dtype=torch.bool))) == 0.0


def test_loss_is_symmetric_infonce_over_the_pooled_features() -> None:
    model = tiny(label_smoothing=0.1, init_temperature=0.05).train()
    g = torch.Generator().manual_seed(1)
    batch = {"drone": torch.randn(3, 3, 32, 32, generator=g), "drone_label": torch.tensor([2, 0, 1]),
             "satellite": torch.randn(3, 3, 32, 32, generator=g), "satellite_label": torch.tensor([0, 1, 2])}
    terms = model.loss(batch)
    assert set(terms) == {"infonce", "total"} and model.loss_weights == {"infonce": 1.0}
    d = F.normalize(model.encoder(batch["drone"]), dim=1)
    s = F.normalize(model.encoder(batch["satellite"]), dim=1)
    logits = 20.0 * d @ s.T  # scale 1 / 0.05
    target = torch.tensor([2, 0, 1])
    expected = 0.5 * (F.cross_entropy(logits, target, label_smoothing=0.1)
                      + F.cross_entropy(logits.T, target.argsort(), label_smoothing=0.1))
    torch.testing.assert_close(terms["infonce"], expected)
    terms["total"].backward()
    assert model.log_scale.grad is not None and float(model.log_scale.grad) != 0.0


def test_logit_scale_is_clamped_and_there_is_no_classifier() -> None:
    model = tiny(max_logit_scale=50.0)
    assert float(model.logit_scale.detach()) == pytest.approx(1 / 0.07)
    with torch.no_grad():
        model.log_scale.fill_(math.log(1000.0))
    assert float(model.logit_scale.detach()) == pytest.approx(50.0)
    params = sum(p.numel() for p in model.parameters())
    assert params == sum(p.numel() for p in model.encoder.parameters()) + 1
    model.eval()
    with torch.no_grad():
        x = torch.randn(2, 3, 32, 32)
        torch.testing.assert_close(model.embed(x, "drone"), F.normalize(model.encoder(x), dim=1))
    assert model.label_smoothing == pytest.approx(0.1)  # Sample4Geo's default


def test_layer_decay_scales_the_encoder_learning_rates() -> None:
    model = create_model("sample4geo", num_classes=3, backbone_name="vit_tiny_patch16_224",
                         img_size=32, backbone_args={"depth": 2})
    plain = model.param_groups(1e-3, 0.05)
    assert {g["lr"] for g in plain} == {1e-3}
    groups = model.param_groups(1e-3, 0.05, 0.5)
    lr = {id(p): g["lr"] for g in groups for p in g["params"]}
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert set(lr) == {id(p) for p in model.parameters()}
    enc = model.encoder
    assert lr[id(enc.blocks[1].mlp.fc1.weight)] == 2 * lr[id(enc.blocks[0].mlp.fc1.weight)]
    assert lr[id(enc.pos_embed)] < lr[id(enc.blocks[0].mlp.fc1.weight)]
    assert lr[id(model.log_scale)] == 1e-3 and decay[id(model.log_scale)] == 0.0
    assert decay[id(enc.pos_embed)] == 0.0 and decay[id(enc.blocks[0].mlp.fc1.weight)] == 0.05
