"""``mcgf evaluate`` on incomplete data: unreadable images, missing folders, partial
pre-rendered conditions."""

from __future__ import annotations

import json
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


def test_all_skipped_folder_is_a_one_line_error(tiny_u1652: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    for image in (tiny_u1652 / "test" / "query_satellite").glob("*/*"):
        image.write_bytes(b"broken")
    code = main(["evaluate", str(tiny_u1652), "--out", str(tmp_path / "o"), "--on-bad-image", "skip",
                 *COMMON])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "none of the 4 images of" in err and "query_satellite" in err
