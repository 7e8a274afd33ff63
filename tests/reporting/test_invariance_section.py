"""The weather-invariance charts of the report, with and without the metrics.json section."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from mcgf.reporting.sections import invariance_charts, metrics_section
from mcgf.reporting.sources import MetricsFile
from mcgf.reporting.svg import bar_chart, bar_frame

SECTION: dict[str, Any] = {
    "folder": "query_drone", "images": 15, "baseline": "…", "normalised": "…", "notes": [],
    "per_condition": [
        {"condition": "normal", "cosine": 1.0, "cosine_std": 0.0, "baseline": 0.1, "normalised": 1.0,
         "images": 15, "same_as_clean": True, "probe_recall": 20.0},
        {"condition": "fog", "cosine": 0.6, "cosine_std": 0.1, "baseline": 0.05, "normalised": 0.58,
         "images": 15, "same_as_clean": False, "probe_recall": 80.0},
    ],
    "probe": {"accuracy": 50.0, "accuracy_std": 4.0, "fold_accuracies": [46.0, 54.0], "chance": 50.0,
              "folds": 2, "n": 30, "images": 15, "groups": 5, "grouping": "location", "seed": 0,
              "l2": 0.001, "max_iter": 100, "conditions": ["normal", "fog"]},
}


def metrics_file(section: Any = None) -> MetricsFile:
    report: dict[str, Any] = {"protocol": "university-wx", "embedder": "t", "results": [
        {"condition": c, "direction": "drone->satellite", "metrics": {"R@1": 10.0, "AP": 12.0}}
        for c in ("normal", "fog")]}
    if section is not None:
        report["invariance"] = section
    return MetricsFile(Path("eval/metrics.json"), report)


def bars(svg: str) -> dict[tuple[str, str], float]:
    return {(s, c): float(v) for s, c, v in re.findall(
        r'data-series="([^"]+)" data-category="([^"]+)" data-value="([^"]+)"', svg)}


def test_charts_show_the_cosines_and_the_probe_against_chance() -> None:
    cos_svg, probe_svg = invariance_charts(metrics_file(SECTION))
    assert bars(cos_svg) == {("clean–weathered", "normal"): 1.0, ("clean–weathered", "fog"): 0.6,
                             ("other locations", "normal"): 0.1, ("other locations", "fog"): 0.05}
    assert bars(probe_svg) == {("probe", "normal"): 20.0, ("probe", "fog"): 80.0, ("probe", "all"): 50.0}
    line = re.search(r'<line class="reference"[^>]*y1="([\d.]+)"[^>]*data-value="([^"]+)"', probe_svg)
    assert line is not None and float(line.group(2)) == 50.0
    frame = bar_frame(["probe"], width=560, height=250, y_max=100.0)
    assert float(line.group(1)) == pytest.approx(frame.y(50.0), abs=0.01)
    assert "chance 50 %" in probe_svg and "50.0 ± 4.0 %" in probe_svg


def test_section_renders_and_older_files_render_without_it() -> None:
    with_it = "".join(metrics_section([metrics_file(SECTION)]))
    assert "Weather invariance of query_drone embeddings" in with_it
    assert with_it.count("<svg") == 3  # R@1/AP bars, cosine bars, probe bars
    without = "".join(metrics_section([metrics_file()]))
    assert "Weather invariance" not in without and without.count("<svg") == 1
    assert invariance_charts(metrics_file()) == []


def test_partial_or_odd_sections_do_not_break_the_page() -> None:
    no_probe = copy.deepcopy(SECTION)
    no_probe["probe"] = None
    no_probe["notes"] = ["condition probe skipped: it needs at least two conditions"]
    for row in no_probe["per_condition"]:
        row.pop("probe_recall")
    body = "".join(metrics_section([metrics_file(no_probe)]))
    assert body.count("<svg") == 2 and "condition probe skipped" in body
    missing_values = copy.deepcopy(SECTION)
    missing_values["per_condition"][1]["baseline"] = None
    missing_values["probe"]["accuracy_std"] = None
    assert len(invariance_charts(metrics_file(missing_values))) == 2
    for odd in ("text", [], {"per_condition": "x"}):
        assert "Weather invariance" not in "".join(metrics_section([metrics_file(odd)]))


def test_reference_lines_of_bar_charts() -> None:
    svg = bar_chart(["a", "b"], {"s": [1.0, 2.0]}, y_max=4.0, references=[(1.0, "chance <1>")])
    frame = bar_frame(["s"], width=640, height=260, y_max=4.0)
    line = re.search(r'<line class="reference" x1="([\d.]+)" y1="([\d.]+)" x2="([\d.]+)"', svg)
    assert line is not None and float(line.group(2)) == pytest.approx(frame.y(1.0), abs=0.01)
    assert float(line.group(1)) == frame.left and float(line.group(3)) == frame.left + frame.width
    assert "chance &lt;1&gt;" in svg
    assert 'class="reference"' not in bar_chart(["a"], {"s": [1.0]})


def test_report_of_a_run_with_the_section(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    from mcgf.reporting import build_report

    src, _ = tiny_run
    run = tmp_path / "run"
    shutil.copytree(src, run)
    path = run / "eval" / "metrics.json"
    report = json.loads(path.read_text())
    report["invariance"] = SECTION
    path.write_text(json.dumps(report))
    index = build_report(run, queries=0, heatmaps=False, device="cpu", progress=False, restore_steps=1,
                         tile=48, threads=1, cache_dir=tmp_path / "cache")
    text = index.read_text(encoding="utf-8")
    assert "Weather invariance of query_drone embeddings" in text
    assert 'class="reference"' in text and 'data-category="all" data-value="50"' in text
