"""The dataset-layout registry: names, detection, selection, and what each layout reads."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mcgf.data.layout import ClassFolderSet
from mcgf.data.layouts import (
    find_dataset,
    get_layout,
    layout_names,
    merge_class_folders,
    parse_layout,
)
from mcgf.data.layouts.denseuav import parse_gps_line, read_coordinates
from mcgf.errors import UserError
from mcgf.retrieval.geo import ranked_top, sdm_at_k


def image(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)
    return path


def test_registered_names_in_listing_order() -> None:
    assert layout_names()[:3] == ["university1652", "sues200", "denseuav"]
    assert get_layout("sues200").title == "SUES-200"
    with pytest.raises(UserError, match=r"--layout: unknown dataset layout 'cvusa' \(choose university1652 \| sues200 \| denseuav"):
        get_layout("cvusa")


def test_layout_specs_select_heights() -> None:
    assert parse_layout("sues200:300,150,150")[1] == ("300", "150")
    assert parse_layout("sues200:0150")[1] == ("150",)
    with pytest.raises(UserError, match="not a height in metres"):
        parse_layout("sues200:high")
    with pytest.raises(UserError, match="has no sub-sets"):
        parse_layout("university1652:150")
    with pytest.raises(UserError, match="name the sub-sets"):
        parse_layout("sues200:")


def test_detection_from_the_folder_tree(tmp_path: Path) -> None:
    u = tmp_path / "u"
    image(u / "train" / "drone" / "0001" / "image-01.jpeg")
    assert find_dataset(u).name == "university1652"
    d = tmp_path / "d"
    image(d / "train" / "drone" / "000001" / "H80.JPG")
    assert find_dataset(d).name == "denseuav"  # by the height-named drone images
    d2 = tmp_path / "d2"
    (d2 / "test" / "query_drone").mkdir(parents=True)
    (d2 / "Dense_GPS_ALL.txt").write_text("")
    assert find_dataset(d2).name == "denseuav"  # by the coordinates file
    s = tmp_path / "holder" / "SUES-200"
    (s / "Testing" / "150" / "query_drone").mkdir(parents=True)
    found = find_dataset(tmp_path / "holder")  # the parent of one dataset
    assert (found.name, found.root) == ("sues200", s)


def test_ambiguous_and_undetectable_trees_are_one_line_errors(tmp_path: Path) -> None:
    both = tmp_path / "both"
    (both / "train" / "drone").mkdir(parents=True)
    (both / "Training" / "150").mkdir(parents=True)
    with pytest.raises(UserError) as err:
        find_dataset(both, option="data.layout")
    text = str(err.value)
    assert "\n" not in text and str(both) in text and "(university1652, sues200)" in text
    assert "data.layout (university1652 | sues200 | denseuav)" in text
    assert find_dataset(both, "sues200").name == "sues200"  # naming the layout settles it
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=r"no train/ or test/ folder .* no Training/ or Testing/"):
        find_dataset(empty)
    with pytest.raises(UserError, match="does not exist"):
        find_dataset(tmp_path / "nope")
    u = tmp_path / "u"
    image(u / "train" / "drone" / "0001" / "image-01.jpeg")
    with pytest.raises(UserError) as err:  # a split of the dataset instead of its root
        find_dataset(u / "train")
    assert str(err.value) == f"{u / 'train'} is a split of the dataset at {u}: point at {u}"


def test_data_layout_is_validated_with_the_config(tmp_path: Path) -> None:
    from mcgf.training.config import parse_run_config

    cfg = parse_run_config({"data": {"root": "x", "layout": "sues200:150"}}, "c.yaml")
    assert cfg.data.layout == "sues200:150"
    with pytest.raises(UserError, match=r"c\.yaml: data\.layout: unknown dataset layout .sues."):
        parse_run_config({"data": {"root": "x", "layout": "sues"}}, "c.yaml")


def test_sues_training_merges_heights_and_keeps_one_tile_per_location(tmp_path: Path) -> None:
    root = tmp_path / "SUES-200"
    for h in ("150", "200"):
        for c in ("0001", "0002"):
            image(root / "Training" / h / "drone" / c / f"{h}-01.jpeg")
            image(root / "Training" / h / "satellite" / c / f"{c}.jpg")
    drone, sat = find_dataset(root).read_train()
    assert {k: [p.name for p in v] for k, v in drone.classes.items()} == {
        "0001": ["150-01.jpeg", "200-01.jpeg"], "0002": ["150-01.jpeg", "200-01.jpeg"]}
    assert {k: len(v) for k, v in sat.classes.items()} == {"0001": 1, "0002": 1}
    drone150, _ = find_dataset(root, "sues200:150").read_train()
    assert drone150.num_images == 2
    with pytest.raises(UserError, match="Training/300 is missing"):
        find_dataset(root, "sues200:300").read_train()
    assert [ts.name for ts in find_dataset(root).test_sets()] == []


def test_merge_keeps_folder_order_and_first_name_per_id(tmp_path: Path) -> None:
    a = ClassFolderSet(tmp_path / "a", "drone", {"0002": [Path("x/2.jpg")], "0010": [Path("y/1.jpg")]})
    b = ClassFolderSet(tmp_path / "b", "drone", {"2": [Path("z/2.jpg")], "0003": []})
    merged = merge_class_folders([a, b])
    assert list(merged.classes) == ["0002", "0003", "0010"]
    assert [str(p) for p in merged.classes["0002"]] == ["x/2.jpg", "z/2.jpg"]
    assert [str(p) for p in merge_class_folders([a, b], unique_names=True).classes["0002"]] == ["x/2.jpg"]


@pytest.mark.parametrize(("line", "expected"), [
    ("train/satellite/000001/H80.tif E120.38 N30.32 80.5", (1, 120.38, 30.32)),
    ("D:\\data\\test\\000777\\H80.tif N30.32 E120.38 80", (777, 120.38, 30.32)),  # order by letter
    ("x/000002/H80.tif 120.5 30.25 90", (2, 120.5, 30.25)),  # bare numbers: longitude first
    ("x/000002/H80.tif 30.25 120.5 90", (2, 120.5, 30.25)),  # latitude first (README's order)
    ("x/000003/H80.tif W70.5 S33.25", (3, -70.5, -33.25)),
    ("x/000003/H80.tif 70.5W 33.25S", (3, -70.5, -33.25)),
])
def test_gps_lines(line: str, expected: tuple[int, float, float]) -> None:
    assert parse_gps_line(line) == expected


@pytest.mark.parametrize("line", ["", "x/0001/H80.tif E120", "x/abc/H80.tif E1 N2",
                                  "x/0001/H80.tif E1 E2", "x/0001/H80.tif E500 N2", "x/0001/H.tif N1E N2"])
def test_bad_gps_lines(line: str) -> None:
    assert parse_gps_line(line) is None


def test_coordinates_files_all_or_per_split(tmp_path: Path) -> None:
    (tmp_path / "Dense_GPS_train.txt").write_text("t/000001/H80.tif E1.0 N2.0 80\n\nbroken\n")
    (tmp_path / "Dense_GPS_test.txt").write_text("t/000002/H80.tif E1.5 N2.5 80\nt/000001/H80.tif E9 N9 80\n")
    coords = read_coordinates(tmp_path)
    assert coords is not None
    assert coords.lonlat == {1: (9.0, 9.0), 2: (1.5, 2.5)}  # the last line of location 1
    assert coords.conflicts == [1] and coords.bad_lines == [f"{tmp_path / 'Dense_GPS_train.txt'}:3"]
    (tmp_path / "Dense_GPS_ALL.txt").write_text("t/000005/H80.tif E3 N4 80\n")
    assert read_coordinates(tmp_path).lonlat == {5: (3.0, 4.0)}  # type: ignore[union-attr]
    assert read_coordinates(tmp_path / "none") is None


def test_sdm_at_k_by_hand() -> None:
    q = np.array([[0.0, 0.0], [0.0, 0.0]])
    top = np.array([[[0.0, 0.0], [0.0002, 0.0], [1.0, 1.0]],
                    [[0.0002, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    got = sdm_at_k(q, top, (1, 3))
    e1 = math.exp(-1.0)
    assert got[1] == pytest.approx([1.0, e1])
    # weights 1, 2/3, 1/3 over 2
    assert got[3] == pytest.approx([(1 + 2 / 3 * e1) / 2, (e1 + 2 / 3 + 1 / 3) / 2], abs=1e-9)
    assert sdm_at_k(q, top[:, :1], (3,))[3] == pytest.approx([1.0, e1])  # fewer items than K


def test_ranked_top_breaks_ties_to_the_lower_index() -> None:
    g = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], np.float32)
    assert ranked_top(np.array([[1.0, 0.0]], np.float32), g, 3).tolist() == [[0, 2, 1]]


def test_university1652_reads_through_its_loader(tmp_path: Path) -> None:
    from mcgf.data.layout import load_university1652

    root = tmp_path / "University-Release"
    image(root / "train" / "drone" / "0001" / "image-01.jpeg")
    image(root / "train" / "satellite" / "0001" / "0001.jpg")
    image(root / "train" / "street" / "0001" / "s.jpg")
    image(root / "test" / "query_street" / "0002" / "s.jpg")
    image(root / "test" / "gallery_satellite" / "0002" / "0002.jpg")
    ds = find_dataset(tmp_path)
    old = load_university1652(root)
    assert (ds.name, ds.root, ds.protocol(False), ds.protocol(True)) == (
        "university1652", root, "university-1652", "university-wx")
    drone, sat = ds.read_train()
    assert (drone.classes, sat.classes) == (old.train["drone"].classes, old.train["satellite"].classes)
    [ts] = ds.test_sets()
    assert ts.name == "" and ds.read_test(ts).folders.keys() == old.test.keys() == {
        "query_street", "gallery_satellite"}
    with pytest.raises(UserError, match="no train/satellite folder"):
        find_dataset(_only_drone(tmp_path)).read_train()


def _only_drone(tmp_path: Path) -> Path:
    root = tmp_path / "only"
    image(root / "train" / "drone" / "0001" / "a.jpg")
    return root


def test_coordinates_a_few_metres_apart_are_a_conflict(tmp_path: Path) -> None:
    # DenseUAV locations lie ~20 m (0.0002 degrees) apart: a second line 0.001 degrees
    # (~100 m) away names another place. A location is counted once however often.
    (tmp_path / "Dense_GPS_ALL.txt").write_text(
        "t/000001/H80.tif E120.35 N30.32 80\nt/000001/H80.tif E120.351 N30.32 80\n"
        "t/000002/H80.tif E120.3502 N30.32 80\nt/000002/H80.tif E120.3502 N30.32 80\n"
        "t/000003/H80.tif E121 N30 80\nt/000003/H80.tif E122 N30 80\nt/000003/H80.tif E123 N30 80\n")
    coords = read_coordinates(tmp_path)
    assert coords is not None and coords.lonlat[1] == (120.351, 30.32)
    assert coords.lonlat[3] == (123.0, 30.0)
    assert coords.conflicts == [1, 3]


def test_a_location_listed_twice_is_scored_at_its_last_line(tmp_path: Path) -> None:
    # The benchmark's evaluateDistance.py keys a dictionary by class folder line by line,
    # so a later line of a location replaces an earlier one; SDM@K must use the same.
    from mcgf.data.layouts.denseuav import DenseUAVLayout

    (tmp_path / "Dense_GPS_ALL.txt").write_text(
        "train/satellite/000001/H80.tif E120.3500 N30.32 80\n"
        "train/satellite/000002/H80.tif E120.3502 N30.32 80\n"
        "test/gallery_satellite/000002/H80.tif E120.3504 N30.32 80\n")
    ds = DenseUAVLayout(tmp_path)
    assert ds.coordinates().lonlat[2] == (120.3504, 30.32)  # type: ignore[union-attr]
    # One query of location 1 whose two best items are location 2 (0.0004 degrees away
    # by its last line: exp(-2)) and location 1 itself (exp(0) = 1).
    got = ds.extra_metrics("drone->satellite", np.array([1]), np.array([True]), np.array([[2, 1]]))
    e2 = math.exp(-2.0)
    assert got["SDM@1"] == pytest.approx(100 * e2)
    assert got["SDM@3"] == pytest.approx(100 * (e2 + 2 / 3) / (1 + 2 / 3))


def test_selected_heights_of_a_test_only_sues_tree(tmp_path: Path) -> None:
    # Only Testing/ (as for evaluating a released model): selecting a height checks and
    # evaluates it; training says there is no training split.
    from mcgf.data.check import check_dataset

    root = tmp_path / "SUES-200"
    for h in ("150", "200"):
        for role in ("query_drone", "gallery_drone", "query_satellite", "gallery_satellite"):
            image(root / "Testing" / h / role / "0001" / "0.jpg")
    ds = find_dataset(root, "sues200:150")
    assert [ts.name for ts in ds.test_sets()] == ["150"]
    report = check_dataset(root, decode=False, layout="sues200:150")
    assert not report.errors
    with pytest.raises(UserError, match="no training split"):
        ds.read_train()
