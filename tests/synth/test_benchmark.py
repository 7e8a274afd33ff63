"""The writer: layout, loaders, determinism, ground truth, metadata, weather hook."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mcgf.data.layout import (
    aligned_classes,
    load_flat_gallery,
    load_flat_queries,
    load_university1652,
)
from mcgf.errors import UserError
from mcgf.synth import SynthConfig, SynthSummary, format_summary, generate_benchmark, plan_jobs
from mcgf.synth.names import ALPHABET
from tests.synth.conftest import TINY


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_identical_for_any_worker_count_and_seed_sensitive(tiny: Path, tmp_path: Path) -> None:
    generate_benchmark(tmp_path / "two", TINY, workers=2, progress=False)
    a, b = _tree(tiny), _tree(tmp_path / "two")
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    other = replace(TINY, seed=TINY.seed + 1, train=1, test=1, distractors=0, extra_distractors=0)
    generate_benchmark(tmp_path / "other", other, workers=1, progress=False)
    c = _tree(tmp_path / "other")
    sat = "University-Release/train/satellite/0001/0001.jpg"
    assert c[sat] != a[sat]


def test_university1652_layout_counts_and_labels(tiny: Path) -> None:
    data = load_university1652(tiny / "University-Release")
    t = TINY
    train_ids = [f"{i:04d}" for i in range(1, t.train + 1)]
    test_ids = [f"{i:04d}" for i in range(t.train + 1, t.train + t.test + 1)]
    dis_ids = [f"{i:04d}" for i in range(t.train + t.test + 1, t.train + t.test + t.distractors + 1)]
    assert list(data.train["drone"].classes) == train_ids
    assert list(data.train["satellite"].classes) == train_ids
    assert data.train["drone"].num_images == t.train * t.views
    assert aligned_classes(data.train["drone"], data.train["satellite"]) == train_ids
    assert list(data.test["query_drone"].classes) == test_ids
    assert list(data.test["query_satellite"].classes) == test_ids
    assert list(data.test["gallery_satellite"].classes) == test_ids + dis_ids
    assert list(data.test["gallery_drone"].classes) == test_ids + dis_ids
    assert data.test["gallery_drone"].num_images == (t.test + t.distractors) * t.views
    names = [p.name for p in data.train["drone"].classes["0001"]]
    assert names == [f"image-{v:02d}.jpeg" for v in range(1, t.views + 1)]
    assert [p.name for p in data.train["satellite"].classes["0002"]] == ["0002.jpg"]
    with Image.open(data.test["query_drone"].classes[test_ids[0]][0]) as im:
        assert im.size == (t.size, t.size) and im.mode == "RGB"
    # query_drone and gallery_drone hold the same pictures of a test location.
    q = data.test["query_drone"].classes[test_ids[1]]
    g = data.test["gallery_drone"].classes[test_ids[1]]
    assert [p.read_bytes() for p in q] == [p.read_bytes() for p in g]


def test_160k_layout_ground_truth_and_metadata(tiny: Path) -> None:
    wx = tiny / "University-160k-WX"
    queries = load_flat_queries(wx / "query_drone_160k_wx", wx / "query_drone_name.txt")
    listed = (wx / "query_drone_name.txt").read_text().splitlines()
    assert queries.names == listed and [p.name for p in queries.paths] == listed
    assert len(listed) == TINY.test * TINY.views
    gallery = load_flat_gallery(wx / "gallery_satellite_160k")
    assert len(gallery.paths) == TINY.test + TINY.distractors + TINY.extra_distractors
    assert all(p.suffix == ".webp" for p in gallery.paths)
    stems = [Path(n).stem for n in listed] + gallery.stems
    assert all(len(s) == 15 and set(s) <= set(ALPHABET) for s in stems)
    assert len({s.lower() for s in stems}) == len(stems)
    # The query order is shuffled, not grouped by location.
    meta = json.loads((tiny / "metadata.json").read_text())
    locs = [meta["queries_160k"][n]["location"] for n in listed]
    assert locs != sorted(locs)

    truth = [line.split("\t") for line in (tiny / "ground_truth_160k.txt").read_text().splitlines()]
    assert [q for q, _ in truth] == listed
    for qname, gstem in truth:
        q = meta["queries_160k"][qname]
        assert meta["gallery_160k"][f"{gstem}.webp"]["location"] == q["location"]
        assert q["condition"] == "normal"
        # A clean 160k query is the very same file as its University-Release view.
        src = tiny / "University-Release/test/query_drone" / q["source"]
        assert src.read_bytes() == (wx / "query_drone_160k_wx" / qname).read_bytes()
        # ...and its satellite is the decoded gallery tile.
        sat = np.asarray(Image.open(tiny / f"University-Release/test/gallery_satellite/{q['location']}/{q['location']}.jpg"), int)
        webp = np.asarray(Image.open(wx / "gallery_satellite_160k" / f"{gstem}.webp").convert("RGB"), int)
        assert np.abs(sat - webp).mean() < 6

    assert meta["generator"] == "mcgf synth" and meta["seed"] == TINY.seed
    assert meta["config"]["views"] == TINY.views
    assert set(meta["splits"]["extra"]) == {"0009", "0010"}
    first = meta["locations"]["0001"]
    assert [v["file"] for v in first["drone"]] == ["image-01.jpeg", "image-02.jpeg", "image-03.jpeg"]
    pose = first["drone"][0]["pose"]
    assert {"heading_deg", "altitude_m", "distance_m", "pitch_deg", "fov_deg"} <= set(pose)
    alts = [v["pose"]["altitude_m"] for v in first["drone"]]
    assert alts == sorted(alts, reverse=True)
    assert "exposure" in first["drone"][0]["lighting"]
    assert meta["locations"]["0010"]["drone"] == []


def test_plan_is_deterministic_and_ids_are_disjoint() -> None:
    jobs, order = plan_jobs(TINY)
    jobs2, order2 = plan_jobs(TINY)
    assert jobs == jobs2 and order == order2
    roles = [j.role for j in jobs]
    assert roles == ["train"] * 3 + ["test"] * 3 + ["distractor"] * 2 + ["extra"] * 2
    assert [j.id for j in jobs] == [f"{i:04d}" for i in range(1, 11)]
    assert sorted(order) == sorted(n for j in jobs for n in j.query_names)


def test_query_transform_only_touches_160k_queries(tiny: Path, tmp_path: Path) -> None:
    keys: list[str] = []

    def invert(img: np.ndarray, key: str) -> tuple[np.ndarray, str]:
        keys.append(key)
        return 255 - img, "inverted"

    cfg = replace(TINY, train=1, test=1, distractors=0, extra_distractors=0, seed=TINY.seed)
    out = tmp_path / "wx"
    summary = generate_benchmark(out, cfg, workers=1, progress=False, query_transform=invert)
    assert summary.conditions == {"inverted": cfg.views}
    assert sorted(keys) == [f"0002/image-{v:02d}.jpeg" for v in range(1, cfg.views + 1)]
    meta = json.loads((out / "metadata.json").read_text())
    for name, q in meta["queries_160k"].items():
        assert q["condition"] == "inverted"
        clean = np.asarray(Image.open(out / "University-Release/test/query_drone" / q["source"]), int)
        wx = np.asarray(Image.open(out / "University-160k-WX/query_drone_160k_wx" / name), int)
        assert np.abs((255 - clean) - wx).mean() < 4
    assert f"inverted {cfg.views}" in format_summary(summary)


def test_failure_leaves_nothing_behind(tmp_path: Path) -> None:
    calls = []

    def broken(img: np.ndarray, key: str) -> tuple[np.ndarray, str]:
        calls.append(key)
        if len(calls) > 1:
            raise RuntimeError("weather engine crashed")
        return img, "normal"

    cfg = replace(TINY, train=1, test=1, distractors=0, extra_distractors=0)
    with pytest.raises(RuntimeError):
        generate_benchmark(tmp_path / "out", cfg, workers=1, progress=False, query_transform=broken)
    assert list(tmp_path.iterdir()) == []

    def wrong(img: np.ndarray, key: str) -> tuple[np.ndarray, str]:
        return img.astype(np.float32), "normal"

    with pytest.raises(TypeError, match="uint8"):
        generate_benchmark(tmp_path / "out", cfg, workers=1, progress=False, query_transform=wrong)
    assert list(tmp_path.iterdir()) == []


def test_output_folder_rules(tmp_path: Path) -> None:
    cfg = SynthConfig(train=1, test=1, distractors=0, extra_distractors=0, views=1, size=64)
    out = tmp_path / "out"
    generate_benchmark(out, cfg, workers=1, progress=False)
    first = _tree(out)
    with pytest.raises(UserError, match=r"not empty.*--force"):
        generate_benchmark(out, cfg, workers=1, progress=False)
    generate_benchmark(out, replace(cfg, seed=5), workers=1, progress=False, overwrite=True)
    assert _tree(out) != first and json.loads((out / "metadata.json").read_text())["seed"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(UserError, match="not written by mcgf synth"):
        generate_benchmark(foreign, cfg, workers=1, progress=False, overwrite=True)
    assert (foreign / "holiday.jpg").read_bytes() == b"x"
    (tmp_path / "empty").mkdir()
    generate_benchmark(tmp_path / "empty", cfg, workers=1, progress=False)
    assert (tmp_path / "empty" / "metadata.json").is_file()


@pytest.mark.parametrize(
    ("change", "option"),
    [({"size": 32}, "--size"), ({"size": 1024}, "--size"), ({"views": 0}, "--views"),
     ({"views": 55}, "--views"), ({"train": 0}, "--train"), ({"test": 0}, "--test"),
     ({"distractors": -1}, "--distractors"), ({"extra_distractors": -2}, "--extra-distractors"),
     ({"seed": -1}, "--seed"), ({"train": 9000, "test": 1000}, "4 digits")],
)
def test_config_validation_names_the_option(change: dict[str, int], option: str) -> None:
    with pytest.raises(UserError, match=option):
        replace(SynthConfig(), **change).validate()


def test_summary_counts_match_files(tiny_run: tuple[Path, SynthSummary]) -> None:
    out, summary = tiny_run
    assert summary.out_dir == out and summary.seconds > 0
    for folder, count in summary.counts.items():
        assert len([p for p in (out / folder).rglob("*") if p.is_file()]) == count, folder
    t = TINY
    assert summary.counts["University-Release/test/gallery_drone"] == (t.test + t.distractors) * t.views
    assert summary.conditions == {"normal": t.test * t.views}
    text = format_summary(summary)
    assert str(out) in text and "gallery_satellite_160k" in text
