"""``benchmarks/memory_estimate.py``: peak CUDA memory estimated with fake tensors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from _profiling import BatchShape, batch_shape, benchmark_config, build_model
from mcgf.config import load_config
from tests.benchmarks.conftest import TINY, load_script

PAPER = Path(__file__).resolve().parents[2] / "configs" / "mcgf-eva02-l-448.yaml"
MIB = 2**20


@pytest.fixture(scope="module")
def me():
    return load_script("memory_estimate")


@pytest.fixture(scope="module")
def tiny():
    return benchmark_config(load_config(PAPER), TINY, str(PAPER))


def test_single_linear_matches_analytic_bytes(me) -> None:
    tracker = me.LiveBytes()
    with me.fake_cpu(tracker):
        lin = nn.Linear(1024, 2048, bias=False)
        x = torch.randn(256, 1024)
        assert tracker.current == (2048 * 1024 + 256 * 1024) * 4  # fp32 weight + input
        tracker.reset_peak()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = lin(x)
        # bf16 copies of the weight (autocast's cache, kept for backward) and the input,
        # plus the bf16 output: nothing else, nothing computed.
        assert y.dtype == torch.bfloat16
        assert tracker.peak - 9 * MIB == 4 * MIB + MIB // 2 + 1 * MIB
        y.float().sum().backward()
        assert lin.weight.grad is not None and lin.weight.grad.dtype == torch.float32
        del y, x
        # Left: the weight and its fp32 gradient.
        assert tracker.current == 2 * 8 * MIB


def test_storages_are_counted_once_and_rounded_to_the_allocator_granule(me) -> None:
    tracker = me.LiveBytes()
    with me.fake_cpu(tracker):
        x = torch.empty(3)  # 12 bytes: one 512-byte block
        views = [x[1:], x.view(1, 3), x.t()]
        assert tracker.current == 512
        del x, views
        assert tracker.current == 0
        assert tracker.peak == 512


def test_cuda_autocast_lists_inside_only(me) -> None:
    x = torch.randn(4, 8, dtype=torch.bfloat16)
    with me.cuda_autocast_rules(), torch.autocast("cpu", dtype=torch.bfloat16):
        # CUDA's autocast runs these in fp32; the CPU's own lists leave them in bf16.
        assert torch.layer_norm(x, [8]).dtype == torch.float32
        assert torch.softmax(x, 1).dtype == torch.float32
        assert x.exp().dtype == torch.float32
        assert x.sum().dtype == torch.float32
        assert nn.functional.linear(x.float(), torch.randn(3, 8)).dtype == torch.bfloat16
        # Cast by the CPU's list only: runs uncast.
        assert torch.cat([x, x]).dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.layer_norm(x, [8]).dtype == torch.bfloat16


def test_tiny_training_step_holds_at_least_weights_and_adamw(me, tiny) -> None:
    shape = batch_shape(tiny)
    on = me.estimate_training(tiny, shape)
    off = me.estimate_training(tiny, shape, restoration=False)
    bigger = me.estimate_training(tiny, BatchShape(4, shape.drones_per_location))
    model = build_model(tiny, torch.device("cpu"))
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    # Parameters, their gradients and AdamW's exp_avg and exp_avg_sq, all fp32.
    assert on.resident_bytes >= 3 * param_bytes
    assert on.peak_bytes >= 4 * param_bytes
    assert on.peak_bytes > on.resident_bytes
    assert bigger.peak_bytes > on.peak_bytes
    assert off.peak_bytes < on.peak_bytes
    assert on.seconds > 0
    # torch's foreach AdamW keeps temporaries as large as all parameters at once; the fused
    # one (the loop's on CUDA, the default) none: never a higher peak.
    foreach = me.estimate_training(tiny, shape, optimizer="foreach")
    assert foreach.resident_bytes == on.resident_bytes
    assert foreach.peak_bytes >= on.peak_bytes


def test_tiny_embedding_grows_with_the_batch(me, tiny) -> None:
    small, large = me.estimate_embedding(tiny, 2), me.estimate_embedding(tiny, 8)
    assert small.resident_bytes < small.peak_bytes < large.peak_bytes


def test_main_prints_estimates(me, capsys) -> None:
    assert me.main(["--config", str(PAPER), *[a for o in TINY for a in ("--set", o)],
                    "--batch-locations", "3", "--embed-batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "3 locations x (2 drone + 1 satellite) = 9 images" in out
    assert "training step: peak" in out and "embedding, batch 2: peak" in out


def test_main_refuses_a_bad_batch(me, capsys) -> None:
    assert me.main(["--config", str(PAPER), *[a for o in TINY for a in ("--set", o)],
                    "--batch-locations", "1", "--embed-batch", "0"]) == 2
    assert "error" in capsys.readouterr().err


def test_the_24gb_preset_fits_as_its_config_says(me) -> None:
    """The figure written in ``configs/mcgf-eva02-l-448-24gb.yaml`` (EVA-02-L at 448 px,
    built for real on the CPU and stepped under fake tensors: about 20 s)."""
    path = PAPER.with_name("mcgf-eva02-l-448-24gb.yaml")
    cfg = benchmark_config(load_config(path), [], str(path))
    est = me.estimate_training(cfg, batch_shape(cfg), classes=701)
    assert est.peak_gib == pytest.approx(11.4, abs=0.05)
    assert "peak 11.4 GiB per training" in path.read_text().replace("\n# ", " ")
    assert est.peak_gib < 0.8 * 24 * 1e9 / 2**30  # a fifth of a 24 GB card left free
