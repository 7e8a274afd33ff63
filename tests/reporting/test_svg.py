"""Inline SVG charts: bar heights, curves and gaps, axis helpers."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from mcgf.reporting.svg import bar_chart, bar_frame, line_chart, nice_ceiling, round_ticks

NS = "{http://www.w3.org/2000/svg}"


def test_bar_heights_are_proportional_to_values() -> None:
    svg = bar_chart(["normal", "fog", "rain"], {"R@1": [80.0, 40.0, None], "AP": [90.0, 10.0, 0.0]},
                    y_max=100.0, width=600, height=260)
    root = ET.fromstring(svg)
    bars = [r for r in root.iter(f"{NS}rect") if r.get("class") == "bar"]
    frame = bar_frame(["R@1", "AP"], width=600, height=260, y_max=100.0)
    got = {(b.get("data-series"), b.get("data-category")): float(b.get("height")) for b in bars}
    # The missing value draws no bar; the others are value/100 of the plotting height.
    assert set(got) == {("R@1", "normal"), ("R@1", "fog"), ("AP", "normal"), ("AP", "fog"), ("AP", "rain")}
    for (series, cat), h in got.items():
        value = {"R@1": {"normal": 80, "fog": 40}, "AP": {"normal": 90, "fog": 10, "rain": 0}}[series][cat]
        assert h == pytest.approx(value / 100 * frame.height, abs=0.01)
    # Bars stand on the axis: y + height is the frame's bottom.
    for b in bars:
        assert float(b.get("y")) + float(b.get("height")) == pytest.approx(frame.bottom, abs=0.01)


def test_bar_axis_defaults_to_a_round_maximum() -> None:
    svg = bar_chart(["a"], {"x": [3.7]}, width=300, height=200)
    bar = next(r for r in ET.fromstring(svg).iter(f"{NS}rect") if r.get("class") == "bar")
    frame = bar_frame(["x"], width=300, height=200, y_max=5.0)
    assert float(bar.get("height")) == pytest.approx(3.7 / 5.0 * frame.height, abs=0.01)


def test_text_is_escaped() -> None:
    svg = bar_chart(["<b>&"], {"s\"1": [1.0]}, title="a<b")
    ET.fromstring(svg)  # still well-formed XML
    assert "<b>&" not in svg


def test_line_chart_breaks_at_missing_values() -> None:
    svg = line_chart({"loss": ([1, 2, 3, 4, 5], [5.0, 4.0, None, 2.0, 1.0]),
                      "val": ([1, 2, 3, 4, 5], [None, 10.0, None, None, 30.0])},
                     y_range=(0.0, 10.0), width=400, height=200)
    root = ET.fromstring(svg)
    lines = [p for p in root.iter(f"{NS}polyline")]
    loss = [p.get("points").split() for p in lines if p.get("data-series") == "loss"]
    assert [len(p) for p in loss] == [2, 2]
    # Isolated points of "val" become dots, not lines.
    assert not [p for p in lines if p.get("data-series") == "val"]
    assert len(list(root.iter(f"{NS}circle"))) == 2
    # y maps linearly: 5 is half-way between 0 and 10, 1 is a tenth.
    ys = [float(pt.split(",")[1]) for pt in loss[0] + loss[1]]
    top, bottom = 24.0, 200 - 52.0
    assert ys[0] == pytest.approx(bottom - 0.5 * (bottom - top), abs=0.01)
    assert ys[-1] == pytest.approx(bottom - 0.1 * (bottom - top), abs=0.01)


def test_axis_helpers() -> None:
    assert [nice_ceiling(v) for v in (0.0, 3.7, 10.0, 11.0, 23.0, 0.42)] == [1.0, 5.0, 10.0, 20.0, 25.0, 0.5]
    assert round_ticks(5, 50) == [10.0, 20.0, 30.0, 40.0, 50.0]
    assert round_ticks(0, 1) == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_line_chart_axis_below_zero_has_round_ends() -> None:
    """An untrained restoration branch logs an SSIM just below 0: the value axis runs
    between round numbers around it, not from the minimum itself to min + 1."""
    svg = line_chart({"ssim": ([8], [-0.00478])}, width=400, height=200)
    labels = [t.text for t in ET.fromstring(svg).iter(f"{NS}text")
              if t.get("text-anchor") == "end"]
    assert labels == ["-0.006", "-0.004", "-0.002", "0", "0.002"]


def test_negative_bars_hang_below_a_zero_line_on_a_round_axis() -> None:
    # Mean cosines of a weak model can be below 0 (the invariance chart, y_max 1).
    svg = bar_chart(["normal", "fog"], {"cos": [1.0, -0.188], "base": [0.157, -0.193]},
                    y_max=1.0, width=560, height=250)
    root = ET.fromstring(svg)
    frame = bar_frame(["cos", "base"], width=560, height=250, y_max=1.0, y_min=-0.2)
    zero = frame.y(0.0)
    bars = {(b.get("data-series"), b.get("data-category")): b for b in root.iter(f"{NS}rect")
            if b.get("class") == "bar"}
    for (series, cat), value in {("cos", "normal"): 1.0, ("cos", "fog"): -0.188,
                                 ("base", "normal"): 0.157, ("base", "fog"): -0.193}.items():
        b = bars[(series, cat)]
        y, h = float(b.get("y")), float(b.get("height"))
        assert h == pytest.approx(abs(value) / 1.2 * frame.height, abs=0.01)
        # Positive bars end on the zero line from above, negative ones start on it.
        assert (y + h if value > 0 else y) == pytest.approx(zero, abs=0.01)
    labels = [t.text for t in root.iter(f"{NS}text") if t.get("text-anchor") == "end"
              and t.get("transform") is None]
    assert labels[:7] == ["-0.2", "0", "0.2", "0.4", "0.6", "0.8", "1"]


def test_slanted_category_labels_fit_inside_the_picture() -> None:
    import math

    cats = [f"height {h} · {c}" for h in (150, 200, 250, 300) for c in ("normal", "fog")]
    svg = bar_chart(cats, {"R@1": [10.0] * 8, "AP": [20.0] * 8}, width=560, height=250)
    root = ET.fromstring(svg)
    x0, y0, w, h = (float(v) for v in root.get("viewBox").split())
    assert (float(root.get("width")), float(root.get("height"))) == (w, h)
    assert x0 < 0 and h > 250  # room added on the left and at the bottom
    frame = bar_frame(["R@1", "AP"], width=560, height=250, y_max=20.0)
    bars = [r for r in root.iter(f"{NS}rect") if r.get("class") == "bar"]
    assert float(bars[0].get("height")) == pytest.approx(10 / 20 * frame.height, abs=0.01)
    slanted = [t for t in root.iter(f"{NS}text") if (t.get("transform") or "").startswith("rotate(-40")]
    assert len(slanted) == 8
    for t in slanted:
        length = 6.2 * len(t.text)
        x, y = float(t.get("x")), float(t.get("y"))
        assert x - length * math.cos(math.radians(40)) >= x0
        assert y + length * math.sin(math.radians(40)) <= y0 + h
