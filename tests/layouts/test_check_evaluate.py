"""Synthetic SUES-200 and DenseUAV trees: written by ``mcgf synth --layout``, accepted by
``mcgf data check``, scored by ``mcgf evaluate`` (training-free ``thumbnail`` embedder)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mcgf.cli.main import main
from mcgf.data.check import check_dataset
from mcgf.data.layouts import find_dataset

D2S, S2D = "drone->satellite", "satellite->drone"


def evaluate(data: Path, out: Path, *extra: str) -> dict:
    assert main(["evaluate", str(data), "--out", str(out), "--quiet", "--workers", "0",
                 "--cache-dir", "none", *extra]) == 0
    return json.loads((out / "metrics.json").read_text())


def test_synth_sues_tree_has_the_benchmark_layout(sues_tree: Path) -> None:
    root = sues_tree / "SUES-200"
    for h in ("150", "200", "250", "300"):
        assert sorted(p.name for p in (root / "Training" / h).iterdir()) == ["drone", "satellite"]
        assert sorted(p.name for p in (root / "Testing" / h).iterdir()) == [
            "gallery_drone", "gallery_satellite", "query_drone", "query_satellite"]
        assert sorted(p.name for p in (root / "Training" / h / "drone" / "0001").iterdir()) == [
            f"{h}-01.jpeg", f"{h}-02.jpeg"]
    # Test locations 0007..0010; the gallery holds every location, as the split script makes it.
    assert sorted(p.name for p in (root / "Testing" / "150" / "query_drone").iterdir()) == [
        "0007", "0008", "0009", "0010"]
    assert len(list((root / "Testing" / "300" / "gallery_satellite").iterdir())) == 10
    meta = json.loads((sues_tree / "metadata.json").read_text())
    poses = {v["height"]: v["pose"] for v in meta["locations"]["0001"]["drone"] if v["view"] == 1}
    alts = [poses[h]["altitude_m"] for h in ("150", "200", "250", "300")]
    assert alts == sorted(alts) and alts[0] < alts[-1] - 40  # higher flights fly higher


def test_synth_dense_tree_has_the_benchmark_layout(dense_tree: Path) -> None:
    root = dense_tree / "DenseUAV"
    assert sorted(p.name for p in (root / "train" / "drone" / "000001").iterdir()) == [
        "H100.JPG", "H80.JPG", "H90.JPG"]
    assert sorted(p.name for p in (root / "train" / "satellite" / "000001").iterdir()) == [
        "H100.tif", "H80.tif", "H90.tif"]
    assert len(list((root / "test" / "gallery_satellite").iterdir())) == 10
    lines = (root / "Dense_GPS_ALL.txt").read_text().splitlines()
    assert len(lines) == 10 and lines[0] == "train/satellite/000001/H80.tif E120.35000000 N30.32000000 80"
    assert (root / "Dense_GPS_train.txt").read_text().count("\n") == 6


def test_data_check_accepts_both_trees(sues_tree: Path, dense_tree: Path, capsys) -> None:
    assert main(["data", "check", str(sues_tree), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "SUES-200 layout (sues200)" in out and "OK: the dataset can be used" in out
    assert "SUES-200/Testing/250: query_drone -> gallery_satellite: 4 query locations, 10 gallery" in out
    rep = check_dataset(dense_tree, decode=False)
    assert rep.ok and any("10 locations with coordinates in Dense_GPS_ALL.txt" in n for n in rep.notes)
    counts = {(f.split, f.name): f.images for f in rep.folders}
    assert counts[("DenseUAV/train", "satellite")] == 18  # .tif tiles are read
    assert counts[("DenseUAV/test", "query_drone")] == 12


def test_data_check_with_a_layout_not_there_is_an_error(sues_tree: Path, dense_tree: Path,
                                                         tmp_path: Path, capsys) -> None:
    # a 160k-style split beside the folder must not pass for the layout asked for
    flat = tmp_path / "both"
    shutil.copytree(sues_tree / "SUES-200", flat / "SUES-200")
    (flat / "query_drone_name.txt").write_text("a\n")
    (flat / "query_drone").mkdir()
    shutil.copy(next((sues_tree / "SUES-200").rglob("*.jpg")), flat / "query_drone" / "a.jpg")
    assert main(["data", "check", str(flat), "--layout", "denseuav", "--no-decode"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no DenseUAV tree" in err and "--layout denseuav" in err
    assert main(["data", "check", str(flat), "--layout", "sues200", "--no-decode"]) == 0


def test_data_check_flags_what_each_layout_needs(sues_tree: Path, dense_tree: Path, tmp_path: Path) -> None:
    sues = shutil.copytree(sues_tree / "SUES-200", tmp_path / "sues")
    shutil.rmtree(sues / "Testing" / "250")
    shutil.rmtree(sues / "Training" / "300" / "satellite")
    rep = check_dataset(sues, decode=False)
    assert any("no folder for height 250 (SUES-200 has 150, 200, 250, 300)" in w for w in rep.warnings)
    assert any("Training/300: needs both drone/ and satellite/" in e for e in rep.errors)
    dense = shutil.copytree(dense_tree / "DenseUAV", tmp_path / "dense")
    for name in ("Dense_GPS_ALL.txt", "Dense_GPS_train.txt", "Dense_GPS_test.txt"):
        (dense / name).unlink()
    rep = check_dataset(dense, decode=False)
    assert rep.ok and any("not SDM@K" in w for w in rep.warnings)
    assert find_dataset(dense).name == "denseuav"  # still told apart by its image names


def test_evaluate_sues_gives_a_row_per_height_and_direction_and_the_mean(
        sues_tree: Path, tmp_path: Path, capsys) -> None:
    report = evaluate(sues_tree, tmp_path / "ev")
    assert report["protocol"] == "sues-200" and report["layout"] == "sues200"
    assert report["subset_label"] == "height"
    rows = report["results"]
    assert [(r["subset"], r["direction"]) for r in rows] == [
        (h, d) for h in ("150", "200", "250", "300") for d in (D2S, S2D)]
    assert all(r["metrics"]["num_queries"] == (8 if r["direction"] == D2S else 4) for r in rows)
    assert all(r["metrics"]["gallery_size"] == (10 if r["direction"] == D2S else 20) for r in rows)
    means = {r["direction"]: r for r in report["mean"]}
    assert set(means) == {D2S, S2D} and all(r["subset"] == "mean" for r in report["mean"])
    for d in (D2S, S2D):
        for key in ("R@1", "AP"):
            want = np.mean([r["metrics"][key] for r in rows if r["direction"] == d])
            assert means[d]["metrics"][key] == pytest.approx(want)
    table = capsys.readouterr().out
    assert table.startswith("| height | condition | direction | R@1 |")
    assert "| mean | clean | drone->satellite |" in table and "SDM@" not in table


def test_evaluate_selected_heights_and_weather(sues_tree: Path, tmp_path: Path) -> None:
    report = evaluate(sues_tree, tmp_path / "ev", "--layout", "sues200:300", "--weather", "fog",
                      "--directions", "d2s", "--no-probes")
    assert [(r["subset"], r["condition"]) for r in report["results"]] == [("300", "fog")]
    assert [(r["subset"], r["condition"]) for r in report["mean"]] == [("300", "mean")]


def test_weather_render_of_a_dataset_feeds_wx_dir(sues_tree: Path, tmp_path: Path) -> None:
    wx = tmp_path / "wx"
    assert main(["weather", "render", str(sues_tree), str(wx), "--protocol", "university-wx",
                 "--conditions", "fog", "--workers", "1"]) == 0
    assert sorted(p.name for p in (wx / "fog").iterdir()) == ["150", "200", "250", "300"]
    assert len(list((wx / "fog" / "200" / "query_drone" / "0008").iterdir())) == 2
    shutil.rmtree(wx / "fog" / "300")
    report = evaluate(sues_tree, tmp_path / "ev", "--wx-dir", str(wx), "--no-probes")
    assert [(r["subset"], r["direction"]) for r in report["results"]] == [
        (h, D2S) for h in ("150", "200", "250")]
    assert any("drone->satellite left out for height 300" in n for n in report["notes"])


def test_evaluate_denseuav_adds_sdm(dense_tree: Path, tmp_path: Path, capsys) -> None:
    report = evaluate(dense_tree, tmp_path / "ev")
    assert report["protocol"] == "denseuav" and "mean" not in report
    rows = {r["direction"]: r["metrics"] for r in report["results"]}
    assert set(rows) == {D2S, S2D} and "subset" not in report["results"][0]
    for m in rows.values():
        assert m["num_queries"] == 12 and m["gallery_size"] == 30
        # A right top-1 scores 1 and a wrong one near 0: SDM@1 is at least R@1, at most 100.
        assert m["R@1"] <= m["SDM@1"] <= 100.0
        assert m["SDM@10"] > 0.0  # grid neighbours ~20 m away count for something
    assert "| SDM@1 | SDM@3 | SDM@5 | SDM@10 |" in capsys.readouterr().out
    md = (tmp_path / "ev" / "metrics.md").read_text()
    assert "SDM@K (DenseUAV)" in md


def test_denseuav_sdm_needs_the_coordinates(dense_tree: Path, tmp_path: Path) -> None:
    dense = shutil.copytree(dense_tree / "DenseUAV", tmp_path / "dense")
    for name in ("Dense_GPS_ALL.txt", "Dense_GPS_train.txt", "Dense_GPS_test.txt"):
        (dense / name).unlink()
    report = evaluate(dense, tmp_path / "ev", "--directions", "d2s")
    assert not any(k.startswith("SDM@") for k in report["results"][0]["metrics"])
    assert any("SDM@K not computed" in n and "Dense_GPS_ALL.txt" in n for n in report["notes"])
    # The same ranking with the coordinates back gives the same recall.
    with_gps = evaluate(dense_tree, tmp_path / "ev2", "--directions", "d2s")
    assert with_gps["results"][0]["metrics"]["R@1"] == report["results"][0]["metrics"]["R@1"]


def test_sdm_of_the_layout_equals_a_per_query_reference(dense_tree: Path) -> None:
    from mcgf.retrieval.geo import SDM_KS, sdm_at_k

    ds = find_dataset(dense_tree)
    lonlat = ds.coordinates().lonlat
    labels = np.array(sorted(lonlat))
    rng = np.random.default_rng(0)
    ql = rng.choice(labels, 7)
    top = rng.choice(labels, (7, 10))
    valid = np.array([True, True, False, True, True, True, True])
    got = ds.extra_metrics("drone->satellite", ql, valid, top)
    q = np.array([lonlat[int(c)] for c in ql[valid]])
    t = np.array([[lonlat[int(c)] for c in row] for row in top[valid]])
    want = sdm_at_k(q, t, SDM_KS)
    for k in SDM_KS:  # the unreadable query counts as 0
        assert got[f"SDM@{k}"] == pytest.approx(100 * want[k].sum() / 7, rel=1e-12)
    assert got["SDM@1"] > 0
