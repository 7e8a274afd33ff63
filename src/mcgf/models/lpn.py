"""LPN: the Local Pattern Network of Wang et al., "Each Part Matters: Local Patterns
Facilitate Cross-view Geo-localization" (IEEE TCSVT 2021).

The last feature map of a CNN (ResNet-50 in the paper, any timm model here) is cut into
``blocks`` square rings around its centre; each ring is average-pooled and classified by
its own :class:`~mcgf.models.heads.ClassBlock` (cross-entropy over locations), for drone
and satellite images alike with one shared encoder and shared heads. The training loss is
the **sum** over rings and over the two views of the per-ring mean cross-entropy, as the
public code does. Retrieval concatenates each ring's L2-normalised bottleneck feature and
normalises the concatenation (each ring weighs the same in the cosine).

The rings follow the public code: with ``c = h // 2`` and ``p = h // (2 · blocks)`` (the
same along the width), ring ``i < blocks`` is the square ``[c − i·p, c + i·p)`` minus ring
``i − 1``'s square, and the last ring is everything outside ring ``blocks − 1``'s square,
corners included. A map side shorter than ``2 · blocks`` is first upsampled bilinearly
(``align_corners=True``) to ``2 · blocks`` when even and ``2 · blocks + 1`` when odd
(:func:`upsampled_side`), as the public code does; the public code does so only when both
sides are that short (one short side would leave it empty rings), here either side is.
The public code averages each ring over its whole bounding square with the inner part
zeroed; a true ring mean differs from that by a constant factor per ring, which the ring
head's BatchNorm removes, so the two are the same model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mcgf.errors import UserError
from mcgf.models.base import decay_split
from mcgf.models.encoder_model import (
    BACKBONE_CHECK,
    WEIGHTS_CHECK,
    EncoderModel,
    check_batch,
    check_view,
)
from mcgf.models.heads import ClassBlock
from mcgf.models.model_registry import register_model
from mcgf.options import above, at_least, in_range, one_of, option


@dataclass(frozen=True)
class LPNOptions:
    """The options of ``create_model("lpn", ...)`` (see :class:`LPNModel`)."""

    backbone_name: str = option("resnet50", BACKBONE_CHECK)
    num_classes: int = option(701, at_least(1))
    img_size: int | None = option(None, at_least(1))
    pretrained: bool = False
    weights: str | None = option(None, WEIGHTS_CHECK)
    allow_partial_weights: bool = False
    grad_checkpointing: bool = False
    backbone_args: dict[str, Any] | None = None
    blocks: int = option(4, at_least(1))
    last_stride: int = option(1, one_of(1, 2))
    bottleneck_dim: int = option(512, at_least(1))
    dropout: float = option(0.75, in_range(0, 1, hi_open=True))
    encoder_lr_scale: float = option(0.1, above(0))
    label_smoothing: float = option(0.0, in_range(0, 1, hi_open=True))


def ring_index(height: int, width: int, blocks: int) -> torch.Tensor:
    """``(height, width)`` ring number of each cell, 0 (centre) to ``blocks − 1`` (outside).

    Needs ``height, width >= 2 · blocks`` so that every ring holds at least one cell.
    """
    if min(height, width) < 2 * blocks:
        raise ValueError(f"a {height}x{width} map is too small for {blocks} rings")
    ch, cw = height // 2, width // 2
    ph, pw = height // (2 * blocks), width // (2 * blocks)
    index = torch.full((height, width), blocks - 1, dtype=torch.long)
    for i in range(blocks - 1, 0, -1):  # outer squares first: inner ones overwrite them
        index[ch - i * ph: ch + i * ph, cw - i * pw: cw + i * pw] = i - 1
    return index


def upsampled_side(side: int, blocks: int) -> int:
    """The side a map side below ``2 · blocks`` is upsampled to before the rings are cut:
    ``side + 2 · (blocks − side // 2)``, i.e. ``2 · blocks`` for an even side and
    ``2 · blocks + 1`` for an odd one (the centre ``side // 2`` moves to ``blocks``, as in
    the public code). A side already that long is kept."""
    return side if side >= 2 * blocks else side + 2 * (blocks - side // 2)


def ring_pool(fmap: torch.Tensor, blocks: int) -> torch.Tensor:
    """Mean of ``(B, C, h, w)`` over each square ring → ``(B, C, blocks)``, centre first."""
    h, w = fmap.shape[-2:]
    if min(h, w) < 2 * blocks:
        fmap = F.interpolate(fmap, size=(upsampled_side(h, blocks), upsampled_side(w, blocks)),
                             mode="bilinear", align_corners=True)
        h, w = fmap.shape[-2:]
    index = ring_index(h, w, blocks).to(fmap.device).flatten()
    weights = F.one_hot(index, blocks).to(fmap.dtype)  # (h·w, blocks)
    weights = weights / weights.sum(0, keepdim=True)
    return fmap.flatten(2) @ weights


def set_last_stride_one(encoder: nn.Module, name: str) -> int:
    """Make the last stage of a CNN keep its input resolution, as LPN does with ResNet-50's
    ``layer4``: stride-2 convolutions there get stride 1 and stride-2 average pools of a
    shortcut become identities. Returns how many modules changed.

    Raises:
        UserError: the encoder has no ``feature_info`` naming its last stage, or that
            stage has no stride-2 convolution (a ViT, say).
    """
    info = getattr(encoder, "feature_info", None)
    stage_name = info[-1].get("module") if isinstance(info, list) and info else None
    stage = encoder.get_submodule(stage_name) if stage_name else None
    changed = 0
    for parent in (stage.modules() if stage is not None else ()):
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d) and tuple(child.stride) == (2, 2):
                child.stride = (1, 1)
                changed += 1
            elif isinstance(child, nn.AvgPool2d) and child.stride in (2, (2, 2)):
                setattr(parent, child_name, nn.Identity())
    if changed == 0:
        raise UserError(f"model.last_stride: 1 needs a CNN whose last stage downsamples with a "
                        f"strided convolution (a ResNet); {name!r} has none: set model.last_stride: 2")
    return changed


@register_model("lpn", options=LPNOptions)
class LPNModel(EncoderModel):
    """LPN over a timm encoder shared by both views.

    Args:
        backbone_name: timm model name (ResNet-50 in the paper).
        num_classes: training locations.
        img_size, pretrained, weights, allow_partial_weights, grad_checkpointing,
            backbone_args: the encoder (see
            :class:`~mcgf.models.encoder_model.EncoderModel`).
        blocks: number of square rings (4 in the paper's University-1652 runs).
        last_stride: 1 removes the last stage's downsampling (the public runs use it:
            a 16 × 16 map at 256 px instead of 8 × 8); 2 keeps the backbone as it is.
        bottleneck_dim, dropout: each ring's :class:`ClassBlock`.
        encoder_lr_scale: the encoder trains at this multiple of ``train.lr`` (the
            public code: 0.1, the heads at the full rate).
        label_smoothing: of the cross-entropy.

    The retrieval embedding has ``blocks · bottleneck_dim`` dimensions.
    """

    def __init__(
        self,
        backbone_name: str = "resnet50",
        num_classes: int = 701,
        *,
        img_size: int | None = None,
        pretrained: bool = False,
        weights: str | Path | None = None,
        allow_partial_weights: bool = False,
        grad_checkpointing: bool = False,
        backbone_args: dict[str, Any] | None = None,
        blocks: int = 4,
        last_stride: int = 1,
        bottleneck_dim: int = 512,
        dropout: float = 0.75,
        encoder_lr_scale: float = 0.1,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(backbone_name, img_size=img_size, pretrained=pretrained, weights=weights,
                         allow_partial_weights=allow_partial_weights,
                         grad_checkpointing=grad_checkpointing, backbone_args=backbone_args)
        if blocks < 1 or last_stride not in (1, 2):
            raise ValueError(f"blocks must be >= 1 and last_stride 1 or 2, got {blocks}, {last_stride}")
        if last_stride == 1:
            set_last_stride_one(self.encoder, backbone_name)
        self.blocks = int(blocks)
        self.encoder_lr_scale = float(encoder_lr_scale)
        self.label_smoothing = float(label_smoothing)
        self.heads = nn.ModuleList(
            ClassBlock(self.feature_dim, num_classes, bottleneck=bottleneck_dim, dropout=dropout)
            for _ in range(self.blocks))

    @property
    def loss_weights(self) -> dict[str, float]:
        """One term, ``ce``, with weight 1."""
        return {"ce": 1.0}

    def rings(self, images: torch.Tensor) -> torch.Tensor:
        """Ring features ``(B, C, blocks)`` of normalised ``images``, centre first."""
        return ring_pool(self.feature_map(images), self.blocks)

    def embed(self, images: torch.Tensor, view: str) -> torch.Tensor:
        """``(B, blocks · bottleneck_dim)``: the rings' unit bottleneck features,
        concatenated and L2-normalised (call under ``eval()``)."""
        check_view(view)
        rings = self.rings(images)
        parts = [head.embed(rings[:, :, r]) for r, head in enumerate(self.heads)]
        return F.normalize(torch.cat(parts, dim=1), dim=1)

    def loss(self, batch: dict[str, Any], *,
             generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``ce``: the sum over views and rings of the mean cross-entropy; ``total = ce``.
        ``generator`` is unused (LPN draws nothing of its own)."""
        check_batch(batch)
        ce = torch.zeros((), device=batch["drone"].device)
        for view in ("drone", "satellite"):
            rings = self.rings(batch[view])
            for r, head in enumerate(self.heads):
                _, logits = head(rings[:, :, r])
                ce = ce + F.cross_entropy(logits, batch[f"{view}_label"],
                                          label_smoothing=self.label_smoothing)
        return {"ce": ce, "total": ce}

    def param_groups(self, lr: float, weight_decay: float,
                     layer_decay: float | None = None) -> list[dict[str, Any]]:
        """The encoder at ``lr · encoder_lr_scale`` (layer-wise decay below that with
        ``layer_decay``), the ring heads at ``lr``; no weight decay on vectors nor on a
        ViT encoder's position embedding and class token."""
        groups = self.encoder_groups(lr * self.encoder_lr_scale, weight_decay, layer_decay)
        groups += decay_split(self.heads.parameters(), lr, weight_decay)
        return [g for g in groups if g["params"]]


__all__ = ["LPNModel", "LPNOptions", "ring_index", "ring_pool", "set_last_stride_one", "upsampled_side"]
