"""The restoration branch's two conditioning modes on a tiny CNN and a tiny EVA-02 ViT."""

from __future__ import annotations

import json

import pytest
import torch

from mcgf.models import mcgf_model
from mcgf.models.backbone import encode_multiscale, feature_sources
from mcgf.models.mcgf_model import MCGFModel

RESNET = ("resnet18", {"backbone_args": {"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128],
                                         "pretrained_cfg_overlay": {"input_size": [3, 64, 64]}}})
EVA = ("eva02_tiny_patch14_224", {"img_size": 32, "backbone_args": {
    "patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 2, "global_pool": "avg",
    "ref_feat_shape": [4, 4]}})
BACKBONES = {"resnet": RESNET, "eva": EVA}


def tiny(kind: str, condition: str = "features", **kw: object) -> MCGFModel:
    torch.manual_seed(0)
    name, opts = BACKBONES[kind]
    model = MCGFModel(name, 3, restoration_condition=condition, bottleneck_dim=16, dropout=0.0,
                      restoration_width=8, restoration_mults=(1, 2), restoration_blocks=1,
                      restore_size=16, **opts, **kw)  # type: ignore[arg-type]
    assert model.restoration is not None
    # The zero-initialised output convolution blocks every gradient and makes ε = 0;
    # give it the weights a trained branch would have.
    torch.nn.init.normal_(model.restoration.denoiser.conv_out.weight, std=0.1)
    return model


def batch(model: MCGFModel, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = model.input_size[0]
    return {"drone": torch.randn(3, 3, s, s, generator=g),
            "drone_clean": torch.randn(3, 3, s, s, generator=g),
            "drone_label": torch.tensor([0, 1, 2]),
            "satellite": torch.randn(3, 3, s, s, generator=g),
            "satellite_label": torch.tensor([0, 1, 2])}


def test_cnn_scales_take_the_nearest_stage_and_vit_scales_the_final_map() -> None:
    cnn, vit = tiny("resnet"), tiny("eva")
    # ResNet at 64 px: stages at 32 (stem), 16, 8, 4, 2 px; the branch works at 16 and 8 px.
    assert feature_sources(cnn.drone_encoder, 64, [16, 8]) == [1, 2]
    assert cnn.restoration_sources == (1, 2, None)  # middle block: the final map
    assert cnn.restoration.denoiser.cond_channels == (16, 32, 128)
    assert feature_sources(cnn.drone_encoder, 64, [2, 1]) == [None, None]  # deepest = final
    # Every ViT block is on the patch grid: the final map everywhere.
    assert vit.restoration_sources == (None, None, None)
    assert vit.restoration.denoiser.cond_channels == (64, 64, 64)
    # A model without forward_intermediates falls back to the final map.
    plain = torch.nn.Conv2d(3, 4, 3)
    assert feature_sources(plain, 64, [16, 8]) == [None, None]


@pytest.mark.parametrize("kind", ["resnet", "eva"])
@pytest.mark.parametrize("condition", ["features", "features+image"])
def test_pooled_embedding_of_the_training_pass_is_exactly_embeds(kind: str, condition: str) -> None:
    model = tiny(kind, condition).eval()
    seen: list[torch.Tensor] = []
    model.head.bottleneck.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    b = batch(model)
    with torch.no_grad():
        out = model(b)
        assert "restoration_loss" in out
        emb = model.embed(b["drone"], "drone")
    # seen: forward's drone pass, forward's satellite pass, embed's pass.
    assert torch.equal(seen[0], seen[2])
    assert torch.equal(seen[0], model.drone_encoder(b["drone"]))
    assert torch.equal(emb, model.head.embed(seen[0]))


def test_features_mode_has_no_image_input_and_image_mode_keeps_six_channels() -> None:
    feat, image = tiny("eva"), tiny("eva", "features+image")
    assert feat.restoration.denoiser.conv_in.in_channels == 3
    assert image.restoration.denoiser.conv_in.in_channels == 6
    assert not feat.restoration.needs_image and image.restoration.needs_image
    with pytest.raises(ValueError, match="takes no weathered image"):
        feat.restoration.denoiser(torch.zeros(1, 3, 16, 16), torch.zeros(1), torch.zeros(1, 64, 4, 4),
                                  torch.zeros(1, 3, 16, 16))


@pytest.mark.parametrize("kind", ["resnet", "eva"])
def test_features_mode_eps_follows_the_features_not_the_raw_image(kind: str, monkeypatch) -> None:
    model = tiny(kind).eval()
    den = model.restoration.denoiser
    b = batch(model)
    x_t, t = torch.randn(3, 3, 16, 16), torch.tensor([10, 500, 900])
    with torch.no_grad():
        _, maps = encode_multiscale(model.drone_encoder, b["drone"], model.restoration_sources)
        _, other = encode_multiscale(model.drone_encoder, b["satellite"], model.restoration_sources)
        eps = den(x_t, t, maps)
        assert (eps - den(x_t, t, other)).abs().max() > 1e-3

    # Same encoder features, different weathered pixels: the loss cannot tell.
    def losses(m: MCGFModel) -> tuple[float, float]:
        out = []
        for drone in (b["drone"], b["drone"] + 1.0):
            with torch.no_grad():
                terms = m.loss({**b, "drone": drone}, generator=torch.Generator().manual_seed(4))
            out.append(terms["restore"].item())
        return out[0], out[1]

    frozen = {"out": encode_multiscale(model.drone_encoder, b["drone"], model.restoration_sources)}
    monkeypatch.setattr(mcgf_model, "encode_multiscale", lambda *a, **k: frozen["out"])
    a, c = losses(model)
    assert a == c
    # The image-conditioned variant, same frozen features, does see the pixels.
    image = tiny(kind, "features+image").eval()
    frozen["out"] = encode_multiscale(image.drone_encoder, b["drone"], image.restoration_sources)
    a, c = losses(image)
    assert abs(a - c) > 1e-4


@pytest.mark.parametrize("kind", ["resnet", "eva"])
@pytest.mark.parametrize("condition", ["features", "features+image"])
def test_restoration_loss_sends_gradient_into_the_encoder(kind: str, condition: str) -> None:
    model = tiny(kind, condition)
    model(batch(model))["restoration_loss"].backward()
    grads = [p.grad for p in model.encoder_parameters()]
    total = torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None))
    assert total > 0 and torch.isfinite(total)
    # The branch's first stage reaches shallow encoder layers, not only the last one.
    first = model.drone_encoder.conv1 if kind == "resnet" else model.drone_encoder.patch_embed.proj
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.head.parameters())


@pytest.mark.parametrize("condition", ["features", "features+image"])
def test_model_restore_works_in_both_modes(condition: str) -> None:
    model = tiny("eva", condition).eval()
    x = torch.randn(2, 3, 32, 32)
    a = model.restore(x, steps=3, generator=torch.Generator().manual_seed(0))
    b = model.restore(x, steps=3, generator=torch.Generator().manual_seed(0))
    assert a.shape == (2, 3, 16, 16) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    target = model.restoration_target(x)
    assert target.shape == (2, 3, 16, 16) and target.min() >= 0 and target.max() <= 1


def test_bad_condition_is_rejected() -> None:
    with pytest.raises(ValueError, match="restoration_condition"):
        MCGFModel("resnet18", 3, restoration_condition="pixels")


def test_checkpoint_without_the_option_loads_as_the_image_conditioned_variant(tmp_path) -> None:
    from mcgf.models.checkpoint import read_config
    from mcgf.training import load_checkpoint, save_checkpoint

    name, opts = EVA
    cfg = {"name": "mcgf", "backbone_name": name, "num_classes": 3, "bottleneck_dim": 16,
           "restoration_width": 8, "restoration_mults": [1, 2], "restoration_blocks": 1,
           "restore_size": 16, **opts}
    old = tiny("eva", "features+image")
    save_checkpoint(tmp_path / "old", old, cfg)  # the option is recorded although cfg lacks it
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    assert config["model"]["restoration_condition"] == "features+image"
    del config["model"]["restoration_condition"]  # as written before the option existed
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    assert read_config(tmp_path / "old")["model"]["restoration_condition"] == "features+image"
    loaded = load_checkpoint(tmp_path / "old").model
    assert loaded.restoration_condition == "features+image"
    assert loaded.restoration.denoiser.conv_in.in_channels == 6
    x = torch.randn(1, 3, 32, 32)
    gen = torch.Generator
    assert torch.equal(loaded.restore(x, steps=2, generator=gen().manual_seed(0)),
                       old.eval().restore(x, steps=2, generator=gen().manual_seed(0)))
    # A features-mode model saves and reloads as one.
    save_checkpoint(tmp_path / "new", tiny("eva"), cfg)
    assert load_checkpoint(tmp_path / "new").model.restoration.denoiser.conv_in.in_channels == 3


@pytest.mark.parametrize("steps", [1, 2, 25])
def test_sampling_starts_at_the_noise_level_of_its_gaussian_start(steps: int,
                                                                    monkeypatch) -> None:
    # DDIM's "leading" spacing starts below T - 1 (one step: at t = 0, which hands back the
    # starting noise); the sampler must begin where its pure-noise start belongs.
    model = tiny("eva").eval()
    branch = model.restoration
    assert branch is not None
    seen: list[int] = []
    denoise = branch.denoiser.forward

    def spy(x, t, *args):  # type: ignore[no-untyped-def]
        seen.append(int(t[0]))
        return denoise(x, t, *args)

    monkeypatch.setattr(branch.denoiser, "forward", spy)
    model.restore(torch.randn(1, 3, 32, 32), steps=steps, generator=torch.Generator().manual_seed(0))
    assert len(seen) == steps and seen[0] == branch.num_train_timesteps - 1
    assert seen == sorted(seen, reverse=True) and len(set(seen)) == steps
