"""Every registered model, built tiny, meets the trainable contract the way the loop and
the evaluation use it: it trains (finite loss terms that add up to ``total``, gradients),
embeds both views as unit vectors, survives a checkpoint round trip and builds
deterministically from a seed.

A newly registered model needs an entry in :data:`TINY`: the first test says so.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from mcgf.models.base import check_trainable
from mcgf.models.checkpoint import load_checkpoint, save_checkpoint
from mcgf.models.model_registry import available_models, create_model

CLASSES = 3
#: A narrow ResNet and a narrow ConvNeXt (random init, a few thousand parameters).
RESNET = {"backbone_name": "resnet18", "img_size": 32,
          "backbone_args": {"layers": [1, 1, 1, 1], "channels": [8, 8, 16, 16], "stem_width": 8}}
CONVNEXT = {"backbone_name": "convnext_atto", "img_size": 32,
            "backbone_args": {"depths": [1, 1, 1, 1], "dims": [8, 8, 16, 16]}}

#: Tiny options of each registered model (a model registered without one fails below).
TINY: dict[str, dict[str, Any]] = {
    "mcgf": {**RESNET, "bottleneck_dim": 8, "restoration_width": 8, "restoration_mults": [1],
             "restoration_blocks": 1, "restore_size": 16, "infonce": 0.5},
    "lpn": {**RESNET, "bottleneck_dim": 8, "dropout": 0.1, "blocks": 2},
    "mbeg": {**RESNET, "bottleneck_dim": 8, "dropout": 0.1, "allow_random_encoder": True},
    "sample4geo": dict(CONVNEXT),
    "musenet": {"backbone_name": "resnet50", "img_size": 32,
                "backbone_args": {"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64],
                                  "zero_init_last": False},
                "spade_blocks": ["layer1.0", "layer2.0"], "bottleneck_dim": 8},
}


def build(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(name, num_classes=CLASSES, **TINY[name])


def batch_for(model: torch.nn.Module, seed: int = 1) -> dict[str, Any]:
    """2 drone views of each of 3 locations, their 3 tiles, clean twins and conditions."""
    g = torch.Generator().manual_seed(seed)
    h, w = model.input_size
    labels = torch.arange(CLASSES)
    return {"drone": torch.randn(2 * CLASSES, 3, h, w, generator=g),
            "drone_clean": torch.randn(2 * CLASSES, 3, h, w, generator=g),
            "drone_label": labels.repeat_interleave(2),
            "drone_condition": ["fog", "normal"] * CLASSES,
            "satellite": torch.randn(CLASSES, 3, h, w, generator=g),
            "satellite_label": labels}


MODELS = sorted(available_models())


def test_every_registered_model_has_tiny_options() -> None:
    missing = [m for m in MODELS if m not in TINY]
    assert not missing, f"add tiny options for {missing} to TINY in {__file__}"
    assert {"mcgf", "lpn", "mbeg", "sample4geo", "musenet"} <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_trains_one_step(name: str) -> None:
    model = build(name).train()
    check_trainable(model, name)
    batch = batch_for(model)
    terms = model.loss(batch, generator=torch.Generator().manual_seed(2))
    assert "total" in terms and len(terms) >= 2, terms
    for key, value in terms.items():
        assert value.ndim == 0 and math.isfinite(float(value.detach())), (key, value)
    # total is the weighted sum of the named terms, with the weights the model reports.
    expected = sum(model.loss_weights.get(k, 1.0) * v for k, v in terms.items() if k != "total")
    torch.testing.assert_close(terms["total"], expected)
    terms["total"].backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    grads = [p.grad for p in trainable if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)
    encoder = model.encoder_parameters()
    assert len({id(p) for p in encoder}) == len(encoder) and all(p.requires_grad for p in encoder)
    if encoder:  # the encoder learns from the objective
        assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in encoder)
    # The optimizer groups hold every trainable parameter exactly once; the arguments
    # have the contract's names.
    groups = model.param_groups(lr=1e-3, weight_decay=0.05, layer_decay=None)
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in trainable)
    assert all(g["lr"] > 0 for g in groups)


@pytest.mark.parametrize("name", MODELS)
def test_embeds_both_views_as_unit_vectors(name: str) -> None:
    model = build(name).eval()
    images = batch_for(model)["drone"][:4]
    with torch.no_grad():
        drone, satellite = model.embed(images, "drone"), model.embed(images, "satellite")
    assert drone.ndim == 2 and drone.shape[0] == 4 and drone.shape == satellite.shape
    assert torch.isfinite(drone).all()
    torch.testing.assert_close(drone.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(satellite.norm(dim=1), torch.ones(4))
    assert not torch.allclose(drone[0], drone[1])  # different images, different embeddings
    with pytest.raises(ValueError):
        model.embed(images, "street")
    # Differentiable with respect to the images: the report's saliency maps need it.
    x = images.clone().requires_grad_(True)
    direction = torch.randn(drone.shape, generator=torch.Generator().manual_seed(3))
    (model.embed(x, "drone") * direction).sum().backward()
    assert x.grad is not None and float(x.grad.abs().mean()) > 1e-6


@pytest.mark.parametrize("name", MODELS)
def test_checkpoint_round_trip_keeps_embeddings(name: str, tmp_path: Path) -> None:
    model = build(name)
    # One training step, so that trained weights and BatchNorm statistics are saved.
    model.train()
    model.loss(batch_for(model))["total"].backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 0.1 * p.grad
    model.eval()
    images = batch_for(model, seed=5)["drone"]
    with torch.no_grad():
        before = model.embed(images, "drone")
    save_checkpoint(tmp_path / "ck", model, {"name": name, "num_classes": CLASSES, **TINY[name]})
    loaded = load_checkpoint(tmp_path / "ck").model
    assert type(loaded) is type(model) and not loaded.training
    with torch.no_grad():
        torch.testing.assert_close(loaded.embed(images, "drone"), before)
        torch.testing.assert_close(loaded.embed(images, "satellite"),
                                   model.embed(images, "satellite"))


@pytest.mark.parametrize("name", MODELS)
def test_same_seed_builds_the_same_model(name: str) -> None:
    a, b, c = build(name, seed=7).eval(), build(name, seed=7).eval(), build(name, seed=8).eval()
    images = batch_for(a)["satellite"]
    with torch.no_grad():
        ea, eb, ec = (m.embed(images, "satellite") for m in (a, b, c))
    assert torch.equal(ea, eb)
    assert not torch.equal(ea, ec)
