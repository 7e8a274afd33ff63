"""benchmarks/paper_cost.py: parameters and FLOPs per method at paper scale, no GPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tests.benchmarks.conftest import load_script


@pytest.fixture(scope="module")
def pc():
    return load_script("paper_cost")


def test_convolution_backward_counts_groups(pc) -> None:
    dense = torch.nn.Conv2d(8, 16, 3, padding=1)
    depthwise = torch.nn.Conv2d(16, 16, 7, padding=3, groups=16)
    x = torch.randn(2, 8, 12, 12, requires_grad=True)
    y = torch.randn(2, 16, 12, 12, requires_grad=True)
    with FlopCounterMode(display=False) as torch_count:
        dense(x).sum().backward()
    # dense: PyTorch's own count, which is right there
    assert pc._flops(lambda: dense(x).sum().backward()) == torch_count.get_total_flops()
    forward = pc._flops(lambda: depthwise(y))
    assert forward == 2 * 2 * 16 * 12 * 12 * 7 * 7
    assert pc._flops(lambda: depthwise(y).sum().backward()) == 3 * forward  # input + weight grads


def test_lpn_counts(pc, tmp_path: Path) -> None:
    cost = pc.method_cost("lpn")
    from mcgf.config import load_config
    from mcgf.models.model_registry import create_model

    cfg = pc.benchmark_config(load_config(pc.CONFIGS / "lpn.yaml"), [], "lpn.yaml")
    model = create_model(**{**cfg.model, "num_classes": pc.U1652_CLASSES})
    assert cost.params_m == pytest.approx(sum(p.numel() for p in model.parameters()) / 1e6)
    assert cost.counted == "meta" and cost.image_size == cfg.model["img_size"]
    # no checkpointing, everything trained: forward + two gradients = 3 forwards per image
    assert 2.9 < cost.train_gflops_per_image / cost.embed_gflops_per_image < 3.2
    assert cost.train_step_gflops == pytest.approx(cost.train_gflops_per_image * cost.batch_images)


def test_main_writes_json_and_frozen_encoder_is_not_trained(pc, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cost.json"
    assert pc.main(["--methods", "mbeg", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["method"] for r in rows] == ["MBEG"]
    mbeg = rows[0]
    assert mbeg["trainable_m"] < 0.01 * mbeg["params_m"]
    # frozen encoder: a training image costs one forward, like an embedded one
    assert mbeg["train_gflops_per_image"] == pytest.approx(mbeg["embed_gflops_per_image"], rel=0.05)
    assert "| MBEG |" in capsys.readouterr().out
    assert pc.main(["--methods", "nope"]) == 2
