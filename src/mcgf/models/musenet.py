"""Muse-Net: a multi-environment self-adaptive network for multi-weather geo-localization.

After Wang et al., "Multiple-environment Self-adaptive Network for Aerial-view
Geo-localization" (Pattern Recognition 152, 2024), the network the MCGF authors' released
code runs. Details not fixed by the paper come from the authors' public code (marked
"from source" below); our own choices are marked "guess".

* **Backbone**: ResNet-50-IBN-a (:mod:`mcgf.models.ibn`): instance norm on half the
  channels of ``bn1`` of every block of layer1-3, batch norm elsewhere; the last stage
  with stride 1 (from source). One backbone and one head serve both views (from source).
* **Environment branch**: a second, plain ResNet cut after its first ``env_stages``
  stages (2, from source) whose last block has no activations (from source: the shared
  ReLU of that block is removed). Its map, average-pooled, goes through
  ``BatchNorm1d → dropout → linear`` to classify the environment of the image into
  ``1 + len(CONDITIONS)`` classes (from source): class 0 is "satellite tile", class
  ``1 + i`` a drone image under ``CONDITIONS[i]`` (so a clean drone image is 1, not 0).
* **SPADE modulation**: per block of ``spade_blocks`` (layer1.1 and layer1.2, from source),
  two 3×3 convolutions turn the environment map (resized, nearest, to the block's
  resolution) into per-pixel ``γ, β``; the block's IN half becomes
  ``IN(x) · (1 + γ) + β``. The environment branch runs for every image, drone and
  satellite, in training and retrieval alike: the image itself says its environment.
* **Objective**: ``ce`` — the shared :class:`~mcgf.models.heads.ClassBlock`'s location
  cross-entropy, summed over the two views — plus ``env_weight · env``, the environment
  cross-entropy of the drone images (their ``drone_condition``, classes 1 and up) plus
  that of the satellite tiles (class 0), each a mean (from source, weight 1).

Batches are those of :mod:`mcgf.models.mcgf_model` (``drone``, ``drone_label``,
``satellite``, ``satellite_label``, ``drone_condition``); no clean twins are needed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mcgf.data.layout import VIEWS
from mcgf.errors import UserError
from mcgf.models.backbone import WEIGHTS_CHECK, create_backbone
from mcgf.models.base import TrainableMixin, decay_split
from mcgf.models.heads import ClassBlock
from mcgf.models.ibn import (
    IBN,
    STAGES_CHECK,
    SpadeModulation,
    conditioned,
    ibn_resnet,
    is_resnet_name,
    load_ibn_weights,
)
from mcgf.models.losses import cross_entropy_views
from mcgf.models.model_registry import register_model
from mcgf.options import Check, OptionError, above, at_least, checked, in_range, one_of, option
from mcgf.weather.conditions import CONDITIONS, check_condition

_BLOCK = re.compile(r"layer([1-4])\.(\d+)")

#: Environment class of satellite tiles. Drone images under ``CONDITIONS[i]`` are class
#: ``1 + i``: as in the source, a tile is not a clean drone image but a class of its own.
SATELLITE_ENV = 0
#: Outputs of the environment classifier: the tiles' class and one per weather condition.
ENV_CLASSES = 1 + len(CONDITIONS)


_RESNET = Check(is_resnet_name, "a timm ResNet name such as resnet50 (see "
                "timm.list_models(module='resnet')), with a pretrained tag the installed timm "
                "has, if any", ("no_such_net_v9", "vit_tiny_patch16_224", "resnet50.no_such_tag"))
_BLOCKS = Check(lambda v: all(_BLOCK.fullmatch(b) for b in v) and len(set(v)) == len(v),
                "a list of distinct block names such as layer1.1 (layer1 to layer4)",
                (["layer5.0"], ["fc"], ["layer1"]))


@dataclass(frozen=True)
class MuseNetOptions:
    """The options of ``create_model("musenet", ...)`` (the config's ``model:`` section);
    :class:`MuseNet` documents what each does."""

    backbone_name: str = option("resnet50", _RESNET)
    num_classes: int = option(701, at_least(1))
    img_size: int | None = option(None, at_least(1))
    pretrained: bool = False
    weights: str | None = option(None, WEIGHTS_CHECK)
    allow_partial_weights: bool = False
    backbone_args: dict[str, Any] | None = None
    ibn_stages: list[int] = field(default_factory=lambda: [1, 2, 3], metadata=checked(STAGES_CHECK))
    ibn_ratio: float = option(0.5, in_range(0, 1, lo_open=True, hi_open=True))
    last_stride: int = option(1, one_of(1, 2))
    env_stages: int = option(2, in_range(1, 4))
    spade_blocks: list[str] = field(default_factory=lambda: ["layer1.1", "layer1.2"],
                                    metadata=checked(_BLOCKS))
    bottleneck_dim: int = option(512, at_least(1))
    dropout: float = option(0.5, in_range(0, 1, hi_open=True))
    env_dropout: float = option(0.5, in_range(0, 1, hi_open=True))
    env_weight: float = option(1.0, at_least(0))
    env_satellite: bool = True
    label_smoothing: float = option(0.0, in_range(0, 1, hi_open=True))
    backbone_lr_scale: float = option(0.1, above(0))

    def check(self) -> None:
        """Every modulated block lies in an IBN stage (only those have an IN half)."""
        for block in self.spade_blocks:
            match = _BLOCK.fullmatch(block)
            if match and int(match.group(1)) not in self.ibn_stages:
                raise OptionError("spade_blocks", f"blocks of the ibn_stages {self.ibn_stages} "
                                  f"({block} is not)")


@register_model("musenet", options=MuseNetOptions)
class MuseNet(TrainableMixin, nn.Module):
    """ResNet-IBN-a geo-localization network whose IN layers adapt to the environment.

    Args:
        backbone_name: a timm ResNet (``resnet50``; ``backbone_args`` may shrink it, e.g.
            ``layers``/``channels`` for CPU runs). Both the IBN backbone and the
            environment branch are built from it.
        num_classes: training locations.
        img_size: the side images are resized to (CNNs take any size; ``None``: timm's
            pretrained size, 224 for ResNets).
        pretrained: start both ResNets from timm's ImageNet weights (downloaded or cached
            as for every timm backbone, see :func:`~mcgf.models.backbone.create_backbone`);
            the IBN layers take them as :func:`~mcgf.models.ibn.ibn_state_dict` maps them.
        weights: a local plain-ResNet or ResNet-IBN-a weights file for the IBN backbone
            (instead of ``pretrained`` there).
        allow_partial_weights: accept a ``weights`` file that leaves some tensors of the
            IBN backbone unset; otherwise that is an error.
        backbone_args: extra timm ``create_model`` arguments.
        ibn_stages: the stages whose blocks get IBN in ``bn1`` (IBN-a: 1, 2, 3).
        ibn_ratio: share of IN channels in an IBN layer (0.5).
        last_stride: stride of the last stage (1, from source; 2 is the plain ResNet).
        env_stages: stages of the environment branch (2, from source).
        spade_blocks: blocks (``layerN.i``) whose IN half the environment modulates.
        bottleneck_dim, dropout: the shared :class:`ClassBlock` (512, 0.5 from source).
        env_dropout: dropout of the environment classifier (0.5, from source).
        env_weight: weight of the environment cross-entropy in ``total`` (1, from source;
            0: not computed, the branch still modulates).
        env_satellite: the satellite tiles also get the environment cross-entropy, with
            their own class :data:`SATELLITE_ENV` (from source).
        label_smoothing: of the location cross-entropy.
        backbone_lr_scale: learning rate of the two ResNets relative to the new layers
            (heads, SPADE convolutions, environment classifier): 0.1, from source, for
            pretrained ResNets; 1 for training from scratch.
    """

    #: Both views go through the same network (read by the checkpoint embedder).
    share_encoder = True

    def __init__(
        self,
        backbone_name: str = "resnet50",
        num_classes: int = 701,
        *,
        img_size: int | None = None,
        pretrained: bool = False,
        weights: str | Path | None = None,
        allow_partial_weights: bool = False,
        backbone_args: dict[str, Any] | None = None,
        ibn_stages: Sequence[int] = (1, 2, 3),
        ibn_ratio: float = 0.5,
        last_stride: int = 1,
        env_stages: int = 2,
        spade_blocks: Sequence[str] = ("layer1.1", "layer1.2"),
        bottleneck_dim: int = 512,
        dropout: float = 0.5,
        env_dropout: float = 0.5,
        env_weight: float = 1.0,
        env_satellite: bool = True,
        label_smoothing: float = 0.0,
        backbone_lr_scale: float = 0.1,
    ) -> None:
        super().__init__()
        from timm.data import resolve_model_data_config

        opts = {"img_size": img_size, "pretrained": pretrained and weights is None,
                "model_args": dict(backbone_args or {})}
        self.backbone = ibn_resnet(backbone_name, stages=tuple(ibn_stages), ratio=ibn_ratio,
                                   last_stride=last_stride, **opts)
        if weights is not None:
            load_ibn_weights(self.backbone, weights, allow_partial=allow_partial_weights)
        self.backbone_name = backbone_name
        self.environment, env_channels = _environment_branch(
            backbone_name, env_stages, img_size=img_size, pretrained=pretrained,
            model_args=dict(backbone_args or {}))
        self.env_head = _environment_head(env_channels, ENV_CLASSES, env_dropout)
        self.modulated = _attach_spade(self.backbone, spade_blocks, env_channels)
        self.head = ClassBlock(int(self.backbone.num_features), num_classes,
                               bottleneck=bottleneck_dim, dropout=dropout)
        self.env_weight = float(env_weight)
        self.env_satellite = bool(env_satellite)
        self.label_smoothing = float(label_smoothing)
        self.backbone_lr_scale = float(backbone_lr_scale)
        cfg = resolve_model_data_config(self.backbone)
        self.input_size: tuple[int, int] = (int(cfg["input_size"][1]), int(cfg["input_size"][2]))
        self.mean: tuple[float, float, float] = tuple(float(m) for m in cfg["mean"])  # type: ignore[assignment]
        self.std: tuple[float, float, float] = tuple(float(s) for s in cfg["std"])  # type: ignore[assignment]

    @property
    def loss_weights(self) -> dict[str, float]:
        """Weight of each term of :meth:`loss` in ``total``."""
        return {"ce": 1.0, "env": self.env_weight}

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pooled backbone feature (B, D), environment logits (B, ENV_CLASSES))``
        of normalised ``images``, the backbone modulated by their own environment map."""
        env = self.environment(images)
        env_logits = self.env_head(F.adaptive_avg_pool2d(env, 1).flatten(1))
        with conditioned(self.modulated, env):
            feats = self.backbone.forward_features(images)
        return self.backbone.forward_head(feats, pre_logits=True), env_logits

    def embed(self, images: torch.Tensor, view: str) -> torch.Tensor:
        """Retrieval embedding ``(B, bottleneck_dim)``, L2-normalised: the ClassBlock's
        bottleneck after BN. Both views go through the same network."""
        if view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
        return self.head.embed(self.encode(images)[0])

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Per view present in ``batch``: ``<view>_embedding`` (un-normalised bottleneck),
        ``<view>_logits`` (locations) and ``<view>_env_logits`` (environment classes); one pass
        per view (BatchNorm statistics per view, as in the source)."""
        out: dict[str, torch.Tensor] = {}
        for view in VIEWS:
            if view in batch:
                pooled, out[f"{view}_env_logits"] = self.encode(batch[view])
                out[f"{view}_embedding"], out[f"{view}_logits"] = self.head(pooled)
        return out

    def loss(self, batch: dict[str, Any], *,
             generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``{"ce", "env", "total"}`` with ``total = ce + env_weight · env``.

        ``env`` sums the mean environment cross-entropy of the drone images (when the
        batch names their ``drone_condition``; class ``1 + CONDITIONS.index(c)``) and of
        the satellite tiles (class :data:`SATELLITE_ENV`, with ``env_satellite``); it is left out for ``env_weight`` 0. ``generator`` is
        unused (the model draws nothing of its own).
        """
        for key in ("drone", "drone_label", "satellite", "satellite_label"):
            if key not in batch:
                raise KeyError(f"training batch lacks {key!r}")
        out = self.forward(batch)
        terms = {"ce": cross_entropy_views(out["drone_logits"], batch["drone_label"],
                                           out["satellite_logits"], batch["satellite_label"],
                                           label_smoothing=self.label_smoothing)}
        total = terms["ce"]
        env = self._environment_loss(batch, out) if self.env_weight > 0 else None
        if env is not None:
            terms["env"] = env
            total = total + self.env_weight * env
        terms["total"] = total
        return terms

    def _environment_loss(self, batch: dict[str, Any],
                          out: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Sum of the views' mean environment cross-entropies (``None``: no labels)."""
        parts = []
        drone = out["drone_env_logits"]
        labels = condition_indices(batch.get("drone_condition"), drone.shape[0], drone.device)
        if labels is not None:
            parts.append(F.cross_entropy(drone, labels))
        if self.env_satellite:
            sat = out["satellite_env_logits"]
            tiles = torch.full((sat.shape[0],), SATELLITE_ENV, device=sat.device)
            parts.append(F.cross_entropy(sat, tiles))
        return torch.stack(parts).sum() if parts else None

    def _resnet_parameters(self) -> list[nn.Parameter]:
        """The two ResNets' parameters, without the SPADE convolutions inside the backbone."""
        spade = {id(p) for layer in self.modulated if layer.spade is not None
                 for p in layer.spade.parameters()}
        params = [*self.backbone.parameters(), *self.environment.parameters()]
        return [p for p in params if id(p) not in spade and p.requires_grad]

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The IBN backbone and the environment branch (without the SPADE convolutions)."""
        return self._resnet_parameters()

    def param_groups(self, lr: float, weight_decay: float,
                     layer_decay: float | None = None) -> list[dict[str, Any]]:
        """The two ResNets at ``backbone_lr_scale · lr``, the new layers (heads, SPADE
        convolutions) at ``lr``; no weight decay on vectors. ``layer_decay`` is ignored."""
        resnets = self._resnet_parameters()
        old = {id(p) for p in resnets}
        new = [p for p in self.parameters() if id(p) not in old]
        groups = (decay_split(resnets, lr * self.backbone_lr_scale, weight_decay)
                  + decay_split(new, lr, weight_decay))
        return [g for g in groups if g["params"]]


def condition_indices(conditions: Any, n: int, device: torch.device) -> torch.Tensor | None:
    """Weather condition names of drone images → their environment classes,
    ``1 + CONDITIONS.index(name)`` (class 0, :data:`SATELLITE_ENV`, is the satellite
    tiles'); ``None`` when the batch names no condition for its ``n`` drone images.

    Raises:
        UnknownConditionError: a name that is not a condition.
    """
    if not isinstance(conditions, (list, tuple)) or len(conditions) != n:
        return None
    return torch.tensor([1 + CONDITIONS.index(check_condition(str(c), "drone_condition"))
                         for c in conditions], dtype=torch.long, device=device)


def _environment_branch(name: str, stages: int, **backbone: Any) -> tuple[nn.Sequential, int]:
    """A plain timm ResNet up to ``layer{stages}`` and its output channels. The last
    block's activations are identities (from source: the block's one shared ReLU module
    is removed), so the map that drives the modulation keeps its sign."""
    resnet = create_backbone(name, **backbone).model
    layers = [getattr(resnet, f"layer{s}") for s in range(1, stages + 1)]
    last = layers[-1][-1]
    for act in ("act1", "act2", "act3"):
        if hasattr(last, act):
            setattr(last, act, nn.Identity())
    branch = nn.Sequential(resnet.conv1, resnet.bn1, resnet.act1, resnet.maxpool, *layers)
    return branch, int(resnet.feature_info[stages]["num_chs"])


def _environment_head(channels: int, conditions: int, dropout: float) -> nn.Sequential:
    """``BatchNorm1d → dropout → linear`` (from source; N(1, 0.02) BN weight, N(0, 0.001²)
    linear weight, zero biases)."""
    head = nn.Sequential(nn.BatchNorm1d(channels), nn.Dropout(dropout),
                         nn.Linear(channels, conditions))
    nn.init.normal_(head[0].weight, 1.0, 0.02)
    nn.init.zeros_(head[0].bias)
    nn.init.normal_(head[2].weight, std=1e-3)
    nn.init.zeros_(head[2].bias)
    return head


def _attach_spade(backbone: nn.Module, blocks: Sequence[str], env_channels: int) -> list[IBN]:
    """Give ``bn1`` of each of ``blocks`` a :class:`SpadeModulation`; returns those layers.

    Raises:
        UserError: a block the backbone lacks, or one without IBN.
    """
    layers: list[IBN] = []
    for name in blocks:
        try:
            norm = backbone.get_submodule(f"{name}.bn1")
        except AttributeError:
            stages = [len(getattr(backbone, f"layer{s}")) for s in range(1, 5)]
            raise UserError(f"model.spade_blocks: {name} is not a block of this backbone "
                            f"(blocks per stage: {stages}; layerN.i counts from 0)") from None
        if not isinstance(norm, IBN):
            raise UserError(f"model.spade_blocks: {name} has no IBN layer (add its stage to "
                            "model.ibn_stages)")
        norm.spade = SpadeModulation(env_channels, norm.half)
        layers.append(norm)
    return layers


__all__ = ["ENV_CLASSES", "SATELLITE_ENV", "MuseNet", "MuseNetOptions", "condition_indices",
           "is_resnet_name"]
