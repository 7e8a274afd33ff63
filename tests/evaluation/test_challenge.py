"""160k answer files: validation, atomic writing, zip layout and scoring."""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mcgf.errors import UserError
from mcgf.evaluation.challenge import (
    answer_rows,
    parse_answer_text,
    read_answer,
    score_answer,
    write_answer,
)

STEMS = [f"g{i:02d}" for i in range(15)]


def rows_for(n: int, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    return [list(rng.choice(STEMS, 10, replace=False)) for _ in range(n)]


def test_write_answer_txt_and_zip(tmp_path: Path) -> None:
    rows = rows_for(4)
    txt, zp = write_answer(tmp_path, rows, num_queries=4, gallery_stems=STEMS)
    raw = txt.read_bytes()
    assert b"\r" not in raw and raw.endswith(b"\n") and raw.count(b"\n") == 4
    assert raw.split(b"\n")[0].split(b"\t") == [s.encode() for s in rows[0]]
    with zipfile.ZipFile(zp) as zf:
        assert zf.namelist() == ["answer.txt"]
        assert zf.read("answer.txt") == raw
    assert read_answer(zp) == rows and read_answer(txt) == rows
    # identical answers give byte-identical zips
    first = zp.read_bytes()
    write_answer(tmp_path, rows, num_queries=4, gallery_stems=STEMS)
    assert zp.read_bytes() == first
    write_answer(tmp_path / "sp", rows, num_queries=4, gallery_stems=STEMS, separator="space")
    assert (tmp_path / "sp" / "answer.txt").read_text().split("\n")[0] == " ".join(rows[0])


@pytest.mark.parametrize("problem", ["count", "short", "duplicate", "unknown"])
def test_invalid_answers_write_nothing(tmp_path: Path, problem: str) -> None:
    rows = rows_for(3)
    n = 3
    if problem == "count":
        n = 4
    elif problem == "short":
        rows[1] = rows[1][:9]
    elif problem == "duplicate":
        rows[2][5] = rows[2][0]
    else:
        rows[0][3] = "nope"
    with pytest.raises(UserError):
        write_answer(tmp_path / "out", rows, num_queries=n, gallery_stems=STEMS)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_score_answer_values(tmp_path: Path) -> None:
    # true item at rank 0, 3, 9 and absent -> R@1 25, R@5 50, R@10 75,
    # AP = (1 + 1/8 + 1/20 + 0) / 4
    rows = rows_for(4, seed=1)
    truth = []
    for i, r in enumerate([0, 3, 9, None]):
        true = next(s for s in STEMS if s not in rows[i]) if r is None else rows[i][r]
        truth.append(f"q{i}.jpeg\t{true}\n")
    gt = tmp_path / "gt.txt"
    gt.write_text("".join(truth))
    ans = tmp_path / "answer.txt"
    ans.write_text("".join(" ".join(r) + "\r\n" for r in rows))  # space + CRLF accepted
    d = score_answer(ans, gt).as_dict()
    assert d["R@1"] == pytest.approx(25.0) and d["R@5"] == pytest.approx(50.0)
    assert d["R@10"] == pytest.approx(75.0)
    assert d["AP"] == pytest.approx(100 * (1 + 1 / 8 + 1 / 20) / 4)
    # names-file order differs from the ground-truth order: matched by name (stem too)
    names = tmp_path / "names.txt"
    names.write_text("q3\nq2.jpeg\nq1.jpeg\nq0.jpeg\n")
    reordered = tmp_path / "answer2.txt"
    reordered.write_text("".join("\t".join(r) + "\n" for r in rows[::-1]))
    assert score_answer(reordered, gt, names_file=names).as_dict() == d


def test_score_answer_errors(tmp_path: Path) -> None:
    gt = tmp_path / "gt.txt"
    gt.write_text("a.jpeg\tg01\nb.jpeg\tg02\n")
    ans = tmp_path / "answer.txt"
    ans.write_text("\t".join(STEMS[:10]) + "\n")
    with pytest.raises(UserError, match="1 lines but there are 2"):
        score_answer(ans, gt)
    bad_zip = tmp_path / "answer.zip"
    bad_zip.write_bytes(b"PK junk")
    with pytest.raises(UserError, match="zip"):
        score_answer(bad_zip, gt)
    with pytest.raises(UserError, match="does not exist"):
        score_answer(tmp_path / "missing.txt", gt)
    bad_gt = tmp_path / "bad_gt.txt"
    bad_gt.write_text("only-one-column\n")
    with pytest.raises(UserError, match="line 1"):
        score_answer(ans, bad_gt)


def test_score_answer_matches_dotted_query_names_whole(tmp_path: Path) -> None:
    # "a.v2" of the names file is not "a.jpeg" of the ground truth: a missing query.
    gt = tmp_path / "gt.txt"
    gt.write_text("a.jpeg\tg00\nb.c.JPEG\tg05\n")
    ans = tmp_path / "answer.txt"
    ans.write_text("\t".join(STEMS[:10]) + "\n" + "\t".join(STEMS[1:11]) + "\n")
    names = tmp_path / "names.txt"
    names.write_text("a.JPG\nb.c\n")
    assert score_answer(ans, gt, names_file=names).as_dict()["R@1"] == pytest.approx(50.0)
    names.write_text("a.v2\nb.c\n")
    with pytest.raises(UserError, match=r"'a\.v2' .* is not in"):
        score_answer(ans, gt, names_file=names)


def test_answer_rows_and_parse() -> None:
    rows = answer_rows(np.array([[2, 0, 1]]), ["a", "b", "c"])
    assert rows == [["c", "a", "b"]]
    assert parse_answer_text("a b\tc\n\n") == [["a", "b", "c"]]


def test_read_answer_accepts_a_byte_order_mark(tmp_path: Path) -> None:
    rows = rows_for(3)
    text = "\n".join("\t".join(r) for r in rows) + "\n"
    plain = tmp_path / "answer.txt"
    plain.write_text("\ufeff" + text, encoding="utf-8")
    assert read_answer(plain) == rows
    packed = tmp_path / "answer.zip"
    with zipfile.ZipFile(packed, "w") as zf:
        zf.writestr("answer.txt", ("\ufeff" + text).encode("utf-8"))
    assert read_answer(packed) == rows


def _old_set(out: Path) -> list[list[str]]:
    """An earlier answer pair with its score, as a previous run leaves them."""
    old = rows_for(3, seed=1)
    write_answer(out, old, num_queries=3, gallery_stems=STEMS)
    (out / "score.json").write_text('{"R@1": 50.0}\n')
    return old


def _failing_on(monkeypatch: pytest.MonkeyPatch, target_name: str) -> None:
    """Make moving a new file into place as ``target_name`` fail, as a full disk might."""
    import mcgf.fileio

    real = os.replace

    def replace(src: str | Path, dst: str | Path) -> None:
        if Path(dst).name == target_name and Path(src).name.endswith(".tmp"):
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(mcgf.fileio.os, "replace", replace)


@pytest.mark.parametrize("failing", ["answer.txt", "answer.zip"])
def test_failed_answer_write_leaves_the_old_set_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      failing: str) -> None:
    out = tmp_path / "pred"
    old = _old_set(out)
    _failing_on(monkeypatch, failing)
    with pytest.raises(OSError, match="No space left"):
        write_answer(out, rows_for(3, seed=2), num_queries=3, gallery_stems=STEMS)
    # never a new answer.txt beside the old answer.zip (or the reverse), nor temp files
    assert read_answer(out / "answer.txt") == old and read_answer(out / "answer.zip") == old
    assert (out / "score.json").read_text() == '{"R@1": 50.0}\n'
    assert sorted(p.name for p in out.iterdir()) == ["answer.txt", "answer.zip", "score.json"]


def test_new_answer_removes_the_reports_of_the_old_one(tmp_path: Path) -> None:
    out = tmp_path / "pred"
    _old_set(out)
    (out / "prediction.json").write_text("{}\n")
    new = rows_for(3, seed=2)
    write_answer(out, new, num_queries=3, gallery_stems=STEMS)
    assert read_answer(out / "answer.txt") == new and read_answer(out / "answer.zip") == new
    assert sorted(p.name for p in out.iterdir()) == ["answer.txt", "answer.zip"]


def test_a_ground_truth_with_gallery_file_names_scores_their_stems(tmp_path: Path) -> None:
    # The answer holds names without extension; a ground truth that spells the gallery
    # files with theirs (g01.webp) must not score every query as a miss.
    gt = tmp_path / "gt.txt"
    gt.write_text(f"a.jpeg\t{STEMS[0]}.webp\nb.jpeg\t{STEMS[3]}.JPG\n")
    ans = tmp_path / "answer.txt"
    ans.write_text("\t".join(STEMS[:10]) + "\n" + "\t".join(STEMS[1:11]) + "\n")
    d = score_answer(ans, gt).as_dict()
    assert d["R@1"] == pytest.approx(50.0) and d["R@5"] == pytest.approx(100.0)


@pytest.mark.parametrize("bad", ["g 99", "g\t99", "", "g99\r"])
def test_format_answer_names_the_first_line_with_an_unwritable_name(bad: str) -> None:
    from mcgf.evaluation.challenge import format_answer

    rows = rows_for(6)
    assert format_answer(rows, "space") == "".join(" ".join(r) + "\n" for r in rows)
    rows[3][4], rows[5][1] = bad, "x y"
    with pytest.raises(UserError, match=re.escape(f"gallery name {bad!r} (answer line 4) contains whitespace")):
        format_answer(rows)
