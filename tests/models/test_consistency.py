"""The weather-consistency term: its value, where its gradient goes, and how the model
pairs each weathered drone image with its clean twin."""

from __future__ import annotations

import pytest
import torch

from mcgf.models.losses import weather_consistency
from mcgf.models.mcgf_model import MCGFModel


def test_value_is_one_minus_cosine() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    b = torch.tensor([[5.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    # cosines 1, 0, -1 -> losses 0, 1, 2
    assert weather_consistency(a, b).item() == pytest.approx(1.0)
    assert weather_consistency(a[:1], b[:1]).item() == pytest.approx(0.0)


def test_clean_side_is_the_target() -> None:
    w = torch.randn(4, 8, requires_grad=True)
    c = torch.randn(4, 8, requires_grad=True)
    weather_consistency(w, c).backward()
    assert c.grad is None
    assert w.grad is not None and float(w.grad.abs().sum()) > 0


def tiny(consistency: float = 0.0, twin_ce: bool = False) -> MCGFModel:
    torch.manual_seed(0)
    return MCGFModel("resnet18", 3, bottleneck_dim=16, dropout=0.0, restoration=False,
                     consistency=consistency, twin_ce=twin_ce,
                     backbone_args={"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128],
                                    "pretrained_cfg_overlay": {"input_size": [3, 32, 32]}})


def batch(conditions: list[str]) -> dict:
    g = torch.Generator().manual_seed(0)
    n = len(conditions)
    return {"drone": torch.randn(n, 3, 32, 32, generator=g),
            "drone_clean": torch.randn(n, 3, 32, 32, generator=g),
            "drone_label": torch.arange(n) % 3, "drone_condition": conditions,
            "satellite": torch.randn(3, 3, 32, 32, generator=g), "satellite_label": torch.arange(3)}


def test_pairs_only_the_weathered_images_and_embeds_them_like_embed() -> None:
    model = tiny().eval()  # eval: BatchNorm uses running statistics, so rows are independent
    b = batch(["fog", "normal", "rain", "normal"])
    with torch.no_grad():
        out = model(b, clean_pairs=True)
        want_w = model.head.embed(model.drone_encoder(model._normalise(b["drone"][[0, 2]])))
        want_c = model.head.embed(model.drone_encoder(model._normalise(b["drone_clean"][[0, 2]])))
    assert out["drone_embedding"].shape[0] == 4  # the classification rows are unchanged
    torch.testing.assert_close(torch.nn.functional.normalize(out["drone_pair_embedding"], dim=1),
                               want_w, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.nn.functional.normalize(out["drone_clean_embedding"], dim=1),
                               want_c, atol=1e-5, rtol=1e-5)


def test_loss_term_appears_only_when_asked_and_vanishes_for_identical_twins() -> None:
    b = batch(["fog", "snow", "normal"])
    off = tiny().eval()
    assert "consistency" not in off.loss(b) and not off.needs_clean_targets
    model = tiny(consistency=2.0).eval()
    assert model.needs_clean_targets and model.loss_weights["consistency"] == 2.0
    terms = model.loss(b)
    assert terms["consistency"].item() > 0.01
    torch.testing.assert_close(terms["total"], terms["ce"] + 2.0 * terms["consistency"])
    same = dict(b, drone_clean=b["drone"])
    assert model.loss(same)["consistency"].item() == pytest.approx(0.0, abs=1e-6)
    # No weathered image in the batch: no term, and nothing breaks.
    assert "consistency" not in model.loss(batch(["normal", "normal"]))


def test_twin_ce_adds_the_clean_twins_as_drone_rows_of_their_location() -> None:
    from mcgf.models.losses import cross_entropy_views

    b = batch(["fog", "normal", "rain"])
    model = tiny(twin_ce=True).eval()
    assert model.needs_clean_targets and "consistency" not in model.loss(b)
    with torch.no_grad():
        terms = model.loss(b)
        out = model(b)
        twins = model.head(model.drone_encoder(model._normalise(b["drone_clean"][[0, 2]])))[1]
        want = cross_entropy_views(torch.cat([out["drone_logits"], twins]),
                                   torch.tensor([0, 1, 2, 0, 2]),
                                   out["satellite_logits"], b["satellite_label"])
        plain = tiny().eval().loss(b)["ce"]
    torch.testing.assert_close(terms["ce"], want, atol=1e-5, rtol=1e-5)
    assert abs(terms["ce"].item() - plain.item()) > 1e-4  # the twins changed the term
    # With the consistency term too, both use the same twins.
    both = tiny(consistency=1.0, twin_ce=True).eval().loss(b)
    torch.testing.assert_close(both["ce"], want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both["total"], both["ce"] + both["consistency"])
