"""The training-time validator gives the evaluation protocol's numbers."""

from __future__ import annotations

from pathlib import Path

import torch

from mcgf.evaluation.university import ExtractOptions, evaluate_university
from mcgf.evaluation.validation import (
    combine_validators,
    restoration_validator,
    university_validator,
)
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


def restoring_model() -> MCGFModel:
    torch.manual_seed(0)
    model = MCGFModel("vit_tiny_patch16_224", num_classes=3, img_size=32, bottleneck_dim=16,
                      restoration_width=8, restoration_mults=(1, 2), restoration_blocks=1,
                      restore_size=16)
    assert model.restoration is not None
    torch.nn.init.normal_(model.restoration.denoiser.conv_out.weight, std=0.05)
    return model.train()


def test_restoration_validator_scores_a_fixed_weathered_set(tiny_u1652: Path, monkeypatch) -> None:  # noqa: F811
    import numpy as np
    from PIL import Image

    from mcgf.data.images import read_image
    from mcgf.data.transforms import Preprocess
    from mcgf.weather import apply_weather

    model = restoring_model()
    validate = restoration_validator(tiny_u1652, images=4, steps=2, batch_size=3)
    first = validate(model)
    assert model.training  # back in training mode
    assert set(first) == {"val_restore_psnr", "val_restore_ssim"}
    assert 0 < first["val_restore_psnr"] < 60 and -1 < first["val_restore_ssim"] < 1
    assert validate(model) == first  # same pixels, same starting noise

    # A perfect restoration scores PSNR inf and SSIM 1: the target is the clean image at
    # the branch's size, and the inputs are the first images by key, weathered by the
    # non-normal conditions in order with the test dark recipe.
    seen: list[torch.Tensor] = []

    def perfect(weathered: torch.Tensor, **_: object) -> torch.Tensor:
        seen.append(weathered)
        start = sum(len(s) for s in seen[:-1])
        return model.restoration_target(clean[start:start + len(weathered)])

    pre = Preprocess.for_embedder(model)
    folder = tiny_u1652 / "test" / "query_drone"
    paths = sorted(folder.glob("*/*"))[:4]
    clean = torch.stack([pre(read_image(p)) for p in paths])
    monkeypatch.setattr(model, "restore", perfect)
    assert validate(model) == {"val_restore_psnr": float("inf"), "val_restore_ssim": 1.0}
    conditions = ["fog", "rain", "snow", "dark"]
    for k in (0, 3):
        key = f"{paths[k].parent.name}/{paths[k].name}"
        img = apply_weather(np.asarray(read_image(paths[k])), conditions[k], seed=0, key=key,
                            dark_variant="test")
        assert torch.equal(torch.cat(seen)[k], pre(Image.fromarray(img)))


def test_restoration_validator_without_branch_and_combined(tiny_u1652: Path) -> None:  # noqa: F811
    plain = MCGFModel("vit_tiny_patch16_224", num_classes=3, img_size=32, bottleneck_dim=16,
                      restoration=False)
    assert restoration_validator(tiny_u1652, images=2, steps=1)(plain) == {}
    both = combine_validators([lambda m: {"val_R@1": 1.0}, lambda m: {"val_restore_psnr": 2.0}])
    assert both(plain) == {"val_R@1": 1.0, "val_restore_psnr": 2.0}
