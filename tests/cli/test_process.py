from __future__ import annotations

import signal
import sys

import pytest

from mcgf.cli.process import Terminated, sigterm_interrupts


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM cannot be raised in-process")
def test_sigterm_unwinds_where_the_platform_has_no_sigchld(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows has no SIGCHLD: SIGTERM still ends the block with Terminated rather than
    an AttributeError from the handler."""
    monkeypatch.delattr(signal, "SIGCHLD", raising=False)
    with pytest.raises(Terminated), sigterm_interrupts():
        signal.raise_signal(signal.SIGTERM)
