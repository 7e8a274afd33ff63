"""A process's rank comes from the launcher's environment, and only in a job of several."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcgf.errors import UserError
from mcgf.launch import launcher_rank, launcher_world


@pytest.mark.parametrize(("env", "rank", "world"), [
    ({}, 0, 1),
    ({"RANK": "1"}, 0, 1),  # left by something else: a lone process is rank 0
    ({"RANK": "1", "WORLD_SIZE": "1"}, 0, 1),
    ({"RANK": "1", "WORLD_SIZE": "2"}, 1, 2),
    ({"RANK": "x", "WORLD_SIZE": "2"}, 0, 2),
])
def test_rank_and_world(env: dict[str, str], rank: int, world: int, monkeypatch) -> None:
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert (launcher_rank(), launcher_world()) == (rank, world)


def test_a_lone_process_with_a_stray_rank_still_locks_its_run_folder(tmp_path: Path,
                                                                       monkeypatch) -> None:
    """With RANK=1 and no WORLD_SIZE, the process trained as rank 0 but took no lock, so
    two such runs wrote into one folder."""
    import subprocess
    import sys

    from mcgf.training.loop import run_lock

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("RANK", "1")
    code = ("import sys; from mcgf.training.loop import run_lock\n"
            "try:\n    run_lock(sys.argv[1]).__enter__()\nexcept Exception as e:\n"
            "    print(type(e).__name__)\n")
    with run_lock(tmp_path):
        res = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                             text=True, check=True)
    assert res.stdout.strip() == UserError.__name__
