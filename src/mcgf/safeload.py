"""``torch.load`` of files that must hold plain data only, with one-line errors.

``torch.load(weights_only=True)`` refuses a pickle that would build arbitrary Python
objects (or call functions: a pickle can run code), with a multi-paragraph message meant
for developers. :func:`load_plain` keeps the refusal and turns it, and any other read
failure, into one :class:`~mcgf.errors.UserError` line that names the file.
"""

from __future__ import annotations

import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from mcgf.errors import UserError

# How torch names what its weights-only unpickler refused.
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_OPERAND = re.compile(r"(Unsupported operand \d+)")
# The unpickler's own reason inside torch's weights-only failure message.
_UNPICKLER_REASON = re.compile(r"WeightsUnpickler error:\s*(.+?)\s*(?:Check the documentation|$)", re.S)


class PickledObjectsError(UserError):
    """A ``torch.save`` file holds Python objects or code, not only plain data."""


def refused_item(err: BaseException, path: str | Path) -> str | None:
    """What the weights-only unpickler refused in ``path`` (``posix.system``,
    ``__main__.Net``, ``Unsupported operand 149``), if ``err`` is such a refusal of a
    genuine pickle; ``None`` for any other error (a damaged or foreign file)."""
    text = str(err)
    if not isinstance(err, pickle.UnpicklingError) or "weights only load failed" not in text.lower():
        return None
    match = _GLOBAL.search(text)
    if match:
        return match.group(1)
    # An opcode it does not take: a newer pickle protocol, or bytes that are no pickle.
    match = _OPERAND.search(text)
    return match.group(1) if match and _is_pickle(Path(path)) else None


def _read_failure(err: BaseException) -> str:
    """Why ``torch.load`` failed, on one line. For bytes its weights-only unpickler stops
    at, that is the unpickler's reason (``Unsupported operand 141``), without torch's
    advice around it to load the file with ``weights_only=False``: no advice for a damaged
    or foreign file, and one that could run code in it."""
    text = str(err)
    if isinstance(err, pickle.UnpicklingError) and "weights only load failed" in text.lower():
        match = _UNPICKLER_REASON.search(text)
        if match:
            return one_line(match.group(1))
    return one_line(err)


def _is_pickle(path: Path) -> bool:
    """Whether ``path`` is a torch archive or a well-formed pickle (opcodes are only read,
    never executed)."""
    if zipfile.is_zipfile(path):
        return True
    try:
        with open(path, "rb") as fh:
            for _ in pickletools.genops(fh):
                pass
    except Exception:  # any malformed opcode stream
        return False
    return True


def load_plain(path: str | Path, what: str, hint: str, *,
               map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``: tensors, numbers, strings, lists, tuples
    and dicts only; nothing in the file runs.

    Args:
        path: the file.
        what: how to call the file in messages (``"weights file"``, ``"training state"``).
        hint: what to do when the file holds Python objects (the end of the message).
        map_location: as for ``torch.load``.

    Raises:
        PickledObjectsError: the file holds other Python objects or code.
        UserError: any other read failure (damaged, not a torch file).
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols its safe unpickler may not know; the
            # outcome is reported below either way.
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # unpickling and archive errors share no narrower base class
        refused = refused_item(err, path)
        if refused is not None:
            raise PickledObjectsError(
                f"{what} {path} holds pickled Python objects or code, not plain tensors "
                f"(refused: {refused}), and is not loaded because unpickling it could run "
                f"code: {hint}") from None
        raise UserError(f"cannot read {what} {path}: {_read_failure(err)} (damaged, or not a "
                        "file written by torch.save)") from None


def safetensors_hint(path: str | Path) -> str:
    """How to convert the pickled weights ``path`` to safetensors, as one command line."""
    src = str(path)
    dst = str(Path(path).with_suffix(".safetensors"))
    return ("if you trust the file, convert it to safetensors on a trusted machine with "
            "python -c \"import torch, safetensors.torch as st; "
            f"sd = torch.load({src!r}, map_location='cpu', weights_only=False); "
            "sd = sd.get('state_dict', sd); "
            "st.save_file({k: v.contiguous().clone() for k, v in sd.items() if torch.is_tensor(v)}, "
            f"{dst!r})\" and pass {dst}")


def one_line(err: BaseException, limit: int = 300) -> str:
    """``err``'s message on one line, at most ``limit`` characters (its type if empty)."""
    text = " ".join(t.strip() for t in str(err).strip().splitlines() if t.strip())
    if not text:
        return type(err).__name__
    return text[:limit] + ("..." if len(text) > limit else "")
