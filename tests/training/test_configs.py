"""Every shipped training config parses, builds its model, and the paper-scale trio agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from mcgf.config import apply_overrides, load_config
from mcgf.models.model_registry import create_model
from mcgf.training.config import RunConfig, parse_run_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TRAIN_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if "train" in load_config(p))
PAPER = CONFIGS / "mcgf-eva02-l-448.yaml"
BASELINE = CONFIGS / "baseline-ce.yaml"
INFONCE = CONFIGS / "mcgf-infonce.yaml"
PRESET_24GB = CONFIGS / "mcgf-eva02-l-448-24gb.yaml"
EVA = "eva02_large_patch14_448.mim_m38m_ft_in22k_in1k"
BRANCH_KEYS = {"restoration_width", "restoration_mults", "restoration_blocks", "restore_size",
               "restoration_condition"}


def _parse(path: Path, overrides: tuple[str, ...] = ()) -> RunConfig:
    return parse_run_config(apply_overrides(load_config(path), overrides), str(path))


def _on_meta(cfg: RunConfig) -> torch.nn.Module:
    """The config's model with shapes only (no memory, no init cost, no weights lookup)."""
    options: dict[str, Any] = {**cfg.model, "pretrained": False, "weights": None, "num_classes": 701}
    with torch.device("meta"):
        return create_model(**options)


def _params(module: torch.nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def test_the_paper_scale_configs_are_found() -> None:
    names = {p.name for p in TRAIN_CONFIGS}
    assert {PAPER.name, BASELINE.name, INFONCE.name, "demo-cpu.yaml"} <= names


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.name)
def test_config_parses_and_its_model_builds(path: Path) -> None:
    cfg = _parse(path)
    model = _on_meta(cfg)
    img = cfg.model.get("img_size")
    if img is not None:
        assert model.input_size == (img, img)
    if cfg.model["name"] != "mcgf":  # the comparison methods: tests/models/test_method_configs.py
        encoder = model.backbone if cfg.model["name"] == "musenet" else model.encoder
        assert _params(encoder) > 0
        return
    encoder, branch = _params(model.drone_encoder), _params(model.restoration)
    assert encoder > 0
    assert (branch > 0) == bool(cfg.model.get("restoration", True))
    # The restoration branch stays within 10 % of the encoder's parameters.
    assert branch <= 0.10 * encoder


def test_paper_scale_values() -> None:
    cfg = _parse(PAPER)
    m, t = cfg.model, cfg.train
    assert m["backbone_name"] == EVA and m["img_size"] == 448
    assert m["pretrained"] is True and m["grad_checkpointing"] is True and m["restoration"] is True
    assert cfg.data.root == "data/University-Release"
    assert cfg.weather.conditions == "random"
    assert t.layer_decay is not None and 0 < t.layer_decay < 1
    assert t.amp == "auto" and m["lambda_restore"] > 0 and m["infonce"] == 0
    model = _on_meta(cfg)
    assert _params(model.drone_encoder) == pytest.approx(304.1e6, rel=1e-3)
    assert _params(model.restoration) == pytest.approx(14.87e6, rel=1e-3)


def test_baseline_is_the_paper_config_without_branch() -> None:
    paper, base = load_config(PAPER), load_config(BASELINE)
    assert base["data"] == paper["data"] and base["weather"] == paper["weather"]
    expected_model = {k: v for k, v in paper["model"].items() if k not in BRANCH_KEYS}
    assert base["model"] == {**expected_model, "restoration": False, "lambda_restore": 0.0}
    assert base["train"] == paper["train"]
    assert _parse(BASELINE).model["lambda_restore"] == 0
    assert _on_meta(_parse(BASELINE)).restoration is None


def test_infonce_is_the_paper_config_plus_infonce() -> None:
    paper, nce = load_config(PAPER), load_config(INFONCE)
    assert {k: nce[k] for k in ("data", "weather", "train")} == \
        {k: paper[k] for k in ("data", "weather", "train")}
    assert nce["model"]["infonce"] > 0
    assert nce["model"] == {**paper["model"], "infonce": nce["model"]["infonce"]}


def test_24gb_preset_is_the_paper_config_with_smaller_micro_batches() -> None:
    """Same model, data, weather and global batch; the three changes its header names."""
    paper, preset = load_config(PAPER), load_config(PRESET_24GB)
    assert preset["weather"] == paper["weather"]
    assert preset["data"] == {**paper["data"], "locations_per_batch": 8}
    assert preset["train"] == {**paper["train"], "accumulate": 8}
    assert preset["model"] == {**paper["model"], "restoration_grad_checkpointing": True}
    cfg = _parse(PRESET_24GB)
    d, t = cfg.data, cfg.train
    assert t.accumulate * d.locations_per_batch * d.drones_per_location == 128
    text = PRESET_24GB.read_text()
    assert "11.4 GiB" in text and "benchmarks/memory_estimate.py" in text


def test_paper_config_is_overridable() -> None:
    cfg = _parse(PAPER, ("train.lr=3e-5", "model.restore_size=160", "data.root=/data/U1652"))
    assert cfg.train.lr == 3e-5 and cfg.model["restore_size"] == 160
    assert cfg.data.root == "/data/U1652"


def test_paper_config_augments_as_the_public_recipes_and_states_its_global_batch() -> None:
    cfg = _parse(PAPER)
    d, t = cfg.data, cfg.train
    assert d.drone_flip and d.satellite_flip and d.satellite_rotate == 90
    assert 0 < d.shift_jitter < 0.1 and 0 < d.scale_jitter < 0.2
    # One GPU: 4 micro-batches of 16 locations x 2 drone views = the stated 128 per step.
    assert t.accumulate * d.locations_per_batch * d.drones_per_location == 128
    assert t.lr == pytest.approx(1e-4) and t.eval_every > 0
    model = _on_meta(cfg)
    blocks = model.drone_encoder.blocks
    assert blocks[-1].drop_path1.drop_prob == pytest.approx(0.15)  # drop path reaches timm
    # Each of these values names where it comes from (a public recipe) or says "guess".
    lines = PAPER.read_text().splitlines()
    for key in ("drone_flip", "satellite_flip", "satellite_rotate", "shift_jitter", "scale_jitter",
                "drop_path_rate", "weight_decay", "label_smoothing"):
        line = next(x for x in lines if x.strip().startswith(f"{key}:"))
        sources = ("University-1652 baseline", "MCCG", "Sample4Geo", "EVA-02", "guess")
        assert any(s in line for s in sources), line
    text = "\n".join(lines)
    assert "--nproc-per-node 4" in text and "train.accumulate=1" in text  # the per-GPU table
