"""The ``checkpoint`` embedder: a trained model loaded from a checkpoint folder.

``--checkpoint PATH`` builds it (see :data:`mcgf.models.registry.CHECKPOINT_EMBEDDER`).
Its identity hashes the weights file and the model config, so cached features follow the
weights, not the path; for a model defined outside mcgf, also the source files of its
class (:func:`model_code_digest`), so they follow that code too. Heavy imports (timm, safetensors) happen only when it is built.

Two options speed a GPU up (``--embedder-arg KEY=VALUE``): ``compile=true`` (or a
``torch.compile`` backend name) compiles the encoder blocks as ``train.compile`` does
(:mod:`mcgf.models.compile`), and ``weights_dtype=bf16`` casts the weights to bf16, so that
autocast no longer converts each weight on every batch. Bf16 weights change the features
slightly, so they are part of the identity (the feature-cache key); compiling is not.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import torch

from mcgf.data.layout import VIEWS
from mcgf.models.checkpoint import WEIGHTS_FILE, checkpoint_dir, load_checkpoint
from mcgf.models.registry import register_embedder

_HASH_CHUNK = 1 << 20


class CheckpointEmbedder:
    """Wraps a model exposing ``embed(images, view)``, ``input_size``, ``mean`` and ``std``.

    :meth:`embed` uses ``view``'s encoder. MCGF shares one encoder across views, so the view
    does not matter there, unless ``satellite_rotations`` embeds satellite tiles over quarter
    turns; the evaluation asks :meth:`for_view` for an embedder of each folder's view (drone
    folders through the drone encoder, satellite folders through the satellite encoder,
    with its rotations).
    """

    def __init__(self, model: Any, identity: str, view: str = "drone") -> None:
        #: The dtype inputs are cast to: the weights' (bf16 with ``weights_dtype=bf16``).
        self.input_dtype = next((p.dtype for p in model.parameters()), torch.float32)
        if view not in VIEWS:
            raise ValueError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
        self.model = model
        self.view = view
        self.base_identity = identity
        # A model that embeds both views alike (it declares one shared encoder,
        # share_encoder = True, and has no satellite-only rotations) leaves the view out of
        # its identity, so one cache entry serves both; otherwise the view is part of the
        # key, or a tile embedded as a drone image would be served from the cache as its
        # satellite embedding. A model that declares nothing may embed the views apart.
        alike = (bool(getattr(model, "share_encoder", False))
                 and int(getattr(model, "satellite_rotations", 1)) == 1)
        self.identity = identity if alike else f"{identity}:view={view}"
        self.input_size = (int(model.input_size[0]), int(model.input_size[1]))
        self.mean: tuple[float, float, float] = tuple(float(m) for m in model.mean)  # type: ignore[assignment]
        self.std: tuple[float, float, float] = tuple(float(s) for s in model.std)  # type: ignore[assignment]

    def to(self, device: torch.device | str) -> CheckpointEmbedder:
        """Move the model to ``device``."""
        self.model.to(device)
        return self

    def for_view(self, view: str) -> CheckpointEmbedder:
        """The same model embedding through ``view``'s encoder."""
        if view == self.view:
            return self
        return CheckpointEmbedder(self.model, self.base_identity, view=view)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` normalised images → ``(B, D)`` features of the embedder's view."""
        return self.embed_view(images, self.view)

    def embed_view(self, images: torch.Tensor, view: str) -> torch.Tensor:
        """Like :meth:`embed` with the encoder of ``view`` (``"drone"`` or ``"satellite"``)."""
        with torch.inference_mode():
            return self.model.embed(images.to(self.input_dtype), view)


def file_digest(path: str | Path, length: int = 16) -> str:
    """First ``length`` hex digits of the SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()[:length]


#: Packages whose code is not a model's own: mcgf's is covered by its version in the feature
#: cache key, the others change only with an upgrade.
_SHARED_CODE = ("mcgf", "torch", "builtins", "typing", "abc")


def model_code_digest(cls: type) -> str | None:
    """``sha256[:12]`` of the source files that define ``cls`` and its base classes outside
    mcgf and torch (a model of one's own), ``None`` when there are none.

    Such a model's code can change while its checkpoint stays the same; the feature
    cache (keyed by mcgf's version for mcgf's own models) must then not serve features
    that the old code computed.
    """
    files: list[Path] = []
    for klass in cls.__mro__:
        if klass.__module__.partition(".")[0] in _SHARED_CODE:
            continue
        source = getattr(sys.modules.get(klass.__module__), "__file__", None)
        if source and Path(source).is_file() and Path(source) not in files:
            files.append(Path(source))
    if not files:
        return None
    digest = hashlib.sha256()
    for source in files:
        digest.update(source.read_bytes())
    return digest.hexdigest()[:12]


def checkpoint_identity(folder: str | Path, config: dict[str, Any]) -> str:
    """``mcgf-checkpoint:<weights sha256[:16]>:<model config sha256[:12]>``."""
    cfg = json.dumps(config.get("model", {}), sort_keys=True, separators=(",", ":"))
    cfg_digest = hashlib.sha256(cfg.encode()).hexdigest()[:12]
    return f"mcgf-checkpoint:{file_digest(Path(folder) / WEIGHTS_FILE)}:{cfg_digest}"


#: ``weights_dtype`` values of the checkpoint embedder.
WEIGHT_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}


@register_embedder("checkpoint")
def checkpoint(checkpoint: str, device: str | None = None, view: str = "drone",
               compile: bool | str = False, weights_dtype: str = "fp32") -> CheckpointEmbedder:
    """Load the checkpoint folder ``checkpoint`` (or a file in it) as an embedder.

    Args:
        checkpoint: written by :func:`mcgf.models.checkpoint.save_checkpoint`.
        device: move the model there now (evaluation also moves it to its device).
        view: encoder used by :meth:`CheckpointEmbedder.embed` (``drone`` or ``satellite``).
        compile: ``True`` (inductor) or a ``torch.compile`` backend: compile the encoder
            blocks (:func:`mcgf.models.compile.compile_blocks`); the first batches include
            the compiling.
        weights_dtype: ``fp32`` or ``bf16`` (the weights cast once; inputs follow them).
    """
    if view not in VIEWS:
        raise ValueError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
    if weights_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weights_dtype must be one of {', '.join(WEIGHT_DTYPES)}, "
                         f"got {weights_dtype!r}")
    folder = checkpoint_dir(checkpoint)
    loaded = load_checkpoint(folder)
    identity = checkpoint_identity(folder, loaded.config)
    model = loaded.model
    code = model_code_digest(type(model))
    if code is not None:
        identity += f":code={code}"
    if weights_dtype != "fp32":
        model = model.to(WEIGHT_DTYPES[weights_dtype])
        identity += f":weights={weights_dtype}"
    if compile:
        from mcgf.models.compile import compile_blocks

        compile_blocks(model, "inductor" if compile is True else str(compile))
    emb = CheckpointEmbedder(model, identity, view=view)
    if device is not None:
        emb.to(device)
    return emb
