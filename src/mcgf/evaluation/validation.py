"""Validation during training: University-1652 drone→satellite retrieval of the model
being trained, as a callable the training loop runs every few epochs.

The loop takes any ``validate(model) -> {name: value}``; this module builds the standard
one from the evaluation protocol, so that training itself knows no evaluation code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from mcgf.evaluation.university import (
    CLEAN,
    ExtractOptions,
    evaluate_university,
    mean_over_conditions,
    on_the_fly_conditions,
)

Validator = Callable[[nn.Module], dict[str, float]]


def university_validator(
    root: str | Path,
    *,
    conditions: Sequence[str] = (),
    seed: int = 0,
    batch_size: int = 64,
    device: str | None = None,
    num_workers: int = 0,
) -> Validator:
    """A validator computing drone→satellite R@1 and AP on ``root``'s ``test`` split.

    Args:
        root: a University-1652 tree with ``test/query_drone`` and ``test/gallery_satellite``.
        conditions: weather conditions rendered on the fly; empty evaluates clean images.
            With conditions, the metrics are the means over them (University-WX).
        seed: weather seed.
        batch_size, device, num_workers: feature extraction.

    Returns:
        ``validate(model)`` → ``{"val_R@1": ..., "val_AP": ...}`` (percent). The model must
        have ``embed(images, view)``, ``input_size``, ``mean`` and ``std``; it is put in
        eval mode for the pass and back in its previous mode afterwards.
    """
    from mcgf.models.checkpoint_embedder import CheckpointEmbedder

    conds = on_the_fly_conditions(list(conditions), seed, "test") if conditions else None
    opts = ExtractOptions(batch_size=batch_size, flip=False, device=device,
                          num_workers=num_workers, progress=False)

    def validate(model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        try:
            embedder = CheckpointEmbedder(model, "training-validation")
            rows = evaluate_university(root, embedder, directions=("drone->satellite",),
                                       conditions=conds, options=opts)
        finally:
            model.train(was_training)
        pick: Any = mean_over_conditions(rows)[0] if conds else rows[0]
        assert conds or pick.condition == CLEAN
        return {"val_R@1": float(pick.metrics["R@1"]), "val_AP": float(pick.metrics["AP"])}

    return validate


__all__ = ["Validator", "university_validator"]
