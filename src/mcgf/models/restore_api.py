"""Restoring images with a model's diffusion restoration branch (the model side).

:func:`load_restoration_model` opens a checkpoint folder and checks that it has the
branch; :func:`restore_images` restores uint8 RGB images in batches. The pictures built
from them (weathered | restored | clean rows) are :mod:`mcgf.reporting.restoration`.

Images go through the evaluation's :class:`~mcgf.data.transforms.Preprocess` so the
encoder sees exactly what it sees at test time. The branch samples with DDIM at η = 0, so
the only randomness is the starting noise, drawn from one ``torch.Generator`` seeded with
``seed``: the same images, seed, batch size and device give the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mcgf.data.transforms import Preprocess
from mcgf.errors import UserError
from mcgf.models.checkpoint import checkpoint_dir, load_checkpoint
from mcgf.panels import check_panel
from mcgf.runtime import resolve_device

# --------------------------------------------------------------------------- model


def has_restoration(model: Any) -> bool:
    """Whether ``model`` can restore images (an MCGF model built with the branch)."""
    return getattr(model, "restoration", None) is not None and callable(getattr(model, "restore", None))


def missing_restoration(model: Any) -> str:
    """Why ``model`` cannot restore, to follow "checkpoint X" or "the model": an MCGF model
    built with ``model.restoration: false``, or a model of another kind, which has no such
    option (a comparison method, one of a user's own) and is named instead."""
    if hasattr(model, "restoration"):
        return "was trained without the restoration branch (model.restoration: false)"
    return f"holds a model without a restoration branch ({type(model).__name__})"


def require_restoration(model: Any, source: str | Path | None = None) -> None:
    """Raise a one-line :class:`UserError` unless ``model`` has the restoration branch.

    Args:
        model: the model to check.
        source: the checkpoint it came from, named in the message.
    """
    if has_restoration(model):
        return
    what = f"checkpoint {source}" if source is not None else "the model"
    raise UserError(f"{what} {missing_restoration(model)}: restoration previews need a model "
                    "trained with model.restoration: true")


def load_restoration_model(checkpoint: str | Path, device: str | torch.device | None = None) -> Any:
    """Load the checkpoint folder ``checkpoint`` (or a file in it) for restoration.

    The model is in ``eval()`` mode on ``device`` (``None``/``"auto"``: GPU if present).

    Raises:
        UserError: not a checkpoint, a damaged one, or one without the restoration branch.
    """
    dev = resolve_device(device)
    folder = checkpoint_dir(checkpoint)
    model = load_checkpoint(folder).model
    require_restoration(model, folder)
    return model.to(dev).eval()


def max_steps(model: Any) -> int:
    """The most DDIM steps the model's schedule allows (its training timesteps)."""
    return int(model.restoration.num_train_timesteps)


# --------------------------------------------------------------------------- restoring


def restore_images(
    model: Any,
    images: Sequence[np.ndarray],
    *,
    steps: int = 25,
    seed: int = 0,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    source: str | Path | None = None,
) -> list[np.ndarray]:
    """Restore weathered drone images with the model's diffusion branch.

    Each image is resized to ``model.input_size`` and normalised exactly as in evaluation,
    restored in batches of ``batch_size`` with ``steps`` DDIM steps, and the result (at the
    branch's working size) is resized back to the image's own size with bicubic
    interpolation.

    Args:
        model: an MCGF model with the restoration branch (``eval()`` mode is set here).
        images: (H, W, 3) uint8 RGB arrays; sizes may differ.
        steps: DDIM steps (1 .. the schedule's training timesteps, 1000 by default).
        seed: seeds the starting noise, the only randomness (DDIM with η = 0).
        batch_size: images per pass. The noise is drawn batch after batch from one
            generator; on the CPU an image's noise does not depend on the batch size, but
            batched arithmetic may still differ in the last bits, so fix it for
            byte-identical output. CPU and GPU draw different noise.
        device: where to run (``None``/``"auto"``: the model's current device).
        source: the checkpoint the model came from, named in errors.

    Returns:
        One (H, W, 3) uint8 RGB array per input, same sizes as the inputs.

    Raises:
        UserError: the model has no restoration branch, or ``steps`` is out of range.
        ValueError: an image is not an (H, W, 3) uint8 array, or ``batch_size`` < 1.
    """
    require_restoration(model, source)
    limit = max_steps(model)
    if not isinstance(steps, int) or not 1 <= steps <= limit:
        raise UserError(f"steps must be an integer from 1 to {limit} (got {steps!r})")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    images = [check_panel(im, i) for i, im in enumerate(images)]
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        dev = next(model.parameters()).device
    else:
        dev = resolve_device(device)
    model.to(dev).eval()
    preprocess = Preprocess.for_embedder(model)
    generator = torch.Generator(device=dev).manual_seed(int(seed))
    out: list[np.ndarray] = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        x = torch.stack([preprocess(Image.fromarray(im)) for im in chunk]).to(dev)
        restored = model.restore(x, steps=steps, generator=generator).float()
        for im, r in zip(chunk, restored, strict=True):
            out.append(_to_uint8(_resize(r[None], im.shape[:2])[0]))
    return out


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of ``(1, 3, h, w)`` in ``[0, 1]`` to ``size`` (antialiased when shrinking)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=shrink)


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` in ``[0, 1]`` (bicubic may overshoot) → (H, W, 3) uint8."""
    return (x.clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
            .permute(1, 2, 0).contiguous().cpu().numpy())
