"""Where and how torch runs: the device, the precision rule and the thread count.

Every part of mcgf that picks a device (training, evaluation, the report, restoration
previews, the profiling benchmarks), decides on mixed precision or changes torch's
intra-op thread count calls this module, so the rules are written once:

* device: ``None`` or ``"auto"`` is the GPU when one is visible, else the CPU; a named
  device is checked (a CUDA device without a GPU is a one-line :class:`UserError`);
* precision: bf16 autocast on CUDA (unless the config turns it off with ``amp: off``),
  fp32 everywhere else; the name of what ran is part of a feature's cache key;
* threads: a block can run with a given number of intra-op threads and gets the
  previous count back afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from mcgf.errors import UserError

#: ``amp`` values: ``auto`` (bf16 autocast on CUDA only) or ``off`` (fp32 everywhere).
AMP_MODES: tuple[str, ...] = ("auto", "off")


def default_device() -> torch.device:
    """The GPU if there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None, option: str = "--device") -> torch.device:
    """``None`` or ``"auto"`` → :func:`default_device`; else the named device, checked.

    Args:
        device: ``None``, ``"auto"``, a device name (``cpu``, ``cuda``, ``cuda:1``, ...)
            or a :class:`torch.device`.
        option: the option or config key the value came from, named in errors.

    Raises:
        UserError: not a device name, or a CUDA device where no GPU is visible.
    """
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"{option} {device!r} is not a device name (auto, cpu, cuda, cuda:0, "
                        "...)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{option} {device}: no CUDA GPU is available here; use {option} cpu")
    return dev


def mixed_precision(device: torch.device, amp: str = "auto") -> bool:
    """Whether work on ``device`` runs under bf16 autocast: on CUDA with ``amp == "auto"``."""
    return device.type == "cuda" and amp == "auto"


def autocast(device: torch.device, amp: str = "auto") -> contextlib.AbstractContextManager[Any]:
    """The context to run a forward pass in on ``device`` (see :func:`mixed_precision`).

    On the CPU it switches autocast off explicitly, so the computation stays fp32 even
    inside a caller's CPU autocast (a feature's precision must be what its key says).
    """
    if mixed_precision(device, amp):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cpu":
        return torch.autocast("cpu", enabled=False)
    return contextlib.nullcontext()


def precision(device: torch.device, amp: str = "auto") -> str:
    """The name of the arithmetic :func:`autocast` gives: ``bf16-autocast`` or ``fp32``."""
    return "bf16-autocast" if mixed_precision(device, amp) else "fp32"


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads (``None``: leave as is)."""
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


__all__ = [
    "AMP_MODES",
    "autocast",
    "default_device",
    "mixed_precision",
    "precision",
    "resolve_device",
    "torch_threads",
]
