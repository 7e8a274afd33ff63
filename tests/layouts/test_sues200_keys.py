"""SUES-200 names the images of every flight height alike (``0.jpg`` ...): image keys,
which seed each image's weather, must still tell the heights apart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mcgf.data.datasets import CrossViewTrainSet
from mcgf.data.layouts import find_dataset
from mcgf.data.weather_render import plan_dataset_wx
from mcgf.weather.transform import WeatherTransform

PICTURE = np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)


def _sues_tree(root: Path) -> Path:
    """Heights 150 and 200; the same picture under the same name at both heights."""
    for h in ("150", "200"):
        for rel in (f"Training/{h}/drone/0001/0.jpg", f"Testing/{h}/query_drone/0002/0.jpg",
                    f"Testing/{h}/gallery_drone/0002/0.jpg"):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(PICTURE).save(root / rel, quality=95)
        for rel in (f"Training/{h}/satellite/0001/0001.png", f"Testing/{h}/query_satellite/0002/0002.png",
                    f"Testing/{h}/gallery_satellite/0002/0002.png"):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(PICTURE).save(root / rel)
    return root


def test_merged_training_heights_get_their_own_keys_and_weather(tmp_path: Path) -> None:
    ds = find_dataset(_sues_tree(tmp_path / "SUES-200"))
    drone, sat = ds.read_train()
    train = CrossViewTrainSet(drone, sat, drone_transform=np.asarray, satellite_transform=np.asarray)
    assert [r.key for r in train.drone_records] == ["150/0001/0.jpg", "200/0001/0.jpg"]
    assert [r.key for r in train.satellite_records] == ["150/0001/0001.png"]  # read once
    # The same picture at two heights gets two independent weather draws.
    weather = WeatherTransform("fog", seed=3)
    a, b = (weather(PICTURE, r.key)[0] for r in train.drone_records)
    assert not np.array_equal(a, b)


def test_test_keys_name_the_height_and_match_the_render(tmp_path: Path) -> None:
    ds = find_dataset(_sues_tree(tmp_path / "SUES-200"))
    keys = {}
    for ts in ds.test_sets():
        folders = ds.read_test(ts).folders
        keys[ts.name] = {role: [r.key for r in fs.records()] for role, fs in folders.items()}
    assert keys["150"]["query_drone"] == ["150/0002/0.jpg"] == keys["150"]["gallery_drone"]
    assert keys["200"]["query_drone"] == ["200/0002/0.jpg"]
    jobs = plan_dataset_wx(ds, ["fog"])
    assert [(j.relative, j.key) for j in jobs] == [("fog/150/query_drone/0002/0.jpg", "150/0002/0.jpg"),
                                                   ("fog/200/query_drone/0002/0.jpg", "200/0002/0.jpg")]


def test_report_takes_class_and_file_for_a_height(tmp_path: Path) -> None:
    from mcgf.reporting.build import pick_queries

    ds = find_dataset(_sues_tree(tmp_path / "SUES-200"))
    records = ds.read_test(ds.test_sets()[1]).folders["query_drone"].records()
    assert pick_queries(records, ["0002/0.jpg"], 0, set()) == records
    assert pick_queries(records, ["200/0002/0.jpg"], 0, set()) == records


def test_report_finds_synthetic_poses_of_a_height(tmp_path: Path) -> None:
    import json

    from mcgf.reporting.posture import posture_axes

    root = _sues_tree(tmp_path / "SUES-200")
    pose = {"heading_deg": 90.0, "altitude_m": 150.0, "distance_m": 80.0}
    meta = {"locations": {"0002": {"drone": [{"file": "0.jpg", "pose": pose}]}}}
    (root / "metadata.json").write_text(json.dumps(meta))
    ds = find_dataset(root)
    records = ds.read_test(ds.test_sets()[0]).folders["query_drone"].records()
    source, axes = posture_axes(records, root)
    assert source.startswith("poses from") and [a.name for a in axes][:2] == ["heading", "altitude"]
