"""``benchmarks/step_cost.py`` and the timing helpers of ``benchmarks/_profiling.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from _profiling import (
    BatchShape,
    StepTiming,
    batch_shape,
    benchmark_config,
    build_model,
    make_optimizer,
    random_batch,
    step_fn,
    step_options,
)
from mcgf.config import load_config
from mcgf.errors import UserError
from tests.benchmarks.conftest import TINY, load_script

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PAPER = CONFIGS / "mcgf-eva02-l-448.yaml"
CPU = torch.device("cpu")


def test_measure_tiny_model_on_cpu() -> None:
    step_cost = load_script("step_cost")
    cost, hardware = step_cost.measure(PAPER, TINY, drone_images=4, steps=2, warmup=1, device="cpu")
    assert cost.on.steps == cost.off.steps == 2
    assert cost.on.images_per_step == 4 + 2  # two locations: 4 drone views + 2 tiles
    assert cost.off.median_s > 0 and cost.ratio == pytest.approx(cost.on.median_s / cost.off.median_s)
    assert 0 < cost.branch_params < cost.encoder_params < cost.total_params
    assert cost.branch_share == pytest.approx(cost.branch_params / cost.encoder_params)
    assert cost.restore_size == 16
    assert "CPU" in hardware
    text = step_cost.report(cost, hardware)
    assert f"ratio on/off: {cost.ratio:.3f}x" in text and "branch parameters:" in text


def test_branch_off_step_leaves_the_branch_alone() -> None:
    cfg = benchmark_config(load_config(PAPER), TINY, "t")
    model = build_model(cfg, CPU)
    batch = random_batch(batch_shape(cfg), model.input_size, 10, clean=True, device=CPU)
    plain = {k: v for k, v in batch.items() if k != "drone_clean"}
    opt_off = make_optimizer(model, 1e-3, 0.05, exclude=model.restoration)
    opt_on = make_optimizer(model, 1e-3, 0.05)
    branch_ids = {id(p) for p in model.restoration.parameters()}
    assert not branch_ids & {id(p) for g in opt_off.param_groups for p in g["params"]}
    assert branch_ids <= {id(p) for g in opt_on.param_groups for p in g["params"]}

    def snapshot() -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.cat([p.detach().flatten() for p in model.restoration.parameters()]),
                model.drone_encoder.patch_embed.proj.weight.detach().clone())

    branch0, enc0 = snapshot()
    step_fn(model, plain, opt_off, step_options(cfg))()
    branch1, enc1 = snapshot()
    assert torch.equal(branch0, branch1) and not torch.equal(enc0, enc1)
    step_fn(model, batch, opt_on, step_options(cfg))()
    branch2, _ = snapshot()
    assert not torch.equal(branch1, branch2)


def test_random_batch_is_a_valid_cross_view_batch() -> None:
    batch = random_batch(BatchShape(3, 2), (8, 8), 5, clean=True, device=CPU, seed=1)
    assert batch["drone"].shape == batch["drone_clean"].shape == (6, 3, 8, 8)
    assert batch["satellite"].shape == (3, 3, 8, 8)
    sat = batch["satellite_label"]
    assert len(set(sat.tolist())) == 3 and int(sat.max()) < 5
    assert batch["drone_label"].tolist() == sat.repeat_interleave(2).tolist()
    again = random_batch(BatchShape(3, 2), (8, 8), 5, clean=False, device=CPU, seed=1)
    assert "drone_clean" not in again and torch.equal(again["drone"], batch["drone"])
    with pytest.raises(ValueError, match="locations"):
        random_batch(BatchShape(6, 1), (8, 8), 5, clean=False, device=CPU)


def test_step_timing_figures() -> None:
    t = StepTiming([0.3, 0.1, 0.2, 10.0], images_per_step=6)
    assert t.median_s == pytest.approx(0.25) and t.mean_s == pytest.approx(2.65)
    assert t.images_per_s == pytest.approx(24.0) and t.summary()["peak_memory_gib"] is None


def test_batch_option_checks() -> None:
    cfg = benchmark_config(load_config(PAPER), TINY, "t")
    assert batch_shape(cfg) == BatchShape(2, 2)
    assert batch_shape(cfg, 6) == BatchShape(3, 2)
    for bad in (5, 2):
        with pytest.raises(UserError, match=f"--batch {bad}"):
            batch_shape(cfg, bad)


def test_config_without_branch_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    step_cost = load_script("step_cost")
    code = step_cost.main(["--config", str(CONFIGS / "baseline-ce.yaml"), "--device", "cpu",
                           *[a for o in TINY if "restor" not in o for a in ("--set", o)]])
    err = capsys.readouterr().err
    assert code == 2 and "model.restoration true" in err and err.count("\n") == 1


def test_benchmark_config_forces_offline_random_init(tmp_path: Path) -> None:
    raw = load_config(PAPER)
    raw["model"]["weights"] = "/nowhere/w.safetensors"
    cfg = benchmark_config(raw, ["train.lr=2e-5"], "t")
    assert cfg.model["pretrained"] is False and "weights" not in cfg.model
    assert cfg.weather.conditions == "none" and cfg.train.lr == 2e-5
    with pytest.raises(UserError, match=r"model\.weights must be an existing"):
        benchmark_config(raw, [], "t", keep_weights=True)
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")  # the config check needs the file to exist
    raw["model"]["weights"] = str(weights)
    kept = benchmark_config(raw, [], "t", keep_weights=True)
    assert kept.model["weights"] == str(weights)
    with pytest.raises(UserError, match=r"train\.epochs"):
        benchmark_config(raw, ["train.epochs=0"], "t")
