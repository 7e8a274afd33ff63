"""Sample4Geo: Deuser et al., "Sample4Geo: Hard Negative Sampling For Cross-View
Geo-Localisation" (ICCV 2023).

One timm encoder (ConvNeXt-B at 384 px in the paper's University-1652 runs) is shared by
both views; its pooled feature, L2-normalised, is the retrieval embedding. There is no
classifier: the only objective is the symmetric InfoNCE of CLIP between the drone images
and the satellite tiles of the batch, with a learnable logit scale (initialised to
1/0.07) and label-smoothed cross-entropy (:func:`soft_infonce`).

Sample4Geo's hard negatives come from the batch composition, not from the loss: its
University-1652 recipe only shuffles so that a batch holds each location once (the
paired sampler of :mod:`mcgf.data.sampler` does that), and its neighbour-based and
similarity-based sampling (for datasets with GPS, and between epochs) would need a
sampler of its own; it is not part of this model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mcgf.models.base import decay_split
from mcgf.models.encoder_model import (
    BACKBONE_CHECK,
    WEIGHTS_CHECK,
    EncoderModel,
    check_batch,
    check_view,
)
from mcgf.models.model_registry import register_model
from mcgf.options import above, at_least, in_range, option

#: The paper's University-1652 encoder.
SAMPLE4GEO_BACKBONE = "convnext_base.fb_in22k_ft_in1k_384"


@dataclass(frozen=True)
class Sample4GeoOptions:
    """The options of ``create_model("sample4geo", ...)`` (see :class:`Sample4GeoModel`)."""

    backbone_name: str = option(SAMPLE4GEO_BACKBONE, BACKBONE_CHECK)
    num_classes: int = option(701, at_least(1))
    img_size: int | None = option(None, at_least(1))
    pretrained: bool = False
    weights: str | None = option(None, WEIGHTS_CHECK)
    allow_partial_weights: bool = False
    grad_checkpointing: bool = False
    backbone_args: dict[str, Any] | None = None
    init_temperature: float = option(0.07, above(0))
    max_logit_scale: float = option(100.0, above(1))
    label_smoothing: float = option(0.1, in_range(0, 1, hi_open=True))


def soft_infonce(logits: torch.Tensor, positives: torch.Tensor,
                 label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of each row of ``logits`` against a soft target: ``1 − ε`` spread
    evenly over the row's positives plus ``ε`` spread over all columns.

    With one positive per row this is ``F.cross_entropy(logits, target,
    label_smoothing=ε)``, the loss of Sample4Geo / CLIP. Rows without a positive are
    skipped; 0 when no row has one.
    """
    has = positives.any(dim=1)
    if not bool(has.any()):
        return logits.sum() * 0.0
    logits, positives = logits[has], positives[has].to(logits.dtype)
    target = (1.0 - label_smoothing) * positives / positives.sum(1, keepdim=True)
    target = target + label_smoothing / logits.shape[1]
    return -(target * F.log_softmax(logits, dim=1)).sum(1).mean()


@register_model("sample4geo", options=Sample4GeoOptions)
class Sample4GeoModel(EncoderModel):
    """A shared timm encoder trained with the symmetric InfoNCE only.

    Args:
        backbone_name: timm model name (ConvNeXt-B, ImageNet-22k, 384 px in the paper).
        num_classes: accepted for the training loop, unused (no classifier).
        img_size, pretrained, weights, allow_partial_weights, grad_checkpointing,
            backbone_args: the encoder (see
            :class:`~mcgf.models.encoder_model.EncoderModel`).
        init_temperature: the logit scale starts at ``1 / init_temperature``.
        max_logit_scale: the scale is clamped to at most this (CLIP: 100).
        label_smoothing: of the InfoNCE cross-entropy (the paper: 0.1).
    """

    def __init__(
        self,
        backbone_name: str = SAMPLE4GEO_BACKBONE,
        num_classes: int = 701,
        *,
        img_size: int | None = None,
        pretrained: bool = False,
        weights: str | Path | None = None,
        allow_partial_weights: bool = False,
        grad_checkpointing: bool = False,
        backbone_args: dict[str, Any] | None = None,
        init_temperature: float = 0.07,
        max_logit_scale: float = 100.0,
        label_smoothing: float = 0.1,
    ) -> None:
        super().__init__(backbone_name, img_size=img_size, pretrained=pretrained, weights=weights,
                         allow_partial_weights=allow_partial_weights,
                         grad_checkpointing=grad_checkpointing, backbone_args=backbone_args)
        if init_temperature <= 0 or max_logit_scale <= 1:
            raise ValueError("init_temperature must be > 0 and max_logit_scale > 1, got "
                             f"{init_temperature}, {max_logit_scale}")
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        self.max_log_scale = math.log(max_logit_scale)
        self.label_smoothing = float(label_smoothing)

    @property
    def loss_weights(self) -> dict[str, float]:
        """One term, ``infonce``, with weight 1."""
        return {"infonce": 1.0}

    @property
    def logit_scale(self) -> torch.Tensor:
        """The current logit scale (1 / temperature), clamped to ``max_logit_scale``."""
        return self.log_scale.clamp(max=self.max_log_scale).exp()

    def clamp_parameters_(self) -> None:
        """Put ``log_scale`` back in range (called after each optimizer step)."""
        self.log_scale.data.clamp_(max=self.max_log_scale)

    def param_groups(self, lr: float, weight_decay: float,
                     layer_decay: float | None = None) -> list[dict[str, Any]]:
        """Every trainable parameter at ``lr``, or with ``layer_decay`` the encoder's
        layer-wise below it (the logit scale at ``lr``); no weight decay on vectors, the
        logit scale, nor what the encoder's ``no_weight_decay()`` lists."""
        if layer_decay is None:
            return super().param_groups(lr, weight_decay)
        groups = self.encoder_groups(lr, weight_decay, layer_decay)
        groups += decay_split([self.log_scale], lr, weight_decay)
        return [g for g in groups if g["params"]]

    def embed(self, images: torch.Tensor, view: str) -> torch.Tensor:
        """``(B, feature_dim)``: the encoder's pooled feature, L2-normalised."""
        check_view(view)
        return F.normalize(self.encoder(images), dim=-1)

    def loss(self, batch: dict[str, Any], *,
             generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``infonce``: the mean of the drone→satellite and satellite→drone label-smoothed
        cross-entropies of ``logit_scale · cos``; every pair of one location is a
        positive. ``total = infonce``. ``generator`` is unused."""
        check_batch(batch)
        drone = F.normalize(self.encoder(batch["drone"]), dim=-1)
        satellite = F.normalize(self.encoder(batch["satellite"]), dim=-1)
        logits = self.logit_scale * drone @ satellite.T
        positives = batch["drone_label"][:, None] == batch["satellite_label"][None, :]
        loss = 0.5 * (soft_infonce(logits, positives, self.label_smoothing)
                      + soft_infonce(logits.T, positives.T, self.label_smoothing))
        return {"infonce": loss, "total": loss}


__all__ = ["SAMPLE4GEO_BACKBONE", "Sample4GeoModel", "Sample4GeoOptions", "soft_infonce"]
