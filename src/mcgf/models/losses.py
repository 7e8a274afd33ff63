"""Training objectives of MCGF: location cross-entropy, contrastive InfoNCE, weather
consistency, DDPM ε loss.

Pure functions except :class:`InfoNCE`, which only owns its learnable temperature.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def cross_entropy_views(
    logits_d: torch.Tensor,
    labels_d: torch.Tensor,
    logits_s: torch.Tensor,
    labels_s: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Sum over the two views of the mean cross-entropy over location classes.

    Summing (not averaging) the per-view losses follows the University-1652 baselines,
    where each view adds its own classification term.
    """
    return F.cross_entropy(logits_d, labels_d, label_smoothing=label_smoothing) + F.cross_entropy(
        logits_s, labels_s, label_smoothing=label_smoothing
    )


def multi_positive_nce(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``-log(Σ_pos softmax(row))``; rows without a positive are skipped.

    With exactly one positive per row this is the usual InfoNCE / CLIP cross-entropy.
    """
    has_pos = positives.any(dim=1)
    if not bool(has_pos.any()):
        raise ValueError("no anchor has a positive of the same label in the other view")
    logits, positives = logits[has_pos], positives[has_pos]
    log_all = torch.logsumexp(logits, dim=1)
    log_pos = torch.logsumexp(logits.masked_fill(~positives, float("-inf")), dim=1)
    return (log_all - log_pos).mean()


class InfoNCE(nn.Module):
    """Symmetric InfoNCE between drone and satellite embeddings, learnable temperature.

    Pairs are defined by labels, so a batch may hold several drone views per location:
    drone→satellite and satellite→drone terms both treat every other-view item with the
    same label as a positive (:func:`multi_positive_nce`) and are averaged. The logit
    scale is ``exp(log_scale)``, initialised CLIP-style to ``1/0.07`` and clamped to at
    most ``max_scale`` for stability (the parameter itself after each optimizer step, see
    :func:`mcgf.models.base.clamp_parameters`).
    """

    def __init__(self, init_temperature: float = 0.07, max_scale: float = 100.0) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        self.max_log_scale = math.log(max_scale)

    @property
    def scale(self) -> torch.Tensor:
        """Current logit scale (1 / temperature), after clamping."""
        return self.log_scale.clamp(max=self.max_log_scale).exp()

    def clamp_parameters_(self) -> None:
        """Put ``log_scale`` back in range (called after each optimizer step)."""
        self.log_scale.data.clamp_(max=self.max_log_scale)

    def forward(
        self,
        emb_d: torch.Tensor,
        labels_d: torch.Tensor,
        emb_s: torch.Tensor,
        labels_s: torch.Tensor,
    ) -> torch.Tensor:
        """Loss for ``(Bd, D)`` drone and ``(Bs, D)`` satellite embeddings (any norm)."""
        logits = self.scale * F.normalize(emb_d, dim=-1) @ F.normalize(emb_s, dim=-1).T
        positives = labels_d[:, None] == labels_s[None, :]
        return 0.5 * (multi_positive_nce(logits, positives) + multi_positive_nce(logits.T, positives.T))


def weather_consistency(weathered: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Mean ``1 − cos`` between each weathered image's embedding and its clean twin's.

    The clean embedding is the target (gradient stopped), so weather is pulled towards
    the clean view rather than both collapsing towards each other; 0 when they agree.
    """
    return (1.0 - F.cosine_similarity(weathered, clean.detach(), dim=-1)).mean()


def ddpm_epsilon_loss(eps_pred: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """DDPM's simple objective: mean squared error between predicted and true noise."""
    return F.mse_loss(eps_pred, eps)
