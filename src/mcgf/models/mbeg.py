"""MBEG: "Modern Backbone for Efficient Geo-localization" (Zhu et al., the winning entry of
the ACM MM 2023 UAVs in Multimedia challenge on University-160k).

A pretrained EVA-02-L at 448 px, **frozen** (its weights never change; it runs without
gradients and always in ``eval()`` mode), shared by both views, feeds a trainable
:class:`~mcgf.models.heads.ClassBlock` whose bottleneck has a GELU before its BatchNorm.
The head is trained with the location cross-entropy of both views (summed) plus an
NT-Xent loss (:func:`nt_xent`, fixed temperature) between each drone image and its
satellite tile. Retrieval is the head's L2-normalised bottleneck feature. Images are
normalised with the ImageNet mean and std, as the public code does (``imagenet_norm``),
not with the CLIP statistics timm gives EVA-02.

The public code applies its NT-Xent within each view on mined pairs, over loaders that
draw each view independently, where a batch almost never holds two images of a location;
here the term pairs each drone image with its location's tile in the same batch, which is
what a cross-view batch makes possible. Its test-time "feature rotate encoding" (summing
the features of an image, its flip and its flipped quarter turn) is not part of the
model; evaluation adds the flip.

Training a frozen encoder that has no pretrained weights would fit a head to random
features: :meth:`MBEGModel.training_problem` refuses it unless ``allow_random_encoder``
(for tests and the CPU demo, which have no weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from mcgf.models.backbone import DEFAULT_BACKBONE
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
from mcgf.options import above, at_least, in_range, option


@dataclass(frozen=True)
class MBEGOptions:
    """The options of ``create_model("mbeg", ...)`` (see :class:`MBEGModel`)."""

    backbone_name: str = option(DEFAULT_BACKBONE, BACKBONE_CHECK)
    num_classes: int = option(701, at_least(1))
    img_size: int | None = option(None, at_least(1))
    pretrained: bool = False
    weights: str | None = option(None, WEIGHTS_CHECK)
    allow_partial_weights: bool = False
    backbone_args: dict[str, Any] | None = None
    bottleneck_dim: int = option(512, at_least(1))
    dropout: float = option(0.3, in_range(0, 1, hi_open=True))
    ntxent: float = option(1.0, at_least(0))
    temperature: float = option(0.1, above(0))
    label_smoothing: float = option(0.0, in_range(0, 1, hi_open=True))
    allow_random_encoder: bool = False
    imagenet_norm: bool = True


def nt_xent(drone: torch.Tensor, drone_labels: torch.Tensor, satellite: torch.Tensor,
            satellite_labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent between drone images and the satellite tiles of their locations.

    All ``B + S`` embeddings are L2-normalised and compared by cosine / ``temperature``.
    Every (drone, tile) pair of one location is a positive pair, in both directions (the
    drone image as anchor and the tile as anchor); an anchor's negatives are all items of
    another location, of either view. Per positive pair ``(a, p)`` the loss is
    ``−log(e^{s_ap} / (e^{s_ap} + Σ_n e^{s_an}))``, averaged over the pairs (SimCLR's
    NT-Xent as pytorch-metric-learning computes it with labels). Two drone images of one
    location are neither positives nor negatives. 0 without a positive pair.
    """
    z = F.normalize(torch.cat([drone, satellite]), dim=-1)
    sim = z @ z.T / temperature
    labels = torch.cat([drone_labels, satellite_labels])
    is_drone = torch.arange(len(labels), device=labels.device) < len(drone_labels)
    same = labels[:, None] == labels[None, :]
    positive = same & (is_drone[:, None] != is_drone[None, :])
    anchor, other = positive.nonzero(as_tuple=True)
    if anchor.numel() == 0:
        return sim.sum() * 0.0
    negatives = torch.logsumexp(sim.masked_fill(same, float("-inf")), dim=1)
    pos = sim[anchor, other]
    return (torch.logaddexp(pos, negatives[anchor]) - pos).mean()


@register_model("mbeg", options=MBEGOptions)
class MBEGModel(EncoderModel):
    """A frozen timm encoder shared by both views and a trainable ``ClassBlock`` head.

    Args:
        backbone_name: timm model name (EVA-02-L at 448 px in MBEG).
        num_classes: training locations.
        img_size, pretrained, weights, allow_partial_weights, backbone_args: the encoder (see
            :class:`~mcgf.models.encoder_model.EncoderModel`); it must bring pretrained
            weights (``pretrained`` or ``weights``) to be trained.
        bottleneck_dim, dropout: the head (with a GELU before its BatchNorm).
        ntxent: weight of the NT-Xent term in ``total`` (0: not computed).
        temperature: of the NT-Xent (fixed; the public code: 0.1).
        label_smoothing: of the cross-entropy.
        allow_random_encoder: train even when the frozen encoder has no pretrained
            weights (only meaningful for tests and demos).
        imagenet_norm: normalise images (training and retrieval) with the ImageNet mean
            and std, as the public code does for EVA-02 in both; ``False``: with the
            encoder's own timm statistics (CLIP's for EVA-02).
    """

    #: A checkpoint saved before ``imagenet_norm`` existed was trained with the encoder's
    #: own statistics: it is rebuilt so.
    legacy_options: ClassVar[dict[str, Any]] = {"imagenet_norm": False}

    def __init__(
        self,
        backbone_name: str = DEFAULT_BACKBONE,
        num_classes: int = 701,
        *,
        img_size: int | None = None,
        pretrained: bool = False,
        weights: str | Path | None = None,
        allow_partial_weights: bool = False,
        backbone_args: dict[str, Any] | None = None,
        bottleneck_dim: int = 512,
        dropout: float = 0.3,
        ntxent: float = 1.0,
        temperature: float = 0.1,
        label_smoothing: float = 0.0,
        allow_random_encoder: bool = False,
        imagenet_norm: bool = True,
    ) -> None:
        super().__init__(backbone_name, img_size=img_size, pretrained=pretrained, weights=weights,
                         allow_partial_weights=allow_partial_weights,
                         backbone_args=backbone_args)
        if temperature <= 0 or ntxent < 0:
            raise ValueError(f"temperature must be > 0 and ntxent >= 0, got {temperature}, {ntxent}")
        self.encoder.requires_grad_(False)
        self.encoder.eval()
        #: Whether the encoder was built without any pretrained weights.
        self.random_encoder = not pretrained and weights is None
        self.allow_random_encoder = bool(allow_random_encoder)
        self.ntxent = float(ntxent)
        self.temperature = float(temperature)
        self.label_smoothing = float(label_smoothing)
        self.head = ClassBlock(self.feature_dim, num_classes, bottleneck=bottleneck_dim,
                               dropout=dropout, gelu=True)
        self.imagenet_norm = bool(imagenet_norm)
        if imagenet_norm:
            from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

            self.mean = tuple(float(m) for m in IMAGENET_DEFAULT_MEAN)  # type: ignore[assignment]
            self.std = tuple(float(s) for s in IMAGENET_DEFAULT_STD)  # type: ignore[assignment]

    def train(self, mode: bool = True) -> MBEGModel:
        """Set the head's mode; the frozen encoder stays in ``eval()`` (its BatchNorm
        statistics and dropout never change)."""
        super().train(mode)
        self.encoder.eval()
        return self

    def training_problem(self) -> str | None:
        """Why training is refused: a frozen encoder with neither pretrained weights nor
        ``allow_random_encoder``."""
        if self.random_encoder and not self.allow_random_encoder:
            return ("model.pretrained is false and model.weights is not set, but MBEG trains "
                    "only a head on a frozen encoder and a frozen random encoder is "
                    "meaningless: set model.pretrained: true (timm weights, downloaded when missing) or "
                    "model.weights: PATH (model.allow_random_encoder: true permits it, for "
                    "tests and demos)")
        return None

    @property
    def loss_weights(self) -> dict[str, float]:
        """Weight of each term of :meth:`loss` in ``total``."""
        return {"ce": 1.0, "ntxent": self.ntxent}

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen encoder's pooled feature of normalised ``images``, without an
        autograd graph (training needs none: nothing in the encoder learns)."""
        with torch.no_grad():
            return self.encoder(images)

    def embed(self, images: torch.Tensor, view: str) -> torch.Tensor:
        """``(B, bottleneck_dim)``, the head's bottleneck feature, L2-normalised. It stays
        differentiable with respect to ``images`` (the report's saliency maps)."""
        check_view(view)
        return self.head.embed(self.encoder(images))

    def loss(self, batch: dict[str, Any], *,
             generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``total = ce + ntxent · ntxent_loss``: ``ce`` sums the two views' mean
        cross-entropies; the NT-Xent (:func:`nt_xent`) is on the head's bottleneck
        features. ``generator`` is unused."""
        check_batch(batch)
        emb_d, logits_d = self.head(self.pooled(batch["drone"]))
        emb_s, logits_s = self.head(self.pooled(batch["satellite"]))
        ce = (F.cross_entropy(logits_d, batch["drone_label"], label_smoothing=self.label_smoothing)
              + F.cross_entropy(logits_s, batch["satellite_label"],
                                label_smoothing=self.label_smoothing))
        terms = {"ce": ce}
        total = ce
        if self.ntxent > 0:
            terms["ntxent"] = nt_xent(emb_d, batch["drone_label"], emb_s, batch["satellite_label"],
                                      self.temperature)
            total = total + self.ntxent * terms["ntxent"]
        terms["total"] = total
        return terms

    def param_groups(self, lr: float, weight_decay: float,
                     layer_decay: float | None = None) -> list[dict[str, Any]]:
        """The head's parameters at ``lr`` (the encoder is frozen; ``layer_decay`` has
        nothing to act on)."""
        return [g for g in decay_split(self.head.parameters(), lr, weight_decay) if g["params"]]


__all__ = ["MBEGModel", "MBEGOptions", "nt_xent"]
