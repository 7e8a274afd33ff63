"""The start method of mcgf's worker-process pools (synthetic benchmarks, rendering).

``fork`` is the cheapest start method and lets workers share the parent's objects without
pickling them, but a process that has already started thread pools (torch's intra-op
pool, OpenMP) can deadlock its forked children: a lock held by another thread at the
moment of the fork is never released in the child. So ``fork`` is used only while torch
has not been imported in this process; otherwise ``forkserver`` (a clean server process
forks the workers) or, where that is missing, ``spawn``. Both pickle the pool's
initialiser arguments, so those must be picklable.
"""

from __future__ import annotations

import multiprocessing
import sys
from multiprocessing.context import BaseContext

__all__ = ["fork_is_safe", "pool_context"]


def fork_is_safe() -> bool:
    """Whether forking this process cannot inherit a started torch thread pool."""
    return "fork" in multiprocessing.get_all_start_methods() and "torch" not in sys.modules


def pool_context() -> BaseContext:
    """A multiprocessing context whose pools cannot deadlock on inherited thread state:
    ``fork`` when :func:`fork_is_safe`, else ``forkserver``, else ``spawn``."""
    methods = multiprocessing.get_all_start_methods()
    if fork_is_safe():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
