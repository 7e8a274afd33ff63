"""log.csv is written as rows come: appended whole, rewritten when a column appears."""

from __future__ import annotations

import csv
from pathlib import Path

import mcgf.training.logging as training_logging
from mcgf.training.logging import TrainLog


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_each_row_reaches_the_file_when_added(tmp_path: Path) -> None:
    log = TrainLog(tmp_path, tensorboard=False)
    log.add({"step": 1, "epoch": 1, "lr": 0.1, "ce": 2.5, "total": 2.5})
    assert [r["step"] for r in _rows(tmp_path / "log.csv")] == ["1"]
    log.add({"step": 2, "epoch": 1, "lr": 0.1, "ce": 2.25, "total": 2.25})
    rows = _rows(tmp_path / "log.csv")
    assert [(r["step"], r["total"]) for r in rows] == [("1", "2.5"), ("2", "2.25")]


def test_rows_are_appended_and_a_new_column_rewrites_the_header(tmp_path: Path, monkeypatch) -> None:
    rewrites: list[Path] = []
    real = training_logging.atomic_write
    monkeypatch.setattr(training_logging, "atomic_write",
                        lambda path, *a, **k: (rewrites.append(path), real(path, *a, **k))[1])
    log = TrainLog(tmp_path, tensorboard=False)
    for step in range(1, 6):
        log.add({"step": step, "epoch": 1, "lr": 0.1, "total": 1.0 / step})
    assert len(rewrites) == 1  # the first write; the next four rows were appended
    log.add({"step": 5, "epoch": 1, "val_R@1": 0.5})
    assert len(rewrites) == 2
    rows = _rows(tmp_path / "log.csv")
    assert list(rows[0]) == ["step", "epoch", "lr", "total", "val_R@1"]
    assert [r["val_R@1"] for r in rows] == ["", "", "", "", "", "0.5"]
    log.flush()
    assert len(rewrites) == 2 and len(_rows(tmp_path / "log.csv")) == 6


def test_resume_drops_a_torn_last_row_and_the_rows_past_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    # Step 3's row was cut by a kill: "1" of its step would pass keep_until_step=2.
    path.write_text("step,epoch,lr,total\n1,1,0.1,1\n2,1,0.1,0.5\n4,2,0.1,0.25\n1", encoding="utf-8")
    log = TrainLog(tmp_path, keep_until_step=2, tensorboard=False)
    assert log.filled == {"step": 2, "epoch": 2, "lr": 2, "total": 2}
    log.add({"step": 3, "epoch": 2, "lr": 0.1, "total": 0.3})
    assert [r["step"] for r in _rows(path)] == ["1", "2", "3"]
    assert path.read_text(encoding="utf-8").endswith("3,2,0.1,0.3\n")


def test_written_rows_are_not_kept_in_memory(tmp_path: Path) -> None:
    # A run of a million rows held them all (about 600 bytes each); a rewrite for a new
    # column now reads the earlier rows back from the file.
    log = TrainLog(tmp_path, tensorboard=False)
    for step in range(1, 101):
        log.add({"step": step, "epoch": 1, "lr": 0.1, "total": 1.0})
        assert log.pending == []
    log.add({"step": 100, "epoch": 1, "val_R@1": 0.5})
    assert log.pending == [] and log.filled["total"] == 100 and log.filled["val_R@1"] == 1
    rows = _rows(tmp_path / "log.csv")
    assert len(rows) == 101 and [r["step"] for r in rows[:3]] == ["1", "2", "3"]
    assert rows[99]["total"] == "1" and rows[100]["val_R@1"] == "0.5" and rows[99]["val_R@1"] == ""
    assert not vars(log).get("rows")


def test_a_rewrite_after_a_resume_keeps_the_carried_rows_once(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("step,epoch,lr,total\n1,1,0.1,1\n2,1,0.1,0.5\n3,2,0.1,0.25\n", encoding="utf-8")
    log = TrainLog(tmp_path, keep_until_step=2, tensorboard=False)
    log.add({"step": 3, "epoch": 2, "lr": 0.1, "total": 0.3})
    log.add({"step": 3, "epoch": 2, "val_R@1": 0.5})  # a new column: a second rewrite
    rows = _rows(path)
    assert [(r["step"], r["total"], r["val_R@1"]) for r in rows] == [
        ("1", "1", ""), ("2", "0.5", ""), ("3", "0.3", ""), ("3", "", "0.5")]
    assert log.filled["total"] == 3
