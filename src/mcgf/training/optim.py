"""The optimizer: AdamW over a model's parameter groups, in the implementation that suits
the device, and a saved optimizer state loaded into it whichever implementation saved it.

torch's AdamW has a fused implementation (one kernel over all parameters of a group instead
of several per-tensor kernel launches); this module only decides where it is used. On CUDA
it is the default here: at paper scale the optimizer step is a visible share of a step
that has few, large micro-batches. Elsewhere torch's own default is kept, so that CPU runs
(the demo, the tests) compute exactly what they always did.

A saved optimizer state carries the flags of the implementation that wrote it
(``fused``, ``foreach``, ``capturable``), and ``Optimizer.load_state_dict`` would bring
them back: a run saved on a CPU and resumed on a GPU would then lose the fused kernel.
:func:`load_optimizer_state` keeps the resuming optimizer's own flags instead; the
moments and step counts are the same numbers in every implementation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

#: Param-group entries that say how AdamW computes, not what it computes.
IMPLEMENTATION_KEYS: tuple[str, ...] = ("fused", "foreach", "capturable")


def fused_default(device: torch.device) -> bool:
    """Whether :func:`adamw` uses the fused kernel on ``device`` (CUDA: yes)."""
    return device.type == "cuda"


def adamw(
    groups: Iterable[dict[str, Any]] | Iterable[torch.nn.Parameter],
    lr: float,
    weight_decay: float,
    device: torch.device,
) -> torch.optim.AdamW:
    """AdamW over ``groups`` (a model's ``param_groups``), fused on CUDA.

    Args:
        groups: parameter groups (each may set its own ``lr``/``weight_decay``) or parameters.
        lr, weight_decay: the defaults of groups that do not set them.
        device: where the parameters live; decides the implementation (:func:`fused_default`).
    """
    fused = fused_default(device)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay,
                             fused=True if fused else None)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: Mapping[str, Any]) -> None:
    """``optimizer.load_state_dict(state)``, keeping ``optimizer``'s implementation flags
    (:data:`IMPLEMENTATION_KEYS`) rather than those saved in ``state``.

    Raises:
        ValueError: ``state`` does not fit ``optimizer`` (as ``load_state_dict`` raises).
    """
    saved = list(state.get("param_groups", []))
    if len(saved) != len(optimizer.param_groups):
        # Let torch say what does not fit, in its own words.
        optimizer.load_state_dict(dict(state))
        return
    groups = [{**group, **{k: current[k] for k in IMPLEMENTATION_KEYS if k in current}}
              for group, current in zip(saved, optimizer.param_groups, strict=True)]
    optimizer.load_state_dict({**state, "param_groups": groups})


__all__ = ["IMPLEMENTATION_KEYS", "adamw", "fused_default", "load_optimizer_state"]
