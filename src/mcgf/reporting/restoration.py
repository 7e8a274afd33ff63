"""Restoration previews: what a model's restoration branch makes of weathered images.

The application side of ``mcgf restore`` and of the report's restoration section: a clean
image is weathered (:func:`mcgf.weather.apply_weather`), restored by the model
(:func:`mcgf.models.restore_api.restore_images`) and shown beside the clean one, with
:mod:`mcgf.panels` laying out the labelled rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mcgf.models.restore_api import restore_images
from mcgf.panels import caption_above, check_panel, fit_width, label_fits, side_by_side, stack_rows
from mcgf.weather import apply_weather
from mcgf.weather.conditions import check_condition, check_dark_variant


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
        steps, seed, batch_size, device, source: as for
            :func:`~mcgf.models.restore_api.restore_images` (``seed`` also seeds the weather).
        key: the image key the weather is derived from (datasets use
            ``"<class folder>/<file name>"``).
        dark_variant: ``"test"`` (the milder dark of the published test sets) or ``"train"``.
        tile: panel width in px (aspect kept); ``None`` keeps the image's size.
        labels: write the condition / "restored" / "clean" on the panels; panels too
            short for that get the condition in a caption above their row.

    Returns:
        (rows·H + gaps, panels·W + gaps, 3) uint8 RGB, where H, W is the panel size
        (rows with a caption above them are that much taller).

    Raises:
        UserError: unknown condition, no restoration branch, ``steps`` out of range.
    """
    image = check_panel(image, 0)
    if conditions is None:
        (restored,) = restore_images(model, [image], steps=steps, seed=seed,
                                     batch_size=batch_size, device=device, source=source)
        names = ["weathered", "restored"] if labels else None
        return side_by_side([fit_width(image, tile), fit_width(restored, tile)], names)
    conditions = [check_condition(c, "conditions") for c in conditions]
    if not conditions:
        raise ValueError("conditions is empty: pass None for an already weathered image")
    check_dark_variant(dark_variant)
    weathered = [apply_weather(image, c, seed=seed, key=key, dark_variant=dark_variant)
                 for c in conditions]
    restored = restore_images(model, weathered, steps=steps, seed=seed, batch_size=batch_size,
                              device=device, source=source)
    clean = fit_width(image, tile)
    rows = []
    for c, w, r in zip(conditions, weathered, restored, strict=True):
        panels = [fit_width(w, tile), fit_width(r, tile), clean]
        if labels and not label_fits(panels[0], c):
            # Too short a panel for a band over it (small tiles, wide images): the
            # condition goes above its row instead of being left out.
            rows.append(caption_above(side_by_side(panels), c))
        else:
            rows.append(side_by_side(panels, [c, "restored", "clean"] if labels else None))
    return stack_rows(rows)
