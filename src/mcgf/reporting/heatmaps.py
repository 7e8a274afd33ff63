"""Where the model looks: gradient saliency of the match similarity, on both images.

For a pair (query, its true match) the score retrieval ranks by is the cosine
similarity of their features. Its gradient with respect to each input image, times the
image (|∂s/∂x ⊙ x| summed over colour channels), says which pixels move the score;
a small Gaussian blur turns the pixel-level speckle (patch grids of ViTs, strides of
CNNs) into regions, and each map is scaled to [0, 1] by its own high percentile.

The features go through ``model.embed(images, view)`` — the forward path of retrieval —
with the same flip test-time augmentation, so the maps explain the ranked score itself
and work for any differentiable backbone (ViT or CNN). All pairs of a call are one
batch: one forward and one backward pass. Gradient×input is a standard attribution;
it is written here because it is a few tensor lines over our own embedding path, which
generic attribution packages would have to be adapted to anyway.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F


class NoGradient(ValueError):
    """The similarity carries no gradient back to the images: ``model.embed`` runs
    without autograd (``torch.no_grad``, a detached or non-torch feature), so there is
    nothing to attribute."""


def _embed(model: Any, x: torch.Tensor, view: str, flip: bool) -> torch.Tensor:
    f = model.embed(x, view).float()
    if flip:
        f = f + model.embed(torch.flip(x, dims=[3]), view).float()
    return f


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, H, W)`` maps (reflected borders); ``sigma`` in px."""
    if sigma <= 0:
        return maps
    radius = max(1, math.ceil(3 * sigma))
    radius = min(radius, maps.shape[-1] - 1, maps.shape[-2] - 1)
    if radius < 1:
        return maps
    t = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    x = maps[:, None]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1))
    return x[:, 0]


def normalise_maps(maps: torch.Tensor, percentile: float = 99.0) -> torch.Tensor:
    """Scale each ``(H, W)`` map of a batch to [0, 1] by its ``percentile``-th value
    (so that a few extreme pixels do not wash the rest out); all-zero maps stay zero."""
    flat = maps.flatten(1)
    top = torch.quantile(flat, percentile / 100.0, dim=1)
    top = torch.where(top > 0, top, flat.amax(dim=1))
    scale = torch.where(top > 0, 1.0 / top, torch.zeros_like(top))
    return (maps * scale[:, None, None]).clamp(0.0, 1.0)


def similarity_saliency(
    model: Any,
    query: torch.Tensor,
    query_view: str,
    match: torch.Tensor,
    match_view: str,
    *,
    flip: bool = True,
    sigma: float | None = None,
    percentile: float = 99.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Saliency maps of the cosine similarity of each (query, match) pair.

    Args:
        model: anything with ``embed(images, view) -> (B, D)`` (e.g. an MCGF model);
            it is put in ``eval()`` mode when it has one.
        query, match: ``(B, 3, H, W)`` images normalised as for retrieval (pair ``i`` is
            ``query[i]``, ``match[i]``; the two may differ in size).
        query_view, match_view: ``"drone"`` or ``"satellite"``.
        flip: add the flipped image's feature, as the retrieval features do.
        sigma: Gaussian blur in px (default: 1/40 of the image side, at least 1).
        percentile: per-map value mapped to 1.

    Returns:
        ``(query_maps, match_maps, similarity)``: ``(B, H, W)`` maps in [0, 1] for each
        side, and the ``(B,)`` cosine similarities.

    Raises:
        NoGradient: the similarity does not depend on the images through autograd.
    """
    if query.shape[0] != match.shape[0]:
        raise ValueError(f"{query.shape[0]} queries for {match.shape[0]} matches")
    if hasattr(model, "eval"):
        model.eval()
    with torch.inference_mode(False), torch.enable_grad():
        xq = query.detach().clone().float().requires_grad_(True)
        xm = match.detach().clone().float().requires_grad_(True)
        sim = F.cosine_similarity(_embed(model, xq, query_view, flip),
                                  _embed(model, xm, match_view, flip), dim=1)
        if not sim.requires_grad:
            raise NoGradient("model.embed(images, view) returns features without a gradient "
                             "with respect to the images (computed under torch.no_grad or "
                             "detached)")
        # Pairs do not interact (eval mode), so the gradient of the sum is each pair's own.
        gq, gm = torch.autograd.grad(sim.sum(), [xq, xm], allow_unused=True)
    for g, view in ((gq, query_view), (gm, match_view)):
        if g is None:  # a blank map would read as "nothing here matters"
            raise NoGradient(f"model.embed(images, {view!r}) returns features without a "
                             "gradient with respect to the images (computed under "
                             "torch.no_grad, detached, or not from the images)")
    out = []
    for x, g in ((xq, gq), (xm, gm)):
        sal = (g * x).abs().sum(dim=1).detach()
        s = sigma if sigma is not None else max(1.0, x.shape[-1] / 40.0)
        out.append(normalise_maps(gaussian_blur(sal, s), percentile).cpu())
    return out[0], out[1], sim.detach().cpu()
