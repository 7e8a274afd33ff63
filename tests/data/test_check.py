from __future__ import annotations

from pathlib import Path

import pytest

from mcgf.data.check import check_dataset, format_report
from mcgf.errors import UserError


def test_counts_of_university_tree(u1652: Path) -> None:
    rep = check_dataset(u1652, workers=1)
    counts = {(f.split.split("/")[-1], f.name): (f.classes, f.empty_classes, f.images) for f in rep.folders}
    assert counts[("train", "drone")] == (4, 1, 9)
    assert counts[("train", "satellite")] == (4, 1, 3)
    assert counts[("train", "google")] == (1, 1, 0)
    assert counts[("test", "query_drone")] == (2, 0, 4)
    assert counts[("test", "gallery_satellite")] == (3, 0, 3)
    assert rep.ok and rep.decoded == 19
    text = format_report(rep)
    assert "3 locations have drone and satellite images" in text
    assert "1 without a query, i.e. distractors" in text
    assert text.endswith("OK: the dataset can be used")


def test_unreadable_images_listed_with_reason(u1652: Path) -> None:
    bad1 = u1652 / "train" / "drone" / "0001" / "image-01.jpeg"
    bad1.write_bytes(bad1.read_bytes()[:40])
    bad2 = u1652 / "test" / "gallery_satellite" / "0012" / "0012.jpg"
    bad2.write_text("this is text, not an image")
    rep = check_dataset(u1652, workers=2)
    assert sorted(p for p, _ in rep.unreadable) == sorted([bad1, bad2])
    assert not rep.ok
    text = format_report(rep)
    assert f"unreadable: {bad2}: not a recognised image format" in text
    assert "NOT OK" in text


def test_flat_split_found_and_parent_folder(flat160k: Path, u1652: Path) -> None:
    rep = check_dataset(flat160k, workers=1)
    assert rep.ok
    names = {f.name: f.images for f in rep.folders}
    assert names == {"query_drone_160k_wx_24": 4, "gallery_satellite_160k": 5}
    # A parent holding both kinds is checked whole (like the output of mcgf synth).
    parent = flat160k.parent
    rep2 = check_dataset(parent, decode=False)
    assert {f.name for f in rep2.folders} >= {"drone", "query_drone_160k_wx_24", "gallery_satellite_160k"}


def test_unusable_trees(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        check_dataset(tmp_path / "missing")
    archive = tmp_path / "University-1652.zip"
    archive.write_bytes(b"PK\x05\x06" + bytes(18))
    with pytest.raises(UserError, match=r"University-1652\.zip is a file, not a folder: unpack"):
        check_dataset(archive)
    (tmp_path / "x").mkdir()
    with pytest.raises(UserError, match="holds no University-1652 tree"):
        check_dataset(tmp_path / "x")
    (tmp_path / "y" / "train" / "drone" / "0001").mkdir(parents=True)
    rep = check_dataset(tmp_path / "y")
    assert not rep.ok
    assert any("needs both drone/ and satellite/" in e for e in rep.errors)


def test_folder_errors_are_not_followed_by_a_false_no_image_line(flat160k: Path) -> None:
    """Both flat folders are refused (a query name fits two files, two gallery files share a
    stem): the errors say why, and no line claims the split holds no image."""
    (flat160k / "query_drone_160k_wx_24" / "aB1.png").write_bytes(
        (flat160k / "query_drone_160k_wx_24" / "aB1.jpeg").read_bytes())
    (flat160k / "query_drone_name.txt").write_text("zQ3.jpeg\naB1\nmM2.jpeg\nCc4.jpeg\n")
    (flat160k / "gallery_satellite_160k" / "g1.jpg").write_bytes(
        (flat160k / "gallery_satellite_160k" / "g1.webp").read_bytes())
    rep = check_dataset(flat160k, decode=False)
    assert not rep.ok and len(rep.errors) == 2
    assert not any("no image found" in e for e in rep.errors)
    empty = flat160k.parent / "empty"
    (empty / "query_drone_160k").mkdir(parents=True)
    (empty / "query_drone_name.txt").write_text("a\n")
    assert any("no image found" in e for e in check_dataset(empty, decode=False).errors)


def test_unreadable_image_of_a_160k_split_is_not_said_to_be_skippable(flat160k: Path) -> None:
    """mcgf predict needs every query and gallery image: the advice says so."""
    bad = flat160k / "gallery_satellite_160k" / "g2.webp"
    bad.write_bytes(bad.read_bytes()[:20])
    text = format_report(check_dataset(flat160k, workers=1))
    assert f"unreadable: {bad}" in text
    last = text.splitlines()[-1]
    assert last.startswith("NOT OK") and "mcgf predict" in last and "cannot skip" in last


def test_names_file_fitting_two_query_folders_is_reported(flat160k: Path) -> None:
    second = flat160k / "query_drone_160k"
    second.mkdir()
    for p in (flat160k / "query_drone_160k_wx_24").iterdir():
        (second / p.name).write_bytes(p.read_bytes())
    rep = check_dataset(flat160k, workers=1)
    text = format_report(rep)
    assert ("warning: " + str(flat160k / "query_drone_name.txt") + ": fits several query folders "
            "(query_drone_160k/, query_drone_160k_wx_24/), so it was checked against none") in text
    assert {f.name for f in rep.folders} == {"gallery_satellite_160k"}


def test_names_file_without_query_folder_is_reported(flat160k: Path) -> None:
    (flat160k / "query_drone_160k_wx_24").rename(flat160k / "queries")
    rep = check_dataset(flat160k, decode=False)
    assert any("query_drone_name.txt: no folder of images named query_drone*/" in w for w in rep.warnings)


def test_broken_symlinks_are_counted(u1652: Path, flat160k: Path, caplog: pytest.LogCaptureFixture) -> None:
    drone = u1652 / "train" / "drone" / "0001"
    for name in ("lost-1.jpeg", "lost-2.jpeg"):
        (drone / name).symlink_to(u1652 / "nowhere" / name)
    (u1652 / "train" / "drone" / "0099").symlink_to(u1652 / "unmounted")  # a lost class folder
    (drone / "notes-link.txt").symlink_to(u1652 / "nothing.txt")  # not an image: ignored
    gallery = flat160k / "gallery_satellite_160k"
    (gallery / "gone.webp").symlink_to(flat160k / "gone.webp")
    with caplog.at_level("WARNING"):
        rep = check_dataset(u1652, workers=1)
        rep_flat = check_dataset(flat160k, workers=1)
    assert not caplog.records  # the check reports them itself, once
    text = format_report(rep)
    assert (f"warning: {u1652 / 'train' / 'drone'}: 3 broken symbolic links skipped (target missing), "
            f"e.g. {u1652 / 'train' / 'drone' / '0099'}") in text
    assert rep.ok and rep.decoded == 19
    assert (f"warning: {gallery}: 1 broken symbolic link skipped (target missing), e.g. {gallery / 'gone.webp'}"
            in format_report(rep_flat))


def test_images_in_formats_not_read_are_named_not_only_counted_as_empty(u1652: Path) -> None:
    """A class folder of BMP or TIFF files would otherwise be just 'empty'."""
    query = u1652 / "test" / "query_drone"
    (query / "0011" / "image-01.jpeg").unlink()
    (query / "0011" / "image-02.jpeg").unlink()
    from tests.data.conftest import write_image

    bmp = write_image(query / "0011" / "image-01.bmp", 1, fmt="BMP")
    write_image(query / "0011" / "image-02.TIF", 2, fmt="TIFF")
    write_image(query / "0010" / "image-03.bmp", 3, fmt="BMP")
    text = format_report(check_dataset(u1652, workers=1))
    assert (f"warning: {query}: 3 image files in formats this layout does not read are left out "
            f"(.bmp: 2, .tif: 1), e.g. {query / '0010' / 'image-03.bmp'}; convert them to .jpeg, "
            ".jpg, .png or .webp") in text
    assert f"warning: {query}: 1 empty class folders (0011); they are ignored" in text
    assert bmp.exists()
    # the text file beside train/drone/0001's images is no image: not reported
    assert text.count("in formats this layout does not read") == 1


@pytest.mark.parametrize("folder, message", [
    ("building_a", "is not named by a non-negative integer location id"),
    ("-1", "is not named by a non-negative integer location id"),
    ("12", "class folders 0012 and 12 in"),
])
def test_class_folder_that_names_no_location_is_an_error_of_the_dataset(
        u1652: Path, tmp_path: Path, folder: str, message: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A dataset the loaders refuse is a dataset that cannot be used (exit code 1, the
    reason among the report's errors), not a usage error (exit code 2), and the other
    datasets beside it are still checked."""
    from mcgf.cli.main import main
    from tests.data.conftest import write_image

    bad = u1652 / "test" / "gallery_satellite" / folder
    write_image(bad / "x.jpg")
    rep = check_dataset(u1652, decode=False)
    assert not rep.ok and len(rep.errors) == 1 and message in rep.errors[0]
    assert main(["data", "check", str(u1652), "--no-decode"]) == 1
    out = capsys.readouterr().out
    assert out.rstrip().endswith("NOT OK: the dataset cannot be used as it is")
    assert f"error: {rep.errors[0]}" in out
    # beside a readable tree, the bad one is one error and the good one is still counted
    parent = u1652.parent
    good = parent / "other"
    write_image(good / "train" / "drone" / "0001" / "image-01.jpeg")
    write_image(good / "train" / "satellite" / "0001" / "0001.jpg")
    rep = check_dataset(parent, decode=False)
    assert len(rep.errors) == 1 and message in rep.errors[0]
    counts = {(f.split, f.name): f.images for f in rep.folders}
    assert counts[("other/train", "drone")] == 1 and counts[("other/train", "satellite")] == 1
