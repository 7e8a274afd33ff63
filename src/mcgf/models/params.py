"""Counting a model's parameters."""

from __future__ import annotations

from torch import nn


def count_parameters(module: nn.Module | None, *, trainable_only: bool = False) -> int:
    """Number of parameters of ``module`` (0 for ``None``); a tensor shared between
    submodules counts once. ``trainable_only``: only those with ``requires_grad``."""
    if module is None:
        return 0
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
