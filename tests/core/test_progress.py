"""Progress bars written to a log file are redrawn rarely, on a terminal as tqdm does."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
import tqdm.std

from mcgf.progress import LOG_INTERVAL_S, is_terminal, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch) -> Iterator[list[float]]:
    """tqdm's clock, advanced by the test."""
    now = [1000.0]
    monkeypatch.setattr(tqdm.std, "time", lambda: now[0])
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    monkeypatch.delenv("TQDM_MAXINTERVAL", raising=False)
    yield now


def _redraws(stream: io.StringIO, clock: list[float], steps: int = 600, dt: float = 0.2) -> int:
    """Redraws of a bar over ``steps`` steps of ``dt`` seconds each."""
    with progress_bar(total=steps, file=stream, desc="epoch 1/1") as bar:
        for _ in range(steps):
            clock[0] += dt
            bar.update(1)
    return stream.getvalue().count("\r")


def test_a_bar_in_a_log_file_is_redrawn_every_log_interval(clock) -> None:
    """Two minutes of steps, a fifth of a second each: tqdm redrew the bar after every step
    (600 redraws kept in the log); now once every LOG_INTERVAL_S seconds and at the end."""
    log = io.StringIO()
    redraws = _redraws(log, clock)
    assert redraws <= 120 / LOG_INTERVAL_S + 3
    assert "600/600" in log.getvalue()  # the final state is still written


def test_a_bar_on_a_terminal_keeps_tqdm_s_interval(clock) -> None:
    assert _redraws(Terminal(), clock) >= 500


def test_tqdm_s_environment_variable_still_sets_the_interval(clock, monkeypatch) -> None:
    monkeypatch.setenv("TQDM_MININTERVAL", "0")
    assert _redraws(io.StringIO(), clock, steps=50) >= 50


def test_is_terminal_of_files_pipes_and_closed_streams() -> None:
    closed = io.StringIO()
    closed.close()
    assert (is_terminal(Terminal()), is_terminal(io.StringIO()), is_terminal(closed),
            is_terminal(None)) == (True, False, False, False)
