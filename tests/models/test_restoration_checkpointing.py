"""Gradient checkpointing of the restoration branch's denoiser."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.utils.checkpoint

from mcgf.models.restoration import ConditionalDenoiser, ResBlock, RestorationBranch
from tests.models.test_restore_api import one_thread as one_thread  # autouse: one torch thread

MULTS = (1, 2, 4)
SIZE = 16
#: Per-scale condition channels, finest first, then the middle block's.
COND = (4, 6, 8, 10)


def branch(condition: str, *, dropout: float = 0.2, **kw: Any) -> RestorationBranch:
    torch.manual_seed(0)
    cond = COND[-1] if condition == "features+image" else COND
    model = RestorationBranch(cond, condition=condition, width=8, mults=MULTS,
                              num_res_blocks=1, dropout=dropout, **kw)
    # The zero-initialised output convolution would block every gradient below it.
    with torch.no_grad():
        model.denoiser.conv_out.weight.normal_(0.0, 0.1)
    return model


def inputs(condition: str) -> dict[str, Any]:
    """Clean target, condition maps (one per scale, or one final map) and weathered image."""
    g = torch.Generator().manual_seed(1)
    clean = torch.rand(2, 3, SIZE, SIZE, generator=g) * 2 - 1
    if condition == "features+image":
        feats: Any = torch.randn(2, COND[-1], 2, 2, generator=g).requires_grad_()
        weathered = (torch.rand(2, 3, SIZE, SIZE, generator=g) * 2 - 1).requires_grad_()
        return {"clean": clean, "features": feats, "weathered": weathered}
    sides = (8, 4, 2, 2)
    feats = [torch.randn(2, c, s, s, generator=g).requires_grad_() for c, s in zip(COND, sides, strict=True)]
    return {"clean": clean, "features": feats, "weathered": None}


def step(model: RestorationBranch, data: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """One training step: loss, every gradient, and both random streams afterwards."""
    torch.manual_seed(seed)  # dropout's stream
    g = torch.Generator().manual_seed(seed)  # timesteps and noise
    loss = model.training_loss(data["clean"], data["features"], weathered=data["weathered"],
                               generator=g)
    loss.backward()
    feats = data["features"]
    leaves = [feats] if isinstance(feats, torch.Tensor) else list(feats)
    if data["weathered"] is not None:
        leaves.append(data["weathered"])
    out = {"loss": loss.detach(), "generator": g.get_state(), "global": torch.get_rng_state(),
           "inputs": [x.grad.clone() for x in leaves],
           "params": {n: p.grad.clone() for n, p in model.named_parameters()}}
    for x in leaves:
        x.grad = None
    model.zero_grad(set_to_none=True)
    return out


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count calls of ``torch.utils.checkpoint.checkpoint`` (still running it)."""
    calls = [0]
    real: Callable[..., Any] = torch.utils.checkpoint.checkpoint

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        assert kwargs.get("use_reentrant") is False
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", wrapper)
    return calls


@pytest.mark.parametrize("condition", ["features", "features+image"])
def test_loss_gradients_and_random_streams_match_without_checkpointing(condition: str) -> None:
    plain, ckpt = branch(condition), branch(condition, grad_checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    data = inputs(condition)
    a, b = step(plain.train(), data), step(ckpt.train(), data)
    assert a["loss"].item() > 0
    torch.testing.assert_close(b["loss"], a["loss"], rtol=1e-6, atol=0.0)
    assert a["params"].keys() == b["params"].keys()
    for name, grad in a["params"].items():
        assert grad.abs().sum() > 0, name  # every parameter takes part
        torch.testing.assert_close(b["params"][name], grad, rtol=1e-5, atol=1e-7, msg=name)
    for ga, gb in zip(a["inputs"], b["inputs"], strict=True):
        assert ga.abs().sum() > 0
        torch.testing.assert_close(gb, ga, rtol=1e-5, atol=1e-7)
    # Timesteps and noise are drawn outside the checkpoints, and the recomputation
    # replays dropout without drawing again: both streams end where they did.
    assert torch.equal(a["generator"], b["generator"])
    assert torch.equal(a["global"], b["global"])


def test_dropout_is_active_so_the_comparison_covers_replayed_masks() -> None:
    model = branch("features", grad_checkpointing=True).train()
    data = inputs("features")
    first, other = step(model, data, seed=0), step(model, data, seed=0)
    torch.testing.assert_close(other["loss"], first["loss"], rtol=0.0, atol=0.0)
    # Same timesteps and noise, different dropout masks: a different loss.
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(123)
    loss = model.training_loss(data["clean"], data["features"], generator=g)
    assert not torch.equal(loss.detach(), first["loss"])


def test_flag_toggles_and_leaves_parameter_names_alone() -> None:
    plain = branch("features")
    assert not plain.denoiser.grad_checkpointing
    plain.set_grad_checkpointing()
    assert plain.denoiser.grad_checkpointing
    plain.set_grad_checkpointing(False)
    assert not plain.denoiser.grad_checkpointing
    denoiser = ConditionalDenoiser(8, width=8, mults=(1, 2), num_res_blocks=1)
    denoiser.set_grad_checkpointing(True)
    assert denoiser.grad_checkpointing
    on = branch("features", grad_checkpointing=True)
    assert on.denoiser.grad_checkpointing
    assert list(on.state_dict()) == list(branch("features").state_dict())
    assert on.load_state_dict(plain.state_dict()) is not None  # strict: same keys both ways


@pytest.mark.parametrize("condition", ["features", "features+image"])
def test_checkpoint_runs_once_per_block_in_training_only(condition: str, counted: list[int]) -> None:
    model = branch(condition, grad_checkpointing=True)
    data = inputs(condition)
    blocks = sum(isinstance(m, ResBlock) for m in model.modules())
    # Every residual block, every upsampling and the output head.
    per_pass = blocks + len(MULTS) - 1 + 1

    step(model.train(), data)
    assert counted[0] == per_pass

    counted[0] = 0
    with torch.no_grad():
        model.training_loss(data["clean"], data["features"], weathered=data["weathered"])
    model.eval()
    eps = model.training_loss(data["clean"], data["features"], weathered=data["weathered"])
    eps.backward()  # eval mode: plain autograd, no checkpoints
    size = None if model.needs_image else (SIZE, SIZE)
    model.restore(data["features"], size=size, weathered=data["weathered"], steps=2)
    assert counted[0] == 0

    model.train().set_grad_checkpointing(False)
    step(model, data)
    assert counted[0] == 0


def test_the_model_option_checkpoints_the_denoiser_and_trains_the_same() -> None:
    from mcgf.models.model_registry import create_model

    options = {"backbone_name": "resnet18", "num_classes": 3, "bottleneck_dim": 8,
               "dropout": 0.0, "restoration_width": 8, "restoration_mults": [1, 2],
               "restoration_blocks": 1, "restore_size": 16,
               "backbone_args": {"layers": [1, 1, 1, 1], "channels": [8, 8, 16, 16]}}
    g = torch.Generator().manual_seed(0)
    batch = {"drone": torch.randn(4, 3, 32, 32, generator=g),
             "drone_clean": torch.randn(4, 3, 32, 32, generator=g),
             "drone_label": torch.tensor([0, 0, 1, 2]),
             "satellite": torch.randn(3, 3, 32, 32, generator=g),
             "satellite_label": torch.arange(3)}
    losses, grads = [], []
    for on in (False, True):
        torch.manual_seed(0)
        model = create_model("mcgf", **options, restoration_grad_checkpointing=on).train()
        assert model.restoration.denoiser.grad_checkpointing is on
        terms = model.loss(batch, generator=torch.Generator().manual_seed(1))
        terms["total"].backward()
        losses.append(terms["restore"].detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.restoration.parameters()]))
    torch.testing.assert_close(losses[1], losses[0])
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-7)
