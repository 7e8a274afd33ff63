"""Posture analysis: pose lookup and binning on known poses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mcgf.data.layout import ImageRecord
from mcgf.evaluation.features import FeatureSet
from mcgf.reporting.posture import (
    COMPASS,
    bin_rate,
    heading_axis,
    image_index,
    index_axis,
    posture_axes,
    posture_curves,
    range_axis,
    top1_correct,
)


def test_bin_rate_counts_and_rates() -> None:
    values = np.array([0.0, 0.5, 1.0, 1.5, 2.0, np.nan, 5.0])
    correct = np.array([1, 0, 1, 1, 0, 1, 1], float)
    out = bin_rate(values, correct, np.array([0.0, 1.0, 2.0]))
    # [0, 1): 0.0, 0.5 -> 50 %; [1, 2]: 1.0, 1.5, 2.0 (last bin closed) -> 66.7 %; NaN and 5.0 out.
    assert out.counts.tolist() == [2, 3]
    assert out.rate == pytest.approx([50.0, 200 / 3])
    empty = bin_rate(np.array([0.2]), np.array([1.0]), np.array([0.0, 1.0, 2.0]))
    assert empty.rate[1] is None and empty.counts.tolist() == [1, 0]
    # Unknown correctness (unreadable query) is left out too.
    assert bin_rate(np.array([0.5, 0.5]), np.array([1.0, np.nan]), np.array([0.0, 1.0])).counts.tolist() == [1]


def test_heading_sectors_are_centred_on_the_compass_points() -> None:
    headings = np.array([0.0, 22.4, 22.6, 350.0, 90.0, 180.0, 337.6, 337.4, 359.99])
    axis = heading_axis(headings)
    out = bin_rate(axis.values, np.ones(len(headings)), axis.edges)
    counts = dict(zip(COMPASS, out.counts.tolist(), strict=True))
    assert counts == {"N": 5, "NE": 1, "E": 1, "SE": 0, "S": 1, "SW": 0, "W": 0, "NW": 1}


def test_range_and_index_axes() -> None:
    axis = range_axis("altitude", "alt", np.array([85.0, 150.0, 100.0]), bins=5)
    assert axis.edges[0] == 85.0 and axis.edges[-1] == 150.0 and len(axis.bin_labels) == 5
    idx = index_axis(np.arange(1, 55, dtype=float), bins=6)
    assert idx.bin_labels == ("01-09", "10-18", "19-27", "28-36", "37-45", "46-54")
    counts = bin_rate(idx.values, np.ones(54), idx.edges).counts
    assert counts.tolist() == [9] * 6
    assert index_axis(np.array([1.0, 2.0, 3.0]), bins=6).bin_labels == ("01", "02", "03")


def rec(cls: str, name: str, label: int | None = None) -> ImageRecord:
    return ImageRecord(Path("/d") / cls / name, int(cls) if label is None else label, "drone")


def test_synthetic_poses_are_matched_by_location_and_file(tmp_path: Path) -> None:
    meta = {"locations": {
        "0001": {"drone": [{"file": "image-01.jpeg", "pose": {"heading_deg": 10.0, "altitude_m": 150.0, "distance_m": 100.0}},
                           {"file": "image-02.jpeg", "pose": {"heading_deg": 100.0, "altitude_m": 90.0, "distance_m": 120.0}}]},
        "0002": {"drone": [{"file": "image-01.jpeg", "pose": {"heading_deg": 190.0, "altitude_m": 120.0, "distance_m": 110.0}}]},
    }}
    root = tmp_path / "University-Release"
    root.mkdir()
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    records = [rec("0002", "image-01.jpeg"), rec("0001", "image-02.jpeg"), rec("0001", "image-01.jpeg"),
               rec("0003", "image-01.jpeg")]
    source, axes = posture_axes(records, root)
    assert "metadata.json" in source
    by_name = {a.name: a for a in axes}
    assert set(by_name) == {"heading", "altitude", "distance"}
    np.testing.assert_allclose(by_name["altitude"].values[:3], [120.0, 90.0, 150.0])
    assert np.isnan(by_name["altitude"].values[3])  # no pose for it
    # Heading 190 -> S, 100 -> E, 10 -> N.
    heading = by_name["heading"]
    sectors = np.searchsorted(heading.edges, heading.values[:3], side="right") - 1
    assert [COMPASS[s] for s in sectors] == ["S", "E", "N"]
    # Per-query correctness lands in the right bins, and the weather mean averages conditions.
    clean = np.array([1.0, 0.0, 1.0, 1.0])
    weather = np.array([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
    curves = {c.axis.name: c for c in posture_curves(axes, {"clean": clean, "mean": weather})}
    h = curves["heading"]
    assert h.series["clean"][COMPASS.index("S")] == 100.0
    assert h.series["clean"][COMPASS.index("E")] == 0.0
    assert h.series["mean"][COMPASS.index("N")] == 50.0
    assert h.counts[COMPASS.index("N")] == 1


def test_university1652_falls_back_to_the_image_index(tmp_path: Path) -> None:
    records = [rec("0001", f"image-{i:02d}.jpeg") for i in (1, 9, 10, 54)]
    assert [image_index(r) for r in records] == [1.0, 9.0, 10.0, 54.0]
    source, axes = posture_axes(records, tmp_path)
    assert "image index" in source and [a.name for a in axes] == ["index"]
    assert bin_rate(axes[0].values, np.ones(4), axes[0].edges).counts.tolist() == [2, 1, 0, 0, 0, 1]


def test_other_benchmarks_names_are_not_read_as_the_orbit_index(tmp_path: Path) -> None:
    """DenseUAV's H80/H90/H100 name heights (rising, not a descending orbit) and SUES-200
    numbers its views from 0: without metadata.json neither gets a pose axis."""
    records = [rec("0001", n) for n in ("H80.JPG", "H90.JPG", "H100.JPG")]
    records += [rec("0002", "0.jpg"), rec("0002", "49.jpg")]
    assert all(np.isnan(image_index(r)) for r in records)
    source, axes = posture_axes(records, tmp_path)
    assert axes == [] and source.startswith("no pose known")


def test_top1_correct_is_the_evaluations_r1() -> None:
    """Unreadable queries are unknown; a junk gallery item ranked first does not count
    (the evaluation leaves junk out), so the mean is the evaluation's R@1."""
    eye = np.eye(3, dtype=np.float32)
    query = FeatureSet(eye, np.array([True, True, False]))
    # Gallery: junk (-1) identical to query 0, then the true tile of query 0 (close), a tile
    # of location 7 identical to query 1, and the true tile of query 1 (far).
    g = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0.2, 1]], np.float32)
    gallery = FeatureSet(g, np.ones(4, bool))
    out = top1_correct(query, np.array([1, 2, 3]), gallery, np.array([-1, 1, 7, 2]))
    assert out[:2].tolist() == [1.0, 0.0] and np.isnan(out[2])
