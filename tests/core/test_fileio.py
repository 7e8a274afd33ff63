from __future__ import annotations

import os
from pathlib import Path

import pytest

from mcgf.fileio import atomic_write, write_json_atomic, write_text_atomic


def test_atomic_write_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "answer.txt"
    write_text_atomic(target, "old\n")
    with pytest.raises(RuntimeError), atomic_write(target) as fh:
        fh.write("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old\n"
    assert [p.name for p in target.parent.iterdir()] == ["answer.txt"]  # no temp file left


def test_atomic_write_has_normal_permissions(tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    write_json_atomic(target, {"a": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert (target.stat().st_mode & 0o777) == (0o666 & ~mask)
    assert target.read_text() == '{\n  "a": 1\n}\n'


def test_replace_dir_swaps_whole_folders(tmp_path: Path) -> None:
    from mcgf.fileio import replace_dir

    dest = tmp_path / "out"
    for text in ("first", "second"):
        tmp = tmp_path / ".out.partial"
        tmp.mkdir()
        (tmp / "f.txt").write_text(text)
        replace_dir(tmp, dest)
        assert (dest / "f.txt").read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # old copy and temp gone


def test_write_files_together_is_all_or_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mcgf import fileio

    a, b, report = tmp_path / "a.txt", tmp_path / "b.bin", tmp_path / "report.json"
    fileio.write_files_together({a: b"old a", b: b"old b"})
    report.write_text("about the old pair")
    real = os.replace
    calls: list[str] = []

    def flaky(src: str | Path, dst: str | Path) -> None:
        calls.append(Path(dst).name)
        if Path(dst) == b and str(src).endswith(".tmp"):
            raise OSError("disk full")
        real(src, dst)

    monkeypatch.setattr(fileio.os, "replace", flaky)
    with pytest.raises(OSError, match="disk full"):
        fileio.write_files_together({a: b"new a", b: b"new b"}, remove=[report])
    assert "a.txt" in calls  # the first new file had been moved into place before the failure
    assert (a.read_bytes(), b.read_bytes(), report.read_text()) == (b"old a", b"old b", "about the old pair")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "report.json"]
    monkeypatch.setattr(fileio.os, "replace", real)
    fileio.write_files_together({a: b"new a", b: b"new b"}, remove=[report, tmp_path / "absent.json"])
    assert (a.read_bytes(), b.read_bytes()) == (b"new a", b"new b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin"]


def test_atomic_path_replaces_only_on_success(tmp_path: Path) -> None:
    from mcgf.fileio import atomic_path

    target = tmp_path / "sub" / "f.bin"
    write_text_atomic(target, "old\n")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old\n"
    assert [p.name for p in target.parent.iterdir()] == ["f.bin"]  # no temp file left
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and [p.name for p in target.parent.iterdir()] == ["f.bin"]
    mask = os.umask(0)
    os.umask(mask)
    assert (target.stat().st_mode & 0o777) == (0o666 & ~mask)


def test_folder_lock_is_reentrant_exclusive_across_processes_and_leaves_nothing(tmp_path: Path) -> None:
    """Nested locks of one folder in one process pass; another process cannot take it
    meanwhile, and can once it is released; a folder the lock created and nothing filled
    is removed again, one with files is kept."""
    import subprocess
    import sys

    from mcgf.errors import UserError
    from mcgf.fileio import folder_lock

    try_lock = ("import fcntl, os, sys\nfd = os.open(sys.argv[1], os.O_RDONLY)\n"
                "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
                "except BlockingIOError:\n    sys.exit(3)\n")

    def other_process_locks(folder: Path) -> bool:
        code = subprocess.run([sys.executable, "-c", try_lock, str(folder)], check=False).returncode
        assert code in (0, 3)
        return code == 0

    empty, used = tmp_path / "empty", tmp_path / "used"
    with folder_lock(empty, "busy"), folder_lock(empty, "busy"):
        assert empty.is_dir() and not other_process_locks(empty)
    assert not empty.exists()
    with folder_lock(used, "busy"):
        (used / "log.csv").write_text("step\n")
    assert other_process_locks(used)
    assert sorted(p.name for p in used.iterdir()) == ["log.csv"]
    with pytest.raises(UserError, match=r"^busy$"):
        holder = subprocess.Popen([sys.executable, "-c", try_lock + "print(1, flush=True)\n"
                                   "sys.stdin.read()\n", str(used)], text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "1\n"
            with folder_lock(used, "busy"):
                pass
        finally:
            holder.communicate("", timeout=30)


@pytest.mark.skipif(not hasattr(os, "register_at_fork"), reason="no fork")
def test_a_forked_child_does_not_keep_a_released_folder_lock(tmp_path: Path) -> None:
    """A DataLoader worker forked while a run holds its folder's lock (persistent workers
    outlive a train() that raised) must not keep the folder locked once it is released."""
    import multiprocessing

    from mcgf.fileio import folder_lock

    ctx = multiprocessing.get_context("fork")
    started, stop = ctx.Event(), ctx.Event()

    def worker() -> None:
        started.set()
        stop.wait(30)

    with folder_lock(tmp_path, "busy"):
        child = ctx.Process(target=worker)
        child.start()
        assert started.wait(30)  # the child runs (past what fork does in it)
    try:
        with folder_lock(tmp_path, "busy"):
            relocked = True
    finally:
        stop.set()
        child.join(30)
    assert relocked and child.exitcode == 0
