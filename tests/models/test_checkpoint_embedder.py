"""The "checkpoint" embedder and `mcgf evaluate --checkpoint`."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mcgf.cli.main import main
from mcgf.models import CHECKPOINT_EMBEDDER, available_embedders, build_embedder
from mcgf.models.mcgf_model import MCGFModel
from mcgf.training import save_checkpoint
from tests.evaluation.conftest import tiny_u1652  # noqa: F401  (fixture)

CONFIG = {"name": "mcgf", "backbone_name": "vit_tiny_patch16_224", "num_classes": 3,
          "img_size": 32, "bottleneck_dim": 16, "dropout": 0.0, "restoration": False}


def save_tiny(path: Path, seed: int = 0) -> MCGFModel:
    torch.manual_seed(seed)
    model = MCGFModel(**{k: v for k, v in CONFIG.items() if k != "name"}).eval()  # type: ignore[arg-type]
    save_checkpoint(path, model, CONFIG)
    return model


def test_checkpoint_embedder_matches_model(tmp_path: Path) -> None:
    assert CHECKPOINT_EMBEDDER in available_embedders()
    model = save_tiny(tmp_path / "ck")
    emb = build_embedder("checkpoint", checkpoint=str(tmp_path / "ck"))
    assert emb.input_size == (32, 32)
    assert (emb.mean, emb.std) == (model.mean, model.std)
    assert emb.identity.startswith("mcgf-checkpoint:")
    x = torch.randn(3, 3, 32, 32)
    out = emb.embed(x)
    assert out.shape == (3, 16)
    with torch.no_grad():
        assert torch.equal(out, model.embed(x, "drone"))


def test_identity_follows_the_weights(tmp_path: Path) -> None:
    save_tiny(tmp_path / "a", seed=0)
    save_tiny(tmp_path / "b", seed=0)
    save_tiny(tmp_path / "c", seed=1)
    ids = [build_embedder("checkpoint", checkpoint=str(tmp_path / n)).identity for n in "abc"]
    assert ids[0] == ids[1] != ids[2]
    sat = build_embedder("checkpoint", checkpoint=str(tmp_path / "a"), view="satellite")
    assert sat.identity != ids[0]


def test_evaluate_cli_with_checkpoint(tiny_u1652: Path, tmp_path: Path) -> None:  # noqa: F811
    save_tiny(tmp_path / "ck")
    out = tmp_path / "out"
    # The folder is given through a file inside it (the CLI checks that the path is a file).
    rc = main(["evaluate", str(tiny_u1652), "--checkpoint", str(tmp_path / "ck"),
               "--out", str(out), "--workers", "0", "--batch-size", "4", "--quiet",
               "--device", "cpu"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    text = json.dumps(metrics)
    assert "mcgf-checkpoint:" in text and "R@1" in text
