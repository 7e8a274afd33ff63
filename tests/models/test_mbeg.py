"""MBEG: a frozen encoder that never changes, the head's objective (CE + NT-Xent), and the
refusal to train a frozen encoder that has no weights."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mcgf.models.base import NotTrainableError, check_trainable
from mcgf.models.heads import ClassBlock
from mcgf.models.mbeg import MBEGModel, nt_xent
from mcgf.models.model_registry import create_model
from mcgf.training.step import encoder_gradient_norms

ARGS = {"layers": [1, 1, 1, 1], "channels": [8, 8, 16, 16], "stem_width": 8}


def tiny(**kw: object) -> MBEGModel:
    torch.manual_seed(0)
    opts = {"backbone_name": "resnet18", "img_size": 32, "backbone_args": ARGS, "num_classes": 3,
            "bottleneck_dim": 8, "dropout": 0.0, "allow_random_encoder": True, **kw}
    return create_model("mbeg", **opts)  # type: ignore[return-value]


def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"drone": torch.randn(6, 3, 32, 32, generator=g),
            "drone_label": torch.tensor([0, 0, 1, 1, 2, 2]),
            "satellite": torch.randn(3, 3, 32, 32, generator=g),
            "satellite_label": torch.tensor([0, 1, 2])}


def test_the_encoder_is_frozen_and_stays_in_eval_mode() -> None:
    model = tiny().train()
    assert model.encoder_parameters() == []
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert not model.encoder.training and model.head.training
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    terms = model.loss(batch())
    terms["total"].backward()
    # No gradient reaches the encoder and its BatchNorm statistics did not move.
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())
    assert any(p.grad is not None for p in model.head.parameters())
    groups = model.param_groups(1e-3, 0.01, 0.9)
    assert {id(p) for g in groups for p in g["params"]} == {id(p) for p in model.head.parameters()}
    # The loop's per-term encoder gradient norms: nothing to measure, no entry.
    assert encoder_gradient_norms(terms, model.encoder_parameters(), model.loss_weights) == {}


def test_loss_is_ce_plus_weighted_ntxent() -> None:
    model = tiny(ntxent=0.5, temperature=0.2).eval()
    b = batch()
    terms = model.loss(b)
    assert set(terms) == {"ce", "ntxent", "total"}
    assert model.loss_weights == {"ce": 1.0, "ntxent": 0.5}
    emb_d, _ = model.head(model.pooled(b["drone"]))
    emb_s, _ = model.head(model.pooled(b["satellite"]))
    torch.testing.assert_close(terms["ntxent"], nt_xent(emb_d, b["drone_label"], emb_s,
                                                        b["satellite_label"], 0.2))
    torch.testing.assert_close(terms["total"], terms["ce"] + 0.5 * terms["ntxent"])
    assert set(tiny(ntxent=0.0).loss(b)) == {"ce", "total"}


def _reference_nt_xent(d: torch.Tensor, yd: torch.Tensor, s: torch.Tensor, ys: torch.Tensor,
                       tau: float) -> float:
    """Pair by pair, in plain Python: the definition in the docstring."""
    z = torch.nn.functional.normalize(torch.cat([d, s]), dim=1).tolist()
    labels = yd.tolist() + ys.tolist()
    view = ["d"] * len(d) + ["s"] * len(s)

    def sim(i: int, j: int) -> float:
        return sum(a * b for a, b in zip(z[i], z[j], strict=True)) / tau

    losses = []
    for a in range(len(z)):
        negs = [math.exp(sim(a, n)) for n in range(len(z)) if labels[n] != labels[a]]
        for p in range(len(z)):
            if labels[p] == labels[a] and view[p] != view[a]:
                pos = math.exp(sim(a, p))
                losses.append(-math.log(pos / (pos + sum(negs))))
    return sum(losses) / len(losses)


def test_nt_xent_matches_its_definition() -> None:
    g = torch.Generator().manual_seed(3)
    d, s = torch.randn(5, 4, generator=g), torch.randn(3, 4, generator=g)
    yd, ys = torch.tensor([0, 0, 1, 2, 2]), torch.tensor([0, 1, 2])
    for tau in (0.1, 0.5):
        assert float(nt_xent(d, yd, s, ys, tau)) == pytest.approx(_reference_nt_xent(d, yd, s, ys, tau),
                                                                 rel=1e-5)
    # Each drone image on its tile, far from the others: the loss vanishes.
    tiles = torch.eye(3)
    assert float(nt_xent(tiles[yd], yd, tiles, ys, 0.05)) < 1e-6
    # No positive pair (no tile of the drone images' locations): 0, still differentiable.
    lone = nt_xent(d.requires_grad_(), yd, s, torch.tensor([5, 6, 7]), 0.1)
    assert float(lone.detach()) == 0.0
    lone.backward()


def test_head_has_a_gelu_before_its_batchnorm() -> None:
    torch.manual_seed(0)
    plain, gelu = ClassBlock(6, 3, bottleneck=4), ClassBlock(6, 3, bottleneck=4, gelu=True)
    assert plain.state_dict().keys() == gelu.state_dict().keys()
    gelu.load_state_dict(plain.state_dict())
    x = torch.randn(5, 6)
    plain.eval(), gelu.eval()
    hidden = plain.bottleneck(x)
    torch.testing.assert_close(gelu(x)[0], gelu.bn(torch.nn.functional.gelu(hidden)))
    assert not torch.allclose(gelu(x)[0], plain(x)[0])
    assert isinstance(tiny().head.act, torch.nn.GELU)


def test_a_frozen_random_encoder_is_refused_unless_allowed(tmp_path: Path) -> None:
    refused = tiny(allow_random_encoder=False)
    with pytest.raises(NotTrainableError) as err:
        check_trainable(refused, "mbeg")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("model 'mbeg' (MBEGModel) cannot be trained")
    assert "frozen random encoder is meaningless" in msg and "model.weights" in msg
    check_trainable(tiny(allow_random_encoder=True), "mbeg")
    # With weights from a file the encoder is not random.
    weights = tmp_path / "encoder.safetensors"
    save_file({k: v.contiguous() for k, v in refused.encoder.state_dict().items()}, str(weights))
    check_trainable(tiny(allow_random_encoder=False, weights=str(weights)), "mbeg")
    # Rebuilt without initial weights to take a checkpoint's (a resumed run): not refused.
    check_trainable(refused, "mbeg", configured=False)


def test_images_are_normalised_with_imagenet_statistics_as_in_the_public_code() -> None:
    # EVA-02's timm statistics are CLIP's; MBEG's public code normalises with ImageNet's
    # mean and std in training and test, so the model hands those to both.
    opts = {"backbone_name": "eva02_tiny_patch14_224.mim_in22k", "img_size": 28,
            "backbone_args": {"depth": 1, "embed_dim": 16, "num_heads": 1}}
    model = tiny(**opts)
    assert model.mean == (0.485, 0.456, 0.406) and model.std == (0.229, 0.224, 0.225)
    own = tiny(**opts, imagenet_norm=False)
    assert own.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert own.std == pytest.approx((0.26862954, 0.26130258, 0.27577711))


def test_a_checkpoint_saved_before_imagenet_norm_keeps_the_statistics_it_was_trained_with(
        tmp_path) -> None:
    import json

    from mcgf.models.checkpoint import load_checkpoint, save_checkpoint

    opts = {"backbone_name": "eva02_tiny_patch14_224.mim_in22k", "img_size": 28,
            "backbone_args": {"depth": 1, "embed_dim": 16, "num_heads": 1}}
    model = tiny(**opts)
    cfg = {"name": "mbeg", **{k: v for k, v in model_options(opts).items()}}
    path = save_checkpoint(tmp_path / "ck", model, cfg)
    saved = json.loads((path / "config.json").read_text())
    assert saved["model"]["imagenet_norm"] is True  # always written out
    assert load_checkpoint(path).model.std == (0.229, 0.224, 0.225)
    del saved["model"]["imagenet_norm"]  # as written before the option existed
    (path / "config.json").write_text(json.dumps(saved))
    old = load_checkpoint(path).model
    assert old.std == pytest.approx((0.26862954, 0.26130258, 0.27577711))


def model_options(opts: dict) -> dict:
    """The options ``tiny`` builds with (what a training run's config would hold)."""
    return {"img_size": 32, "num_classes": 3, "bottleneck_dim": 8, "dropout": 0.0,
            "allow_random_encoder": True, **opts}
