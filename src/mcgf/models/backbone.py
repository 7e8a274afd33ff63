"""Image encoders from timm, built offline, plus the views of them MCGF needs.

timm provides the architectures (EVA-02 by default, any timm model works), pretrained
configurations, position-embedding resizing and layer-wise parameter grouping; this
module only adds what the project needs on top:

* building a backbone with its initial weights: a local file, or timm's pretrained weights
  for the name, taken from the Hugging Face cache and downloaded into it when missing and
  the hub is reachable (offline with nothing cached: a :class:`UserError` giving the
  command that fetches them); loading is safe (safetensors, or
  ``torch.load(weights_only=True)``), reported (:class:`LoadReport`) and complete unless
  partial weights are accepted explicitly;
* :func:`encode`: one encoder pass giving both the pooled embedding (geo-localization)
  and the spatial feature map (restoration branch), for ViTs and CNNs alike;
  :func:`feature_sources` / :func:`encode_multiscale`: the same pass with the per-stage
  maps nearest to given resolutions (timm's ``forward_intermediates``);
* :func:`layer_decay_param_groups`: timm's layer-decay groups with an explicit ``lr`` so
  that plain ``torch.optim`` optimizers honour them.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.utils.checkpoint
from torch import nn

from mcgf.errors import UserError
from mcgf.options import Check
from mcgf.safeload import one_line

_log = logging.getLogger(__name__)

#: Default geo-localization backbone (the MCGF paper uses EVA-02).
DEFAULT_BACKBONE = "eva02_large_patch14_448.mim_m38m_ft_in22k_in1k"

# Prefixes that training wrappers (DataParallel, Lightning, EMA, our own MCGFModel)
# put in front of backbone keys; stripped so such checkpoints load directly.
_KEY_PREFIXES = ("module.", "model.", "backbone.", "encoder.", "drone_encoder.", "state_dict.")
# Checkpoint containers that hold the state dict under one key.
_CONTAINER_KEYS = ("state_dict", "model", "model_state", "module", "ema")
#: Extensions of the weights files :func:`read_state_dict` reads.
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
# File names timm reads from a Hugging Face Hub repository (unless its pretrained config
# names one), most preferred first.
_HUB_FILENAMES = ("model.safetensors", "pytorch_model.bin")


#: Names each list of a :class:`LoadReport` summary shows.
_REPORT_NAMES = 5


@dataclass(frozen=True)
class LoadReport:
    """What happened when a weights file was loaded into a backbone.

    Attributes:
        path: the file read.
        loaded: tensors of the model set from the file (the matched ones).
        missing: model tensors the file left unset (including ``mismatched`` ones).
        unexpected: file tensors the model has no place for (e.g. a classifier head).
        mismatched: file tensors whose shape still differed from the model's after the
            model family's checkpoint filter (skipped, hence also ``missing``).
        resized: tensors the checkpoint filter adapted to the model's shape (e.g. ViT
            position embeddings resampled to ``img_size``), loaded.
        origin: where the file came from when it is timm's pretrained file
            (``hf-hub:<repo id>`` or its URL), else ``None``.
    """

    path: Path
    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    origin: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able counts and first names (what a checkpoint's ``config.json`` keeps as
        ``weights_report``)."""
        out: dict[str, Any] = {"file": str(self.path), "origin": self.origin,
                               "matched": self.loaded}
        for key in ("missing", "unexpected", "resized"):
            names = getattr(self, key)
            out[key] = len(names)
            out[f"first_{key}"] = list(names[:_REPORT_NAMES])
        return out

    def summary(self) -> str:
        """One line: the file, then matched, missing, unexpected and resized counts with
        their first names."""
        return summarize_report(self.as_dict())


def summarize_report(report: Mapping[str, Any]) -> str:
    """One line from :meth:`LoadReport.as_dict` (e.g. read back from a checkpoint)."""
    where = f"{report.get('file')}" + (f" ({report['origin']})" if report.get("origin") else "")
    parts = [f"{report.get('matched', 0)} tensors matched"]
    for key in ("missing", "unexpected", "resized"):
        count = int(report.get(key, 0) or 0)
        first = list(report.get(f"first_{key}") or [])
        more = ", ..." if count > len(first) else ""
        parts.append(f"{count} {key}" + (f" ({', '.join(first)}{more})" if first else ""))
    return f"initial weights {where}: " + ", ".join(parts)


@dataclass
class Backbone:
    """A timm model returning pooled features (``num_classes=0``) and its facts."""

    model: nn.Module
    dim: int
    name: str
    load_report: LoadReport | None = None


def create_backbone(
    name: str = DEFAULT_BACKBONE,
    *,
    img_size: int | None = None,
    pretrained: bool = False,
    weights: str | Path | None = None,
    grad_checkpointing: bool = False,
    model_args: dict[str, Any] | None = None,
    allow_partial: bool = False,
    checkpoint_blocks: int | None = None,
) -> Backbone:
    """Build a timm model with its classifier removed (``num_classes=0``).

    Args:
        name: timm model name, optionally with a pretrained tag (``arch.tag``).
        img_size: input size. ViTs are built for it (position embeddings are sized for
            it, and resized from pretrained weights by timm's filter); models without an
            ``img_size`` argument (CNNs) take any size, and it becomes their data config's
            input size, which evaluation resizes images to.
        pretrained: load timm's pretrained weights for ``name``: from the Hugging Face
            cache (``HF_HOME``), or the torch hub cache for weights timm fetches by URL,
            and downloaded into it first when missing, unless ``HF_HUB_OFFLINE`` is set
            (see :func:`pretrained_file`).
        weights: a local ``.safetensors``, ``.pth``, ``.pt``, ``.bin`` or ``.ckpt`` file
            to load instead (takes precedence over ``pretrained``).
        grad_checkpointing: trade compute for memory during training.
        model_args: extra keyword arguments for ``timm.create_model`` that change the
            architecture, e.g. ``{"depth": 4, "embed_dim": 128, "patch_size": 8}`` for a
            small EVA-02-style ViT, or ``{"global_pool": "avg"}``.
        allow_partial: accept weights that leave some of the model's tensors unset
            (they keep their random initialisation); otherwise that is an error.
        checkpoint_blocks: with ``grad_checkpointing``, checkpoint only the first this
            many of the model's ``blocks`` (:func:`checkpoint_first_blocks`); ``None``:
            timm's own checkpointing of the whole model.

    Returns:
        The :class:`Backbone` (model, pooled feature dimension, load report).

    Raises:
        UserError: unknown model name, missing/unreadable weights, weights that match
            no parameter or (without ``allow_partial``) leave some unset,
            ``pretrained=True`` with nothing cached and no way to download, or
            ``checkpoint_blocks`` for a model without a list of ``blocks`` (a CNN).
    """
    if not is_backbone_name(name):
        arch, _, tag = name.partition(".")
        if tag and is_backbone_name(arch):
            import timm

            raise UserError(
                f"unknown backbone {name!r}: the installed timm ({timm.__version__}) has no "
                f"pretrained tag {tag!r} for {arch} (list its tags with python -c \"import "
                f"timm; print(timm.list_pretrained('{arch}.*'))\"): use one of them, or the "
                "timm release that has it"
            )
        raise UserError(
            f"unknown backbone {name!r}: use a timm model name, e.g. {DEFAULT_BACKBONE} "
            "(list them with python -c 'import timm; print(timm.list_models())')"
        )
    kwargs: dict[str, Any] = {**(model_args or {}), "num_classes": 0}
    origin = None
    if pretrained and weights is None:
        weights, origin = pretrained_file(name, kwargs.get("pretrained_cfg_overlay"))
    model = _create_timm_model(name, kwargs, img_size, model_args)
    _check_patch_grid(model, name)
    report = None
    if weights is not None:
        report = load_weights(model, weights, allow_partial=allow_partial, origin=origin)
    if grad_checkpointing and checkpoint_blocks is not None:
        if not isinstance(getattr(model, "blocks", None), (nn.ModuleList, nn.Sequential)):
            raise UserError(f"model.grad_checkpointing_blocks needs a backbone with one list of "
                            f"blocks (a ViT or EVA-02); {name!r} has none: set "
                            "model.grad_checkpointing_blocks: null to checkpoint all of it")
        checkpoint_first_blocks(model, checkpoint_blocks)
    elif grad_checkpointing:
        model.set_grad_checkpointing(True)
    return Backbone(model=model, dim=int(model.num_features), name=name, load_report=report)


def checkpoint_first_blocks(model: nn.Module, count: int) -> int:
    """Gradient checkpointing of the first ``count`` of ``model.blocks`` (a ViT's or
    EVA-02's transformer blocks) only; returns how many blocks are checkpointed.

    Checkpointing every block keeps the least memory and recomputes the whole forward in
    the backward pass (a third more FLOPs); checkpointing some trades the two where the
    card has memory to spare. Each chosen block's class becomes a subclass whose
    ``forward`` runs under ``torch.utils.checkpoint`` in training with autograd on:
    parameter names, checkpoints and ``torch.compile`` of the blocks are unaffected.

    Raises:
        ValueError: ``model`` has no ``blocks`` list, or ``count`` < 1.
    """
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, (nn.ModuleList, nn.Sequential)) or len(blocks) == 0:
        raise ValueError(f"{type(model).__name__} has no list of blocks to checkpoint")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    model.set_grad_checkpointing(False)
    chosen = list(blocks)[:count]
    for block in chosen:
        block.__class__ = _checkpointed(type(block))
    return len(chosen)


_CHECKPOINTED: dict[type, type] = {}


def _checkpointed(cls: type) -> type:
    """``cls`` with its forward run under non-reentrant activation checkpointing."""
    if getattr(cls, "_mcgf_checkpointed", False):
        return cls
    if cls not in _CHECKPOINTED:
        def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
            parent = super(sub, self).forward  # type: ignore[misc]
            if self.training and torch.is_grad_enabled():
                return torch.utils.checkpoint.checkpoint(parent, *args, use_reentrant=False,
                                                         **kwargs)
            return parent(*args, **kwargs)

        sub = type(cls.__name__, (cls,), {"forward": forward, "_mcgf_checkpointed": True,
                                          "__module__": cls.__module__})
        _CHECKPOINTED[cls] = sub
    return _CHECKPOINTED[cls]


def _create_timm_model(name: str, kwargs: dict[str, Any], img_size: int | None,
                       model_args: dict[str, Any] | None) -> nn.Module:
    """``timm.create_model(name, **kwargs)`` at ``img_size``, randomly initialised."""
    import timm

    if img_size is not None:
        kwargs["img_size"] = int(img_size)
    try:
        try:
            return timm.create_model(name, **kwargs)
        except TypeError as exc:
            if "img_size" not in kwargs or "img_size" not in str(exc):
                raise
            # Convolutional networks take any size and have no img_size argument: the size
            # becomes the model's data config instead, which sets the evaluation input.
            size = int(kwargs.pop("img_size"))
            overlay = dict(kwargs.get("pretrained_cfg_overlay") or {})
            overlay.update(input_size=(3, size, size), fixed_input_size=False)
            kwargs["pretrained_cfg_overlay"] = overlay
            return timm.create_model(name, **kwargs)
    except TypeError as exc:
        if model_args:
            raise UserError(f"backbone {name!r} rejects backbone_args {model_args}: "
                            f"{str(exc).splitlines()[0]}") from exc
        raise


def _check_patch_grid(model: nn.Module, name: str) -> None:
    """Refuse an image size the model's patch embedding rejects on its first batch.

    timm builds such a model and only fails in ``forward``: a side below the patch size
    leaves no patch, and a patch embedding that is not strict about the size
    (``dynamic_img_size``) asserts that each side is a multiple of the patch unless it
    pads (``dynamic_img_pad``).

    Raises:
        UserError: naming ``model.img_size``, the patch size and the sizes that work.
    """
    embed = getattr(model, "patch_embed", None)
    size, patch = getattr(embed, "img_size", None), getattr(embed, "patch_size", None)
    if size is None or patch is None:
        return
    side, step = int(size[0]), int(patch[0])
    for s, p in zip(size, patch, strict=True):
        if s < p:
            raise UserError(f"model.img_size {s} is smaller than the patch size {p} of backbone "
                            f"{name!r}: use at least {p}")
    needs_multiple = not getattr(embed, "strict_img_size", True) and \
        not getattr(embed, "dynamic_img_pad", False)
    if needs_multiple and any(s % p for s, p in zip(size, patch, strict=True)):
        lower, upper = side // step * step, -(-side // step) * step
        raise UserError(f"model.img_size {side} is not a multiple of the patch size {step} of "
                        f"backbone {name!r}, which its patch embedding without a fixed size "
                        "(backbone_args dynamic_img_size, or strict_img_size: false) needs: "
                        f"use {lower} or {upper}, or set backbone_args.dynamic_img_pad: true")


def is_backbone_name(name: str) -> bool:
    """Whether ``name`` (``arch`` or ``arch.pretrained_tag``) is a timm architecture, with a
    pretrained tag (if any) that the installed timm knows for it."""
    import timm
    from timm.models import get_pretrained_cfg

    if not name or not timm.is_model(name.split(".", 1)[0]):
        return False
    try:
        # What timm.create_model checks: a tag of another timm release is refused there
        # with a RuntimeError, even without pretrained weights.
        get_pretrained_cfg(name, allow_unregistered=True)
    except RuntimeError:
        return False
    return True


def is_weights_file(path: str | Path) -> bool:
    """Whether ``path`` is an existing file with one of :data:`WEIGHT_SUFFIXES`."""
    p = Path(path)
    return p.suffix.lower() in WEIGHT_SUFFIXES and p.is_file()


#: The option checks of ``backbone_name`` and ``weights``, shared by every model built on
#: :func:`create_backbone`.
BACKBONE_CHECK = Check(is_backbone_name, "a timm model name such as resnet18 (see timm.list_models()), "
                       "with a pretrained tag the installed timm has, if any",
                       ("no_such_net_v9", "resnet18.no_such_tag"))
WEIGHTS_CHECK = Check(is_weights_file, f"an existing {', '.join(WEIGHT_SUFFIXES[:-1])} or "
                      f"{WEIGHT_SUFFIXES[-1]} file", ("no/such/weights.safetensors",))


def pretrained_file(name: str, overlay: Mapping[str, Any] | None = None) -> tuple[Path, str]:
    """The local file of timm's pretrained weights for ``name``, and where it comes from.

    The cache comes first: the Hugging Face cache (``HF_HOME`` / ``HF_HUB_CACHE``) for the
    weights timm takes from the hub, the torch hub cache (``TORCH_HOME``) for the few it
    fetches by URL. A file that is not there is downloaded into that cache, as
    ``timm.create_model(name, pretrained=True)`` does, unless ``HF_HUB_OFFLINE`` is set.

    Args:
        name: timm model name, optionally with a pretrained tag.
        overlay: a ``pretrained_cfg_overlay`` (its ``file``, ``hf_hub_id``,
            ``hf_hub_filename`` or ``url`` replace the registered ones, as in timm).

    Returns:
        The file and its origin (``hf-hub:<repo id>``, the URL, or the overlay's file).

    Raises:
        UserError: timm has no pretrained weights for ``name``; nothing is cached and the
            hub is off or unreachable (the line gives the command that fetches the file on
            a machine with network, and the ``model.weights`` alternative); or the hub
            refuses the download.
    """
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(name, allow_unregistered=True)
    except RuntimeError:  # a tag timm does not know
        cfg = None
    where = {k: getattr(cfg, k, None) for k in ("file", "hf_hub_id", "hf_hub_filename", "url")}
    where.update({k: v for k, v in (overlay or {}).items() if k in where and v})
    if where["file"]:
        return Path(where["file"]), str(where["file"])
    if where["hf_hub_id"]:
        return _hub_file(name, where["hf_hub_id"], where["hf_hub_filename"]), \
            f"hf-hub:{where['hf_hub_id']}"
    if where["url"]:
        return _url_file(name, where["url"]), where["url"]
    arch = name.split(".", 1)[0]
    raise UserError(f"timm has no pretrained weights for backbone {name!r}: use a name with a "
                    f"pretrained tag (python -c \"import timm; print(timm.list_pretrained("
                    f"'{arch}*'))\"), set model.weights=PATH, or model.pretrained: false")


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` forbids downloads (read now, and as huggingface_hub read
    it at import)."""
    import huggingface_hub.constants as hub

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return flag in ("1", "ON", "YES", "TRUE") or bool(hub.HF_HUB_OFFLINE)


def _hub_file(name: str, hub_id: str, filename: str | None) -> Path:
    """The file of ``hub_id`` (``repo`` or ``repo@revision``) in the Hugging Face cache,
    downloaded into it when missing (timm's file order: ``model.safetensors``, then
    ``pytorch_model.bin``, unless the config names one)."""
    import huggingface_hub
    from huggingface_hub.utils import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    repo, _, revision = hub_id.partition("@")
    names = (filename,) if filename else _HUB_FILENAMES
    for candidate in names:
        hit = huggingface_hub.try_to_load_from_cache(repo, candidate, revision=revision or None)
        if isinstance(hit, str) and os.path.isfile(hit):
            return Path(hit)
    hf = "hf" if _hub_version() >= (0, 34) else "huggingface-cli"
    fetch = f"{hf} download {repo} {names[0]}" + (f" --revision {revision}" if revision else "")
    cache = f"the Hugging Face cache ({huggingface_hub.constants.HF_HUB_CACHE})"
    copy = "its Hugging Face cache (HF_HOME, by default ~/.cache/huggingface)"
    if hub_offline():
        raise _not_cached(name, cache, "HF_HUB_OFFLINE is set", fetch, copy)
    for candidate in names:
        try:
            return Path(huggingface_hub.hf_hub_download(repo, candidate, revision=revision or None))
        except LocalEntryNotFoundError as exc:  # no connection, and not cached
            raise _not_cached(name, cache, f"the Hugging Face Hub is unreachable ({one_line(exc)})",
                              fetch, copy) from None
        except EntryNotFoundError:
            continue  # the repository has the next file name instead
        except HfHubHTTPError as exc:
            raise UserError(f"cannot download the pretrained weights of backbone {name!r} from "
                            f"the Hugging Face Hub ({repo}): {one_line(exc)} (log in with "
                            f"'{hf} login' for a gated model, or set model.weights=PATH)") from None
        except Exception as exc:  # the network itself: connection, proxy, timeout
            raise _not_cached(name, cache, f"the Hugging Face Hub is unreachable ({one_line(exc)})",
                              fetch, copy) from None
    raise UserError(f"the Hugging Face Hub repository {repo} holds none of {', '.join(names)}: "
                    f"set model.weights=PATH for backbone {name!r}")


def _url_file(name: str, url: str) -> Path:
    """The file of ``url`` in the torch hub cache, downloaded into it when missing."""
    local = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?", 1)[0])
    if local.is_file():
        return local
    cache = f"the torch hub cache ({local.parent})"
    copy = f"its {local.parent} (TORCH_HOME)"
    if hub_offline():
        raise _not_cached(name, cache, "HF_HUB_OFFLINE is set", None, copy)
    local.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(local), progress=True)  # via a temporary file
    except Exception as exc:  # URLError, timeouts, HTTP errors
        raise _not_cached(name, cache, f"{url} is unreachable ({one_line(exc)})", None,
                          copy) from None
    return local


def _not_cached(name: str, cache: str, why: str, fetch: str | None, copy: str) -> UserError:
    """The one-line error for pretrained weights that are neither cached nor downloadable."""
    timm_cmd = f"python -c \"import timm; timm.create_model('{name}', pretrained=True)\""
    run = f"{fetch} (or {timm_cmd})" if fetch else timm_cmd
    return UserError(f"no pretrained weights for backbone {name!r} in {cache} and {why}: on a "
                     f"machine with network run {run}, then copy {copy} here; or set "
                     "model.weights=PATH to a weights file")


def _hub_version() -> tuple[int, int]:
    import huggingface_hub

    major, minor = [*huggingface_hub.__version__.split("."), "0"][:2]
    return (int(major), int("".join(c for c in minor if c.isdigit()) or 0))


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from a ``.safetensors`` file or a ``torch.save`` file, safely.

    ``torch.load`` runs with ``weights_only=True`` so a file cannot execute code. Common
    containers (``{"state_dict": ...}``, ``{"model": ...}``) are unwrapped.

    Raises:
        PickledObjectsError: a ``torch.save`` file holding Python objects or code besides
            tensors (one line saying how to convert it to safetensors).
        UserError: the file is missing, has an unsupported extension, cannot be read or
            holds no tensor (besides under the container keys it unwraps).
    """
    from mcgf.safeload import load_plain, safetensors_hint

    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist: check --weights")
    suffix = path.suffix.lower()
    if suffix not in WEIGHT_SUFFIXES:
        raise UserError(
            f"weights file {path} has an unsupported extension {suffix!r}: "
            f"use {', '.join(WEIGHT_SUFFIXES)}"
        )
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(path), device="cpu")
        except Exception as exc:  # SafetensorError, OSError: a damaged or foreign file
            raise UserError(f"cannot read weights file {path}: {one_line(exc)} (damaged, or "
                            "not a safetensors file)") from None
    else:
        obj = load_plain(path, "weights file", safetensors_hint(path))
    for key in _CONTAINER_KEYS:
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping):
        raise UserError(f"weights file {path} holds no state dict (found {type(obj).__name__})")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if obj and not tensors:  # e.g. {"net": <state dict>, "epoch": 3}
        keys = first_items([repr(str(k)) for k in obj], 5)
        raise UserError(f"weights file {path} holds no tensor at its top level (its keys: {keys}): "
                        "save the state dict itself, or under one of the keys "
                        + ", ".join(repr(k) for k in _CONTAINER_KEYS))
    return tensors


def first_items(items: Sequence[str], n: int) -> str:
    """The first ``n`` of ``items`` joined by commas, followed by ``, ...`` when there are
    more (a message's examples of tensor names or keys)."""
    return ", ".join(items[:n]) + (", ..." if len(items) > n else "")


def strip_prefixes(state: dict[str, torch.Tensor], own: set[str]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes, in whichever sequence matches the most keys of ``own``.

    Nested wrappers (``model.backbone.``, ``module.encoder.``) are searched through as a
    whole: stripping their outer prefix alone matches nothing yet.
    """
    best, best_hits = state, sum(k in own for k in state)
    seen = {frozenset(state)}
    frontier = [state]
    while frontier:  # each strip shortens a key, so this ends
        later = []
        for current in frontier:
            for prefix in _KEY_PREFIXES:
                if not any(k.startswith(prefix) for k in current):
                    continue
                cand = {k.removeprefix(prefix): v for k, v in current.items()}
                keys = frozenset(cand)
                if keys in seen:
                    continue
                seen.add(keys)
                later.append(cand)
                hits = sum(k in own for k in cand)
                if hits > best_hits:
                    best, best_hits = cand, hits
        frontier = later
    return best


def _channel_hint(shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]) -> str:
    """A note for the message when the file's first layer takes other input channels
    than the model's (``model.input_norm`` luma_chroma / local_chroma build a 5-channel
    encoder, RGB weights have 3), else ``""``."""
    for key, (mine, theirs) in shapes.items():
        if (len(mine) == len(theirs) == 4 and mine[0] == theirs[0] and mine[2:] == theirs[2:]
                and mine[1] != theirs[1]):
            return (f"; {key} takes {mine[1]} input channels, the file's {theirs[1]}: "
                    "model.input_norm luma_chroma and local_chroma give the encoder 5")
    return ""


def load_weights(model: nn.Module, path: str | Path, *, allow_partial: bool = False,
                 origin: str | None = None) -> LoadReport:
    """Load a local weights file into ``model`` and report what matched.

    The model family's timm checkpoint filter (if any) adapts original-format weights,
    e.g. resizes ViT position embeddings to ``img_size`` (reported as ``resized``).
    Tensors of the file the model has no place for (such as a classifier head) are
    skipped and reported; tensors whose shape still differs are skipped too and leave
    their model tensor unset.

    Args:
        model: the timm model.
        path: the weights file (see :func:`read_state_dict`).
        allow_partial: accept a file that leaves some of the model's tensors unset (they
            keep their initialisation; a warning names them); otherwise that is an error.
        origin: where the file came from, for the report (e.g. ``hf-hub:<repo id>``).

    Raises:
        UserError: the file cannot be read, not one tensor matched the model, or (without
            ``allow_partial``) some model tensor is left unset.
    """
    path = Path(path)
    raw = read_state_dict(path)
    own = model.state_dict()
    state = strip_prefixes(raw, set(own))
    before = {k: tuple(v.shape) for k, v in state.items()}
    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            state = filter_fn(state, model)
        except Exception as exc:  # a filter for another layout; our keys may already fit
            _log.debug("checkpoint filter of %s skipped: %s", type(model).__name__, exc)
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    hint = _channel_hint({k: (tuple(own[k].shape), tuple(state[k].shape)) for k in mismatched})
    state = {k: v for k, v in state.items() if k not in mismatched}
    resized = [k for k, v in state.items()
               if k in own and k in before and before[k] != tuple(v.shape)]
    result = model.load_state_dict(state, strict=False)
    loaded = len(state) - len(result.unexpected_keys)
    if loaded == 0:
        example = next(iter(raw), "<empty>")
        raise UserError(
            f"weights file {path} matches no parameter of {type(model).__name__} "
            f"(first key {example!r}): pass weights for the same backbone"
        )
    report = LoadReport(path=path, loaded=loaded, missing=list(result.missing_keys),
                        unexpected=list(result.unexpected_keys), mismatched=mismatched,
                        resized=resized, origin=origin)
    if report.missing and not allow_partial:
        first = first_items(report.missing, 3)
        shape = f"; {len(mismatched)} of them of another shape" if mismatched else ""
        raise UserError(
            f"weights file {path} leaves {len(report.missing)} of {len(own)} tensors of "
            f"{type(model).__name__} unset ({first}{shape}{hint}): pass weights of the same "
            "backbone and backbone_args, or set model.allow_partial_weights: true to accept"
        )
    if report.missing:
        _log.warning("%s (model.allow_partial_weights: the missing ones keep their random "
                     "initialisation)", report.summary())
    else:
        _log.info("%s", report.summary())
    _warn_extra_layers(path, model, report.unexpected, own)
    return report


def _sequence_items(key: str) -> list[tuple[str, str]]:
    """``(container, item)`` for each numbered child on the path of a parameter name:
    ``stages.3.blocks.2.conv.weight`` gives ``("stages", "stages.3")`` and
    ``("stages.3.blocks", "stages.3.blocks.2")``."""
    parts = key.split(".")
    return [(".".join(parts[:i]), ".".join(parts[:i + 1]))
            for i in range(1, len(parts) - 1) if parts[i].isdigit()]


def _warn_extra_layers(path: Path, model: nn.Module, unexpected: list[str],
                       own: Mapping[str, Any]) -> None:
    """Warn when the file has more numbered blocks in one of the model's block sequences
    (``layer1.2.`` for a ResNet-18, ``blocks.24.`` for a 24-block ViT): such a file is of
    a deeper variant, yet sets every tensor of the model, so nothing is missing. A head
    (``head.fc.weight``) or another part of a checkpoint is no such sign."""
    pairs = [pair for key in own for pair in _sequence_items(key)]
    containers, items = {c for c, _ in pairs}, {i for _, i in pairs}
    inside = [k for k in unexpected
              if any(c in containers and i not in items for c, i in _sequence_items(k))]
    if inside:
        first = first_items(inside, 3)
        _log.warning("weights file %s has %d tensors in blocks that %s lacks (%s): it may be "
                     "of a deeper variant; check model.backbone_name and backbone_args",
                     path, len(inside), type(model).__name__, first)


def input_size(model: nn.Module, data_config: Mapping[str, Any]) -> tuple[int, int]:
    """The ``(height, width)`` a timm ``model`` takes, given its resolved data config.

    timm's data config reports the pretrained size (e.g. 224) even for a ViT created with
    another ``img_size``: the size its patch embedding was built for wins, whether that
    embedding rejects other sizes or (``dynamic_img_size``) resamples its position
    embedding for them.
    """
    fixed = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if fixed is not None:
        return (int(fixed[0]), int(fixed[1]))
    return (int(data_config["input_size"][1]), int(data_config["input_size"][2]))


def num_prefix_tokens(model: nn.Module) -> int:
    """Class/register tokens in front of the patch tokens (0 for CNNs)."""
    return int(getattr(model, "num_prefix_tokens", 0) or 0)


def features_to_map(
    model: nn.Module, features: torch.Tensor, image_hw: tuple[int, int]
) -> torch.Tensor:
    """Turn ``model.forward_features`` output into a ``(B, C, h, w)`` feature map.

    ViT tokens ``(B, N, C)`` lose their prefix tokens and are laid out on the patch grid;
    channels-last maps ``(B, h, w, C)`` (Swin-style) are permuted; CNN maps pass through.
    """
    if features.ndim == 4:
        channels = int(model.num_features)
        if features.shape[1] != channels and features.shape[-1] == channels:
            features = features.permute(0, 3, 1, 2)
        return features.contiguous()
    if features.ndim != 3:
        raise ValueError(f"unsupported feature shape {tuple(features.shape)}")
    tokens = features[:, num_prefix_tokens(model) :]
    grid = _token_grid(model, image_hw)
    if grid[0] * grid[1] != tokens.shape[1]:
        raise ValueError(
            f"{tokens.shape[1]} patch tokens do not fill a {grid[0]}x{grid[1]} grid "
            f"for an image of {image_hw}"
        )
    b, _, c = tokens.shape
    return tokens.transpose(1, 2).reshape(b, c, grid[0], grid[1])


def _token_grid(model: nn.Module, image_hw: tuple[int, int]) -> tuple[int, int]:
    patch_embed = getattr(model, "patch_embed", None)
    if patch_embed is not None and hasattr(patch_embed, "dynamic_feat_size"):
        h, w = patch_embed.dynamic_feat_size(image_hw)
        return int(h), int(w)
    patch = getattr(patch_embed, "patch_size", None)
    if patch is None:
        raise ValueError(f"{type(model).__name__} gives tokens but no patch size")
    return image_hw[0] // patch[0], image_hw[1] // patch[1]


def encode(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One encoder pass → ``(pooled (B, D), feature map (B, C, h, w))``.

    The pooled vector is timm's own pooling of the same features (``forward_head`` with
    ``pre_logits``), so it equals ``model(images)`` for a ``num_classes=0`` model.
    """
    feats = model.forward_features(images)
    pooled = model.forward_head(feats, pre_logits=True)
    return pooled, features_to_map(model, feats, (images.shape[-2], images.shape[-1]))


def feature_sources(
    model: nn.Module, image_size: int, target_sizes: Sequence[float]
) -> list[int | None]:
    """For each target resolution, the encoder feature map nearest to it.

    Args:
        model: a timm model.
        image_size: side of the encoder's input image.
        target_sizes: the sides wanted (e.g. a decoder's scales, finest first).

    Returns:
        Per target, an index for ``forward_intermediates`` (a ``feature_info`` entry), or
        ``None`` for the final map (``forward_features``). Resolutions are compared on a
        log scale from each entry's ``reduction``; ties go to the deeper entry, and the
        deepest entry is the final map itself, so a ViT (every block at the patch grid)
        gets ``None`` everywhere. A model without ``forward_intermediates`` or
        ``feature_info`` gets ``None`` everywhere.
    """
    info = getattr(model, "feature_info", None)
    if not callable(getattr(model, "forward_intermediates", None)) or not isinstance(info, list) \
            or not info or not all(isinstance(i, dict) and "reduction" in i for i in info):
        return [None] * len(target_sizes)
    sides = np.log([image_size / float(i["reduction"]) for i in info])
    out: list[int | None] = []
    for size in target_sizes:
        gap = np.abs(sides - math.log(size))
        # Deepest among the nearest (a small tolerance makes equal grids tie).
        k = int(np.flatnonzero(gap <= gap.min() + 1e-9)[-1])
        out.append(None if k == len(info) - 1 else k)
    return out


def feature_channels(model: nn.Module, sources: Sequence[int | None]) -> list[int]:
    """Channels of the maps :func:`feature_sources` picked (``None``: the final map)."""
    info = getattr(model, "feature_info", None) or []
    return [int(model.num_features) if s is None else int(info[s]["num_chs"]) for s in sources]


def encode_multiscale(
    model: nn.Module, images: torch.Tensor, sources: Sequence[int | None]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One encoder pass → ``(pooled (B, D), [map (B, C_i, h_i, w_i) per source])``.

    ``sources`` come from :func:`feature_sources`. The pooled vector is
    ``forward_head(final, pre_logits=True)`` of the pass's final features, as in
    :func:`encode` (equal to ``model(images)``). Without intermediate sources this is
    :func:`encode`; otherwise one ``forward_intermediates`` pass gives the final
    features and the intermediates together.
    """
    wanted = sorted({s for s in sources if s is not None})
    if not wanted:
        pooled, fmap = encode(model, images)
        return pooled, [fmap] * len(sources)
    feats, inter = model.forward_intermediates(images, indices=wanted, intermediates_only=False)
    if len(inter) != len(wanted):
        raise ValueError(f"{type(model).__name__}.forward_intermediates returned {len(inter)} "
                         f"maps for indices {wanted}")
    pooled = model.forward_head(feats, pre_logits=True)
    final = features_to_map(model, feats, (images.shape[-2], images.shape[-1]))
    by_index = dict(zip(wanted, inter, strict=True))
    return pooled, [final if s is None else by_index[s] for s in sources]


def layer_decay_param_groups(
    model: nn.Module, base_lr: float, weight_decay: float, layer_decay: float
) -> list[dict[str, Any]]:
    """Optimizer parameter groups with layer-wise learning-rate decay.

    Reuses ``timm.optim.param_groups_layer_decay`` (layers from the model's
    ``group_matcher``; no weight decay on biases, norms, nor on what the model's
    ``no_weight_decay()`` lists: position embeddings, class tokens) and sets
    each group's ``lr = base_lr * lr_scale``: the last block trains at ``base_lr``, each
    block below at ``layer_decay`` times the one above. A final norm that the matcher does
    not name (EVA-02's or a pooled ViT's ``fc_norm``, ConvNeXt's ``head.norm``) trains with
    the last block, as a ViT's ``norm`` does. ``lr_scale`` is kept for timm schedulers.
    """
    from timm.optim import param_groups_layer_decay

    if not hasattr(model, "group_matcher"):
        raise ValueError(f"{type(model).__name__} has no group_matcher for layer decay")
    from mcgf.models.base import no_weight_decay_ids

    # timm's own optimizer factory passes model.no_weight_decay() too: without it the
    # position embedding and the class token (not vectors) would be decayed.
    keep = no_weight_decay_ids(model)
    groups = param_groups_layer_decay(
        model, weight_decay=weight_decay, layer_decay=layer_decay,
        no_weight_decay_list=[n for n, p in model.named_parameters() if id(p) in keep],
    )
    if layer_decay < 1 and _unnamed_top_layer(model):
        # timm gives unnamed parameters a layer above the blocks, meant for a classifier;
        # here it only holds the final norm, so shift every layer up by one.
        for group in groups:
            group["lr_scale"] = min(1.0, float(group.get("lr_scale", 1.0)) / layer_decay)
    for group in groups:
        group["lr"] = base_lr * float(group.get("lr_scale", 1.0))
    return groups


def _unnamed_top_layer(model: nn.Module) -> bool:
    """Whether timm's top layer-decay layer of ``model`` holds only parameters that no
    pattern of its (dict) ``group_matcher`` names, above at least one named layer."""
    from timm.models import group_parameters

    matcher = model.group_matcher(coarse=False)  # type: ignore[operator]
    if not isinstance(matcher, dict):
        return False
    patterns = [re.compile(spec[0] if isinstance(spec, (list, tuple)) else spec)
                for value in matcher.values() if value is not None
                for spec in (value if isinstance(value, (list, tuple)) else [value])]
    layers = group_parameters(model, matcher, reverse=True)
    top = max(layers.values(), default=0)
    return top > 0 and not any(p.match(name) for name, layer in layers.items() if layer == top
                               for p in patterns)
