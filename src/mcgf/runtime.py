"""Where and how torch runs: the device, the precision rule and the thread count.

Every part of mcgf that picks a device (training, evaluation, the report, restoration
previews, the profiling benchmarks), decides on mixed precision or changes torch's
intra-op thread count calls this module, so the rules are written once:

* device: ``None`` or ``"auto"`` is the GPU when one is visible, else the CPU; a named
  device is checked (a CUDA device without a GPU is a one-line :class:`UserError`);
  :func:`device_line` says which in one line, and why ``auto`` fell back to the CPU on
  a machine with an NVIDIA driver;
* precision: autocast on CUDA (unless the config turns it off with ``amp: off``), in
  bf16 where the card computes it natively, else in fp16 with a loss-scaling
  :func:`grad_scaler` for training; fp32 everywhere else (the CPU path is plain fp32);
  the name of what ran is part of a feature's cache key;
* threads: a block can run with a given number of intra-op threads and gets the
  previous count back afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from typing import Any

import torch

from mcgf.errors import UserError

#: ``amp`` values: ``auto`` (autocast on CUDA only: bf16, or fp16 on cards without native
#: bf16) or ``off`` (fp32 everywhere).
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


def autocast_dtype(device: torch.device, amp: str = "auto") -> torch.dtype | None:
    """The autocast dtype of work on ``device``: on CUDA with ``amp == "auto"``, bf16 where
    the card supports it natively (Ampere and later), else fp16; ``None`` (fp32) otherwise."""
    if device.type != "cuda" or amp != "auto":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) \
        else torch.float16


def mixed_precision(device: torch.device, amp: str = "auto") -> bool:
    """Whether work on ``device`` runs under autocast (see :func:`autocast_dtype`)."""
    return autocast_dtype(device, amp) is not None


def autocast(device: torch.device, amp: str = "auto") -> contextlib.AbstractContextManager[Any]:
    """The context to run a forward pass in on ``device`` (see :func:`autocast_dtype`).

    On the CPU it switches autocast off explicitly, so the computation stays fp32 even
    inside a caller's CPU autocast (a feature's precision must be what its key says).
    """
    dtype = autocast_dtype(device, amp)
    if dtype is not None:
        return torch.autocast("cuda", dtype=dtype)
    if device.type == "cpu":
        return torch.autocast("cpu", enabled=False)
    return contextlib.nullcontext()


def grad_scaler(device: torch.device, amp: str = "auto") -> torch.amp.GradScaler | None:
    """The loss scaler training needs on ``device``: a ``GradScaler`` under fp16 autocast
    (whose small range would flush gradients to zero), ``None`` for bf16 and fp32."""
    if autocast_dtype(device, amp) == torch.float16:
        return torch.amp.GradScaler("cuda")
    return None


def precision(device: torch.device, amp: str = "auto") -> str:
    """The name of the arithmetic :func:`autocast` gives: ``bf16-autocast``,
    ``fp16-autocast`` or ``fp32``."""
    dtype = autocast_dtype(device, amp)
    return "fp32" if dtype is None else f"{_SHORT[dtype]}-autocast"


_SHORT = {torch.bfloat16: "bf16", torch.float16: "fp16"}


def device_line(device: torch.device, amp: str = "auto",
                requested: str | torch.device | None = None) -> str:
    """One line saying where and in which precision work runs, e.g.
    ``device: cuda:0 (NVIDIA H100 80GB HBM3), precision bf16`` or
    ``device: cpu, precision fp32``.

    Args:
        device: the device chosen (:func:`resolve_device`).
        amp: the ``amp`` mode (see :func:`autocast_dtype`).
        requested: what was asked for; for ``None``/``"auto"`` that ended on the CPU the
            line adds why no GPU was used where an NVIDIA driver is visible
            (:func:`cpu_fallback_reason`).
    """
    name = str(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        name = f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    dtype = autocast_dtype(device, amp)
    line = f"device: {name}, precision {'fp32' if dtype is None else _SHORT[dtype]}"
    auto = requested is None or (isinstance(requested, str)
                                 and requested.strip().lower() == "auto")
    reason = cpu_fallback_reason() if auto and device.type == "cpu" else None
    return f"{line} ({reason})" if reason else line


def nvidia_driver_visible() -> bool:
    """Whether this machine shows an NVIDIA driver (``/proc/driver/nvidia`` or
    ``nvidia-smi`` on the PATH)."""
    return os.path.exists("/proc/driver/nvidia") or shutil.which("nvidia-smi") is not None


def cpu_fallback_reason() -> str | None:
    """Why ``auto`` chose the CPU although an NVIDIA driver is visible, in a few words with
    what to do; ``None`` when a GPU is usable or no driver is visible."""
    if torch.cuda.is_available() or not nvidia_driver_visible():
        return None
    if torch.version.cuda is None:
        return (f"an NVIDIA driver is present but torch {torch.__version__} is built without "
                "CUDA: install a CUDA build of torch to use the GPU")
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and hidden.strip() in ("", "-1"):
        return (f"an NVIDIA driver is present but CUDA_VISIBLE_DEVICES={hidden!r} hides every "
                "GPU")
    return (f"an NVIDIA driver is present but torch {torch.__version__} (CUDA "
            f"{torch.version.cuda}) cannot use it: the driver may be older than that CUDA "
            "needs (nvidia-smi shows the newest it supports), or no GPU is visible here")


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
    "autocast_dtype",
    "cpu_fallback_reason",
    "default_device",
    "device_line",
    "grad_scaler",
    "mixed_precision",
    "nvidia_driver_visible",
    "precision",
    "resolve_device",
    "torch_threads",
]
