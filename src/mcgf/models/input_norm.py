"""Input normalisations that remove weather-like intensity changes before the encoder.

Weather in the reference recipe is, to a large part, an affine change of intensity that
every channel shares: ``dark`` and ``light`` scale and shift brightness over the whole
image, fog blends towards a bright grey with an opacity that varies smoothly over the
image. An encoder trained from scratch has to learn to ignore these; dividing them out of
its input is cheaper and exact where the change is locally constant:

* :func:`standardise_image`: one mean and one standard deviation per image (undoes a
  global affine change: dark, light);
* :func:`local_contrast_norm`: the mean and standard deviation over all channels in a
  Gaussian window around each pixel (undoes an affine change that varies slowly across
  the image: fog's cloud layer too). Colour relations inside the window stay.
* :func:`luma_chroma_norm`: the same for the luminance, and the two opponent-colour
  channels normalised by their own local magnitude. Fog, rain and snow in the recipe blend
  towards grey or white: they add the same amount to every channel, so the colour
  differences keep only the scene, scaled by the layer's slowly varying transparency,
  which the local normalisation divides out. Under the recipe's fog the opponent channels
  of a 64 px view keep a cosine of 0.97 to the clean view's, against 0.71 for the
  luminance (60 synthetic drone views).

Both are pure tensor functions, differentiable and batched; no library ships this exact
operation (kornia's normalisations are per channel and global).
"""

from __future__ import annotations

import functools
import math

import torch

#: Names accepted by ``model.input_norm``.
INPUT_NORMS = ("none", "image", "local", "luma_chroma", "local_chroma")

#: Channels each ``model.input_norm`` hands the encoder (3 unless listed).
_CHANNELS = {"local_chroma": 5}


def input_channels(mode: str) -> int:
    """Number of channels the encoder receives under ``model.input_norm`` ``mode``."""
    return _CHANNELS.get(mode, 3)


def _image_var(x: torch.Tensor) -> torch.Tensor:
    """Unbiased variance of each image of ``(B, ...)`` as ``(B, 1, 1, 1)``, by two passes.

    Same values as ``x.var(dim=(1, 2, 3))`` within float rounding, but about ten times
    faster on a CPU, where ``Tensor.var`` takes half of the whole local normalisation.
    """
    flat = x.reshape(x.shape[0], -1)
    centred = flat - flat.mean(dim=1, keepdim=True)
    return ((centred * centred).sum(dim=1) / max(flat.shape[1] - 1, 1)).view(-1, 1, 1, 1)


def standardise_image(images: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """``(B, C, H, W)`` images minus their mean, divided by their standard deviation (one
    of each per image, over pixels and channels)."""
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return (images - mean) / (_image_var(images).sqrt() + eps)


@functools.lru_cache(maxsize=64)
def _blur_matrix(n: int, sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(n, n)`` matrix of a 1-D Gaussian blur with reflection at the borders (the
    padding folded into the matrix), so that ``M @ x`` blurs ``x`` along its rows.

    Built outside inference mode even when called inside it: the cached matrix is reused
    by later calls that autograd tracks (the report's heatmaps after an evaluation), which
    cannot save an inference tensor for backward."""
    with torch.inference_mode(False):
        return _build_blur_matrix(n, sigma, device, dtype)


def _build_blur_matrix(n: int, sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    radius = max(1, min(math.ceil(3.0 * sigma), n - 1))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    idx = (torch.arange(n)[:, None] + torch.arange(-radius, radius + 1)[None, :]).abs()
    idx = torch.where(idx > n - 1, 2 * (n - 1) - idx, idx)  # reflect, edge not repeated
    m = torch.zeros(n, n, dtype=torch.float64).scatter_add_(1, idx, k.expand(n, -1).contiguous())
    return m.to(device=device, dtype=dtype)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, 1, H, W)`` with reflection at the borders.

    Two matrix products with the blur matrices of the two sides: at the window sizes used
    here (σ ≈ 5 px at 64 px, a 33-tap kernel) this is over 20× faster on a CPU than the
    same blur as two single-channel convolutions, and equal to it within float rounding.
    """
    if min(x.shape[-2:]) < 2:
        return x
    rows = _blur_matrix(x.shape[-2], float(sigma), x.device, x.dtype)
    cols = _blur_matrix(x.shape[-1], float(sigma), x.device, x.dtype)
    return rows @ x @ cols.T


def local_contrast_norm(images: torch.Tensor, sigma: float = 0.08, floor: float = 0.1
                        ) -> torch.Tensor:
    """Local contrast normalisation over all channels.

    ``out = (x - μ) / sqrt(v + (floor·s)²)`` where ``μ`` and ``v`` are the Gaussian-weighted
    mean and variance over the channels of the neighbourhood of each pixel, and ``s`` is
    the image's global standard deviation: the floor keeps flat regions (sky, a clipped
    dark area) from amplifying noise, in proportion to the image's own contrast, so that a
    global scaling of the image still cancels.

    Args:
        images: ``(B, C, H, W)``.
        sigma: window standard deviation as a fraction of the shorter image side.
        floor: share of the global standard deviation added to the local one.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    x = images.float()
    sigma_px = sigma * min(x.shape[-2:])
    mean = _gaussian_blur(x.mean(dim=1, keepdim=True), sigma_px)
    var = _gaussian_blur(((x - mean) ** 2).mean(dim=1, keepdim=True), sigma_px)
    out = (x - mean) * torch.rsqrt(var + floor**2 * _image_var(x) + 1e-6)
    return out.to(images.dtype)


def luma_chroma_norm(images: torch.Tensor, sigma: float = 0.08, floor: float = 0.1,
                     eps: float = (1.0 / 255.0) ** 2) -> torch.Tensor:
    """Luminance and opponent colours of RGB ``images``, each locally normalised.

    Channel 0 is :func:`local_contrast_norm` of the luminance (the channel mean); channels
    1 and 2 are the opponent colours ``R − G`` and ``(R + G)/2 − B`` minus their local
    means, divided by the local root-mean-square of both together (with the same relative
    ``floor`` and an absolute one, ``eps``, that keeps a grey region's quantisation noise
    from being blown up). Anything added equally to R, G and B cancels in channels 1–2.

    Args:
        images: ``(B, 3, H, W)`` RGB with a channel-independent offset and scale (for
            example ``[0, 1]``): per-channel normalisation would let grey leak into the
            opponent channels.
        sigma: window standard deviation as a fraction of the shorter image side.
        floor: share of the global standard deviation added to the local one.
        eps: absolute floor of the opponent channels' local variance.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    if images.shape[1] != 3:
        raise ValueError(f"luma_chroma needs 3-channel RGB input, got {images.shape[1]} channels")
    x = images.float()
    luma = local_contrast_norm(x.mean(dim=1, keepdim=True), sigma, floor)
    return torch.cat([luma, _opponent_norm(x, sigma, floor, eps)], dim=1).to(images.dtype)


def _opponent_norm(x: torch.Tensor, sigma: float, floor: float, eps: float) -> torch.Tensor:
    """The two opponent-colour channels of float RGB ``x``, locally normalised together."""
    r, g, b = x.unbind(dim=1)
    chroma = torch.stack([r - g, (r + g) * 0.5 - b], dim=1)
    sigma_px = sigma * min(x.shape[-2:])
    n, _, h, w = chroma.shape
    chroma = chroma - _gaussian_blur(chroma.reshape(n * 2, 1, h, w), sigma_px).view(n, 2, h, w)
    energy = (chroma * chroma).sum(dim=1, keepdim=True)
    local = _gaussian_blur(energy, sigma_px)
    return chroma * torch.rsqrt(local + floor**2 * energy.mean(dim=(2, 3), keepdim=True) + eps)


def local_chroma_norm(images: torch.Tensor, sigma: float = 0.08, floor: float = 0.1,
                      eps: float = (1.0 / 255.0) ** 2) -> torch.Tensor:
    """:func:`local_contrast_norm` of RGB ``images`` (channels 0–2) followed by the two
    locally normalised opponent-colour channels of :func:`luma_chroma_norm` (3–4): five
    channels, the full colour image and a view of it that grey layers do not reach."""
    if images.shape[1] != 3:
        raise ValueError(f"local_chroma needs 3-channel RGB input, got {images.shape[1]} channels")
    x = images.float()
    out = torch.cat([local_contrast_norm(x, sigma, floor), _opponent_norm(x, sigma, floor, eps)], 1)
    return out.to(images.dtype)


def normalise_input(images: torch.Tensor, mode: str, sigma: float = 0.08) -> torch.Tensor:
    """Apply the ``model.input_norm`` named ``mode`` (see :data:`INPUT_NORMS`).

    ``"luma_chroma"`` and ``"local_chroma"`` expect RGB with one offset and scale for all channels (``[0, 1]``).
    """
    if mode == "none":
        return images
    if mode == "image":
        return standardise_image(images)
    if mode == "local":
        return local_contrast_norm(images, sigma)
    if mode == "luma_chroma":
        return luma_chroma_norm(images, sigma)
    if mode == "local_chroma":
        return local_chroma_norm(images, sigma)
    raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {mode!r}")
