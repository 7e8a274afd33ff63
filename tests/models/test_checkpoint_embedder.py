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
    # One shared encoder embeds both views alike: the view is not part of the identity.
    sat = build_embedder("checkpoint", checkpoint=str(tmp_path / "a"), view="satellite")
    assert sat.identity == ids[0]


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


def test_unshared_checkpoint_evaluates_each_view_with_its_encoder(tmp_path: Path, tiny_u1652: Path) -> None:  # noqa: F811
    """Drone folders go through the drone encoder and satellite folders through the
    satellite encoder; a shared model embeds both views alike under one identity."""
    from mcgf.evaluation.university import evaluate_university

    cfg = {**CONFIG, "share_encoder": False}
    torch.manual_seed(0)
    model = MCGFModel(**{k: v for k, v in cfg.items() if k != "name"}).eval()  # type: ignore[arg-type]
    # Make the two encoders differ so that a wrong view changes the features.
    with torch.no_grad():
        for p in model.satellite_encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_checkpoint(tmp_path / "ck", model, cfg)
    emb = build_embedder("checkpoint", checkpoint=str(tmp_path / "ck"))
    sat = emb.for_view("satellite")
    assert sat.view == "satellite" and sat.identity != emb.identity
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(sat.embed(x), model.embed(x, "satellite"))
        assert not torch.allclose(sat.embed(x), model.embed(x, "drone"))

    seen: list[str] = []
    original = MCGFModel.embed

    def spy(self: MCGFModel, images: torch.Tensor, view: str) -> torch.Tensor:
        seen.append(view)
        return original(self, images, view)

    MCGFModel.embed = spy  # type: ignore[method-assign]
    try:
        evaluate_university(tiny_u1652, emb, options=None, directions=("drone->satellite",))
    finally:
        MCGFModel.embed = original  # type: ignore[method-assign]
    assert "drone" in seen and "satellite" in seen

    shared = build_embedder("checkpoint", checkpoint=str(_shared(tmp_path)))
    assert shared.for_view("satellite").identity == shared.identity


def _shared(tmp_path: Path) -> Path:
    save_tiny(tmp_path / "shared")
    return tmp_path / "shared"


def test_speed_options_embed_the_same_features(tmp_path: Path, tiny_u1652: Path) -> None:  # noqa: F811
    """``compile`` (here ``aot_eager``) gives the same features under the same identity;
    ``weights_dtype=bf16`` gives close ones (cosine > 0.99) under another identity."""
    import pytest

    save_tiny(tmp_path / "ck")
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    plain = build_embedder("checkpoint", checkpoint=str(tmp_path / "ck"))
    compiled = build_embedder("checkpoint", checkpoint=str(tmp_path / "ck"), compile="aot_eager")
    half = build_embedder("checkpoint", checkpoint=str(tmp_path / "ck"), weights_dtype="bf16")
    assert compiled.identity == plain.identity
    assert half.identity == plain.identity + ":weights=bf16"
    assert next(half.model.parameters()).dtype == torch.bfloat16
    ref = plain.embed(x)
    torch.testing.assert_close(compiled.embed(x), ref, rtol=1e-5, atol=1e-6)
    low = half.embed(x).float()
    assert low.shape == ref.shape
    cos = torch.nn.functional.cosine_similarity(low, ref, dim=1)
    assert float(cos.min()) > 0.99
    with pytest.raises(Exception, match="weights_dtype must be one of fp32, bf16"):
        build_embedder("checkpoint", checkpoint=str(tmp_path / "ck"), weights_dtype="fp8")
    # Through the command line: the option reaches the metrics' embedder identity.
    out = tmp_path / "out"
    assert main(["evaluate", str(tiny_u1652), "--checkpoint", str(tmp_path / "ck"),
                 "--embedder-arg", "weights_dtype=bf16", "--out", str(out), "--workers", "0",
                 "--batch-size", "4", "--quiet", "--device", "cpu"]) == 0
    assert ":weights=bf16" in (out / "metrics.json").read_text()


def test_rotated_satellite_embedding_is_cached_apart_from_the_drone_one(tmp_path: Path) -> None:
    """With ``satellite_rotations`` a shared encoder embeds an image differently as a
    satellite tile: the view is part of the identity, so the feature cache does not serve
    one view's features for the other."""
    import numpy as np
    from PIL import Image

    from mcgf.data.layout import UNKNOWN_LABEL, ImageRecord
    from mcgf.evaluation.features import extract_features

    cfg = {**CONFIG, "satellite_rotations": 4}
    torch.manual_seed(0)
    model = MCGFModel(**{k: v for k, v in cfg.items() if k != "name"}).eval()  # type: ignore[arg-type]
    save_checkpoint(tmp_path / "ck", model, cfg)
    drone = build_embedder("checkpoint", checkpoint=str(tmp_path / "ck"))
    sat = drone.for_view("satellite")
    assert sat.identity != drone.identity
    rng = np.random.default_rng(0)
    records = []
    for i in range(3):
        path = tmp_path / f"t{i}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        records.append(ImageRecord(path, UNKNOWN_LABEL, "satellite"))
    cache = tmp_path / "cache"
    extract_features(records, drone, cache_dir=cache, progress=False, device="cpu")
    got = extract_features(records, sat, cache_dir=cache, progress=False, device="cpu")
    want = extract_features(records, sat, cache_dir=None, progress=False, device="cpu")
    assert not got.from_cache
    assert np.array_equal(got.features, want.features)


class TwoEncoders(torch.nn.Module):
    """A model of one's own whose embedding depends on the view, without ``share_encoder``."""

    input_size = (8, 8)
    mean = std = (0.5, 0.5, 0.5)

    def __init__(self) -> None:
        super().__init__()
        self.drone, self.satellite = torch.nn.Linear(3, 4), torch.nn.Linear(3, 4)

    def embed(self, images: torch.Tensor, view: str) -> torch.Tensor:
        return torch.nn.functional.normalize(getattr(self, view)(images.mean((2, 3))), dim=1)


def test_a_model_that_does_not_say_its_views_embed_alike_is_cached_per_view() -> None:
    """Only a model that declares ``share_encoder = True`` (MCGF, the comparison methods)
    shares one identity across views: any other may embed a view differently, and the
    feature cache must not serve one view's features for the other."""
    from mcgf.models.checkpoint_embedder import CheckpointEmbedder

    model = TwoEncoders().eval()
    drone = CheckpointEmbedder(model, "user-checkpoint:0")
    assert drone.identity != drone.for_view("satellite").identity
    model.share_encoder = True  # type: ignore[assignment]
    alike = CheckpointEmbedder(model, "user-checkpoint:0")
    assert alike.identity == alike.for_view("satellite").identity == "user-checkpoint:0"


USER_MODEL = '''
import torch
import torch.nn.functional as F
from mcgf.models.base import TrainableMixin


class UserNet(TrainableMixin, torch.nn.Module):
    input_size, mean, std = (16, 16), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3, 4)

    def embed(self, images, view):
        return F.normalize(self.proj(images.mean(dim=(2, 3))), dim=1)
'''


def test_the_identity_of_a_model_of_ones_own_follows_its_code(tmp_path: Path) -> None:
    """Editing a model defined outside mcgf changes its checkpoint's identity, so the
    feature cache does not serve what the old code computed; mcgf's own models are
    covered by mcgf's version and get no code digest."""
    import hashlib
    import importlib.util
    import sys

    from mcgf.models import model_registry
    from mcgf.models.checkpoint_embedder import model_code_digest

    source = tmp_path / "usernet_for_identity.py"
    source.write_text(USER_MODEL)
    spec = importlib.util.spec_from_file_location("usernet_for_identity", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    model_registry.register_model("test-usernet")(module.UserNet)
    try:
        save_checkpoint(tmp_path / "ck", module.UserNet(), {"name": "test-usernet"})
        first = build_embedder(CHECKPOINT_EMBEDDER, checkpoint=str(tmp_path / "ck")).identity
        digest = hashlib.sha256(USER_MODEL.encode()).hexdigest()[:12]
        assert model_code_digest(module.UserNet) == digest
        assert first.endswith(f":code={digest}:view=drone")
        source.write_text(USER_MODEL.replace("images.mean(dim=(2, 3))", "images.amax(dim=(2, 3))"))
        second = build_embedder(CHECKPOINT_EMBEDDER, checkpoint=str(tmp_path / "ck")).identity
        assert second != first and second.rsplit(":code=", 1)[0] == first.rsplit(":code=", 1)[0]
    finally:
        model_registry._MODELS._factories.pop("test-usernet", None)
        sys.modules.pop(spec.name, None)
    assert model_code_digest(MCGFModel) is None
