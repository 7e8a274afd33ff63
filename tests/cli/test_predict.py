"""``mcgf predict``: where ROOT's parts are found, for a prediction and for --score-only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcgf.cli.main import main
from tests.evaluation.conftest import tiny_160k  # noqa: F401  (fixture)

COMMON = ["--workers", "0", "--quiet", "--device", "cpu"]


def test_score_only_takes_the_names_file_of_a_split_one_folder_down(
        tiny_160k: tuple[Path, Path], tmp_path: Path,  # noqa: F811
        capsys: pytest.CaptureFixture[str]) -> None:
    """A ROOT holding the split one folder down is read alike by a prediction and by
    --score-only: the names file there fixes the order of the answer's lines."""
    root, gt = tiny_160k
    parent = root.parent
    assert not (parent / "query_drone_name.txt").exists()
    out = tmp_path / "pred"
    assert main(["predict", str(parent), "--out", str(out), "--ground-truth", str(gt), *COMMON]) == 0
    score = json.loads((out / "score.json").read_text())
    assert score["num_queries"] == 8 and score["R@10"] == 100.0
    capsys.readouterr()
    # the ground truth in another order than the names file: only the names file can
    # tell which line of the answer is which query
    resorted = tmp_path / "gt_sorted.txt"
    resorted.write_text("".join(sorted(gt.read_text().splitlines(keepends=True))))
    assert resorted.read_text() != gt.read_text()
    argv = ["predict", str(parent), "--score-only", str(out / "answer.zip"),
            "--ground-truth", str(resorted)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert (f"R@1 {score['R@1']:.2f}  R@5 {score['R@5']:.2f}  R@10 {score['R@10']:.2f}  "
            f"AP {score['AP']:.2f}  (8 queries)") in printed


def test_score_only_root_without_a_split_is_one_line(tiny_160k: tuple[Path, Path],  # noqa: F811
                                                     tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    _root, gt = tiny_160k
    (tmp_path / "empty").mkdir()
    answer = tmp_path / "answer.txt"
    answer.write_text("a\n")
    for root, expect in ((tmp_path / "empty", "has no query_drone_name.txt; give --names"),
                         (tmp_path / "missing", "is not a folder")):
        argv = ["predict", str(root), "--score-only", str(answer), "--ground-truth", str(gt)]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert expect in err and err.count("\n") == 1 and "Traceback" not in err
