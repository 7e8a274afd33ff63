"""``benchmarks/gpu_check.py``: the tiny CPU run end to end, its Markdown table, the model
FLOP count behind its TFLOP/s and the table of GPU peaks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from tests.benchmarks.conftest import BENCHMARKS, TINY, load_script

ROOT = BENCHMARKS.parent
CONFIG = ROOT / "configs" / "mcgf-eva02-l-448.yaml"


@pytest.fixture(scope="module")
def gc():
    return load_script("gpu_check")


@pytest.fixture(scope="module")
def prof():
    """``benchmarks/_profiling.py`` (on the path once conftest is imported)."""
    import _profiling

    return _profiling


def _tiny_config(prof, *extra: str):
    from mcgf.config import load_config

    return prof.benchmark_config(load_config(CONFIG), [*TINY, *extra], str(CONFIG))


def test_tiny_run_writes_positive_throughputs(prof, tmp_path: Path) -> None:
    out = tmp_path / "check"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_check.py"), "--tiny", "--out", str(out),
         "--steps", "3", "--cost-steps", "2", "--embed-batch", "8", "--embed-batches", "2",
         "--warmup", "1", "--restore-sizes", "8", "--peak-tflops", "0.5"],
        capture_output=True, text=True, env=env, timeout=120, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["tiny"] is True and "CPU" in report["device"]
    assert report["train"]["steps"] == 3 and report["train"]["images_per_s"] > 0
    assert report["train"]["images_per_step"] == report["batch"]["images"] == 6
    assert report["embed"]["images_per_s"] > 0 and report["embed"]["images_per_step"] == 8
    sizes = [c["restore_size"] for c in report["step_cost"]["sizes"]]
    assert sizes == [16, 8] and report["step_cost"]["configured"]["ratio"] > 0
    assert 0 < report["params"]["branch_share_of_encoder"] < 0.10
    table = (out / "gpu_check.md").read_text()
    assert table.startswith("| measure | value |") and table in proc.stdout
    # model FLOPs of the timed shapes, over the median times, as a share of --peak-tflops
    flops = report["flops"]
    assert flops["counted"] == "meta" and flops["recompute_counted"] is False
    assert flops["train_images"] == 6 and flops["embed_images"] == 8
    assert report["peak"] == {"tflops": 0.5, "dtype": "fp32", "source": "--peak-tflops"}
    for phase, key, target in (("train", "train_step", 0.30), ("embed", "embed_batch", 0.45)):
        figures = report[phase]
        assert figures["flops"] == flops[key] > 0
        assert figures["tflops"] == pytest.approx(flops[key] / figures["median_s"] / 1e12)
        assert figures["share_of_peak"] == pytest.approx(figures["tflops"] / 0.5)
        assert figures["peak_tflops"] == 0.5 and figures["share_target"] == target
    # the embedding FLOPs grow with the batch: 8 images cost 8 times one image
    _, one = prof.model_flops(_tiny_config(prof), 10, embed_images=1)
    assert flops["embed_batch"] == 8 * one.embed_batch
    assert "| dense peak | 0.5 TFLOP/s fp32 (--peak-tflops) |" in table
    assert "% of peak, target ≥ 30 %) |" in table and "% of peak, target ≥ 45 %) |" in table


def test_counted_flops_equal_flop_counter_on_a_hand_built_model(prof) -> None:
    from mcgf.models.model_registry import create_model

    cfg = _tiny_config(prof)
    _, counted = prof.model_flops(cfg, 10, embed_images=3)
    assert counted.counted == "meta" and counted.train_images == 6
    torch.manual_seed(0)
    model = create_model(**{**cfg.model, "num_classes": 10})
    batch = prof.random_batch(prof.batch_shape(cfg), model.input_size, 10, clean=True,
                            device=torch.device("cpu"))
    assert "drone_clean" in batch and prof.restore_weight(model) > 0  # branch term counted
    # plain FlopCounterMode on real tensors; the math attention backend so that the CPU's
    # fused attention kernel, which has no FLOP formula, does not hide the attention matmuls
    model.train()
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as by_hand:
        model.loss(batch)["total"].backward()
    assert counted.train_step == by_hand.get_total_flops()
    model.eval()
    with sdpa_kernel(SDPBackend.MATH), torch.no_grad(), FlopCounterMode(display=False) as by_hand:
        model.embed(torch.randn(3, 3, *model.input_size), "drone")
    assert counted.embed_batch == by_hand.get_total_flops()


def test_checkpoint_recomputation_is_not_counted(prof) -> None:
    switches = prof.checkpoint_options("mcgf")  # the encoder's, and any branch's
    assert "grad_checkpointing" in switches
    off = _tiny_config(prof, *(f"model.{k}=false" for k in switches))
    on = _tiny_config(prof, *(f"model.{k}=true" for k in switches))
    _, plain = prof.model_flops(off, 10)
    _, checkpointed = prof.model_flops(on, 10)
    assert checkpointed.train_step == plain.train_step
    assert checkpointed.embed_batch == plain.embed_batch
    # counted as configured, the recomputed forward shows: the exclusion is not vacuous
    _, hardware = prof.model_flops(on, 10, recompute=True)
    assert hardware.recompute_counted and hardware.train_step > 1.2 * plain.train_step
    _, as_configured_off = prof.model_flops(off, 10, recompute=True)
    assert as_configured_off.train_step == plain.train_step


def test_linear_layer_counts_two_flops_per_multiply_add(prof) -> None:
    layer = torch.nn.Linear(64, 32)
    x = torch.randn(8, 64, requires_grad=True)
    forward = 2 * 8 * 64 * 32
    assert prof.count_flops(lambda: layer(x)) == forward
    # backward: the input's and the weight's gradients, one forward's worth each
    assert prof.count_flops(lambda: layer(x).sum().backward()) == 3 * forward


def test_peak_table_matches_device_names(prof) -> None:
    peak = prof.dense_peak_tflops
    assert peak("NVIDIA H100 80GB HBM3") == 989.4
    assert peak("NVIDIA H100 PCIe") == 756.5
    assert peak("NVIDIA H100 PCIe", "fp16") == 756.5
    assert peak("NVIDIA H200") == 989.4
    assert peak("NVIDIA A100-SXM4-80GB") == peak("NVIDIA A100 80GB PCIe") == 312.0
    assert peak("NVIDIA L40S") == 362.05 and peak("NVIDIA L40") == 181.05
    # not listed, and not mistaken for a listed part
    for name in ("NVIDIA H100 NVL", "NVIDIA H200 NVL", "NVIDIA GH200 480GB",
                 "NVIDIA GeForce RTX 4090", "Tesla V100-SXM2-16GB", "GPU X"):
        assert peak(name) is None, name
    assert peak("NVIDIA H100 80GB HBM3", "fp32") is None


def test_resolve_peak(gc) -> None:
    assert gc.resolve_peak("NVIDIA H100 80GB HBM3", "bf16")["tflops"] == 989.4
    assert gc.resolve_peak("NVIDIA H100 PCIe", "fp16")["tflops"] == 756.5
    assert gc.resolve_peak("GPU X", "bf16", 100.0) == {"tflops": 100.0, "dtype": "bf16",
                                                       "source": "--peak-tflops"}
    for name, amp in ((None, "fp32"), ("GPU X", "bf16"), ("NVIDIA H100 80GB HBM3", "fp32")):
        unknown = gc.resolve_peak(name, amp)
        assert unknown["tflops"] is None and "--peak-tflops" in unknown["source"]
    rate = gc.throughput(2 * 10**12, 0.5, None, 0.3)
    assert rate["tflops"] == 4.0 and rate["share_of_peak"] is None
    assert gc.throughput(2 * 10**12, 0.5, 8.0, 0.3)["share_of_peak"] == 0.5


def test_markdown_reports_failed_phases() -> None:
    gpu_check = load_script("gpu_check")
    timing = {"median_s": 0.5, "steps": 4, "images_per_s": 96.0, "images_per_step": 48,
              "peak_memory_gib": 30.0}
    rate = {"flops": 148_410_000_000_000, "tflops": 296.82, "peak_tflops": 989.4,
            "share_of_peak": 0.3, "share_target": 0.3}
    report = {
        "device": "GPU X", "amp": "bf16", "phase_seconds": {"build": 2.0},
        "model_config": {"backbone_name": "eva", "img_size": 448},
        "params": {"encoder": 300e6, "branch": 15e6, "branch_share_of_encoder": 0.05},
        "batch": {"locations": 16, "drones_per_location": 2, "images": 48},
        "peak": {"tflops": 989.4, "dtype": "bf16", "source": "NVIDIA H100 datasheet"},
        "flops": {"train_step": rate["flops"], "train_images": 48, "embed_batch": 46 * 10**12,
                  "embed_images": 64, "counted": "meta", "recompute_counted": False},
        "train": {**timing, "drone_images_per_s": 64.0, **rate},
        "step_cost": {"sizes": [{"restore_size": 224, "ratio": 1.2,
                                 "on": {**timing, "median_s": 0.6}, "off": timing},
                                {"restore_size": 448, "error": "out of memory"}]},
        "embed": {"error": "out of memory: tried to allocate"},
    }
    table = gpu_check.markdown(report)
    assert "| training images/s | 96.0 (64.0 drone) |" in table
    assert "| step cost on/off, restore_size 224 | 1.200× (600.0 / 500.0 ms" in table
    assert "| step cost on/off, restore_size 448 | out of memory |" in table
    assert "| embedding | out of memory: tried to allocate |" in table
    assert "5.0 %" in table
    assert "| dense peak | 989.4 TFLOP/s bf16 (NVIDIA H100 datasheet) |" in table
    assert "| model FLOPs | 148.4 TFLOP per training step, 46 TFLOP per embedding batch of 64" \
        in table
    assert "| training TFLOP/s | 296.8 (30.0 % of peak, target ≥ 30 %) |" in table
    # no peak known: the share is a dash and the hint says how to give one
    report["peak"] = {"tflops": None, "dtype": "bf16",
                      "source": "no dense bf16 peak known for GPU X: pass --peak-tflops"}
    report["train"] = {**report["train"], "tflops": 0.0123, "peak_tflops": None,
                       "share_of_peak": None}
    table = gpu_check.markdown(report)
    assert "| dense peak | – (no dense bf16 peak known for GPU X: pass --peak-tflops) |" in table
    assert "| training TFLOP/s | 0.0123 (– of peak, target ≥ 30 %) |" in table


def test_bad_config_leaves_no_output_folder(gc, tmp_path: Path, capsys) -> None:
    out = tmp_path / "check"
    code = gc.main(["--tiny", "--out", str(out), "--config", str(tmp_path / "missing.yaml")])
    assert code == 2
    assert "missing.yaml" in capsys.readouterr().err
    assert not out.exists()
