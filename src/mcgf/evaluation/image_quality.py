"""Full-reference image quality: PSNR and SSIM, per image, as pure functions.

Both take batches ``(B, C, H, W)`` (or one image ``(C, H, W)``) of floats in
``[0, data_range]`` and return one value per image (a ``(B,)`` float64 tensor).

SSIM follows Wang et al. (2004) as the standard implementations do: an 11×11 Gaussian
window with σ = 1.5, ``K1 = 0.01``, ``K2 = 0.03``, statistics over the window positions
that fit inside the image (no padding), computed per channel and averaged over
positions and channels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: SSIM constants (Wang et al. 2004).
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _batch(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.ndim == 3:
        a, b = a[None], b[None]
    if a.ndim != 4:
        raise ValueError(f"expected (B, C, H, W) or (C, H, W) images, got shape {tuple(a.shape)}")
    return a.double(), b.double()


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image: ``10·log10(data_range² / MSE)``.

    Identical images give ``inf``.
    """
    a, b = _batch(a, b)
    mse = (a - b).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)  # mse 0 → inf


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """The normalised 1-D Gaussian ``(size,)`` (float64); the 2-D window is its outer product."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity per image (mean SSIM over window positions and channels).

    Raises:
        ValueError: shapes differ, or the image is smaller than the 11×11 window.
    """
    a, b = _batch(a, b)
    _, c, h, w = a.shape
    if min(h, w) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, "
                         f"got {h}x{w}")
    g = gaussian_window().to(a.device)
    # Separable depthwise filtering of the five statistics at once, one group per channel.
    stats = torch.cat([a, b, a * a, b * b, a * b], dim=1)
    k = 5 * c
    stats = F.conv2d(stats, g.view(1, 1, 1, -1).expand(k, 1, 1, SSIM_WINDOW), groups=k)
    stats = F.conv2d(stats, g.view(1, 1, -1, 1).expand(k, 1, SSIM_WINDOW, 1), groups=k)
    mu_a, mu_b, e_aa, e_bb, e_ab = stats.split(c, dim=1)
    var_a = e_aa - mu_a**2
    var_b = e_bb - mu_b**2
    cov = e_ab - mu_a * mu_b
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(dim=1)


def mean_finite(values: torch.Tensor) -> float:
    """Mean of the values less the ``inf`` PSNRs of exact restorations, which are left out;
    ``inf`` when every value is ``inf``, ``nan`` for an empty input. A ``nan`` (a restoration
    with non-finite pixels) makes the mean ``nan``: it must not pass for an exact one."""
    kept = values[values != math.inf]
    if kept.numel():
        return float(kept.mean())
    return math.inf if values.numel() else math.nan


__all__ = ["gaussian_window", "mean_finite", "psnr", "ssim"]
