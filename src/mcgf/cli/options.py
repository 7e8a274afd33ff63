"""Option parsing shared by the subcommands (one-line errors naming the option)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from mcgf.errors import UserError


def int_option(value: Any, option: str, minimum: int = 1) -> int:
    """``value`` as an integer of at least ``minimum``.

    Raises:
        UserError: not an integer, or below ``minimum``, naming ``option``.
    """
    try:
        out = int(str(value).strip())
    except ValueError:
        raise UserError(f"{option} must be an integer (got {value!r})") from None
    if out < minimum:
        raise UserError(f"{option} must be at least {minimum} (got {out})")
    return out


def _check_writable(folder: Path, path: Path, option: str) -> None:
    """Create and remove a scratch folder in ``folder``, the nearest existing folder of
    ``path``: the one test that also holds for root, read-only mounts and ``/proc``."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".mcgf-write-check-", dir=folder))
    except OSError as err:
        raise UserError(f"{option} {path} cannot be written: nothing can be created in "
                        f"{folder} ({err.strerror or err}); choose another folder") from None


def folder_option(value: str | os.PathLike[str], option: str) -> Path:
    """``value`` as an output folder that can be created or written into: neither it nor
    an existing folder above it may be a file, and the nearest existing one must take new
    entries (checked before any work, so that a long run does not end on a traceback
    when it writes its results).

    Raises:
        UserError: ``value`` or one of its parents exists and is not a folder, or nothing
            can be written there, naming ``option``.
    """
    path = Path(value)
    for p in (path, *path.parents):
        if p.is_dir():
            _check_writable(p, path, option)
            break
        if p.exists() or p.is_symlink():
            what = "" if p == path else f" ({p} is a file)"
            raise UserError(f"{option} {path} is not a folder{what}: choose another folder")
    return path


def file_option(value: str | os.PathLike[str], option: str) -> Path:
    """``value`` as an output file that can be written: not a folder, and no existing
    path above it a file (checked before any work, like :func:`folder_option`).

    Raises:
        UserError: naming ``option`` and what is in the way.
    """
    path = Path(value)
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder: give a file name")
    for p in path.parents:
        if p.is_dir():
            _check_writable(p, path, option)
            break
        if p.exists() or p.is_symlink():
            raise UserError(f"{option} {path} cannot be written: {p} is a file")
    return path

