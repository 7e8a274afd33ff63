"""What the comparison methods (LPN, MBEG, Sample4Geo) share: one timm encoder for both
views, its input size and normalisation, and the checks of a training batch.

:class:`EncoderModel` builds the encoder with :func:`~mcgf.models.backbone.create_backbone`
(offline weights, ``backbone_args`` architecture overrides) and reads the input size and
per-channel normalisation the evaluation must use from timm's data config, as
:class:`~mcgf.models.mcgf_model.MCGFModel` does. A method subclasses it and adds its head,
``embed`` and ``loss`` (the :class:`~mcgf.models.base.TrainableModel` contract).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from mcgf.data.layout import VIEWS
from mcgf.models.backbone import (
    BACKBONE_CHECK,
    WEIGHTS_CHECK,
    create_backbone,
    features_to_map,
    input_size,
    layer_decay_param_groups,
)
from mcgf.models.base import TrainableMixin, decay_split, no_weight_decay_ids

#: Keys every training batch of a comparison method must hold.
BATCH_KEYS = ("drone", "drone_label", "satellite", "satellite_label")


def input_spec(encoder: nn.Module) -> tuple[tuple[int, int], tuple[float, float, float],
                                            tuple[float, float, float]]:
    """``(input_size, mean, std)`` of a timm encoder: the ``(height, width)`` images are
    resized to (:func:`~mcgf.models.backbone.input_size`) and the per-channel
    normalisation of ``[0, 1]`` pixels."""
    from timm.data import resolve_model_data_config

    cfg = resolve_model_data_config(encoder)
    size = input_size(encoder, cfg)
    mean = tuple(float(m) for m in cfg["mean"])
    std = tuple(float(s) for s in cfg["std"])
    return size, mean, std  # type: ignore[return-value]


def check_batch(batch: dict[str, Any]) -> None:
    """Raise ``KeyError`` naming the first of :data:`BATCH_KEYS` that ``batch`` lacks."""
    for key in BATCH_KEYS:
        if key not in batch:
            raise KeyError(f"training batch lacks {key!r}")


def check_view(view: str) -> None:
    """Raise ``ValueError`` unless ``view`` is ``"drone"`` or ``"satellite"``."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")


class EncoderModel(TrainableMixin, nn.Module):
    """One timm encoder shared by the drone and satellite views.

    Args:
        backbone_name: timm model name (``arch`` or ``arch.pretrained_tag``).
        img_size, pretrained, weights, grad_checkpointing: see
            :func:`~mcgf.models.backbone.create_backbone`.
        allow_partial_weights: accept initial weights that leave some encoder tensors
            unset (``create_backbone``'s ``allow_partial``); otherwise they are an error.
        backbone_args: extra timm ``create_model`` arguments (architecture overrides).

    Attributes:
        encoder: the timm model (``num_classes=0``: ``encoder(x)`` is its pooled feature).
        feature_dim: channels of that pooled feature (and of the final feature map).
        input_size, mean, std: what the evaluation resizes and normalises images with.
        share_encoder: always ``True`` (read by the checkpoint embedder).
    """

    share_encoder = True

    def __init__(self, backbone_name: str, *, img_size: int | None = None,
                 pretrained: bool = False, weights: str | Path | None = None,
                 allow_partial_weights: bool = False, grad_checkpointing: bool = False,
                 backbone_args: dict[str, Any] | None = None) -> None:
        super().__init__()
        built = create_backbone(backbone_name, img_size=img_size, pretrained=pretrained,
                                weights=weights, grad_checkpointing=grad_checkpointing,
                                model_args=dict(backbone_args or {}),
                                allow_partial=allow_partial_weights)
        self.backbone_name = backbone_name
        self.encoder = built.model
        self.feature_dim = built.dim
        self.input_size, self.mean, self.std = input_spec(self.encoder)

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """The encoder's final feature map ``(B, C, h, w)`` (ViT tokens laid out on the
        patch grid, prefix tokens dropped)."""
        feats = self.encoder.forward_features(images)
        return features_to_map(self.encoder, feats, (images.shape[-2], images.shape[-1]))

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The encoder's trainable parameters (empty when it is frozen)."""
        return [p for p in self.encoder.parameters() if p.requires_grad]

    def encoder_groups(self, lr: float, weight_decay: float,
                       layer_decay: float | None = None) -> list[dict[str, Any]]:
        """AdamW groups of the encoder's trainable parameters at ``lr``: layer-wise decay
        below it with ``layer_decay``, and no weight decay on vectors nor on what the
        encoder's ``no_weight_decay()`` lists (a ViT's position embedding and class token)
        either way."""
        if layer_decay is not None:
            return layer_decay_param_groups(self.encoder, lr, weight_decay, layer_decay)
        return decay_split(self.encoder.parameters(), lr, weight_decay,
                           no_decay=no_weight_decay_ids(self.encoder))


__all__ = ["BACKBONE_CHECK", "BATCH_KEYS", "WEIGHTS_CHECK", "EncoderModel", "check_batch", "check_view", "input_spec"]
