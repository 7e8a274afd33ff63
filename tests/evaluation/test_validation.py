"""The training-time validator gives the evaluation protocol's numbers."""

from __future__ import annotations

from pathlib import Path

import torch

from mcgf.evaluation.university import ExtractOptions, evaluate_university
from mcgf.evaluation.validation import university_validator
from mcgf.models.checkpoint_embedder import CheckpointEmbedder
from mcgf.models.mcgf_model import MCGFModel
from tests.evaluation.conftest import tiny_u1652  # noqa: F401  (fixture)


def test_validator_matches_evaluate_university_and_restores_mode(tiny_u1652: Path) -> None:  # noqa: F811
    torch.manual_seed(0)
    model = MCGFModel("vit_tiny_patch16_224", num_classes=3, img_size=32, bottleneck_dim=16,
                      restoration=False).train()
    got = university_validator(tiny_u1652, batch_size=4, device="cpu")(model)
    assert model.training  # back in training mode
    model.eval()
    rows = evaluate_university(tiny_u1652, CheckpointEmbedder(model, "m"), directions=("drone->satellite",),
                               options=ExtractOptions(batch_size=4, flip=False, device="cpu", progress=False))
    assert got == {"val_R@1": rows[0].metrics["R@1"], "val_AP": rows[0].metrics["AP"]}
    weathered = university_validator(tiny_u1652, conditions=["fog", "dark"], batch_size=4, device="cpu")(model)
    assert set(weathered) == {"val_R@1", "val_AP"} and 0 <= weathered["val_R@1"] <= 100
