"""One tiny training run, its evaluation and its report on a synthetic SUES-200 tree and on
a synthetic DenseUAV tree: every command reads the tree through its layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mcgf.cli.main import main
from mcgf.training import load_checkpoint
from mcgf.training.loop import read_train_split
from tests.layouts.conftest import make_tree


def tiny_config(root: Path, layout: str) -> dict:
    """1 epoch of a tiny ViT with its restoration branch, validated after the epoch."""
    return {
        "data": {"root": str(root), "layout": layout, "locations_per_batch": 2,
                 "drones_per_location": 2, "workers": 0},
        "weather": {"conditions": ["fog"], "seed": 1},
        "model": {"backbone_name": "vit_tiny_patch16_224", "img_size": 32, "bottleneck_dim": 16,
                  "dropout": 0.0, "restoration_width": 8, "restoration_mults": [1],
                  "restoration_blocks": 1},
        "train": {"epochs": 1, "seed": 0, "lr": 1e-3, "log_every": 1, "eval_every": 1,
                  "restore_val_images": 2, "restore_val_steps": 1},
    }


def train_evaluate_report(tmp_path: Path, data: Path, layout: str) -> tuple[Path, dict, str]:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(data, layout)))
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(run), "--quiet"]) == 0
    assert main(["evaluate", str(data), "--checkpoint", str(run / "last"), "--out", str(run / "eval"),
                 "--quiet", "--workers", "0", "--batch-size", "16"]) == 0
    assert main(["report", str(run), "--data", str(data), "--queries", "1", "--no-heatmaps",
                 "--restore-steps", "1", "--tile", "32", "--quiet"]) == 0
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    return run, metrics, (run / "report" / "index.html").read_text()


@pytest.fixture(scope="module")
def small_sues(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("s") / "data", "sues200", train=4, test=2, views=1)


def test_sues200_training_reads_every_height(small_sues: Path) -> None:
    drone, sat = read_train_split(small_sues)  # layout detected from the tree
    # Every height's views of a location in one class, its tile once.
    assert drone.num_images == 4 * 4 and sat.num_images == 4
    assert [p.name for p in drone.classes["0001"]] == ["150-01.jpeg", "200-01.jpeg",
                                                       "250-01.jpeg", "300-01.jpeg"]
    drone, _ = read_train_split(small_sues, "sues200:250")
    assert drone.num_images == 4


def test_sues200_train_evaluate_report(small_sues: Path, tmp_path: Path) -> None:
    run, metrics, page = train_evaluate_report(tmp_path, small_sues, "sues200")
    ck = load_checkpoint(run / "last")
    assert ck.config["model"]["num_classes"] == 4 and ck.config["data"]["layout"] == "sues200"
    log = (run / "log.csv").read_text().splitlines()
    header = log[0].split(",")
    # 16 drone images / (2 locations x 2 drones) = 4 steps, then the validation row.
    assert len(log) == 1 + 4 + 1 and "val_R@1" in header and "val_restore_psnr" in header
    assert [(r["subset"], r["direction"]) for r in metrics["results"]] == [
        (h, d) for h in ("150", "200", "250", "300") for d in ("drone->satellite", "satellite->drone")]
    assert [r["subset"] for r in metrics["mean"]] == ["mean", "mean"]
    assert "height 150 · clean" in page and "height mean · clean" in page
    assert "Pictures: the height 150 m test set of SUES-200" in page


def test_denseuav_train_evaluate_report(tmp_path: Path) -> None:
    data = make_tree(tmp_path / "data", "denseuav", train=4, test=2)
    run, metrics, page = train_evaluate_report(tmp_path, data, "denseuav")
    assert load_checkpoint(run / "last").config["model"]["num_classes"] == 4
    row = metrics["results"][0]["metrics"]
    assert metrics["protocol"] == "denseuav" and row["num_queries"] == 6 and row["gallery_size"] == 18
    assert 0.0 <= row["R@1"] <= row["SDM@1"] <= 100.0
    assert "<th>SDM@1</th>" in page and "poses from" in page
