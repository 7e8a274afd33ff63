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
