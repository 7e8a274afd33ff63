"""The optimizer the loop builds (:mod:`mcgf.training.optim`): fused where it pays, and a
saved state that resumes in any implementation."""

from __future__ import annotations

import pytest
import torch

from mcgf.training.optim import adamw, fused_default, load_optimizer_state


def _params(seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(5, 3, generator=g)),
            torch.nn.Parameter(torch.randn(3, generator=g))]


def _steps(opt: torch.optim.Optimizer, params: list[torch.nn.Parameter], n: int,
           start: int = 0) -> None:
    for i in range(start, start + n):
        g = torch.Generator().manual_seed(100 + i)
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()


def test_fused_on_cuda_only() -> None:
    assert fused_default(torch.device("cuda")) and fused_default(torch.device("cuda:1"))
    assert not fused_default(torch.device("cpu"))
    cpu = adamw(_params(), 1e-3, 0.05, torch.device("cpu"))
    assert not cpu.param_groups[0]["fused"]
    # The CUDA choice, built on CPU tensors (torch's fused AdamW also runs on the CPU).
    gpu_style = adamw([{"params": _params(), "lr": 0.5}], 1e-3, 0.05, torch.device("cuda"))
    assert gpu_style.param_groups[0]["fused"] is True
    assert gpu_style.param_groups[0]["lr"] == 0.5 and gpu_style.param_groups[0]["weight_decay"] == 0.05


@pytest.mark.parametrize("saved_fused", [True, False])
def test_a_resumed_state_keeps_the_resuming_implementation(saved_fused: bool) -> None:
    """A state saved by a fused optimizer (a GPU run) resumes in an unfused one and the
    other way round; the moments carry over, so the resumed steps equal uninterrupted ones."""
    reference = _params()
    opt = torch.optim.AdamW(reference, lr=1e-2, weight_decay=0.05, fused=saved_fused or None)
    _steps(opt, reference, 6)

    params = _params()
    first = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.05, fused=saved_fused or None)
    _steps(first, params, 3)
    state = first.state_dict()
    second = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.05,
                               fused=None if saved_fused else True)
    load_optimizer_state(second, state)
    assert bool(second.param_groups[0]["fused"]) is not saved_fused
    assert state["param_groups"][0]["fused"] is (True if saved_fused else None)  # not modified
    _steps(second, params, 3, start=3)
    for a, b in zip(reference, params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_a_state_of_another_model_is_refused() -> None:
    opt = adamw(_params(), 1e-3, 0.0, torch.device("cpu"))
    _steps(opt, _params(), 0)
    other = torch.optim.AdamW([{"params": _params()}, {"params": _params(1)}])
    with pytest.raises(ValueError):
        load_optimizer_state(opt, other.state_dict())
