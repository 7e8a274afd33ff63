from __future__ import annotations

from pathlib import Path

import pytest

from mcgf.cli.main import main


def test_demo_generates_checks_and_reuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("synth: {train: 2, test: 2, distractors: 1, extra_distractors: 1, views: 2, size: 64}\n")
    out = tmp_path / "run"
    assert main(["demo", "--out", str(out), "--config", str(cfg), "--workers", "1"]) == 0
    text = capsys.readouterr().out
    assert "OK: the dataset can be used" in text
    import json

    metrics = json.loads((out / "eval-thumbnail" / "metrics.json").read_text())
    assert metrics["embedder"].startswith("thumbnail")
    conditions = {r["condition"] for r in metrics["results"]}
    assert len(conditions) == 10 and "fog" in conditions
    assert {r["direction"] for r in metrics["mean"]} == {"drone->satellite", "satellite->drone"}
    assert "| mean | drone->satellite |" in text
    assert (out / "data" / "University-Release" / "train" / "drone" / "0001").is_dir()
    stamp = (out / "data" / "metadata.json").stat().st_mtime_ns
    assert main(["demo", "--out", str(out), "--config", str(cfg), "--workers", "1"]) == 0
    assert "reusing it" in capsys.readouterr().out
    assert (out / "data" / "metadata.json").stat().st_mtime_ns == stamp
    # A changed option regenerates.
    assert main(["demo", "--out", str(out), "--config", str(cfg), "--set", "synth.views=3", "--workers", "1"]) == 0
    assert len(list((out / "data" / "University-Release" / "train" / "drone" / "0001").iterdir())) == 3


def test_demo_bad_config_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path), "--set", "synth.views=0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--views" in err
