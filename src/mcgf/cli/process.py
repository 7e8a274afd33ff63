"""What the ``mcgf`` process does around a command, apart from the command itself:
SIGTERM unwinding like Ctrl-C, output streams that cannot encode every character, a full
disk told apart from a bug, and which ranks of a ``torchrun`` job speak.

:func:`mcgf.cli.main.main` wraps every command in these.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import io
import logging
import os
import signal
import sys
import warnings
from collections.abc import Iterator

from mcgf.errors import DeprecatedOptionWarning
from mcgf.launch import launcher_rank


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch scheduler, ``kill``) received while a command runs: like Ctrl-C, it
    unwinds the command, so that temporary files and folders of unfinished writes are
    removed and DataLoader workers stopped, as on Ctrl-C."""


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Raise :class:`Terminated` on SIGTERM while the block runs (main thread only).

    Processes forked meanwhile (DataLoader or pool workers) inherit the handler; in them
    SIGTERM keeps its default action, since a pool stops its workers with it. Once SIGTERM
    arrives, SIGCHLD is left at its default action (no handler) for the process's end.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pid = os.getpid()

    def handler(signum: int, frame: object) -> None:
        if os.getpid() != pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        # The process ends. torchrun and schedulers signal the whole process group, so
        # DataLoader workers die of the same SIGTERM, and the loader's SIGCHLD handler
        # would report each with a traceback while the loader shuts down.
        if hasattr(signal, "SIGCHLD"):  # not on Windows
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


#: What a stream that cannot encode them (a non-UTF-8 locale, ``PYTHONIOENCODING=ascii``)
#: gets for the non-ASCII characters of mcgf's outputs; any other character is ``?``.
ASCII_STAND_INS: dict[str, str] = {"\u2013": "-", "\u2014": "-", "\u00b1": "+/-", "\u2192": "->",
                                   "\u00b7": "|", "\u00d7": "x", "\u2026": "...", "\u2265": ">=",
                                   "\u2264": "<=", "\u03b5": "eps"}


def _stand_ins(err: UnicodeError) -> tuple[str, int]:
    if not isinstance(err, UnicodeEncodeError):
        raise err
    return "".join(ASCII_STAND_INS.get(c, "?") for c in err.object[err.start:err.end]), err.end


def ascii_stand_ins() -> None:
    """Make stdout and stderr write :data:`ASCII_STAND_INS` where their encoding lacks a
    character: printing a metrics table (``\u2013``) or a probe (``\u00b1``) to them raised
    UnicodeEncodeError after the work was done, and lost the rest of the output."""
    codecs.register_error("mcgf.stand_ins", _stand_ins)
    for stream in (sys.stdout, sys.stderr):
        if not isinstance(stream, io.TextIOWrapper):
            continue
        if codecs.lookup(stream.encoding).name != "utf-8" and stream.errors == "strict":
            stream.reconfigure(errors="mcgf.stand_ins")


#: How libraries that do not raise an :class:`OSError` word a full disk or quota:
#: safetensors ("No space left on device (os error 28)").
_DISK_FULL_TEXT = ("no space left on device", "disk quota exceeded")


def disk_full(err: BaseException) -> str | None:
    """``"no space left on device"`` (naming the file where known) when ``err`` or an
    exception it was raised from is a full disk or an exceeded quota, else ``None``.
    torch.save raises a RuntimeError from the OSError; safetensors an error of its own."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            name = f" ({current.filename})" if current.filename else ""
            return f"{os.strerror(current.errno).lower()}{name}"
        text = str(current).lower()
        for words in _DISK_FULL_TEXT:
            if words in text:
                return words
        current = current.__cause__ or current.__context__
    return None


@contextlib.contextmanager
def warnings_on_rank_0() -> Iterator[None]:
    """On a rank other than 0, mute mcgf's warnings (deprecated options, notes logged as
    warnings) while the command runs: every rank reads the same config and data, so rank
    0 alone prints each once. Errors are raised, not warned, and still stop every rank.

    Meant inside ``warnings.catch_warnings()``, which undoes the warnings filter.
    """
    if launcher_rank() == 0:
        yield
        return
    warnings.simplefilter("ignore", DeprecatedOptionWarning)
    logger = logging.getLogger("mcgf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


#: What a failed collective call says when another process of the job has left it:
#: gloo's TCP transport ("Connection closed by peer", "Connection reset by peer") and
#: NCCL ("remote process exited or there was a network error").
_PEER_LEFT = ("closed by peer", "reset by peer", "remote process exited")


def peer_left(err: RuntimeError) -> bool:
    """Whether ``err`` is a collective call of this process's ``torch.distributed``
    group that failed because another process of the job left it."""
    dist = sys.modules.get("torch.distributed")  # not imported: no process group
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return False
    text = str(err).lower()
    return any(marker in text for marker in _PEER_LEFT)


__all__ = ["ASCII_STAND_INS", "Terminated", "ascii_stand_ins", "disk_full", "peer_left",
           "sigterm_interrupts", "warnings_on_rank_0"]
