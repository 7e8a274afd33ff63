"""Input normalisations: what they cancel, and the satellite rotation embedding."""

from __future__ import annotations

import pytest
import torch

from mcgf.errors import UserError
from mcgf.models.input_norm import (
    input_channels,
    local_chroma_norm,
    local_contrast_norm,
    luma_chroma_norm,
    normalise_input,
    standardise_image,
)
from mcgf.models.mcgf_model import MCGFModel

CNN = "resnet18"
CNN_ARGS = {"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64], "stem_width": 8}


def _images(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, 3, 32, 32, generator=g)


def test_standardise_cancels_a_global_affine_change() -> None:
    x = _images()
    y = 0.5 * x - 0.2
    # Exact up to the 1e-3 added to the standard deviation (~0.15 here).
    assert torch.allclose(standardise_image(x), standardise_image(y), atol=2e-2)


def test_local_norm_cancels_a_global_affine_change_and_a_smooth_veil_mostly() -> None:
    x = _images()
    assert torch.allclose(local_contrast_norm(0.4 * x + 0.1), local_contrast_norm(x), atol=1e-4)
    # Fog-like: blend towards a bright grey with an opacity that varies slowly in space.
    ramp = torch.linspace(0.1, 0.6, 32).view(1, 1, 1, 32).expand(3, 1, 32, 32)
    fog = (1 - ramp) * x + ramp * 0.9

    def corr(a: torch.Tensor, b: torch.Tensor) -> float:
        a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
        return float(a @ b / (a.norm() * b.norm()))

    assert corr(local_contrast_norm(fog, sigma=0.1), local_contrast_norm(x, sigma=0.1)) > 0.95
    assert corr(standardise_image(fog), standardise_image(x)) < 0.95


def test_local_norm_output_is_locally_standardised_and_keeps_dtype() -> None:
    x = _images().double()
    out = local_contrast_norm(x, sigma=0.2, floor=0.0)
    assert out.dtype == torch.float64
    assert abs(float(out.mean())) < 0.1
    assert 0.7 < float(out.std()) < 1.3


def test_normalise_input_rejects_unknown_modes_and_bad_sigma() -> None:
    x = _images()
    assert torch.equal(normalise_input(x, "none"), x)
    with pytest.raises(ValueError, match="input_norm"):
        normalise_input(x, "global")
    with pytest.raises(ValueError, match="sigma"):
        local_contrast_norm(x, sigma=0.0)


def _grey_cloud(x: torch.Tensor, opacity: float, seed: int = 1) -> torch.Tensor:
    """The recipe's fog in miniature: blend towards a textured grey, equal in R, G and B."""
    g = torch.Generator().manual_seed(seed)
    cloud = 0.8 + 0.2 * torch.rand(x.shape[0], 1, *x.shape[-2:], generator=g)
    return (1 - opacity) * x + opacity * cloud


def test_luma_chroma_opponent_channels_ignore_an_achromatic_layer() -> None:
    x = _images()
    clean = luma_chroma_norm(x, eps=0.0)
    fogged = luma_chroma_norm(_grey_cloud(x, 0.8), eps=0.0)
    # The grey texture is gone from the colour channels, the 0.2 transparency divided out...
    assert torch.allclose(fogged[:, 1:], clean[:, 1:], atol=1e-4)
    # ...while the luminance channel carries the cloud (what the RGB normalisation sees).
    assert (fogged[:, :1] - clean[:, :1]).abs().mean() > 0.3
    rgb = (local_contrast_norm(_grey_cloud(x, 0.8)) - local_contrast_norm(x)).abs().mean()
    assert rgb > 0.3


def test_luma_chroma_channels_and_the_grey_floor() -> None:
    x = _images()
    out = luma_chroma_norm(x, sigma=0.2, floor=0.0, eps=0.0)
    assert torch.allclose(out[:, :1], local_contrast_norm(x.mean(1, keepdim=True), 0.2, 0.0),
                          atol=1e-5)
    energy = (out[:, 1:] ** 2).sum(1)
    assert 0.7 < float(energy.mean()) < 1.3  # unit local colour energy on a colourful image
    # A grey image with one 8-bit step of noise: the absolute floor keeps its colour quiet.
    g = torch.Generator().manual_seed(3)
    grey = x.mean(1, keepdim=True).expand(-1, 3, -1, -1) + torch.randint(
        0, 2, x.shape, generator=g) / 255.0
    assert float((luma_chroma_norm(grey)[:, 1:] ** 2).sum(1).mean()) < 0.6
    with pytest.raises(ValueError, match="3-channel"):
        luma_chroma_norm(x[:, :2])
    with pytest.raises(ValueError, match="sigma"):
        luma_chroma_norm(x, sigma=-1.0)


def test_mcgf_luma_chroma_undoes_the_per_channel_normalisation_first() -> None:
    model = MCGFModel(CNN, 5, img_size=32, backbone_args=CNN_ARGS, restoration=False,
                      bottleneck_dim=16, input_norm="luma_chroma")
    mean, std = torch.tensor(model.mean).view(1, 3, 1, 1), torch.tensor(model.std).view(1, 3, 1, 1)
    x = _images()
    enc = model._normalise((x - mean) / std)
    fogged = model._normalise((_grey_cloud(x, 0.5) - mean) / std)
    assert torch.allclose(enc, luma_chroma_norm(x), atol=1e-4)
    # ImageNet's per-channel std differs by channel: without undoing it, grey would leak.
    assert torch.allclose(fogged[:, 1:], enc[:, 1:], atol=1e-3)  # 5e-3 if it were not


def test_local_chroma_appends_the_opponent_channels_to_the_rgb_normalisation() -> None:
    x = _images()
    out = local_chroma_norm(x)
    assert out.shape == (3, 5, 32, 32)
    assert torch.allclose(out[:, :3], local_contrast_norm(x), atol=1e-6)
    assert torch.allclose(out[:, 3:], luma_chroma_norm(x)[:, 1:], atol=1e-6)
    assert torch.allclose(local_chroma_norm(_grey_cloud(x, 0.8))[:, 3:], out[:, 3:], atol=2e-3)
    assert [input_channels(m) for m in ("none", "local", "luma_chroma", "local_chroma")] == [3, 3, 3, 5]
    with pytest.raises(ValueError, match="3-channel"):
        local_chroma_norm(x[:, :1])


def test_mcgf_local_chroma_builds_a_five_channel_stem_and_embeds_rgb() -> None:
    model = MCGFModel(CNN, 5, img_size=32, backbone_args=CNN_ARGS, bottleneck_dim=16,
                      input_norm="local_chroma", restoration=True, restore_size=16)
    assert model.drone_encoder.conv1.in_channels == 5
    model.eval()
    x = _images()
    assert model.embed(x, "drone").shape == (3, 16)
    # A colourless image: zero opponent channels, once the per-channel scaling is undone
    # (left in, the grey texture would leak into them and be normalised up to unit size).
    mean, std = torch.tensor(model.mean).view(1, 3, 1, 1), torch.tensor(model.std).view(1, 3, 1, 1)
    grey = x.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    assert float(model._normalise((grey - mean) / std)[:, 3:].abs().max()) < 1e-3
    assert float(local_chroma_norm((grey - mean) / std)[:, 3:].abs().mean()) > 0.3


def test_cnn_backbone_takes_the_configured_input_size() -> None:
    model = MCGFModel(CNN, 5, img_size=48, backbone_args=CNN_ARGS, restoration=False,
                      bottleneck_dim=16)
    assert model.input_size == (48, 48)
    model.eval()
    assert model.embed(torch.rand(2, 3, 48, 48), "drone").shape == (2, 16)


@pytest.mark.parametrize("model_name", ["mcgf", "sample4geo"])
@pytest.mark.parametrize("backbone", ["vit_tiny_patch16_224", "eva02_tiny_patch14_224"])
def test_dynamic_size_vit_takes_the_configured_input_size(model_name: str, backbone: str) -> None:
    # With dynamic_img_size, timm's data config still says 224; the model was built for
    # 48 (56: a multiple of the patch, which a dynamic-size patch embedding needs).
    from mcgf.models.model_registry import create_model

    size = 48 if "patch16" in backbone else 56
    extra = {"bottleneck_dim": 8, "restoration": False} if model_name == "mcgf" else {}
    model = create_model(model_name, num_classes=3, backbone_name=backbone, img_size=size,
                         backbone_args={"depth": 1, "dynamic_img_size": True}, **extra)
    assert model.input_size == (size, size)
    with torch.no_grad():
        assert model.eval().embed(torch.rand(1, 3, size, size), "drone").shape[0] == 1

def test_satellite_rotations_make_tile_embeddings_heading_free() -> None:
    torch.manual_seed(0)
    model = MCGFModel(CNN, 5, img_size=32, backbone_args=CNN_ARGS, restoration=False,
                      bottleneck_dim=16, satellite_rotations=4).eval()
    x = _images()
    turned = torch.rot90(x, 1, dims=(2, 3))
    with torch.no_grad():
        a, b = model.embed(x, "satellite"), model.embed(turned, "satellite")
        plain_a, plain_b = model.embed(x, "drone"), model.embed(turned, "drone")
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(a.norm(dim=1), torch.ones(3), atol=1e-5)
    assert not torch.allclose(plain_a, plain_b, atol=1e-3)  # drone views are not turned
    with pytest.raises(ValueError, match="satellite_rotations"):
        MCGFModel(CNN, 5, img_size=32, backbone_args=CNN_ARGS, restoration=False,
                  satellite_rotations=3)


def test_quarter_turns_need_a_square_input() -> None:
    # A turned 32x48 tile is 48x32: the batched pass cannot hold both, and a ViT built for
    # 32x48 takes no other size. Refused when the model is built, not at the first evaluation.
    vit = "vit_tiny_patch16_224"
    args = {"img_size": (32, 48), "depth": 1}
    with pytest.raises(UserError, match=r"^model\.satellite_rotations: 4 .*32x48"):
        MCGFModel(vit, 5, backbone_args=args, restoration=False, satellite_rotations=4)
    half = MCGFModel(vit, 5, backbone_args=args, restoration=False, bottleneck_dim=8,
                     satellite_rotations=2).eval()
    with torch.no_grad():
        assert half.embed(torch.randn(2, 3, 32, 48), "satellite").shape == (2, 8)


def _conv_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Reference: the same blur as two reflect-padded single-channel convolutions."""
    import math

    import torch.nn.functional as F

    radius = max(1, min(math.ceil(3.0 * sigma), min(x.shape[-2:]) - 1))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    return F.conv2d(F.conv2d(x, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))


@pytest.mark.parametrize("shape,sigma", [((3, 1, 64, 64), 5.12), ((2, 1, 50, 90), 4.0),
                                         ((1, 1, 17, 17), 1.3)])
def test_blur_by_matrices_equals_the_convolution(shape: tuple[int, ...], sigma: float) -> None:
    from mcgf.models.input_norm import _gaussian_blur

    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    out = _gaussian_blur(x, sigma)
    assert out.shape == x.shape
    assert torch.allclose(out, _conv_blur(x, sigma), atol=1e-5)
    # a constant image stays constant (the reflected weights sum to one in every row)
    assert torch.allclose(_gaussian_blur(torch.full(shape, 0.3), sigma), torch.full(shape, 0.3),
                          atol=1e-6)


@pytest.mark.parametrize("mode", ["local", "luma_chroma", "local_chroma"])
def test_gradients_flow_after_an_inference_mode_call(mode: str) -> None:
    # Evaluation embeds under torch.inference_mode; the report's heatmaps then take
    # gradients through the same normalisation in the same process (same image size).
    x = torch.rand(2, 3, 29, 31, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        normalise_input(x, mode, 0.08)
    y = x.clone().requires_grad_(True)
    normalise_input(y, mode, 0.08).square().sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
