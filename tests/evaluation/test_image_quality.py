"""PSNR and SSIM against known values and a direct reference computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mcgf.evaluation.image_quality import gaussian_window, mean_finite, psnr, ssim


def reference_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of (C, H, W) images, window by window, straight from the definition."""
    x = np.arange(11) - 5.0
    g = np.exp(-(x**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for ch in range(a.shape[0]):
        for i in range(a.shape[1] - 10):
            for j in range(a.shape[2] - 10):
                pa, pb = a[ch, i:i + 11, j:j + 11], b[ch, i:i + 11, j:j + 11]
                ma, mb = (w * pa).sum(), (w * pb).sum()
                va = (w * (pa - ma) ** 2).sum()
                vb = (w * (pb - mb) ** 2).sum()
                cov = (w * (pa - ma) * (pb - mb)).sum()
                values.append(((2 * ma * mb + c1) * (2 * cov + c2))
                              / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def test_identical_images_give_infinite_psnr_and_unit_ssim() -> None:
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.isinf(psnr(x, x)).all()
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))


def test_psnr_of_a_known_mse() -> None:
    a = torch.full((1, 3, 8, 8), 0.5)
    # A constant error of 0.1: MSE 0.01 → 10·log10(1 / 0.01) = 20 dB.
    assert psnr(a, a + 0.1).item() == pytest.approx(20.0, abs=1e-5)
    # Half the pixels off by 0.2: MSE 0.02.
    b = a.clone()
    b[..., :4] += 0.2
    assert psnr(a, b).item() == pytest.approx(10 * math.log10(1 / 0.02), abs=1e-5)
    assert psnr(a[0], (a + 0.1)[0]).shape == (1,)  # one (C, H, W) image
    assert psnr(a * 255, (a + 0.1) * 255, data_range=255.0).item() == pytest.approx(20.0, abs=1e-4)


def test_ssim_matches_the_window_by_window_definition() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 3, 14, 17, generator=g)
    b = (a + 0.15 * torch.randn(2, 3, 14, 17, generator=g)).clamp(0, 1)
    b[1] = torch.rand(3, 14, 17, generator=g)
    got = ssim(a, b)
    for k in range(2):
        assert got[k].item() == pytest.approx(reference_ssim(a[k].numpy().astype(np.float64),
                                                             b[k].numpy().astype(np.float64)), abs=1e-9)
    assert 0.0 < got[1] < got[0] < 1.0  # noise-free structure is more similar than random


def test_ssim_known_constant_images() -> None:
    # Constant images: variances vanish, SSIM = (2·μa·μb + C1) / (μa² + μb² + C1).
    a, b = torch.full((1, 1, 11, 11), 0.2), torch.full((1, 1, 11, 11), 0.6)
    c1 = 0.01**2
    assert ssim(a, b).item() == pytest.approx((2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1))


def test_window_and_errors() -> None:
    w = gaussian_window()
    assert w.shape == (11,) and w.sum().item() == pytest.approx(1.0) and w.argmax() == 5
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))


def test_mean_finite_skips_exact_restorations() -> None:
    assert mean_finite(torch.tensor([20.0, math.inf, 30.0])) == 25.0
    assert mean_finite(torch.tensor([math.inf])) == math.inf
    assert math.isnan(mean_finite(torch.tensor([])))


def test_mean_finite_does_not_pass_nan_restorations_off_as_exact() -> None:
    # A restoration with nan pixels has a nan PSNR: the mean is nan, never inf (exact).
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    restored = torch.full_like(x, math.nan)
    assert math.isnan(mean_finite(psnr(restored, x)))
    assert math.isnan(mean_finite(torch.tensor([20.0, math.nan, math.inf])))
    assert mean_finite(torch.tensor([20.0, math.inf, 30.0])) == 25.0
