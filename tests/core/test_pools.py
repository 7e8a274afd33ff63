"""The worker-pool start method: fork only while torch has not been imported."""

from __future__ import annotations

import sys

import pytest

from mcgf.pools import fork_is_safe, pool_context


def test_fork_only_before_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch  # noqa: F401  (the state under test)

    assert not fork_is_safe()
    assert pool_context().get_start_method() in ("forkserver", "spawn")
    monkeypatch.delitem(sys.modules, "torch")
    if sys.platform.startswith("linux"):
        assert fork_is_safe()
        assert pool_context().get_start_method() == "fork"
