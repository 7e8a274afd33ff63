"""``mcgf synth`` on the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcgf.cli.main import main

TINY_ARGS = ["--train", "1", "--test", "1", "--distractors", "1", "--extra-distractors", "1",
             "--views", "2", "--size", "64", "--workers", "1", "--quiet"]


def _one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> None:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err


def test_cli_generates_prints_summary_and_contact_sheet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench"
    sheet = tmp_path / "sheet.png"
    assert main(["synth", str(out), *TINY_ARGS, "--contact-sheet", str(sheet)]) == 0
    text = capsys.readouterr().out
    assert "University-Release/test/gallery_drone" in text and "4 images" in text
    assert sheet.is_file() and sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "metadata.json").is_file()


def test_cli_refuses_non_empty_out_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["synth", str(out), *TINY_ARGS]) == 2
    _one_line_error(capsys, str(out), "--force")
    assert main(["synth", str(out), *TINY_ARGS, "--force"]) == 2
    _one_line_error(capsys, "not written by mcgf synth")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["bench"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--size", "20"], "--size"), (["--size", "abc"], "--size"), (["--views", "0"], "--views"),
     (["--workers", "0"], "--workers"), (["--train", "1.5"], "--train"), (["--seed", "-3"], "--seed"),
     (["--contact-sheet", "x.jpg"], "--contact-sheet"),
     (["--contact-sheet", "{tmp}/d.png"], "is a folder"), (["--contact-sheet", "{tmp}/f/s.png"], "is a file")],
)
def test_cli_bad_values_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            args: list[str], needle: str) -> None:
    (tmp_path / "f").write_text("")  # a file where a folder of --contact-sheet would be
    (tmp_path / "d.png").mkdir()
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(["synth", str(tmp_path / "o"), *args]) == 2
    _one_line_error(capsys, needle)
    assert not (tmp_path / "o").exists()
