"""``benchmarks/pipeline.py``: the training loader's throughput on a tiny rendered sample."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.benchmarks.conftest import load_script

#: The paper config at 64 px with two locations per batch: 2 x (2 drone + 1 satellite).
TINY = ["--set", "model.img_size=64", "--set", "data.locations_per_batch=2"]


def _sample(tmp_path: Path) -> list[str]:
    return ["--cache-dir", str(tmp_path / "data"), "--locations", "2", "--views", "4",
            "--synth-size", "64", "--synth-workers", "1", *TINY]


def test_tiny_run_measures_the_training_loader(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pipeline = load_script("pipeline")
    out = tmp_path / "figures" / "pipeline.json"
    code = pipeline.main([*_sample(tmp_path), "--workers", "0,1", "--batches", "2", "--warmup", "1",
                          "--model-ips", "100", "--json", str(out), "--quiet"])
    assert code == 0
    r = json.loads(out.read_text())
    assert {"hardware", "python", "torch", "config", "data", "input_size", "batch_images", "runs",
            "stages", "model_ips", "model_ips_source", "per_worker_images_per_s",
            "workers_needed"} <= set(r)
    assert {"cpu", "logical_cpus", "load_average_start", "load_average_end"} <= set(r["hardware"])
    assert r["input_size"] == [64, 64] and r["weather"] == "random" and r["clean_twins"] is True
    assert r["data"]["synthetic"] and not r["data"]["reused"]
    assert (r["data"]["locations"], r["data"]["drone_images"], r["data"]["satellite_images"]) == (2, 8, 2)
    assert r["batch_images"] == 6
    assert [run["workers"] for run in r["runs"]] == [0, 1]
    for run in r["runs"]:
        assert run["batches"] == 2 and run["images"] == 2 * r["batch_images"]
        assert run["images_per_s"] > 0 and run["seconds"] > 0
        assert run["images_per_s_per_process"] == pytest.approx(run["images_per_s"])  # one process
    # The recommendation comes from the largest workers value measured.
    assert r["per_worker_basis_workers"] == 1
    assert r["per_worker_images_per_s"] == r["runs"][1]["images_per_s_per_process"]
    assert r["model_ips"] == 100 and r["model_ips_source"] == "--model-ips"
    assert r["workers_needed"] == math.ceil(100 / r["per_worker_images_per_s"])
    st = r["stages"]
    assert (st["images"], st["drone_images"]) == (6, 4)
    assert sum(st["share"].values()) == pytest.approx(1.0)
    assert all(st["ms_per_image"][k] > 0 for k in ("decode", "weather", "augment", "collate"))
    text = capsys.readouterr().out
    assert f"ceil(100 / {r['per_worker_images_per_s']:.2f}) = {r['workers_needed']}" in text
    assert "hardware: " in text and "logical CPUs" in text

    # The same settings again: the sample is reused, not rendered; no stage breakdown.
    again = tmp_path / "again.json"
    assert pipeline.main([*_sample(tmp_path), "--workers", "0", "--batches", "1", "--warmup", "0",
                          "--stage-batches", "0", "--json", str(again), "--quiet"]) == 0
    r2 = json.loads(again.read_text())
    assert r2["data"]["reused"] is True and r2["stages"] is None
    assert r2["model_ips"] == pipeline.MODEL_IPS == 40.5 and "gpu_check" in r2["model_ips_source"]
    assert r2["workers_needed"] == math.ceil(40.5 / r2["runs"][0]["images_per_s_per_process"])


def test_training_fed_by_the_loader_against_model_only(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The GPU half, run on the CPU with a tiny ViT: the loop's steps fed by the real loader
    beside the same steps on one batch, and their ratio."""
    from tests.benchmarks.conftest import TINY as TINY_MODEL

    pipeline = load_script("pipeline")
    model = [arg for item in TINY_MODEL if item.startswith("model.") and "num_classes" not in item
             for arg in ("--set", item)]
    out = tmp_path / "pipeline.json"
    assert pipeline.main([*_sample(tmp_path), *model, "--set", "model.img_size=32",
                          "--workers", "0", "--batches", "1", "--warmup", "1",
                          "--stage-batches", "0", "--train-steps", "3", "--train-workers", "1",
                          "--device", "cpu", "--json", str(out), "--quiet"]) == 0
    tr = json.loads(out.read_text())["training"]
    assert (tr["device"], tr["workers"], tr["steps"], tr["warmup"]) == ("cpu", 1, 3, 1)
    assert tr["loader_fed_images_per_s"] > 0 and tr["model_only_images_per_s"] > 0
    assert tr["fed_over_model_only"] == pytest.approx(
        tr["loader_fed_images_per_s"] / tr["model_only_images_per_s"])
    assert "fed by the loader (1 workers)" in capsys.readouterr().out


@pytest.mark.parametrize("args, words", [
    (["--data", "MISSING"], ["--data", "no such folder"]),
    (["--workers", "0,x"], ["--workers", "integers >= 0"]),
    (["--batches", "0"], ["--batches"]),
    (["--frobnicate"], ["unrecognized arguments"]),
])
def test_usage_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   args: list[str], words: list[str]) -> None:
    pipeline = load_script("pipeline")
    args = [str(tmp_path / "nothing-here") if a == "MISSING" else a for a in args]
    try:
        code = pipeline.main(args)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pipeline: error: ") and "Traceback" not in err
    assert all(w in err for w in words)
