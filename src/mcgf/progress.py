"""Progress bars of mcgf's long loops (training epochs, feature extraction, ``mcgf synth``,
``mcgf weather render``): every one is made by :func:`progress_bar`.

On a terminal a bar is tqdm's own. Written to a file or a pipe (a batch job's log, ``>
log 2>&1``, CI) tqdm would still redraw it up to ten times a second, each redraw kept
in the file: a long run's log would grow by megabytes of progress text. There a bar is
redrawn at most once every :data:`LOG_INTERVAL_S` seconds (and when it ends), so the log
stays short and still shows how far the run is. tqdm's ``TQDM_MININTERVAL`` environment
variable still sets the interval of every bar.
"""

from __future__ import annotations

import os
import sys
from typing import IO, Any

#: Seconds between two redraws of a bar whose stream is not a terminal.
LOG_INTERVAL_S = 30.0


def is_terminal(stream: IO[str] | None) -> bool:
    """Whether ``stream`` is an open terminal (``False`` for a file, a pipe, ``None`` or
    a closed stream)."""
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def progress_bar(iterable: Any = None, **kwargs: Any) -> Any:
    """A ``tqdm`` bar (``iterable`` and ``kwargs`` as for ``tqdm.tqdm``), redrawn at most
    every :data:`LOG_INTERVAL_S` seconds when its stream (``file``, by default stderr) is
    not a terminal. A ``mininterval`` / ``maxinterval`` keyword, or tqdm's own
    ``TQDM_MININTERVAL`` / ``TQDM_MAXINTERVAL`` environment variable, wins."""
    from tqdm import tqdm

    if not is_terminal(kwargs.get("file") or sys.stderr):
        for key in ("mininterval", "maxinterval"):
            # tqdm's monitor thread forces a redraw every maxinterval (10 s by default).
            if f"TQDM_{key.upper()}" not in os.environ:
                kwargs.setdefault(key, LOG_INTERVAL_S)
    return tqdm(iterable, **kwargs)
