"""This process's place in a launcher's job (``torchrun``), read from the environment
without importing torch, so that the command line knows it before any work.

A process is one of several only when ``WORLD_SIZE > 1``: a ``RANK`` left in the
environment by something else (another launcher, a shell) does not make a lone process
a secondary rank that would skip its run folder's lock and stay silent.
"""

from __future__ import annotations

import os


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, str(default)))
    except ValueError:
        return default


def launcher_world() -> int:
    """How many processes the job has (``WORLD_SIZE``; 1 outside a launcher)."""
    return max(_env_int("WORLD_SIZE", 1), 1)


def launcher_rank() -> int:
    """This process's rank in the job (``RANK`` when ``WORLD_SIZE > 1``, else 0)."""
    return _env_int("RANK", 0) if launcher_world() > 1 else 0


__all__ = ["launcher_rank", "launcher_world"]
