"""Output options are checked before any work: a folder or file that cannot be written
is a one-line error naming the option, and the check leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcgf.cli.options import file_option, folder_option
from mcgf.errors import UserError


def test_a_writable_place_passes_and_keeps_no_trace(tmp_path: Path) -> None:
    assert folder_option(tmp_path / "a" / "b", "--out") == tmp_path / "a" / "b"
    assert file_option(tmp_path / "grid.png", "-o") == tmp_path / "grid.png"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_a_place_that_takes_no_new_entry_is_refused_up_front() -> None:
    """/proc takes no new folder, even for root (for whom permission bits do not count)."""
    with pytest.raises(UserError, match=r"^--out /proc/mcgf-out/run cannot be written: nothing "
                                        r"can be created in /proc \(.+\); choose another folder$"):
        folder_option("/proc/mcgf-out/run", "--out")
    with pytest.raises(UserError, match=r"^-o /proc/grid\.png cannot be written: nothing can be created "
                                        r"in /proc "):
        file_option("/proc/grid.png", "-o")
