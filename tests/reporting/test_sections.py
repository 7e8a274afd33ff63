"""The metrics tables: rows as metrics.json has them, with what marks them."""

from __future__ import annotations

from pathlib import Path

from mcgf.reporting.sections import metrics_section, metrics_table
from mcgf.reporting.sources import MetricsFile


def _row(condition: str, r1: float, **extra: object) -> dict:
    return {"condition": condition, "direction": "drone->satellite",
            "metrics": {"R@1": r1, "R@5": 50.0, "R@10": 60.0, "R@top1%": 40.0, "AP": r1 + 1,
                        "num_queries": 24, "gallery_size": 8, **extra}}


def _prerendered(tmp_path: Path) -> MetricsFile:
    partial = {"query_drone": {"images": 20, "of": 24}}
    return MetricsFile(tmp_path / "metrics.json", {
        "results": [_row("fog", 12.5), _row("rain", 15.0, partial=partial)],
        "mean": [{"condition": "mean", "direction": "drone->satellite",
                  "metrics": {"conditions": 2, "R@1": 13.75, "partial_conditions": ["rain"]}}],
        "notes": ["rain: scored on part of its pre-rendered images (query_drone 20/24)"],
    })


def test_rows_scored_on_part_of_a_prerendered_folder_say_so(tmp_path: Path) -> None:
    table = metrics_table(_prerendered(tmp_path))
    assert "<td>fog</td>" in table
    assert "<td>rain (partial query_drone 20/24)</td>" in table
    assert "<td>mean (with partial rows: rain)</td>" in table
    assert '<td class="num">15.00</td>' in table and '<td class="num">13.75</td>' in table


def test_the_evaluation_notes_are_shown(tmp_path: Path) -> None:
    body = "".join(metrics_section([_prerendered(tmp_path)]))
    assert "rain: scored on part of its pre-rendered images (query_drone 20/24)" in body


def test_the_size_line_gives_the_range_when_rows_differ(tmp_path: Path) -> None:
    """SUES-200's heights have galleries of their own size: the line under the table
    said only the first height's."""
    rows = [{**_row("fog", 10.0, num_queries=2000, gallery_size=200), "subset": "150"},
            {**_row("fog", 20.0, num_queries=1800, gallery_size=200, queries_without_match=3),
             "subset": "300"}]
    table = metrics_table(MetricsFile(tmp_path / "metrics.json", {"results": rows, "mean": []}))
    assert "drone-&gt;satellite: 1800–2000 queries, gallery 200, 0–3 without a true match." in table
    one = metrics_table(MetricsFile(tmp_path / "metrics.json", {"results": rows[:1], "mean": []}))
    assert "drone-&gt;satellite: 2000 queries, gallery 200, 0 without a true match." in one
