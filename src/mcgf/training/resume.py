"""Resuming a run exactly: the RNG streams and the optimizer/scheduler state of a checkpoint.

:func:`capture_rng_state` records every global random stream (and named generators) in
a form that :class:`~mcgf.models.checkpoint.TrainState` stores and
``torch.load(weights_only=True)`` reads back; :func:`restore_train_state` puts a saved
state back into this run's optimizer, scheduler and RNGs. The checkpoint folder itself is
:mod:`mcgf.models.checkpoint`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mcgf.errors import UserError
from mcgf.models.checkpoint import TrainState
from mcgf.safeload import one_line
from mcgf.training.optim import load_optimizer_state


def capture_rng_state(
    generators: Mapping[str, torch.Generator | np.random.Generator] | None = None,
) -> dict[str, Any]:
    """State of every global RNG (Python, NumPy legacy, torch CPU, torch CUDA if present),
    plus the named ``generators``, in a form that ``torch.load(weights_only=True)`` reads."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    assert isinstance(np_state, dict)
    np_state = {**np_state, "state": {"key": np_state["state"]["key"].tolist(),
                                      "pos": int(np_state["state"]["pos"])}}
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": np_state,
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": {},
    }
    for name, gen in (generators or {}).items():
        if isinstance(gen, torch.Generator):
            state["generators"][name] = {"kind": "torch", "state": gen.get_state()}
        else:
            state["generators"][name] = {"kind": "numpy", "state": _plain(gen.bit_generator.state)}
    return state


def restore_rng_state(
    state: Mapping[str, Any],
    generators: Mapping[str, torch.Generator | np.random.Generator] | None = None,
) -> None:
    """Put back what :func:`capture_rng_state` captured (the named ``generators`` in place).

    CUDA states are restored only when as many devices are visible as were captured.
    """
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = dict(state["numpy"])
    inner = np_state["state"]
    np.random.set_state({**np_state, "state": {"key": np.asarray(inner["key"], np.uint32),
                                               "pos": int(inner["pos"])}})
    torch.set_rng_state(state["torch"])
    cuda = list(state.get("cuda") or [])
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)
    saved = state.get("generators") or {}
    for name, gen in (generators or {}).items():
        if name not in saved:
            raise KeyError(f"no saved state for generator {name!r}")
        if isinstance(gen, torch.Generator):
            gen.set_state(saved[name]["state"])
        else:
            gen.bit_generator.state = saved[name]["state"]


def _plain(obj: Any) -> Any:
    """NumPy values inside an RNG state → Python lists/ints."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def restore_train_state(state: TrainState, optimizer: torch.optim.Optimizer,
                        scheduler: Any, where: str | Path) -> None:
    """Put a resumed run's optimizer, LR scheduler and RNG states back from ``state``.

    Args:
        state: from :func:`~mcgf.models.checkpoint.read_train_state` (its structure already checked).
        optimizer, scheduler: built for this run's model and config.
        where: the state file, for messages.

    Raises:
        UserError: the state lacks them, or they do not fit this optimizer/scheduler
            (e.g. saved for another model); one line naming ``where``.
    """
    for key in ("optimizer", "scheduler"):
        if getattr(state, key) is None:
            raise UserError(f"{where} holds no {key} state, so the run cannot be resumed "
                            "exactly: resume from a checkpoint mcgf train saved")
    for key, load in (("optimizer", lambda sd: load_optimizer_state(optimizer, sd)),
                      ("scheduler", scheduler.load_state_dict)):
        try:
            load(getattr(state, key))
        except (ValueError, KeyError, TypeError, IndexError, AttributeError, RuntimeError) as err:
            raise UserError(f"{where}: its {key} state does not fit this run's model and "
                            f"config ({one_line(err, 160)}): resume with the config it was "
                            "saved with") from None
    if state.rng is not None:
        try:
            restore_rng_state(state.rng)
        except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as err:
            raise UserError(f"{where}: its rng state cannot be restored ({one_line(err, 160)})"
                            ) from None


