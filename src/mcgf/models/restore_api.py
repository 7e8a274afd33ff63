"""Restoration previews: run a model's diffusion restoration branch on plain images.

The library side of ``mcgf restore`` (and of any report that wants to show what the
branch does): :func:`load_restoration_model` opens a checkpoint folder and checks that it
has the branch, :func:`restore_images` restores uint8 RGB images in batches,
:func:`restoration_preview` builds the weathered | restored | clean rows, and
:func:`side_by_side` / :func:`stack_rows` assemble labelled panels into one picture.

Images go through the evaluation's :class:`~mcgf.data.transforms.Preprocess` so the
encoder sees exactly what it sees at test time. The branch samples with DDIM at η = 0, so
the only randomness is the starting noise, drawn from one ``torch.Generator`` seeded with
``seed``: the same images, seed, batch size and device give the same bytes.

Panel assembly is a few lines of NumPy and OpenCV text drawing; no library composes
labelled image strips at this size without pulling in a plotting stack.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mcgf.errors import UserError
from mcgf.models.checkpoint import checkpoint_dir, load_checkpoint
from mcgf.runtime import resolve_device

#: Pixels between panels and between rows.
GAP = 4
#: Grey level of the gaps (and of padding when panels differ in size).
BACKGROUND = 24


# --------------------------------------------------------------------------- model


def has_restoration(model: Any) -> bool:
    """Whether ``model`` can restore images (an MCGF model built with the branch)."""
    return getattr(model, "restoration", None) is not None and callable(getattr(model, "restore", None))


def require_restoration(model: Any, source: str | Path | None = None) -> None:
    """Raise a one-line :class:`UserError` unless ``model`` has the restoration branch.

    Args:
        model: the model to check.
        source: the checkpoint it came from, named in the message.
    """
    if has_restoration(model):
        return
    what = f"checkpoint {source}" if source is not None else "the model"
    raise UserError(f"{what} was trained without the restoration branch "
                    "(model.restoration: false): restoration previews need a model trained "
                    "with model.restoration: true")


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


def _check_image(image: Any, index: int) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
            or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        desc = (f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray)
                else type(image).__name__)
        raise ValueError(f"image {index} must be an (H, W, 3) uint8 RGB array, got {desc}")
    return image


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
    from mcgf.data.transforms import Preprocess

    require_restoration(model, source)
    limit = max_steps(model)
    if not isinstance(steps, int) or not 1 <= steps <= limit:
        raise UserError(f"steps must be an integer from 1 to {limit} (got {steps!r})")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    images = [_check_image(im, i) for i, im in enumerate(images)]
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


# --------------------------------------------------------------------------- pictures


def _label(panel: np.ndarray, text: str) -> np.ndarray:
    """A copy of ``panel`` with ``text`` on a darkened band across its top."""
    out = panel.copy()
    h, w = out.shape[:2]
    scale = max(0.3, w / 512)
    thickness = max(1, round(scale * 1.5))
    (_, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    band = th + base + 8
    if band > h // 3:  # too small a panel to carry a readable label
        return out
    out[:band] = (out[:band].astype(np.uint16) * 2 // 5).astype(np.uint8)
    cv2.putText(out, text, (4, band - base - 3), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), thickness, cv2.LINE_AA)
    return out


def side_by_side(
    panels: Sequence[np.ndarray],
    labels: Sequence[str] | None = None,
    *,
    gap: int = GAP,
) -> np.ndarray:
    """Panels left to right, ``gap`` px apart, optionally labelled; (H, ΣW + gaps, 3) uint8.

    Panels are (H, W, 3) uint8 RGB; shorter ones are top-aligned on the background grey.
    Labels are drawn on a darkened band across each panel's top, so they add no height
    (panels too short for a readable band stay unlabelled).
    """
    if not panels:
        raise ValueError("side_by_side needs at least one panel")
    if labels is not None and len(labels) != len(panels):
        raise ValueError(f"{len(labels)} labels for {len(panels)} panels")
    panels = [_check_image(p, i) for i, p in enumerate(panels)]
    if labels is not None:
        panels = [_label(p, text) if text else p for p, text in zip(panels, labels, strict=True)]
    height = max(p.shape[0] for p in panels)
    width = sum(p.shape[1] for p in panels) + gap * (len(panels) - 1)
    strip = np.full((height, width, 3), BACKGROUND, np.uint8)
    x = 0
    for p in panels:
        strip[: p.shape[0], x : x + p.shape[1]] = p
        x += p.shape[1] + gap
    return strip


def stack_rows(rows: Sequence[np.ndarray], *, gap: int = GAP) -> np.ndarray:
    """Rows top to bottom, ``gap`` px apart; narrower rows are left-aligned on grey."""
    if not rows:
        raise ValueError("stack_rows needs at least one row")
    rows = [_check_image(r, i) for i, r in enumerate(rows)]
    width = max(r.shape[1] for r in rows)
    height = sum(r.shape[0] for r in rows) + gap * (len(rows) - 1)
    grid = np.full((height, width, 3), BACKGROUND, np.uint8)
    y = 0
    for r in rows:
        grid[y : y + r.shape[0], : r.shape[1]] = r
        y += r.shape[0] + gap
    return grid


def _fit(image: np.ndarray, tile: int | None) -> np.ndarray:
    """``image`` scaled to ``tile`` px wide (aspect kept); unchanged when ``tile`` is None."""
    if tile is None or image.shape[1] == tile:
        return image
    h = max(1, round(tile * image.shape[0] / image.shape[1]))
    interp = cv2.INTER_AREA if tile < image.shape[1] else cv2.INTER_CUBIC
    return cv2.resize(image, (tile, h), interpolation=interp)


def restoration_preview(
    model: Any,
    image: np.ndarray,
    *,
    conditions: Sequence[str] | None = None,
    steps: int = 25,
    seed: int = 0,
    key: str = "preview",
    dark_variant: str = "test",
    batch_size: int = 16,
    device: str | torch.device | None = None,
    tile: int | None = None,
    labels: bool = True,
    source: str | Path | None = None,
) -> np.ndarray:
    """A picture of what the restoration branch makes of ``image``.

    Without ``conditions`` the image is taken as already weathered and the result is one
    row ``[weathered | restored]``. With ``conditions`` the image is taken as clean: for
    each condition :func:`~mcgf.weather.apply_weather` renders it (at the image's own
    size, from ``(seed, key)``), the branch restores it, and the row is
    ``[weathered | restored | clean]``; rows are stacked top to bottom in the given order.

    Args:
        model: an MCGF model with the restoration branch.
        image: (H, W, 3) uint8 RGB.
        conditions: weather condition names (see :data:`mcgf.weather.CONDITIONS`).
        steps, seed, batch_size, device, source: as for :func:`restore_images` (``seed``
            also seeds the weather).
        key: the image key the weather is derived from (datasets use
            ``"<class folder>/<file name>"``).
        dark_variant: ``"test"`` (the milder dark of the published test sets) or ``"train"``.
        tile: panel width in px (aspect kept); ``None`` keeps the image's size.
        labels: write the condition / "restored" / "clean" on the panels.

    Returns:
        (rows·H + gaps, panels·W + gaps, 3) uint8 RGB, where H, W is the panel size.

    Raises:
        UserError: unknown condition, no restoration branch, ``steps`` out of range.
    """
    from mcgf.weather import apply_weather
    from mcgf.weather.conditions import check_condition, check_dark_variant

    image = _check_image(image, 0)
    if conditions is None:
        (restored,) = restore_images(model, [image], steps=steps, seed=seed,
                                     batch_size=batch_size, device=device, source=source)
        names = ["weathered", "restored"] if labels else None
        return side_by_side([_fit(image, tile), _fit(restored, tile)], names)
    conditions = [check_condition(c, "conditions") for c in conditions]
    if not conditions:
        raise ValueError("conditions is empty: pass None for an already weathered image")
    check_dark_variant(dark_variant)
    weathered = [apply_weather(image, c, seed=seed, key=key, dark_variant=dark_variant)
                 for c in conditions]
    restored = restore_images(model, weathered, steps=steps, seed=seed, batch_size=batch_size,
                              device=device, source=source)
    clean = _fit(image, tile)
    rows = [
        side_by_side([_fit(w, tile), _fit(r, tile), clean],
                     [c, "restored", "clean"] if labels else None)
        for c, w, r in zip(conditions, weathered, restored, strict=True)
    ]
    return stack_rows(rows)
