"""Each comparison method trains with ``mcgf train`` and is scored by ``mcgf evaluate``,
exactly as MCGF is, on a tiny University-1652 tree (4 training locations, 5 test ones)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from mcgf.cli.main import main
from mcgf.models.checkpoint import load_checkpoint
from tests.evaluation.conftest import tiny_u1652  # noqa: F401  (the test split)
from tests.models.test_every_model import TINY
from tests.training.tiny_run import write_tree

#: The loss terms each method logs, and whether its encoder trains.
TERMS = {"lpn": (["ce"], True), "mbeg": (["ce", "ntxent"], False),
         "sample4geo": (["infonce"], True)}


def _config(root: Path, method: str, **model: object) -> dict:
    return {
        "data": {"root": str(root), "locations_per_batch": 2, "drones_per_location": 2,
                 "workers": 0, "satellite_rotate": 90, "drone_flip": True},
        "weather": {"conditions": ["fog", "rain"], "seed": 1},
        "model": {"name": method, **TINY[method], **model},
        "train": {"epochs": 2, "seed": 0, "lr": 1e-3, "warmup_steps": 1, "device": "cpu",
                  "log_every": 1},
    }


@pytest.mark.parametrize("method", sorted(TERMS))
def test_train_then_evaluate(method: str, tiny_u1652: Path, tmp_path: Path) -> None:  # noqa: F811
    root = write_tree(tiny_u1652)  # training locations next to the test split
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_config(root, method)))
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(run), "--quiet"]) == 0
    with (run / "log.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    terms, encoder_trains = TERMS[method]
    assert len(rows) == 4  # 4 locations / P=2 → 2 steps per epoch, 2 epochs
    assert all(float(r[t]) > 0 for r in rows for t in [*terms, "total"])
    grad_columns = [c for c in rows[0] if c.startswith("grad_encoder_")]
    assert grad_columns == ([f"grad_encoder_{t}" for t in terms] if encoder_trains else [])
    ck = load_checkpoint(run / "last")
    assert ck.config["model"]["name"] == method and ck.config["model"]["num_classes"] == 4

    out = tmp_path / "eval"
    assert main(["evaluate", str(root), "--checkpoint", str(run / "last"), "--out", str(out),
                 "--workers", "0", "--batch-size", "8", "--quiet", "--device", "cpu"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    rows_by_direction = {r["direction"]: r["metrics"] for r in report["results"]}
    assert set(rows_by_direction) == {"drone->satellite", "satellite->drone"}
    d2s = rows_by_direction["drone->satellite"]
    assert 0 <= d2s["R@1"] <= 100 and d2s["num_queries"] == 15
    assert "mcgf-checkpoint:" in json.dumps(report)


def test_training_refuses_a_frozen_random_encoder(tiny_u1652: Path, tmp_path: Path,  # noqa: F811
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    root = write_tree(tiny_u1652)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_config(root, "mbeg", allow_random_encoder=False)))
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mcgf: error: model 'mbeg'")
    assert "frozen random encoder is meaningless" in err
    assert not (tmp_path / "run" / "last").exists()
