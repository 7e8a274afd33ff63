"""``mcgf evaluate`` on incomplete data: unreadable images, missing folders, partial
pre-rendered conditions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from mcgf.cli.main import main

COMMON = ["--workers", "0", "--quiet", "--device", "cpu", "--cache-dir", "none"]


def evaluate(data: Path, out: Path, *args: str) -> dict[str, Any]:
    assert main(["evaluate", str(data), "--out", str(out), *args, *COMMON]) == 0
    return json.loads((out / "metrics.json").read_text())


def rows(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["condition"], r["direction"]): r["metrics"] for r in report["results"]}


def test_skipped_query_counts_as_a_miss_and_skips_are_in_the_table(
        tiny_u1652: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clean = rows(evaluate(tiny_u1652, tmp_path / "a", "--directions", "d2s"))[("clean", "drone->satellite")]
    test = tiny_u1652 / "test"
    (test / "query_drone" / "0101" / "image-99.jpeg").write_bytes(b"not an image")
    (test / "gallery_satellite" / "0900" / "0900-bad.jpg").write_bytes(b"not an image either")
    capsys.readouterr()
    report = evaluate(tiny_u1652, tmp_path / "b", "--directions", "d2s", "--on-bad-image", "skip")
    m = rows(report)[("clean", "drone->satellite")]
    n = clean["num_queries"]
    assert m["num_queries"] == n + 1 and m["skipped_query_images"] == 1
    assert m["skipped_gallery_images"] == 1 and m["gallery_size"] == clean["gallery_size"]
    # a miss in the denominator: R@K and AP scale by n / (n + 1), not unchanged
    for key in ("R@1", "R@5", "AP"):
        assert m[key] == pytest.approx(clean[key] * n / (n + 1))
    assert m["queries_without_match"] == clean["queries_without_match"]  # 0101 has a tile
    # --no-match exclude drops queries without a match, not the unreadable one
    ex = rows(evaluate(tiny_u1652, tmp_path / "c", "--directions", "d2s", "--on-bad-image", "skip",
                       "--no-match", "exclude"))[("clean", "drone->satellite")]
    assert ex["queries_in_mean"] == n + 1 - clean["queries_without_match"]
    # the counts are columns of the printed and the Markdown table
    printed = capsys.readouterr().out
    md = (tmp_path / "b" / "metrics.md").read_text()
    for text in (printed, md):
        head = next(line for line in text.splitlines() if line.startswith("| condition"))
        cells = [c.strip() for c in head.strip("|").split("|")]
        row = next(line for line in text.splitlines() if line.startswith("| clean"))
        values = dict(zip(cells, [c.strip() for c in row.strip("|").split("|")], strict=True))
        assert values["skipped queries"] == "1" and values["skipped gallery"] == "1"


def test_skipped_images_are_named_once(tiny_u1652: Path, tmp_path: Path, caplog) -> None:
    """The metrics only counted the images --on-bad-image skip left out: a user could not
    tell which to fix. They are named once per folder, though each condition reads it."""
    bad = tiny_u1652 / "test" / "query_drone" / "0101" / "image-98.jpeg"
    bad.write_bytes(b"not an image")
    with caplog.at_level("WARNING", logger="mcgf.evaluation.university"):
        evaluate(tiny_u1652, tmp_path / "o", "--directions", "d2s", "--on-bad-image", "skip",
                 "--weather", "fog,rain")
    said = [r.getMessage() for r in caplog.records if r.name == "mcgf.evaluation.university"]
    assert said == [f"{bad.parent.parent}: 1 unreadable image skipped (--on-bad-image skip): {bad}"]


def test_all_skipped_folder_is_a_one_line_error(tiny_u1652: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    for image in (tiny_u1652 / "test" / "query_satellite").glob("*/*"):
        image.write_bytes(b"broken")
    code = main(["evaluate", str(tiny_u1652), "--out", str(tmp_path / "o"), "--on-bad-image", "skip",
                 *COMMON])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "none of the 4 images of" in err and "query_satellite" in err


def wx_folders(root: Path, wx: Path) -> Path:
    """fog: weathered query_drone only (flat layout); rain: query_drone and gallery_drone."""
    shutil.copytree(root / "test" / "query_drone", wx / "fog")
    for name in ("query_drone", "gallery_drone"):
        shutil.copytree(root / "test" / name, wx / "rain" / name)
    return wx


def test_condition_without_weathered_drone_gallery_has_no_s2d_row(
        tiny_u1652: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wx = wx_folders(tiny_u1652, tmp_path / "wx")
    capsys.readouterr()
    report = evaluate(tiny_u1652, tmp_path / "ev", "--wx-dir", str(wx), "--no-probes")
    got = rows(report)
    assert set(got) == {("fog", "drone->satellite"), ("rain", "drone->satellite"),
                        ("rain", "satellite->drone")}
    s2d_mean = next(r["metrics"] for r in report["mean"] if r["direction"] == "satellite->drone")
    assert s2d_mean["conditions"] == 1
    assert s2d_mean["R@1"] == pytest.approx(got[("rain", "satellite->drone")]["R@1"])
    assert report["weather"]["no_weathered_gallery_drone"] == ["fog"]
    printed = capsys.readouterr().out
    md = (tmp_path / "ev" / "metrics.md").read_text()
    for text in (printed, md, " ".join(report["notes"])):
        assert "satellite->drone left out for fog" in text
    assert "| fog | satellite->drone" not in printed

    # asked for explicitly while no condition has a weathered drone gallery: an error
    shutil.rmtree(wx / "rain")
    code = main(["evaluate", str(tiny_u1652), "--wx-dir", str(wx), "--directions", "s2d",
                 "--out", str(tmp_path / "e"), *COMMON])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "gallery_drone" in err


def test_partial_condition_folder_is_refused_unless_allowed(
        tiny_u1652: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wx = tmp_path / "wx"
    shutil.copytree(tiny_u1652 / "test" / "query_drone", wx / "normal")
    shutil.copytree(tiny_u1652 / "test" / "query_drone", wx / "fog")
    (wx / "fog" / "0102" / "image-02.jpeg").unlink()
    args = ["--wx-dir", str(wx), "--directions", "d2s", "--no-probes"]
    code = main(["evaluate", str(tiny_u1652), "--out", str(tmp_path / "a"), *args, *COMMON])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert str(wx / "fog") in err and "14 of the 15 images" in err
    assert not (tmp_path / "a" / "metrics.json").exists()

    report = evaluate(tiny_u1652, tmp_path / "b", *args, "--allow-partial")
    got = rows(report)
    assert got[("fog", "drone->satellite")]["partial"] == {"query_drone": {"images": 14, "of": 15}}
    assert got[("fog", "drone->satellite")]["num_queries"] == 14
    assert "partial" not in got[("normal", "drone->satellite")]
    assert report["weather"]["partial"] == {"fog": {"query_drone": {"images": 14, "of": 15}}}
    assert report["mean"][0]["metrics"]["partial_conditions"] == ["fog"]
    md = (tmp_path / "b" / "metrics.md").read_text()
    assert "| fog (partial 14/15) | drone->satellite |" in md
    assert "| mean (with partial rows: fog) |" in md
    assert "| fog (partial 14/15) |" in capsys.readouterr().out


def test_directions_follow_the_data_unless_asked_for(
        tiny_u1652: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.rmtree(tiny_u1652 / "test" / "query_satellite")
    capsys.readouterr()
    report = evaluate(tiny_u1652, tmp_path / "a")
    assert [r["direction"] for r in report["results"]] == ["drone->satellite"]
    assert report["directions"] == ["drone->satellite"]
    missing = str(tiny_u1652 / "test" / "query_satellite")
    assert report["directions_left_out"] == {"satellite->drone": [missing]}
    out = capsys.readouterr().out
    assert f"note: satellite->drone left out: {missing} missing" in out
    assert f"Note: satellite->drone left out: {missing}" in (tmp_path / "a" / "metrics.md").read_text()

    code = main(["evaluate", str(tiny_u1652), "--directions", "d2s,s2d", "--out", str(tmp_path / "b"),
                 *COMMON])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and missing in err and "satellite->drone" in err
    assert evaluate(tiny_u1652, tmp_path / "c", "--directions", "d2s")["directions_left_out"] == {}


def test_condition_folder_spelling_ids_without_zeros_is_complete(
        tiny_u1652: Path, tmp_path: Path) -> None:
    # a renderer may write class 0102 as 102: same location, so the same images and metrics
    wx = tmp_path / "wx"
    shutil.copytree(tiny_u1652 / "test" / "query_drone", wx / "normal")
    shutil.copytree(tiny_u1652 / "test" / "query_drone", wx / "fog")
    for folder in list((wx / "fog").iterdir()):
        folder.rename(folder.with_name(str(int(folder.name))))
    assert any(len(p.name) < 4 for p in (wx / "fog").iterdir())
    got = rows(evaluate(tiny_u1652, tmp_path / "ev", "--wx-dir", str(wx), "--directions", "d2s",
                        "--no-probes"))
    fog, normal = got[("fog", "drone->satellite")], got[("normal", "drone->satellite")]
    assert "partial" not in fog and fog["num_queries"] == normal["num_queries"]
    assert fog["R@1"] == normal["R@1"] and fog["AP"] == normal["AP"]


def test_prerendered_conditions_ignore_hidden_and_system_folders(tiny_u1652: Path, tmp_path: Path) -> None:
    from mcgf.evaluation.university import prerendered_conditions

    wx = tmp_path / "wx"
    shutil.copytree(tiny_u1652 / "test" / "query_drone", wx / "fog")
    # what unpacking a macOS zip or copying through Windows leaves beside the conditions
    (wx / "__MACOSX" / "fog" / "0101").mkdir(parents=True)
    (wx / "__MACOSX" / "fog" / "0101" / "._image-01.jpeg").write_bytes(b"\x00\x05\x16\x07")
    (wx / "~snow").mkdir()
    conds = prerendered_conditions(wx)
    assert [c.name for c in conds] == ["fog"]
    assert conds[0].folders["query_drone"].num_images == sum(
        1 for p in (tiny_u1652 / "test" / "query_drone").rglob("*.jpeg"))
