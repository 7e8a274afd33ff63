"""IBN-Net-a on timm's ResNet, with SPADE-style modulation of the instance-normalised half.

timm has no IBN variant, so :func:`ibn_resnet` builds a timm ResNet and replaces the first
norm (``bn1``) of every block of the chosen stages (layer1-3 for IBN-Net-a) with an
:class:`IBN` layer: instance norm on the first ``ratio`` of the channels, batch norm on the
rest. ImageNet weights of the plain ResNet map onto it (:func:`ibn_state_dict`): the BN half
takes the BN parameters and statistics of its channels, the IN affine starts at weight 1 and
bias 0. Weights saved from an IBN-a ResNet (IBN-Net's ``resnet50_ibn_a``, whose IBN
sub-modules are called ``IN`` and ``BN`` as here) load unchanged.

:class:`SpadeModulation` turns an environment feature map into per-pixel scale and shift;
an :class:`IBN` layer that owns one modulates its instance-normalised half with them,
``IN(x) · (1 + γ) + β``, while a map is set with :func:`conditioned`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mcgf.errors import UserError
from mcgf.options import Check

_log = logging.getLogger(__name__)

#: BatchNorm entries of a state dict that the BN half of an :class:`IBN` takes (sliced).
_BN_TENSORS = ("weight", "bias", "running_mean", "running_var")


class SpadeModulation(nn.Module):
    """Environment feature map → per-pixel ``(γ, β)`` for ``channels`` channels.

    Two 3×3 convolutions (no norm, no activation) on the map resized (nearest) to the
    modulated layer's resolution. Initialised with N(0, 0.001²) weights and zero biases
    (from source), so that a new model starts close to plain IBN-a.
    """

    def __init__(self, env_channels: int, channels: int, *, init_std: float = 1e-3) -> None:
        super().__init__()
        self.gamma = nn.Conv2d(env_channels, channels, kernel_size=3, padding=1)
        self.beta = nn.Conv2d(env_channels, channels, kernel_size=3, padding=1)
        for conv in (self.gamma, self.beta):
            nn.init.normal_(conv.weight, std=init_std)
            nn.init.zeros_(conv.bias)

    def forward(self, env: torch.Tensor, size: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C_env, h, w)`` → ``(γ, β)``, each ``(B, channels, *size)``."""
        if tuple(env.shape[-2:]) != tuple(size):
            env = F.interpolate(env, size=tuple(size), mode="nearest")
        return self.gamma(env), self.beta(env)


class IBN(nn.Module):
    """Instance-Batch Normalisation (IBN-Net-a): IN on the first ``int(channels · ratio)``
    channels (affine), BN on the others.

    With a :class:`SpadeModulation` attached (``spade``) and an environment map set
    (:func:`conditioned`), the IN half becomes ``IN(x) · (1 + γ) + β``; without a map it
    is plain IBN-a.
    """

    def __init__(self, channels: int, ratio: float = 0.5) -> None:
        super().__init__()
        half = int(channels * ratio)
        if not 0 < half < channels:
            raise ValueError(f"ratio {ratio} leaves no IN or no BN channel of {channels}")
        self.half = half
        # Named as in IBN-Net so that its published IBN-a weights load as they are.
        self.IN = nn.InstanceNorm2d(half, affine=True)
        self.BN = nn.BatchNorm2d(channels - half)
        self.spade: SpadeModulation | None = None
        #: The environment map while :func:`conditioned` is active (never saved).
        self.condition: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A channels-last input (a channels-last model) gets a channels-last output: the
        # next convolution would otherwise convert it back (~3 % of a step on a CPU).
        fmt = (torch.channels_last if not x.is_contiguous()
               and x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format)
        a, b = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        a = self.IN(a.contiguous())
        if self.spade is not None and self.condition is not None:
            gamma, beta = self.spade(self.condition, a.shape[-2:])
            a = a * (1 + gamma) + beta
        return torch.cat([a.contiguous(memory_format=fmt),
                          self.BN(b.contiguous(memory_format=fmt))], dim=1)


@contextlib.contextmanager
def conditioned(layers: Sequence[IBN], env: torch.Tensor) -> Iterator[None]:
    """Within the block, ``layers`` modulate their IN half from ``env``."""
    for layer in layers:
        layer.condition = env
    try:
        yield
    finally:
        for layer in layers:
            layer.condition = None


def is_resnet_name(name: str) -> bool:
    """Whether ``name`` (``arch`` or ``arch.tag``) is one of timm's ResNet architectures."""
    import timm

    from mcgf.models.backbone import is_backbone_name

    return is_backbone_name(name) and name.split(".", 1)[0] in timm.list_models(module="resnet")


#: The option check of a list of ResNet stages that get IBN layers (``model.ibn_stages``).
STAGES_CHECK = Check(lambda v: all(1 <= s <= 4 for s in v) and len(set(v)) == len(v),
                     "a list of distinct stages among 1, 2, 3, 4", ([0], [1, 5], [2, 2]))

#: IBN-Net variants :func:`make_ibn` builds: ``a`` splits the first norm of each block into
#: IN and BN halves; ``b`` instance-normalises the stem and each stage's output.
IBN_MODES = ("a", "b")


def make_ibn(resnet: nn.Module, stages: Sequence[int], ratio: float = 0.5, mode: str = "a") -> None:
    """Turn the built timm ResNet ``resnet`` into IBN-Net on ``stages`` in place, keeping
    its current weights (pretrained or random).

    ``mode="a"`` (IBN-a): :func:`to_ibn`; the BN halves take the BN tensors of their
    channels (:func:`ibn_state_dict`). ``mode="b"`` (IBN-b): the stem's BN becomes an
    affine instance norm (:func:`_affine_in`, taking the BN's affine), and the last block
    of each of ``stages`` instance-normalises its output after the residual sum, before
    the activation (a new affine IN, weight 1 and bias 0); ``ratio`` is unused.
    """
    if mode not in IBN_MODES:
        raise ValueError(f"IBN mode {mode!r}: expected one of {IBN_MODES}")
    plain = resnet.state_dict()
    if mode == "a":
        to_ibn(resnet, stages, ratio)
        resnet.load_state_dict(ibn_state_dict(plain, resnet))
        return
    stem = resnet.bn1
    resnet.bn1 = _affine_in(stem)
    with torch.no_grad():
        resnet.bn1.weight.copy_(stem.weight)
        resnet.bn1.bias.copy_(stem.bias)
    for stage in stages:
        block = getattr(resnet, f"layer{stage}")[-1]
        # The activation after the residual sum: act2 of a basic block, act3 of a bottleneck.
        last = "3" if hasattr(block, "act3") else "2"
        norm = _affine_in(getattr(block, f"bn{last}"))
        setattr(block, f"act{last}", nn.Sequential(norm, getattr(block, f"act{last}")))


def _affine_in(bn: nn.Module) -> nn.GroupNorm:
    """An affine instance norm over ``bn``'s channels, on its device and dtype: a group
    norm with one channel per group, which is the same function (and has the same
    ``weight``/``bias``) but keeps a channels-last input channels-last, where
    ``InstanceNorm2d`` returns the default layout and every later convolution converts
    back (IBN-b's stem and stage norms cost 20 % instead of 80 % of a CPU step)."""
    return nn.GroupNorm(bn.num_features, bn.num_features).to(device=bn.weight.device,
                                                                dtype=bn.weight.dtype)


def to_ibn(resnet: nn.Module, stages: Sequence[int], ratio: float = 0.5) -> list[str]:
    """Replace ``bn1`` of every block of ``layer{s}`` for ``s`` in ``stages`` by an
    :class:`IBN` (fresh parameters); returns the replaced modules' names
    (``layer1.0.bn1``, ...). Load weights afterwards through :func:`ibn_state_dict`."""
    names = []
    for stage in stages:
        for i, block in enumerate(getattr(resnet, f"layer{stage}")):
            bn = block.bn1
            if not isinstance(bn, nn.BatchNorm2d):
                raise ValueError(f"layer{stage}.{i}.bn1 is a {type(bn).__name__}, not BatchNorm2d")
            block.bn1 = IBN(bn.num_features, ratio).to(device=bn.weight.device,
                                                       dtype=bn.weight.dtype)
            names.append(f"layer{stage}.{i}.bn1")
    return names


def ibn_state_dict(state: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """``state`` (of a plain ResNet, or already of an IBN-a one) with the keys of ``model``.

    For each :class:`IBN` of ``model`` whose plain BatchNorm entries (``<name>.weight``,
    ...) are in ``state``: the BN half takes the slice of its channels
    (``[half:]``) of weight, bias and running statistics, and the IN affine is set to
    weight 1, bias 0. Other entries pass through unchanged.
    """
    out = dict(state)
    for name, layer in model.named_modules():
        if not isinstance(layer, IBN) or f"{name}.weight" not in out:
            continue
        weight = out[f"{name}.weight"]
        for key in _BN_TENSORS:
            value = out.pop(f"{name}.{key}", None)
            if value is not None:
                out[f"{name}.BN.{key}"] = value[layer.half:].clone()
        count = out.pop(f"{name}.num_batches_tracked", None)
        if count is not None:
            out[f"{name}.BN.num_batches_tracked"] = count
        out[f"{name}.IN.weight"] = torch.ones(layer.half, dtype=weight.dtype, device=weight.device)
        out[f"{name}.IN.bias"] = torch.zeros(layer.half, dtype=weight.dtype, device=weight.device)
    return out


def set_last_stride(resnet: nn.Module, stride: int) -> None:
    """Give the first block of ``layer4`` (its strided convolution and shortcut) ``stride``
    (1: the final map stays at 1/16 of the input, as re-identification networks do)."""
    if stride == 2:
        return
    block = resnet.layer4[0]
    for module in block.modules():
        if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
            module.stride = (stride, stride)
    down = getattr(block, "downsample", None)
    if isinstance(down, nn.Sequential):  # avg_down variants pool before the 1x1 conv
        for i, module in enumerate(down):
            if isinstance(module, nn.AvgPool2d) and module.stride in (2, (2, 2)):
                down[i] = nn.Identity()


def load_ibn_weights(model: nn.Module, path: str | Path, option: str = "model.weights", *,
                     allow_partial: bool = False) -> int:
    """Load a plain-ResNet or IBN-a weights file into the IBN ResNet ``model`` (non-strict;
    tensors of another shape, e.g. a classifier, are skipped); returns how many loaded.

    Args:
        allow_partial: accept a file that leaves some tensors of ``model`` unset (they keep
            their initialisation, with a warning); otherwise that is an error, since a file
            of another architecture (a ResNet-50 for a ResNet-18) would silently train a
            partly random network.

    Raises:
        UserError: the file cannot be read, matches no tensor of ``model``, or leaves some
            unset without ``allow_partial``.
    """
    from mcgf.models.backbone import first_items, read_state_dict, strip_prefixes

    own = model.state_dict()
    # Wrapper prefixes (DDP's module., a Lightning module's model.backbone.) come off as for
    # a plain backbone: the convolutions, named alike in ResNet and IBN files, decide.
    raw = strip_prefixes(read_state_dict(path), set(own))
    state = {k: v for k, v in ibn_state_dict(raw, model).items()
             if k in own and own[k].shape == v.shape}
    if not state:
        raise UserError(f"{option}: {path} matches no tensor of the IBN ResNet (first key "
                        f"{next(iter(raw), '<empty>')!r}): pass ResNet or ResNet-IBN-a weights "
                        "of the same backbone_name")
    # load_state_dict's own list: it fills a BatchNorm's num_batches_tracked missing from
    # older files. On an error the half-loaded model is discarded with the exception.
    missing = model.load_state_dict(state, strict=False).missing_keys
    if missing and not allow_partial:
        first = first_items(missing, 3)
        raise UserError(f"{option}: {path} leaves {len(missing)} of {len(own)} tensors of the IBN "
                        f"ResNet unset ({first}): pass ResNet or ResNet-IBN-a weights of the same "
                        "backbone_name and backbone_args, or set model.allow_partial_weights: true "
                        "to accept")
    if missing:
        _log.warning("weights %s: %d tensors loaded, %d left unset (e.g. %s)", path, len(state),
                     len(missing), missing[:3])
    return len(state)


def ibn_resnet(name: str, *, stages: Sequence[int], ratio: float = 0.5, last_stride: int = 2,
               **backbone: Any) -> nn.Module:
    """A timm ResNet ``name`` (built by :func:`mcgf.models.backbone.create_backbone` with
    ``backbone`` — ``pretrained``, ``img_size``, ``model_args`` — and without classifier)
    turned into IBN-a on ``stages``: its weights, pretrained or freshly initialised, mapped
    by :func:`ibn_state_dict`."""
    from mcgf.models.backbone import create_backbone

    resnet = create_backbone(name, **backbone).model
    make_ibn(resnet, stages, ratio)
    set_last_stride(resnet, last_stride)
    return resnet


__all__ = ["IBN", "IBN_MODES", "STAGES_CHECK", "SpadeModulation", "conditioned", "ibn_resnet",
           "ibn_state_dict", "is_resnet_name", "load_ibn_weights", "make_ibn", "set_last_stride",
           "to_ibn"]
