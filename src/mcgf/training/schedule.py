"""Learning-rate schedule: linear warmup then cosine decay, per optimizer step."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(step: int, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.0) -> float:
    """LR multiplier at optimizer ``step`` (0-based).

    Rises linearly from ``1/(warmup_steps+1)`` to 1 over the first ``warmup_steps`` steps
    (never 0, so the first step already learns), then follows a half cosine from 1 down to
    ``min_ratio`` at ``total_steps``; constant ``min_ratio`` beyond.
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    decay = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / decay, 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class _Lambda:
    """Picklable multiplier (a closure would not pickle; the state dict stays plain).

    ``steps_per_epoch`` (0: not given) is not used here: it is saved with the scheduler's
    state, so that a resumed run can tell whether its steps are the checkpoint's units.
    """

    def __init__(self, total_steps: int, warmup_steps: int, min_ratio: float,
                 steps_per_epoch: int = 0) -> None:
        self.total_steps, self.warmup_steps, self.min_ratio = total_steps, warmup_steps, min_ratio
        self.steps_per_epoch = steps_per_epoch

    def __call__(self, step: int) -> float:
        return warmup_cosine(step, self.total_steps, self.warmup_steps, self.min_ratio)


class WarmupCosineLR(LambdaLR):
    """A ``LambdaLR`` of :func:`warmup_cosine` whose shape is always this run's.

    Its state dict is a ``LambdaLR``'s (the multiplier's settings included), but loading
    one takes only the progress (steps taken, base and last learning rates): the total
    steps, warmup and floor stay those the scheduler was built with, so a resumed run
    follows its own config (e.g. more epochs) rather than the saved one, from its very
    next step: loading sets the groups' learning rates to this schedule's at the saved
    progress.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict["lr_lambdas"]
        if len(saved) != len(self.lr_lambdas):
            raise ValueError(f"the state has {len(saved)} learning-rate multipliers, this "
                             f"scheduler {len(self.lr_lambdas)}")
        super().load_state_dict({**state_dict, "lr_lambdas": [None] * len(saved)})
        # The groups' rates were set by the saved schedule (a resumed optimizer's state
        # brings them back too): the next step must use this schedule's rate at the saved
        # progress, e.g. not the 0 that a shorter run's cosine ended on.
        for group, base_lr, lmbda in zip(self.optimizer.param_groups, self.base_lrs,
                                         self.lr_lambdas, strict=True):
            group["lr"] = base_lr * lmbda(self.last_epoch)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.0,
    steps_per_epoch: int = 0,
) -> WarmupCosineLR:
    """A :class:`WarmupCosineLR` applying :func:`warmup_cosine` to every param group's
    initial LR; call ``scheduler.step()`` after each optimizer step. ``steps_per_epoch``
    is recorded in its state (see :func:`saved_layout`)."""
    return WarmupCosineLR(optimizer, _Lambda(total_steps, warmup_steps, min_ratio, steps_per_epoch))


def saved_layout(state: Any) -> tuple[int, int] | None:
    """``(total_steps, steps_per_epoch)`` of the schedule whose ``state_dict()`` is
    ``state``, or ``None`` when it does not say (saved without the steps per epoch)."""
    lambdas = state.get("lr_lambdas") if isinstance(state, dict) else None
    first = lambdas[0] if isinstance(lambdas, list) and lambdas else None
    if not isinstance(first, dict):
        return None
    total, per_epoch = first.get("total_steps"), first.get("steps_per_epoch")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (total, per_epoch)):
        return None
    return total, per_epoch
