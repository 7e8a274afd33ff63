from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mcgf.cli.main import main

TRAIN = """
data: {root: set-by-demo, locations_per_batch: 2, drones_per_location: 2, workers: 0,
       satellite_rotate: 180, drone_flip: true, scale_jitter: 0.1, shift_jitter: 0.05}
weather: {conditions: random, seed: 0}
model: {name: mcgf, backbone_name: eva02_tiny_patch14_224, img_size: 32, bottleneck_dim: 16,
        backbone_args: {patch_size: 8, depth: 1, embed_dim: 32, num_heads: 1, global_pool: avg,
                        ref_feat_shape: [4, 4]},
        restoration: true, restoration_width: 8, restoration_mults: [1], restoration_blocks: 1,
        restore_size: 16, lambda_restore: 0.1}
train: {epochs: 1, lr: 0.001}
"""


def demo_args(tmp_path: Path, out: Path, cfg: Path, *extra: str) -> list[str]:
    train_cfg = tmp_path / "train.yaml"
    train_cfg.write_text(TRAIN)
    return ["demo", "--out", str(out), "--config", str(cfg), "--workers", "1",
            "--train-config", str(train_cfg), *extra]


def test_demo_generates_checks_trains_evaluates_and_reuses(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("synth: {train: 2, test: 2, distractors: 1, extra_distractors: 1, views: 2, size: 64}\n")
    out = tmp_path / "run"
    assert main(demo_args(tmp_path, out, cfg)) == 0
    text = capsys.readouterr().out
    assert "OK: the dataset can be used" in text
    import json

    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["embedder"].startswith("mcgf-checkpoint:")
    assert (out / "train" / "last" / "model.safetensors").is_file()
    html = (out / "report" / "index.html").read_text()
    assert "<img" in html and "report: " in text
    conditions = {r["condition"] for r in metrics["results"]}
    assert len(conditions) == 10 and "fog" in conditions
    assert {r["direction"] for r in metrics["mean"]} == {"drone->satellite", "satellite->drone"}
    assert "| mean | drone->satellite |" in text
    assert (out / "data" / "University-Release" / "train" / "drone" / "0001").is_dir()
    stamp = (out / "data" / "metadata.json").stat().st_mtime_ns
    weights = (out / "train" / "last" / "model.safetensors").stat().st_mtime_ns
    assert main(demo_args(tmp_path, out, cfg)) == 0
    text = capsys.readouterr().out
    assert "identical benchmark is already there; reusing it" in text
    assert "finished run with the same config is already there" in text
    assert (out / "data" / "metadata.json").stat().st_mtime_ns == stamp
    assert (out / "train" / "last" / "model.safetensors").stat().st_mtime_ns == weights
    # A changed option regenerates (and retrains: the data changed).
    assert main(demo_args(tmp_path, out, cfg, "--set", "synth.views=3")) == 0
    assert "finished run with the same config" not in capsys.readouterr().out
    assert (out / "train" / "last" / "model.safetensors").stat().st_mtime_ns != weights
    assert len(list((out / "data" / "University-Release" / "train" / "drone" / "0001").iterdir())) == 3


def test_demo_bad_config_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path), "--set", "synth.views=0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the demo config: synth.views must be between 1 and 54 (got 0)" in err


def test_a_bad_train_set_value_is_named_as_the_train_set(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """As mcgf train names a bad --set, the demo names a bad --train-set, not the training
    config file that does not hold the value; an error of the file still names the file."""
    train_cfg = tmp_path / "train.yaml"
    train_cfg.write_text(TRAIN)
    base = ["demo", "--out", str(tmp_path / "run"), "--train-config", str(train_cfg)]
    assert main([*base, "--train-set", "train.epochs=abc"]) == 2
    assert capsys.readouterr().err == ("mcgf: error: --train-set train.epochs=abc: train.epochs "
                                       "must be an integer (got 'abc')\n")
    train_cfg.write_text(TRAIN.replace("epochs: 1", "epochs: 0"))
    assert main([*base, "--train-set", "train.lr=0.1"]) == 2
    assert capsys.readouterr().err == f"mcgf: error: {train_cfg}: train.epochs must be >= 1 (got 0)\n"
    assert not (tmp_path / "run").exists()


def test_demo_evaluates_every_condition_in_large_batches(tmp_path: Path) -> None:
    from mcgf.cli.demo import DEMO_EVAL_BATCH, evaluation_argv

    argv = evaluation_argv(tmp_path / "data", tmp_path / "eval", tmp_path / "last", 3, None)
    assert argv[:2] == ["evaluate", str(tmp_path / "data")]
    assert argv[argv.index("--batch-size") + 1] == str(DEMO_EVAL_BATCH) == "128"
    assert argv[argv.index("--weather") + 1] == "all"
    assert argv[argv.index("--weather-seed") + 1] == "3"
    assert "--workers" not in argv
    with_workers = evaluation_argv(tmp_path, tmp_path, tmp_path, 0, 3)
    assert with_workers[with_workers.index("--workers") + 1] == "2"


@pytest.mark.parametrize("extra", [["--set", "train.epochs=2"], ["--config", "TRAINING"]])
def test_demo_refuses_a_section_besides_synth(tmp_path: Path, extra: list[str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    train_cfg = tmp_path / "train.yaml"
    train_cfg.write_text(TRAIN)
    extra = [str(train_cfg) if a == "TRAINING" else a for a in extra]
    out = tmp_path / "run"
    # A training option given to the demo config was ignored: the benchmark then came from
    # mcgf synth's defaults and the demo trained as if the option were not there.
    argv = ["demo", "--out", str(out), "--train-config", str(tmp_path / "missing.yaml"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    section = "train" if "--set" in extra else "data"
    assert f"unknown section '{section}'" in err and "--train-set" in err
    assert not out.exists()


@pytest.mark.skipif(sys.platform == "win32", reason="no flock")
def test_a_demo_into_a_run_folder_in_use_stops_before_touching_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A second demo (or a demo beside an mcgf train) into the same OUT deleted OUT/train
    while the other trained there: it now stops in one line, before any work."""
    import subprocess

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("synth: {train: 2, test: 2, distractors: 1, extra_distractors: 1, views: 2, size: 64}\n")
    out = tmp_path / "run"
    (out / "train").mkdir(parents=True)
    (out / "train" / "log.csv").write_text("step\n1\n")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys\nfd = os.open(sys.argv[1], os.O_RDONLY)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nprint(1, flush=True)\nsys.stdin.read()\n",
         str(out / "train")], text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "1\n"
        assert main(demo_args(tmp_path, out, cfg, "--retrain")) == 2
    finally:
        holder.communicate("", timeout=30)
    assert "is in use by another mcgf demo or train" in capsys.readouterr().err
    assert (out / "train" / "log.csv").read_text() == "step\n1\n"
    assert not (out / "data").exists()
