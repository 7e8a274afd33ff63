"""MCGF: a shared encoder trained for geo-localization and diffusion restoration jointly.

The drone encoder's pooled feature feeds the geo-localization head (:class:`ClassBlock`,
cross-entropy over locations, optional InfoNCE); the same pass's feature maps condition
the restoration branch (:class:`RestorationBranch`), which learns to denoise the clean
drone image given them. By default (``restoration_condition="features"``) the branch
sees the weathered image only through the encoder — the map nearest each of its scales
(timm's ``forward_intermediates``) and the final map — so its ε loss has to shape the
encoder's features, pushing weather out of them. Retrieval (:meth:`MCGFModel.embed`)
never runs the branch, and the pooled embedding of the training pass is exactly
``embed``'s (same pass, ``forward_head(final, pre_logits=True)``).

Batches are dicts of tensors (images normalised with the backbone's ``mean``/``std``):

``drone``            (B, 3, H, W) weathered drone images
``drone_label``      (B,) location class indices
``satellite``        (S, 3, H, W) satellite images
``satellite_label``  (S,) location class indices
``drone_clean``      (B, 3, H, W) optional: the same drone images without weather
``drone_condition``  optional list of B condition names: the restoration term then uses
                     only the weathered images (``!= mcgf.weather.CLEAN``)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mcgf.data.layout import VIEWS
from mcgf.errors import UserError
from mcgf.models.backbone import (
    BACKBONE_CHECK,
    DEFAULT_BACKBONE,
    WEIGHTS_CHECK,
    create_backbone,
    encode_multiscale,
    feature_channels,
    feature_sources,
    input_size,
    layer_decay_param_groups,
)
from mcgf.models.base import decay_split, no_weight_decay_ids
from mcgf.models.heads import ClassBlock
from mcgf.models.ibn import IBN_MODES, STAGES_CHECK, is_resnet_name, make_ibn
from mcgf.models.input_norm import INPUT_NORMS, input_channels, normalise_input
from mcgf.models.losses import InfoNCE, cross_entropy_views, weather_consistency
from mcgf.models.model_registry import register_model
from mcgf.models.restoration import CONDITIONS, RestorationBranch
from mcgf.options import (
    Check,
    OptionError,
    above,
    at_least,
    checked,
    in_range,
    multiple_of,
    one_of,
    option,
)
from mcgf.weather.conditions import CLEAN

#: The options that weight and shape the training objective (see :meth:`MCGFModel.loss`).
LOSS_OPTIONS = ("lambda_restore", "infonce", "consistency", "label_smoothing")
RESTORATION_CONDITIONS = CONDITIONS

_MULTS = Check(lambda v: len(v) >= 1 and all(m >= 1 for m in v), "a non-empty list of integers >= 1",
               ([], [1, 0], [-1]))


@dataclass(frozen=True)
class MCGFOptions:
    """The options of ``create_model("mcgf", ...)`` (the config's ``model:`` section), with
    their types and ranges; :class:`MCGFModel` documents what each does. Checked before
    anything is built (:func:`mcgf.models.model_registry.check_model_options`)."""

    backbone_name: str = option(DEFAULT_BACKBONE, BACKBONE_CHECK)
    num_classes: int = option(701, at_least(1))
    share_encoder: bool = True
    restoration: bool = True
    img_size: int | None = option(None, at_least(1))
    pretrained: bool = False
    weights: str | None = option(None, WEIGHTS_CHECK)
    allow_partial_weights: bool = False
    grad_checkpointing: bool = False
    bottleneck_dim: int = option(512, at_least(1))
    dropout: float = option(0.5, in_range(0, 1, hi_open=True))
    restoration_width: int = option(64, multiple_of(8))
    restoration_mults: list[int] = field(default_factory=lambda: [1, 2, 4], metadata=checked(_MULTS))
    restoration_blocks: int = option(2, at_least(1))
    restore_size: int | None = option(None, at_least(1))
    backbone_args: dict[str, Any] | None = None
    input_norm: str = option("none", one_of(*INPUT_NORMS))
    input_norm_sigma: float = option(0.08, above(0))
    satellite_rotations: int = option(1, one_of(1, 2, 4))
    restoration_condition: str = option("features", one_of(*CONDITIONS))
    lambda_restore: float = option(1.0, at_least(0))
    infonce: float = option(0.0, at_least(0))
    consistency: float = option(0.0, at_least(0))
    twin_ce: bool = False
    label_smoothing: float = option(0.0, in_range(0, 1, hi_open=True))
    channels_last: bool = False
    ibn_stages: list[int] = field(default_factory=list, metadata=checked(STAGES_CHECK))
    ibn_ratio: float = option(0.5, in_range(0, 1, lo_open=True, hi_open=True))
    ibn_mode: str = option("a", one_of(*IBN_MODES))
    joint_views: bool = False
    restoration_grad_checkpointing: bool = False
    grad_checkpointing_blocks: int | None = option(None, at_least(1))

    def check(self) -> None:
        """IBN layers replace the BatchNorm of ResNet blocks: only a ResNet has them; one
        pass over both views needs one encoder for both."""
        if self.ibn_stages and not is_resnet_name(self.backbone_name):
            raise OptionError("ibn_stages", f"[] with backbone_name {self.backbone_name!r} "
                              "(instance-batch normalisation needs a timm ResNet)")
        if self.joint_views and not self.share_encoder:
            raise OptionError("joint_views", "false with share_encoder: false (one encoder "
                              "pass over both views needs one shared encoder)")
        if self.grad_checkpointing_blocks is not None and not self.grad_checkpointing:
            raise OptionError("grad_checkpointing_blocks", "null with grad_checkpointing: "
                              "false (it chooses which blocks grad_checkpointing covers)")


def _check_turns_fit(rotations: int, size: tuple[int, int]) -> None:
    """Refuse quarter turns of satellite tiles for a non-square input.

    A quarter turn swaps height and width: the turns cannot share one batch, and an
    encoder built for h x w (ViT) takes no w x h input. Training would not hit it; the
    first validation or evaluation would.

    Raises:
        UserError: naming ``model.satellite_rotations`` and the input size.
    """
    h, w = size
    if rotations == 4 and h != w:
        raise UserError(f"model.satellite_rotations: 4 turns tiles by quarter turns, which needs a "
                        f"square input (this model takes {h}x{w}); use 1 or 2, or a square img_size")


@register_model("mcgf", options=MCGFOptions)
class MCGFModel(nn.Module):
    """Geo-localization encoder(s) + shared ``ClassBlock`` + optional restoration branch.

    Args:
        backbone_name: timm model name (EVA-02-L at 448 px by default).
        num_classes: training locations.
        share_encoder: one encoder for both views (MCGF); ``False`` adds a separate
            satellite encoder of the same architecture and initial weights.
        restoration: build the diffusion restoration branch.
        img_size, pretrained, weights, grad_checkpointing: see :func:`create_backbone`.
        allow_partial_weights: accept initial weights (``weights`` or ``pretrained``) that
            leave some encoder tensors unset (they keep their random initialisation);
            otherwise such weights are an error. What was loaded is
            :attr:`weights_report`.
        bottleneck_dim, dropout: the :class:`ClassBlock`.
        restoration_width, restoration_mults, restoration_blocks: the denoiser's size.
        restore_size: side the branch works at (images are resized to it; ``None`` keeps
            the input size). Smaller is cheaper; the encoder still sees full images.
        backbone_args: extra timm ``create_model`` arguments (architecture changes such as
            ``depth``, ``embed_dim``, ``patch_size``, ``global_pool``).
        input_norm: ``"none"``, or ``"image"`` to standardise each image (one mean and
            one standard deviation over its pixels and channels) before the encoder, in
            training and retrieval alike. A global brightness/contrast change — dark,
            light, much of fog — then no longer reaches the encoder, while colour ratios
            stay; or ``"local"`` for the same in a Gaussian window around each pixel
            (:func:`~mcgf.models.input_norm.local_contrast_norm`), which also undoes
            fog's smoothly varying veil; or ``"local_chroma"``: ``"local"`` plus two
            opponent-colour channels that grey fog, rain and snow layers do not reach
            (:func:`~mcgf.models.input_norm.local_chroma_norm`; the encoder is built
            with five input channels); ``"luma_chroma"``: three channels, luminance and
            the two opponent colours. Meant for encoders trained from scratch;
            pretrained ones expect their own normalisation.
        input_norm_sigma: window of the local modes, as a fraction of the image side.
        satellite_rotations: retrieval embeds a satellite tile as the sum of the
            embeddings of this many quarter turns of it (1, 2 or 4). North-up tiles are
            matched against drone views from every heading; a model trained with
            random tile rotation (``data.satellite_rotate: 180``) then gets a
            heading-free tile embedding. Training is unaffected. 4 needs a square
            input size (a quarter turn swaps height and width).
        restoration_condition: what the branch is conditioned on: ``"features"`` (the
            shared encoder's normalised multi-scale features of the weathered image, and
            nothing else) or ``"features+image"`` (the weathered image concatenated with
            ``x_t`` plus the encoder's final map; the ablation, and how checkpoints saved
            without this option were trained).
        lambda_restore: weight of the restoration ε loss in ``total`` (0 turns the term
            off: no clean drone images are loaded for it and the branch does not run).
        infonce: weight of the symmetric drone↔satellite InfoNCE (0: not computed).
        consistency: weight of the weather-consistency loss, ``1 − cos`` between each
            weathered drone image's embedding and its clean twin's (0: off; on, the clean
            twins run in the same encoder pass).
        twin_ce: the clean twins of the weathered drone images (the same pass as the
            consistency term's) also get the cross-entropy, as extra drone rows of their
            location: every weathered view is then learnt clean as well, at the cost of
            one more encoder row per weathered image.
        label_smoothing: of the cross-entropy.
        channels_last: keep the model's convolution weights and the encoder's input in
            the channels-last memory layout, where CPU (oneDNN) and GPU convolution and
            pooling kernels are faster: the demo's narrow ResNet embeds 1.8× as fast on a
            CPU core. Values are unchanged up to float summation order; a ViT gains
            nothing (one patch convolution).
        ibn_stages: ResNet stages (1-4) made IBN-Net (:mod:`mcgf.models.ibn`) in the way
            ``ibn_mode`` names. Instance norm removes each image's own feature contrast
            and offset, which is what weather changes most; initial weights (pretrained
            or ``weights``) are kept. Empty (default): a plain ResNet.
        ibn_ratio: share of instance-normalised channels in an IBN-a layer.
        ibn_mode: ``"a"`` (IBN-Net-a: instance norm on ``ibn_ratio`` of the channels of
            the first norm of every block of ``ibn_stages``, batch norm on the rest, the
            BN halves taking their channels' statistics) or ``"b"`` (IBN-Net-b: the
            stem's norm and the output of the last block of each of ``ibn_stages`` become
            affine instance norms); see :func:`~mcgf.models.ibn.make_ibn`.
        joint_views: in training, run a batch's drone images (with their clean twins) and
            satellite tiles through the shared encoder in one pass instead of two. On a
            GPU one larger batch keeps the card busier and launches half the kernels;
            the head still sees each view apart. An encoder with layer norm only (ViT,
            EVA-02) computes the same values either way; one with batch norm (ResNet)
            would normalise both views with joint statistics, a different model. Needs
            ``share_encoder``.
        restoration_grad_checkpointing: gradient checkpointing of the restoration branch's
            denoiser (:meth:`RestorationBranch.set_grad_checkpointing
            <mcgf.models.restoration.RestorationBranch.set_grad_checkpointing>`): most of
            its activations are recomputed in the backward pass instead of kept, for about
            one more forward of the denoiser per step. At 448 px its activations are most
            of a step's memory; ``grad_checkpointing`` covers the encoder only.
        grad_checkpointing_blocks: with ``grad_checkpointing``, checkpoint only the first
            this many encoder blocks (a ViT's or EVA-02's; ``None``: all of them). The
            others keep their activations and are not recomputed: faster where the card
            has the memory (:func:`~mcgf.models.backbone.checkpoint_first_blocks`).

    Meets :class:`~mcgf.models.base.TrainableModel`: :meth:`loss` applies these weights
    itself and :attr:`loss_weights` reports them.
    """

    #: Options whose value in a checkpoint saved before they existed differs from today's
    #: default: a saved config without the key was built this way.
    legacy_options: ClassVar[dict[str, Any]] = {"restoration_condition": "features+image"}
    #: Options that configs and checkpoints written before they were model options kept
    #: in their ``train:`` section (moved into ``model:`` when such a config is read).
    legacy_train_options: ClassVar[tuple[str, ...]] = LOSS_OPTIONS

    def __init__(
        self,
        backbone_name: str = DEFAULT_BACKBONE,
        num_classes: int = 701,
        *,
        share_encoder: bool = True,
        restoration: bool = True,
        img_size: int | None = None,
        pretrained: bool = False,
        weights: str | Path | None = None,
        allow_partial_weights: bool = False,
        grad_checkpointing: bool = False,
        bottleneck_dim: int = 512,
        dropout: float = 0.5,
        restoration_width: int = 64,
        restoration_mults: Sequence[int] = (1, 2, 4),
        restoration_blocks: int = 2,
        restore_size: int | None = None,
        backbone_args: dict[str, Any] | None = None,
        input_norm: str = "none",
        input_norm_sigma: float = 0.08,
        satellite_rotations: int = 1,
        restoration_condition: str = "features",
        lambda_restore: float = 1.0,
        infonce: float = 0.0,
        consistency: float = 0.0,
        twin_ce: bool = False,
        label_smoothing: float = 0.0,
        channels_last: bool = False,
        ibn_stages: Sequence[int] = (),
        ibn_ratio: float = 0.5,
        ibn_mode: str = "a",
        joint_views: bool = False,
        restoration_grad_checkpointing: bool = False,
        grad_checkpointing_blocks: int | None = None,
    ) -> None:
        super().__init__()
        from timm.data import resolve_model_data_config

        _check_args(input_norm, input_norm_sigma, satellite_rotations, restoration_condition,
                    (lambda_restore, infonce, consistency, label_smoothing),
                    joint_views and not share_encoder)
        self.input_norm = input_norm
        self.input_norm_sigma = float(input_norm_sigma)
        self.satellite_rotations = int(satellite_rotations)
        self.restoration_condition = restoration_condition
        #: The objective's weights (see :meth:`loss`); ``self.infonce`` is the InfoNCE module.
        self.lambda_restore = float(lambda_restore)
        self.infonce_weight = float(infonce)
        self.consistency = float(consistency)
        self.twin_ce = bool(twin_ce)
        self.label_smoothing = float(label_smoothing)
        self.joint_views = bool(joint_views)
        opts = {"img_size": img_size, "pretrained": pretrained, "weights": weights,
                "grad_checkpointing": grad_checkpointing,
                "model_args": _model_args(backbone_args, input_norm),
                "allow_partial": allow_partial_weights,
                "checkpoint_blocks": grad_checkpointing_blocks}
        self.backbone_name = backbone_name
        self.share_encoder = share_encoder
        self.ibn_stages = tuple(int(s) for s in ibn_stages)
        dim = self._build_encoders(opts, ibn_ratio, ibn_mode)
        self.head = ClassBlock(dim, num_classes, bottleneck=bottleneck_dim, dropout=dropout)
        self.infonce = InfoNCE()
        self.restore_size = restore_size
        cfg = resolve_model_data_config(self.drone_encoder)
        #: What an evaluation embedder needs: input size and normalisation.
        self.input_size: tuple[int, int] = input_size(self.drone_encoder, cfg)
        _check_turns_fit(self.satellite_rotations, self.input_size)
        #: Per UNet scale (finest first) and the middle block, the encoder map that
        #: conditions it: a ``forward_intermediates`` index, or ``None`` for the final map.
        self.restoration_sources: tuple[int | None, ...] = ()
        self.restoration: RestorationBranch | None = None
        if restoration:
            self._build_restoration(tuple(restoration_mults), restoration_width, restoration_blocks,
                                    restoration_grad_checkpointing)
        self._set_normalisation(cfg)
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def _set_normalisation(self, data_config: dict[str, Any]) -> None:
        """The encoder's input mean and std: attributes for embedders, buffers for
        :meth:`_to_unit_range`."""
        self.mean: tuple[float, float, float] = tuple(float(m) for m in data_config["mean"])  # type: ignore[assignment]
        self.std: tuple[float, float, float] = tuple(float(s) for s in data_config["std"])  # type: ignore[assignment]
        self.register_buffer("_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)

    def _build_encoders(self, opts: dict[str, Any], ibn_ratio: float, ibn_mode: str) -> int:
        """Create the drone encoder (and a separate satellite one unless shared) with
        ``create_backbone`` options ``opts``, make them IBN-Net on :attr:`ibn_stages`;
        returns the pooled feature width."""
        drone = create_backbone(self.backbone_name, **opts)
        #: What loading the initial weights did (:meth:`LoadReport.as_dict
        #: <mcgf.models.backbone.LoadReport.as_dict>`), ``None`` without initial weights.
        self.weights_report: dict[str, Any] | None = (
            drone.load_report.as_dict() if drone.load_report is not None else None)
        self.drone_encoder = drone.model
        self.satellite_encoder = (self.drone_encoder if self.share_encoder
                                  else create_backbone(self.backbone_name, **opts).model)
        if self.ibn_stages:
            encoders = [self.drone_encoder] + ([] if self.share_encoder else [self.satellite_encoder])
            for encoder in encoders:
                make_ibn(encoder, self.ibn_stages, ibn_ratio, ibn_mode)
        return drone.dim

    def _build_restoration(self, mults: tuple[int, ...], width: int, blocks: int,
                           grad_checkpointing: bool = False) -> None:
        """The restoration branch and the encoder maps that condition its scales."""
        if self.restoration_condition == "features":
            side = self.restore_size or self.input_size[0]
            scales = feature_sources(self.drone_encoder, self.input_size[0],
                                     [side / 2**i for i in range(len(mults))])
            self.restoration_sources = (*scales, None)
        else:
            self.restoration_sources = (None,) * (len(mults) + 1)
        self.restoration = RestorationBranch(
            feature_channels(self.drone_encoder, self.restoration_sources),
            condition=self.restoration_condition,
            width=width,
            mults=mults,
            num_res_blocks=blocks,
            grad_checkpointing=grad_checkpointing,
        )

    @property
    def loss_weights(self) -> dict[str, float]:
        """Weight of each term of :meth:`loss` in ``total``."""
        return {"ce": 1.0, "infonce": self.infonce_weight, "restore": self.lambda_restore,
                "consistency": self.consistency}

    @property
    def needs_clean_targets(self) -> bool:
        """Whether training batches must hold ``drone_clean``: the restoration term (branch
        built, ``lambda_restore > 0``), the consistency term (``consistency > 0``) or the
        clean twins' cross-entropy (``twin_ce``)."""
        return ((self.restoration is not None and self.lambda_restore > 0) or self.consistency > 0
                or self.twin_ce)

    def encoder(self, view: str) -> nn.Module:
        """The encoder used for ``view`` (``"drone"`` or ``"satellite"``)."""
        if view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
        return self.drone_encoder if view == "drone" else self.satellite_encoder

    def embed(self, images: torch.Tensor, view: str) -> torch.Tensor:
        """Retrieval embedding ``(B, bottleneck_dim)``, L2-normalised; no restoration.

        Call under ``model.eval()`` (BatchNorm running statistics, no dropout). Satellite
        tiles are embedded over ``satellite_rotations`` quarter turns (one batched pass).
        """
        turns = self.satellite_rotations if view == "satellite" else 1
        if turns == 1:
            return self.head.embed(self.encoder(view)(self._normalise(images)))
        step = 4 // turns
        x = torch.cat([torch.rot90(images, k * step, dims=(2, 3)) for k in range(turns)])
        pooled = self.encoder(view)(self._normalise(x))
        # Sum the turns' unit embeddings and normalise the sum, as flip TTA does.
        feats = self.head.embed(pooled).view(turns, images.shape[0], -1).sum(0)
        return F.normalize(feats, dim=1)

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        """The encoder's input: ``images`` after the configured ``input_norm`` (in the
        channels-last layout with ``channels_last``)."""
        if self.input_norm in ("luma_chroma", "local_chroma"):
            # Undo the backbone's per-channel scaling: grey must stay equal in R, G and B.
            images = images * self._std + self._mean
        x = normalise_input(images, self.input_norm, self.input_norm_sigma)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _to_unit_range(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone-normalised images → ``[-1, 1]`` (the diffusion branch's data range)."""
        x = (images * self._std + self._mean) * 2.0 - 1.0
        if self.restore_size is not None and x.shape[-2:] != (self.restore_size,) * 2:
            x = F.interpolate(
                x, size=(self.restore_size,) * 2, mode="bilinear", antialias=True, align_corners=False
            )
        return x

    def forward(
        self, batch: dict[str, torch.Tensor], *, generator: torch.Generator | None = None,
        clean_pairs: bool = False, restore: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Embeddings and logits per view present, plus ``restoration_loss`` when possible.

        Returns keys ``drone_embedding``, ``drone_logits``, ``satellite_embedding``,
        ``satellite_logits`` (for the views in ``batch``; embeddings are the
        un-normalised bottleneck features) and ``restoration_loss`` when the branch is on
        and ``drone_clean`` is given (and ``restore``). ``generator`` draws the branch's t
        and noise (``None``: torch's global RNG). With
        ``clean_pairs`` and ``drone_clean`` given, the clean versions of the weathered drone
        images run in the same encoder pass and come back as ``drone_pair_embedding``
        (weathered) and ``drone_clean_embedding`` (clean), row by row, with the clean
        twins' ``drone_clean_logits`` and, when only some drone rows have one (the others
        are clean), ``drone_pair_index`` (those rows). With :attr:`joint_views` the
        satellite tiles share the drone images' encoder pass.
        """
        out: dict[str, torch.Tensor] = {}
        satellite = batch.get("satellite")
        if "drone" in batch:
            drone = batch["drone"]
            n = drone.shape[0]
            want_restore = restore and self.restoration is not None and "drone_clean" in batch
            # Which rows carry weather, from the batch's condition names on the host: a
            # mask built on the GPU would need a device-to-host read per use.
            weathered = _weathered_rows(batch.get("drone_condition"), n)
            parts, twins = [drone], 0
            paired = clean_pairs and "drone_clean" in batch
            if paired:
                # One pass for both: BatchNorm sees clean and weathered images together.
                parts.append(_rows(batch["drone_clean"], weathered))
                twins = parts[-1].shape[0]
            joint = self.joint_views and satellite is not None
            if joint:
                parts.append(satellite)
            x = self._normalise(torch.cat(parts) if len(parts) > 1 else drone)
            if want_restore:
                pooled, maps = encode_multiscale(self.drone_encoder, x, self.restoration_sources)
                maps = [m[:n] for m in maps]
            else:
                pooled = self.drone_encoder(x)
            if joint:
                # The head sees each view apart (its BatchNorm statistics stay per view).
                pooled, sat_pooled = pooled[:n + twins], pooled[n + twins:]
                out["satellite_embedding"], out["satellite_logits"] = self.head(sat_pooled)
            embedding, logits = self.head(pooled)
            out["drone_embedding"], out["drone_logits"] = embedding[:n], logits[:n]
            if paired:
                out["drone_pair_embedding"] = _rows(embedding[:n], weathered)
                out["drone_clean_embedding"] = embedding[n:n + twins]
                out["drone_clean_logits"] = logits[n:n + twins]
                if weathered is not None and len(weathered) < n:
                    out["drone_pair_index"] = _index(weathered, drone.device)
            if want_restore:
                assert self.restoration is not None
                if weathered is None or weathered:
                    out["restoration_loss"] = self.restoration.training_loss(
                        self._to_unit_range(_rows(batch["drone_clean"], weathered)),
                        [_rows(m, weathered) for m in maps],
                        weathered=(self._to_unit_range(_rows(drone, weathered))
                                   if self.restoration.needs_image else None),
                        generator=generator,
                    )
        if satellite is not None and "satellite_embedding" not in out:
            pooled = self.satellite_encoder(self._normalise(satellite))
            out["satellite_embedding"], out["satellite_logits"] = self.head(pooled)
        return out

    def loss(
        self,
        batch: dict[str, torch.Tensor],
        *,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Training objective and its (unweighted) terms.

        ``total = ce + infonce · infonce_loss + consistency · consistency_loss +
        lambda_restore · restoration_loss`` with the model's weights
        (:attr:`loss_weights`), where ``ce`` is :func:`cross_entropy_views` (with
        ``label_smoothing``; with ``twin_ce``, over the clean twins' logits too). The
        InfoNCE term is computed only for a positive weight; the
        consistency term (:func:`weather_consistency`) for a positive weight and a batch
        with ``drone_clean``; the restoration term only when the branch is on,
        ``lambda_restore > 0`` and the batch has ``drone_clean``. ``generator`` draws the
        branch's diffusion t and noise. Needs both views in ``batch``.
        """
        for key in ("drone", "drone_label", "satellite", "satellite_label"):
            if key not in batch:
                raise KeyError(f"training batch lacks {key!r}")
        out = self.forward(batch, generator=generator,
                           clean_pairs=self.consistency > 0 or self.twin_ce,
                           restore=self.lambda_restore > 0)
        drone_logits, drone_labels = out["drone_logits"], batch["drone_label"]
        if self.twin_ce and "drone_clean_logits" in out:
            twins = (drone_labels[out["drone_pair_index"]] if "drone_pair_index" in out
                     else drone_labels)
            drone_logits = torch.cat([drone_logits, out["drone_clean_logits"]])
            drone_labels = torch.cat([drone_labels, twins])
        terms: dict[str, torch.Tensor] = {
            "ce": cross_entropy_views(
                drone_logits,
                drone_labels,
                out["satellite_logits"],
                batch["satellite_label"],
                label_smoothing=self.label_smoothing,
            )
        }
        total = terms["ce"]
        if self.infonce_weight > 0:
            terms["infonce"] = self.infonce(
                out["drone_embedding"],
                batch["drone_label"],
                out["satellite_embedding"],
                batch["satellite_label"],
            )
            total = total + self.infonce_weight * terms["infonce"]
        if (self.consistency > 0 and "drone_clean_embedding" in out
                and out["drone_clean_embedding"].shape[0] > 0):
            terms["consistency"] = weather_consistency(out["drone_pair_embedding"],
                                                       out["drone_clean_embedding"])
            total = total + self.consistency * terms["consistency"]
        if "restoration_loss" in out:
            terms["restore"] = out["restoration_loss"]
            total = total + self.lambda_restore * terms["restore"]
        terms["total"] = total
        return terms

    @torch.no_grad()
    def restore(
        self,
        weathered: torch.Tensor,
        *,
        steps: int = 25,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Restored clean drone images in ``[0, 1]`` from backbone-normalised weathered ones,
        at the branch's size (``restore_size``, or the input size)."""
        if self.restoration is None:
            raise RuntimeError("this model was built with restoration=False")
        _, maps = encode_multiscale(self.drone_encoder, self._normalise(weathered),
                                    self.restoration_sources)
        if self.restoration.needs_image:
            x = self.restoration.restore(maps, weathered=self._to_unit_range(weathered),
                                         steps=steps, generator=generator)
        else:
            x = self.restoration.restore(maps, size=self._restore_hw(weathered), steps=steps,
                                         generator=generator)
        return (x + 1.0) / 2.0

    def restoration_target(self, clean: torch.Tensor) -> torch.Tensor:
        """What :meth:`restore` is trained to give for backbone-normalised ``clean`` images:
        them in ``[0, 1]`` at the branch's size."""
        return ((self._to_unit_range(clean) + 1.0) / 2.0).clamp(0.0, 1.0)

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters of the encoder(s), each once (shared or not)."""
        encoders = [self.drone_encoder]
        if not self.share_encoder:
            encoders.append(self.satellite_encoder)
        return [p for enc in encoders for p in enc.parameters() if p.requires_grad]

    def _restore_hw(self, images: torch.Tensor) -> tuple[int, int]:
        if self.restore_size is not None:
            return (self.restore_size, self.restore_size)
        return (int(images.shape[-2]), int(images.shape[-1]))

    def param_groups(
        self, lr: float, weight_decay: float, layer_decay: float | None = None
    ) -> list[dict[str, Any]]:
        """Optimizer groups: encoder(s) with optional layer decay, the rest at ``lr``.

        Biases, norms, the temperature and what the encoder's ``no_weight_decay()``
        lists (position embeddings, class tokens) get no weight decay.
        """
        groups: list[dict[str, Any]] = []
        encoders = [self.drone_encoder]
        if not self.share_encoder:
            encoders.append(self.satellite_encoder)
        for enc in encoders:
            if layer_decay is not None:
                groups += layer_decay_param_groups(enc, lr, weight_decay, layer_decay)
            else:
                groups += decay_split(enc.parameters(), lr, weight_decay,
                                      no_decay=no_weight_decay_ids(enc))
        rest = [self.head, self.infonce]
        if self.restoration is not None:
            rest.append(self.restoration)
        groups += decay_split((p for m in rest for p in m.parameters()), lr, weight_decay,
                              no_decay=set().union(*(no_weight_decay_ids(m) for m in rest)))
        return [g for g in groups if g["params"]]


def _weathered_rows(conditions: Any, n: int) -> list[int] | None:
    """The drone rows that carry weather; ``None`` when every row may (the conditions are
    unknown, or none is clean).

    The branch learns to remove weather, so images left clean add cost but nothing to
    learn from; a batch without weathered images skips the restoration term.
    """
    if not isinstance(conditions, (list, tuple)) or len(conditions) != n:
        return None
    rows = [i for i, c in enumerate(conditions) if c != CLEAN]
    return None if len(rows) == n else rows


def _index(rows: list[int], device: torch.device) -> torch.Tensor:
    index = torch.tensor(rows, dtype=torch.long)
    if device.type == "cuda":
        # From pageable memory the copy would first wait for the GPU; pinned, it queues.
        index = index.pin_memory()
    return index.to(device, non_blocking=True)


def _rows(x: torch.Tensor, rows: list[int] | None) -> torch.Tensor:
    """``x`` restricted to ``rows`` (all of it for ``None``), without a boolean mask: a
    mask's nonzero count would be read back from the device."""
    return x if rows is None else x[_index(rows, x.device)]


def _check_args(input_norm: str, input_norm_sigma: float, satellite_rotations: int,
                restoration_condition: str, loss_options: tuple[float, ...],
                joint_unshared: bool = False) -> None:
    """Raise ``ValueError`` for a bad option value (``create_model`` checks them earlier,
    with config-style messages; this guards direct construction)."""
    if input_norm not in INPUT_NORMS:
        raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {input_norm!r}")
    if input_norm_sigma <= 0:
        raise ValueError(f"input_norm_sigma must be positive, got {input_norm_sigma}")
    if satellite_rotations not in (1, 2, 4):
        raise ValueError(f"satellite_rotations must be 1, 2 or 4, got {satellite_rotations}")
    if restoration_condition not in RESTORATION_CONDITIONS:
        raise ValueError(f"restoration_condition must be one of {RESTORATION_CONDITIONS}, "
                         f"got {restoration_condition!r}")
    if min(loss_options) < 0 or loss_options[-1] >= 1:
        raise ValueError(f"{', '.join(LOSS_OPTIONS)} must be >= 0 (label_smoothing < 1), "
                         f"got {loss_options}")
    if joint_unshared:
        raise ValueError("joint_views needs share_encoder")


def _model_args(backbone_args: dict[str, Any] | None, input_norm: str) -> dict[str, Any]:
    """timm ``create_model`` arguments: ``backbone_args`` plus the input channels that
    ``input_norm`` makes."""
    model_args = dict(backbone_args or {})
    if input_channels(input_norm) != 3:
        model_args.setdefault("in_chans", input_channels(input_norm))
    return model_args
