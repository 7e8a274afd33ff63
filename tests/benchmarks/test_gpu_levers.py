"""``benchmarks/gpu_levers.py``: the tiny CPU run end to end (every row present, each
row's TFLOP/s from the counted FLOPs and its median time), the budget, and the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmarks.conftest import load_script


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    gl = load_script("gpu_levers")
    out = tmp_path_factory.mktemp("levers")
    assert gl.main(["--tiny", "--out", str(out), "--steps", "2", "--embed-batches", "2",
                    "--warmup", "1", "--embed-batch", "8", "--peak-tflops", "0.5"]) == 0
    return json.loads((out / "gpu_levers.json").read_text()), (out / "gpu_levers.md").read_text()


def test_every_lever_is_a_row_with_consistent_figures(tiny_report: tuple[dict, str]) -> None:
    report, text = tiny_report
    assert report["tiny"] is True and report["skipped"] == []
    names = [r["name"] for r in report["train"]]
    assert names == ["baseline", "+fused (CPU: unchanged)", "+joint", "+denoiser ckpt",
                     "24 GB preset (8 locations)", "+ckpt 8 of 12 blocks",
                     "+compile (aot_eager)"]
    assert [r["name"] for r in report["embed"]] == [
        "autocast, fp32 weights", "compiled (aot_eager)", "compiled, bf16 weights (aot_eager)"]
    for r in report["train"] + report["embed"]:
        assert "error" not in r, r
        assert r["median_ms"] > 0 and r["images_per_s"] > 0
        assert r["share_of_peak"] == pytest.approx(r["tflops"] / 0.5)
    # One step's FLOPs over its median time; the preset batch (8 locations) counts more.
    rows = {r["name"]: r for r in report["train"]}
    base, preset = rows["baseline"], rows["24 GB preset (8 locations)"]
    step_flops = base["tflops"] * 1e12 * base["median_ms"] / 1e3
    assert rows["+joint"]["tflops"] * 1e12 * rows["+joint"]["median_ms"] / 1e3 == \
        pytest.approx(step_flops)
    assert preset["tflops"] * preset["median_ms"] > 3 * base["tflops"] * base["median_ms"]
    assert "| +joint |" in text and "× first" in text


def test_the_budget_skips_the_rows_that_would_start_after_it(tmp_path: Path) -> None:
    gl = load_script("gpu_levers")
    assert gl.main(["--tiny", "--out", str(tmp_path), "--steps", "1", "--embed-batches", "1",
                    "--warmup", "0", "--embed-batch", "4", "--budget", "0"]) == 0
    report = json.loads((tmp_path / "gpu_levers.json").read_text())
    assert report["train"] == [] and report["embed"] == []
    assert len(report["skipped"]) == 10 and "budget" in report["skipped"][0]
    assert "skipped: embed: autocast" in (tmp_path / "gpu_levers.md").read_text()


@pytest.mark.parametrize("option", [["--steps", "0"], ["--classes", "1"], ["--warmup", "-1"],
                                    ["--preset-locations", "1"], ["--checkpoint-blocks", "0"]])
def test_bad_options_are_one_line_before_anything_runs(
        option: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gl = load_script("gpu_levers")
    with pytest.raises(SystemExit) as stop:
        gl.main(["--tiny", "--out", str(tmp_path), *option])
    assert stop.value.code == 2
    assert "--checkpoint-blocks must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "gpu_levers.json").exists()


def test_more_locations_than_classes_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gl = load_script("gpu_levers")
    assert gl.main(["--tiny", "--out", str(tmp_path), "--preset-locations", "8",
                    "--classes", "4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "raise --classes" in err
