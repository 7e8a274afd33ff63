"""Saliency of the match similarity: it follows what the model reads, pair by pair."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mcgf.reporting.heatmaps import gaussian_blur, normalise_maps, similarity_saliency


class LeftHalf(nn.Module):
    """A toy embedder that only reads the left half of its input (any view)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(3 * 8 * 4, 12)

    def embed(self, images: torch.Tensor, view: str) -> torch.Tensor:
        left = images[..., : images.shape[-1] // 2]
        return self.proj(F.adaptive_avg_pool2d(left, (8, 4)).flatten(1))


def pairs(n: int = 3, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, size, size, generator=g), torch.randn(n, 3, size, size, generator=g)


def test_a_model_reading_the_left_half_lights_up_only_the_left_half() -> None:
    q, m = pairs()
    qm, mm, sim = similarity_saliency(LeftHalf(), q, "drone", m, "satellite", flip=False)
    assert qm.shape == (3, 64, 64) and mm.shape == (3, 64, 64)
    sigma = 64 / 40
    margin = int(3 * sigma) + 2  # the blur spreads this far at most
    for maps in (qm, mm):
        assert float(maps[:, :, 32 + margin:].abs().max()) < 1e-6
        assert float(maps[:, :, :32].mean()) > 0.05
        assert float(maps.max()) == 1.0 and float(maps.min()) >= 0.0
    model = LeftHalf()
    with torch.no_grad():
        expect = F.cosine_similarity(model.embed(q, "drone"), model.embed(m, "satellite"))
    assert torch.allclose(sim, expect, atol=1e-6)


def test_flip_tta_is_part_of_the_explained_feature() -> None:
    q, m = pairs()
    qm, _, _ = similarity_saliency(LeftHalf(), q, "drone", m, "satellite", flip=True)
    # The flipped copy brings the right half into the feature, so it matters too.
    assert float(qm[:, :, 48:].mean()) > 0.05


def test_pairs_are_independent_of_the_batch() -> None:
    q, m = pairs(4)
    all_q, all_m, _ = similarity_saliency(LeftHalf(), q, "drone", m, "satellite")
    one_q, one_m, _ = similarity_saliency(LeftHalf(), q[2:3], "drone", m[2:3], "satellite")
    assert torch.allclose(all_q[2], one_q[0], atol=1e-5) and torch.allclose(all_m[2], one_m[0], atol=1e-5)


def test_blur_and_normalisation() -> None:
    impulse = torch.zeros(1, 21, 21)
    impulse[0, 10, 10] = 1.0
    blurred = gaussian_blur(impulse, 2.0)
    assert abs(float(blurred.sum()) - 1.0) < 1e-5  # mass kept
    assert int(blurred[0].argmax()) == 10 * 21 + 10
    assert torch.allclose(blurred[0], blurred[0].T, atol=1e-7)  # isotropic
    maps = torch.stack([torch.linspace(0, 2, 100).view(10, 10), torch.zeros(10, 10)])
    out = normalise_maps(maps, percentile=50.0)
    assert float(out[0].max()) == 1.0 and float(out[1].abs().max()) == 0.0
    # Scaled by the map's median (1.0 here): values below it keep their size.
    assert torch.allclose(out[0].flatten()[:45], maps[0].flatten()[:45], atol=0.01)


class Frozen(LeftHalf):
    """A toy embedder whose features are computed without autograd."""

    def embed(self, images: torch.Tensor, view: str) -> torch.Tensor:
        with torch.no_grad():
            return super().embed(images, view)


def test_an_embedding_without_gradient_is_named_not_a_torch_error() -> None:
    import pytest

    from mcgf.reporting.heatmaps import NoGradient

    q, m = pairs()
    with pytest.raises(NoGradient, match="without a gradient"):
        similarity_saliency(Frozen(), q, "drone", m, "satellite")


class FrozenSatellite(LeftHalf):
    """A toy embedder whose satellite features alone are computed without autograd."""

    def embed(self, images: torch.Tensor, view: str) -> torch.Tensor:
        if view == "satellite":
            with torch.no_grad():
                return super().embed(images, view)
        return super().embed(images, view)


def test_one_view_without_gradient_is_named_not_drawn_blank() -> None:
    """A blank (all-zero) map would read as 'nothing matters' in the picture."""
    import pytest

    from mcgf.reporting.heatmaps import NoGradient

    q, m = pairs()
    with pytest.raises(NoGradient, match=r"images, 'satellite'\) returns features without"):
        similarity_saliency(FrozenSatellite(), q, "drone", m, "satellite")
