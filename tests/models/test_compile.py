"""``train.compile``: which modules :func:`mcgf.models.compile.compile_blocks` compiles, and
that a compiled model trains the same numbers with the same parameter names. Compiled with
the ``aot_eager`` backend (torch's tracing and autograd without generated code), so the
tests need no C++ compiler and take seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from mcgf.errors import UserError
from mcgf.models.compile import compile_blocks, compile_targets
from mcgf.models.mcgf_model import MCGFModel


def eva(grad_checkpointing: bool = True) -> MCGFModel:
    """A two-block EVA-02 with the encoder and the denoiser checkpointed."""
    torch.manual_seed(0)
    return MCGFModel("eva02_tiny_patch14_224", 4, img_size=28, backbone_args={"depth": 2},
                     grad_checkpointing=grad_checkpointing,
                     restoration_grad_checkpointing=grad_checkpointing, bottleneck_dim=16,
                     dropout=0.0,
                     restoration_width=8, restoration_mults=[1, 2], restoration_blocks=1,
                     restore_size=16)


def resnet() -> MCGFModel:
    torch.manual_seed(0)
    return MCGFModel("resnet18", 4, bottleneck_dim=16, restoration=False,
                     backbone_args={"layers": [1, 1, 1, 1], "channels": [8, 8, 16, 16]})


def test_targets_are_the_encoder_blocks_and_the_denoiser() -> None:
    model = eva()
    targets = compile_targets(model)
    assert targets[:2] == list(model.drone_encoder.blocks)
    assert targets[2:] == [model.restoration.denoiser]
    cnn = resnet()
    enc = cnn.drone_encoder
    assert compile_targets(cnn) == [enc.layer1, enc.layer2, enc.layer3, enc.layer4]
    with pytest.raises(ValueError, match="no encoder blocks"):
        compile_blocks(nn.Linear(2, 2), "aot_eager")
    with pytest.raises(ValueError, match="backend"):
        compile_blocks(model, "fastest")
    with pytest.raises(ValueError, match="mode"):
        compile_blocks(model, "inductor", "turbo")


def batch28() -> dict:
    """A training batch of four 28 px locations (one drone view, its clean twin, a tile)."""
    g = torch.Generator().manual_seed(1)
    return {"drone": torch.randn(4, 3, 28, 28, generator=g),
            "drone_clean": torch.randn(4, 3, 28, 28, generator=g),
            "drone_label": torch.arange(4), "satellite": torch.randn(4, 3, 28, 28, generator=g),
            "satellite_label": torch.arange(4)}


def test_a_compiled_model_trains_the_same_numbers_under_checkpointing() -> None:
    results = []
    for compiled in (False, True):
        model = eva().train()
        if compiled:
            assert compile_blocks(model, "aot_eager") == 3
        for _ in range(2):  # the second call reuses the compiled graphs
            model.zero_grad()
            terms = model.loss(batch28(), generator=torch.Generator().manual_seed(3))
            terms["total"].backward()
        results.append(({k: v.detach() for k, v in terms.items()},
                        {n: p.grad for n, p in model.named_parameters() if p.grad is not None},
                        list(model.state_dict())))
    (t0, g0, k0), (t1, g1, k1) = results
    assert k0 == k1  # nn.Module.compile keeps the names: checkpoints are interchangeable
    assert set(t0) == {"ce", "restore", "total"}
    for k in t0:
        torch.testing.assert_close(t1[k], t0[k], rtol=1e-6, atol=1e-6)
    assert g0.keys() == g1.keys() and len(g0) > 100
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], rtol=1e-5, atol=1e-6)


def test_train_compile_option_in_the_loop(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from mcgf.training.config import parse_run_config
    from mcgf.training.loop import train
    from tests.training.test_loop import config, make_tree, read_log

    root = make_tree(tmp_path / "University-Release")
    logs = []
    for option in (False, "aot_eager"):
        out = tmp_path / f"run-{option}"
        train(parse_run_config(config(root, epochs=1, compile=option), "t"), out)
        logs.append(read_log(out))
    printed = capsys.readouterr().out
    # ViT-Tiny's 12 blocks and the restoration denoiser.
    assert "compile: 13 modules with torch.compile (aot_eager)" in printed
    for a, b in zip(*logs, strict=True):
        assert float(a["total"]) == pytest.approx(float(b["total"]), rel=1e-5)
    with pytest.raises(UserError, match=r"train\.compile must be"):
        parse_run_config(config(root, compile="fastest"), "t")
