"""``model.channels_last``: the same model in the channels-last layout gives the same
embeddings, losses and gradients, and its checkpoint loads into either layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mcgf.models.mcgf_model import MCGFModel


def tiny(channels_last: bool, input_norm: str = "local") -> MCGFModel:
    torch.manual_seed(0)
    return MCGFModel("resnet18", 3, bottleneck_dim=16, dropout=0.0, restoration=True,
                     restoration_width=8, restoration_mults=[1, 2], restoration_blocks=1,
                     input_norm=input_norm, consistency=1.0, twin_ce=True, satellite_rotations=4,
                     channels_last=channels_last,
                     backbone_args={"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128],
                                    "pretrained_cfg_overlay": {"input_size": [3, 32, 32]}})


def batch() -> dict:
    g = torch.Generator().manual_seed(0)
    return {"drone": torch.randn(6, 3, 32, 32, generator=g),
            "drone_clean": torch.randn(6, 3, 32, 32, generator=g),
            "drone_label": torch.arange(6) % 3,
            "drone_condition": ["fog", "normal", "rain", "normal", "dark", "snow"],
            "satellite": torch.randn(3, 3, 32, 32, generator=g), "satellite_label": torch.arange(3)}


@pytest.mark.parametrize("input_norm", ["local", "local_chroma"])
def test_same_values_in_either_layout(input_norm: str) -> None:
    plain, last = tiny(False, input_norm), tiny(True, input_norm)
    conv = last.drone_encoder.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    b = batch()
    losses = []
    for model in (plain, last):
        gen = torch.Generator().manual_seed(1)
        terms = model.loss(b, generator=gen)
        terms["total"].backward()
        losses.append(terms)
    assert losses[0].keys() == losses[1].keys() and "restore" in losses[0]
    for key in losses[0]:
        torch.testing.assert_close(losses[1][key], losses[0][key], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(last.drone_encoder.conv1.weight.grad,
                               plain.drone_encoder.conv1.weight.grad, atol=1e-4, rtol=1e-3)
    plain.eval(), last.eval()
    with torch.no_grad():
        for view in ("drone", "satellite"):
            torch.testing.assert_close(last.embed(b[view], view), plain.embed(b[view], view),
                                       atol=1e-5, rtol=1e-5)


def test_checkpoint_round_trip_across_layouts(tmp_path: Path) -> None:
    from mcgf.models.checkpoint import _load_weights, _save_weights

    last = tiny(True).eval()
    x = batch()["drone"]
    with torch.no_grad():
        last.drone_encoder.conv1.weight.mul_(1.5)  # weights that differ from a fresh model
        want = last.embed(x, "drone")
    _save_weights(last, tmp_path / "w.safetensors")
    for layout in (False, True):
        model = tiny(layout)
        _load_weights(model, tmp_path / "w.safetensors")
        with torch.no_grad():
            torch.testing.assert_close(model.eval().embed(x, "drone"), want, atol=1e-5, rtol=1e-5)
