"""``benchmarks/gpu_check.py``: the tiny CPU run end to end, and its Markdown table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.benchmarks.conftest import BENCHMARKS, load_script

ROOT = BENCHMARKS.parent


def test_tiny_run_writes_positive_throughputs(tmp_path: Path) -> None:
    out = tmp_path / "check"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_check.py"), "--tiny", "--out", str(out),
         "--steps", "3", "--cost-steps", "2", "--embed-batch", "8", "--embed-batches", "2",
         "--warmup", "1", "--restore-sizes", "8"],
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


def test_markdown_reports_failed_phases() -> None:
    gpu_check = load_script("gpu_check")
    timing = {"median_s": 0.5, "steps": 4, "images_per_s": 96.0, "images_per_step": 48,
              "peak_memory_gib": 30.0}
    report = {
        "device": "GPU X", "amp": "bf16", "phase_seconds": {"build": 2.0},
        "model_config": {"backbone_name": "eva", "img_size": 448},
        "params": {"encoder": 300e6, "branch": 15e6, "branch_share_of_encoder": 0.05},
        "batch": {"locations": 16, "drones_per_location": 2, "images": 48},
        "train": {**timing, "drone_images_per_s": 64.0},
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
