"""benchmarks/ablation.py on a tiny run: both variants train, evaluate and are compared."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from tests.training.test_loop import root as root

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ablation.py"


def load():
    spec = importlib.util.spec_from_file_location("ablation", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["ablation"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_variant_config_toggles_only_the_branch() -> None:
    abl = load()
    cfg = {"model": {"restoration": True, "img_size": 32}, "train": {"lambda_restore": 0.5, "lr": 1.0}}
    off = abl.variant_config(cfg, False, 0.5)
    assert off["model"] == {"restoration": False, "img_size": 32}
    assert off["train"] == {"lambda_restore": 0.0, "lr": 1.0}
    assert cfg["model"]["restoration"] is True  # input untouched
    assert abl.variant_config(cfg, True, 0.2)["train"]["lambda_restore"] == 0.2


def test_markdown_differences_and_mean() -> None:
    abl = load()
    table = {"on": {"normal": {"R@1": 50.0, "AP": 40.0}, "fog": {"R@1": 30.0, "AP": 20.0}},
             "off": {"normal": {"R@1": 45.0, "AP": 41.0}, "fog": {"R@1": 20.0, "AP": 20.0}}}
    text = abl.markdown(table)
    assert "| normal | 50.00 | 45.00 | +5.00 | 40.00 | 41.00 | -1.00 |" in text
    assert "| mean | 40.00 | 32.50 | +7.50 | 30.00 | 30.50 | -0.50 |" in text


def test_tiny_ablation_end_to_end(root: Path, tmp_path: Path) -> None:
    abl = load()
    # The training tree of the loop tests has no test split: evaluate on a copy of train.
    import shutil

    data = tmp_path / "U"
    shutil.copytree(root, data)
    test = data / "test"
    shutil.copytree(data / "train" / "drone", test / "query_drone")
    shutil.copytree(data / "train" / "satellite", test / "gallery_satellite")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"data: {{root: {data}, locations_per_batch: 2, drones_per_location: 2}}\n"
        "weather: {conditions: random}\n"
        "model: {backbone_name: vit_tiny_patch16_224, img_size: 32, bottleneck_dim: 8,"
        " restoration_width: 8, restoration_mults: [1], restoration_blocks: 1}\n"
        "train: {epochs: 1, lr: 0.001, lambda_restore: 0.3}\n")
    out = tmp_path / "abl"
    assert abl.main(["--config", str(cfg), "--out", str(out)]) == 0
    result = json.loads((out / "ablation.json").read_text())
    assert result["lambda_restore"] == 0.3
    assert set(result["results"]) == {"on", "off"}
    assert len(result["results"]["on"]) == 10
    on_cfg = json.loads((out / "on" / "last" / "config.json").read_text())
    off_cfg = json.loads((out / "off" / "last" / "config.json").read_text())
    assert on_cfg["model"]["restoration"] is True and off_cfg["model"]["restoration"] is False
    assert "| mean |" in (out / "ablation.md").read_text()
