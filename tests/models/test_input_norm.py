"""Input normalisations: what they cancel, and the satellite rotation embedding."""

from __future__ import annotations

import pytest
import torch

from mcgf.models.input_norm import local_contrast_norm, normalise_input, standardise_image
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


def test_cnn_backbone_takes_the_configured_input_size() -> None:
    model = MCGFModel(CNN, 5, img_size=48, backbone_args=CNN_ARGS, restoration=False,
                      bottleneck_dim=16)
    assert model.input_size == (48, 48)
    model.eval()
    assert model.embed(torch.rand(2, 3, 48, 48), "drone").shape == (2, 16)


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
