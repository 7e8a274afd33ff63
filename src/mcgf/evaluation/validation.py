"""Validation during training, as callables the training loop runs every few epochs:
University-1652 drone→satellite retrieval (:func:`university_validator`) and the
restoration branch's PSNR/SSIM on a fixed weathered set (:func:`restoration_validator`),
merged by :func:`combine_validators`.

The loop takes any ``validate(model) -> {name: value}``; this module builds the standard
ones from the evaluation protocol, so that training itself knows no evaluation code.

Under ``torchrun`` the loop calls the validator on every rank at once.
:func:`university_validator` then splits each test folder's images across the ranks and
gathers the features (:mod:`mcgf.evaluation.sharding`), so every rank returns the
single-process metrics after a fraction of the work; :func:`restoration_validator` (a
handful of images) simply runs whole on every rank, with no collective call. No rank
ever waits in a collective while another validates alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from mcgf.data.images import read_image
from mcgf.data.layouts import find_dataset
from mcgf.data.transforms import Preprocess
from mcgf.errors import UserError
from mcgf.evaluation.image_quality import mean_finite, psnr, ssim
from mcgf.evaluation.sharding import current_shard
from mcgf.evaluation.university import (
    NO_WEATHER,
    ExtractOptions,
    evaluate_university,
    mean_over_conditions,
    mean_over_subsets,
    on_the_fly_conditions,
)
from mcgf.models.checkpoint_embedder import CheckpointEmbedder
from mcgf.models.restore_api import has_restoration
from mcgf.weather import CLEAN, CONDITIONS, apply_weather

Validator = Callable[[nn.Module], dict[str, float]]


def university_validator(
    root: str | Path,
    *,
    conditions: Sequence[str] = (),
    seed: int = 0,
    batch_size: int = 64,
    device: str | None = None,
    num_workers: int = 0,
    layout: str = "",
    distributed: bool = True,
    on_bad_image: str = "stop",
) -> Validator:
    """A validator computing drone→satellite R@1 and AP on ``root``'s test split.

    Args:
        root: a dataset with ``query_drone`` and ``gallery_satellite`` test folders
            (University-1652: ``test/``); with several test sets (SUES-200's heights)
            the metrics are the means over them.
        conditions: weather conditions rendered on the fly; empty evaluates clean images.
            With conditions, the metrics are the means over them (University-WX).
        seed: weather seed.
        batch_size, device, num_workers: feature extraction.
        layout: the dataset layout (``data.layout``; empty: detected).
        distributed: when ``torch.distributed`` has a group of several processes at call
            time, split the images across its ranks and gather the features; every rank
            must then call ``validate`` (the training loop does) and gets the same values,
            equal to a single process's. ``False``: each caller embeds everything itself.
        on_bad_image: ``"stop"`` raises on an unreadable test image; ``"skip"`` leaves it
            out (training passes its ``data.on_bad_image``).

    Returns:
        ``validate(model)`` → ``{"val_R@1": ..., "val_AP": ...}`` (percent). The model must
        have ``embed(images, view)``, ``input_size``, ``mean`` and ``std``; it is put in
        eval mode for the pass and back in its previous mode afterwards.
    """
    conds = on_the_fly_conditions(list(conditions), seed, "test") if conditions else None
    opts = ExtractOptions(batch_size=batch_size, flip=False, device=device,
                          num_workers=num_workers, on_bad_image=on_bad_image, progress=False)

    def validate(model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        run_opts = dataclasses.replace(opts, shard=current_shard() if distributed else None)
        try:
            embedder = CheckpointEmbedder(model, "training-validation")
            rows = evaluate_university(root, embedder, directions=("drone->satellite",),
                                       conditions=conds, options=run_opts,
                                       layout=layout or None)
        finally:
            model.train(was_training)
        per_set = mean_over_conditions(rows) if conds else rows
        pick: Any = (mean_over_subsets(per_set) or per_set)[0]
        assert conds or pick.condition == NO_WEATHER
        return {"val_R@1": float(pick.metrics["R@1"]), "val_AP": float(pick.metrics["AP"])}

    return validate


def restoration_validator(
    root: str | Path,
    *,
    images: int = 16,
    steps: int = 10,
    seed: int = 0,
    batch_size: int = 16,
    layout: str = "",
) -> Validator:
    """A validator scoring the restoration branch on a fixed set of weathered drone images.

    The set: the first ``images`` images of the drone queries (``test/query_drone``; the
    first test set's of a layout with several, e.g. SUES-200's lowest height) by key
    (``<class>/<file>``), the i-th weathered with the i-th of the nine non-normal
    conditions (cycling; the test recipe of ``dark``) by :func:`mcgf.weather.apply_weather`
    from ``seed`` and its key, so every validation point and every run sees the same
    pixels. Each is restored with ``steps`` DDIM steps (starting noise from ``seed``) and
    compared with its clean image at the branch's working size, both in ``[0, 1]``.

    Args:
        root: a dataset with drone queries (University-1652: ``test/query_drone``).
        images, steps, seed: as above.
        batch_size: images per restoration pass.
        layout: the dataset layout (``data.layout``; empty: detected).

    Returns:
        ``validate(model)`` → ``{"val_restore_psnr": dB, "val_restore_ssim": ...}`` (means
        over the images; a PSNR of an exact restoration, infinite, is left out of the
        mean; SSIM only when the branch works at 11 px or more). A model without the
        restoration branch gives ``{}``. The model runs on its own device, in eval mode,
        and is put back in its previous mode afterwards. It makes no collective call:
        under ``torchrun`` each rank restores the whole (small) set and gets the same
        values (the same pixels and seeded noise).

    Raises:
        UserError: no drone query images under ``root``.
    """
    clean, weathered = _restoration_set(root, images, seed, layout)
    prepared: dict[Any, tuple[torch.Tensor, torch.Tensor]] = {}

    def tensors(model: Any) -> tuple[torch.Tensor, torch.Tensor]:
        pre = Preprocess(tuple(model.input_size), tuple(model.mean), tuple(model.std))
        if pre not in prepared:
            prepared.clear()
            prepared[pre] = (torch.stack([pre(Image.fromarray(w)) for w in weathered]),
                             torch.stack([pre(Image.fromarray(c)) for c in clean]))
        return prepared[pre]

    def validate(model: nn.Module) -> dict[str, float]:
        if not has_restoration(model):
            return {}
        x_w, x_c = tensors(model)
        r, t = _restore_in_eval_mode(model, x_w, x_c, steps=steps, seed=seed, batch_size=batch_size)
        out = {"val_restore_psnr": mean_finite(psnr(r, t))}
        if min(r.shape[-2:]) >= 11:
            out["val_restore_ssim"] = float(ssim(r, t).mean())
        return out

    return validate


def _restoration_set(root: str | Path, images: int, seed: int, layout: str
                     ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The clean and weathered images of :func:`restoration_validator` (its docstring
    says which), as RGB arrays at their native size.

    Raises:
        UserError: no drone query images under ``root``.
    """
    ds = find_dataset(root, layout or None, option="data.layout")
    sets = ds.test_sets()
    folder = sets[0].path("query_drone") if sets else ds.root / "test" / "query_drone"
    records = sorted(ds.read_folder(folder, "drone").records(), key=lambda r: r.key)[:images]
    if not records:
        raise UserError(f"restoration validation needs drone images in {folder} "
                        "(set data.val_root, or train.restore_val_images=0)")
    weathers = [c for c in CONDITIONS if c != CLEAN]
    clean = [np.asarray(read_image(r.path)) for r in records]
    weathered = [apply_weather(im, weathers[i % len(weathers)], seed=seed, key=r.key,
                               dark_variant="test")
                 for i, (im, r) in enumerate(zip(clean, records, strict=True))]
    return clean, weathered


def _restore_in_eval_mode(model: Any, x_w: torch.Tensor, x_c: torch.Tensor, *, steps: int,
                          seed: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Restorations of ``x_w`` and the restoration targets of ``x_c`` (float32, on the
    CPU), by batches on the model's device, in eval mode; the model's mode is restored."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    restored, target = [], []
    try:
        with torch.no_grad():
            for i in range(0, len(x_w), batch_size):
                restored.append(model.restore(x_w[i:i + batch_size].to(device), steps=steps,
                                              generator=generator).float().cpu())
                target.append(model.restoration_target(x_c[i:i + batch_size].to(device))
                              .float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(restored), torch.cat(target)


def combine_validators(validators: Sequence[Validator]) -> Validator:
    """One validator running ``validators`` in order and merging their values."""
    chain = list(validators)

    def validate(model: nn.Module) -> dict[str, float]:
        out: dict[str, float] = {}
        for v in chain:
            out.update(v(model))
        return out

    return validate


__all__ = ["Validator", "combine_validators", "restoration_validator", "university_validator"]
