from __future__ import annotations

from pathlib import Path

import pytest

from mcgf.data.layout import (
    aligned_classes,
    find_university1652_root,
    is_image_file,
    list_images,
    load_flat_gallery,
    load_flat_queries,
    load_university1652,
    read_class_folders,
    read_names_file,
)
from mcgf.errors import UserError

from .conftest import write_image


def test_image_extensions_any_case_and_hidden_files() -> None:
    assert is_image_file("a.JPG") and is_image_file("b.jpeg") and is_image_file("c.WebP")
    assert is_image_file("d.PNG")
    assert not is_image_file(".e.jpg")  # AppleDouble / hidden
    assert not is_image_file("f.gif") and not is_image_file("notes.txt")
    assert not is_image_file("Thumbs.db")


def test_university1652_counts_and_views(u1652: Path) -> None:
    data = load_university1652(u1652)
    assert set(data.train) == {"drone", "satellite", "google"}  # street missing entirely
    drone = data.train["drone"]
    assert {k: len(v) for k, v in drone.classes.items()} == {"0001": 3, "0002": 2, "0003": 0, "0004": 4}
    assert drone.num_images == 9
    assert data.train["google"].classes == {"0002": []}
    assert set(data.test) == {"query_drone", "gallery_satellite"}
    assert data.test["gallery_satellite"].labels() == [10, 11, 12]
    # hidden/system/non-image files are not listed
    assert all(p.suffix.lower() in {".jpeg", ".jpg", ".png", ".webp"} for p in drone.classes["0001"])


def test_alignment_by_folder_name_not_position(u1652: Path) -> None:
    data = load_university1652(u1652)
    # 0003 has an empty drone folder and an empty satellite folder; 0004 is the third
    # non-empty class in both views but must still be aligned by its name.
    assert aligned_classes(data.train["drone"], data.train["satellite"]) == ["0001", "0002", "0004"]
    recs = data.train["satellite"].records()
    assert [(r.label, r.path.name) for r in recs] == [(1, "0001.jpg"), (2, "0002.jpg"), (4, "0004.jpg")]
    assert recs[0].key == "0001/0001.jpg"


def test_alignment_by_location_id_not_folder_spelling(u1652: Path) -> None:
    sat = u1652 / "train" / "satellite"
    (sat / "0002").rename(sat / "2")
    data = load_university1652(u1652)
    assert aligned_classes(data.train["drone"], data.train["satellite"]) == ["0001", "0002", "0004"]
    assert aligned_classes(data.train["satellite"], data.train["drone"]) == ["0001", "2", "0004"]


def test_find_root_one_level_up(u1652: Path) -> None:
    assert find_university1652_root(u1652.parent) == u1652
    with pytest.raises(UserError, match="does not exist"):
        find_university1652_root(u1652 / "nope")
    with pytest.raises(UserError, match=r"image-01\.jpeg is a file, not a folder"):
        find_university1652_root(u1652 / "train" / "drone" / "0001" / "image-01.jpeg")
    empty = u1652.parent / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no train/ or test/"):
        find_university1652_root(empty)


def test_unreadable_class_folder_is_a_clear_error(u1652: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # chmod cannot take read access away from root, so the refusal is simulated.
    import os

    locked = u1652 / "train" / "drone" / "0002"
    scandir = os.scandir

    def refuse(path: str | os.PathLike[str] = ".") -> object:
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse)
    with pytest.raises(UserError, match=r"cannot list folder .*0002: Permission denied") as err:
        load_university1652(u1652)
    assert "\n" not in str(err.value)


def test_non_integer_class_folder_is_a_clear_error(tmp_path: Path) -> None:
    write_image(tmp_path / "drone" / "building_a" / "x.jpg")
    with pytest.raises(UserError, match="building_a"):
        read_class_folders(tmp_path / "drone", "drone")


@pytest.mark.parametrize("name", ["-1", "-0839", "+5", "1_0", "\u0663", "12a"])
def test_class_folder_must_be_a_non_negative_id(tmp_path: Path, name: str) -> None:
    # A folder named "-1" would otherwise give its images the junk label: dropped silently.
    write_image(tmp_path / "drone" / "0001" / "x.jpg")
    write_image(tmp_path / "drone" / name / "y.jpg")
    with pytest.raises(UserError, match="non-negative integer location id") as err:
        read_class_folders(tmp_path / "drone", "drone")
    assert str(tmp_path / "drone" / name) in str(err.value) and "\n" not in str(err.value)


def test_two_folders_of_one_id_are_refused(tmp_path: Path) -> None:
    write_image(tmp_path / "drone" / "0839" / "x.jpg")
    write_image(tmp_path / "drone" / "839" / "y.jpg", 1)
    with pytest.raises(UserError, match=r"0839 and 839 .* both location 839"):
        read_class_folders(tmp_path / "drone", "drone")


def test_junk_and_unknown_labels_are_distinct() -> None:
    from mcgf.data.layout import JUNK_LABEL, UNKNOWN_LABEL, ImageRecord, class_id
    from mcgf.retrieval.metrics import JUNK_LABEL as METRICS_JUNK

    assert JUNK_LABEL == METRICS_JUNK and UNKNOWN_LABEL != JUNK_LABEL and UNKNOWN_LABEL < 0
    assert class_id("0839") == 839 and class_id("0") == 0 and class_id("-1") is None
    ImageRecord(Path("a.jpg"), UNKNOWN_LABEL, "drone")
    with pytest.raises(ValueError, match="neither a location id"):
        ImageRecord(Path("a.jpg"), -3, "drone")


def test_challenge_and_embedding_records_are_unknown_not_junk(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Images without a label (160k queries, embed_images) carry UNKNOWN_LABEL, never junk."""
    import mcgf.evaluation.features as features
    from mcgf.data.layout import UNKNOWN_LABEL

    seen: list[int] = []

    class Stop(Exception):
        pass

    def fake_extract(records, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.extend(r.label for r in records)
        raise Stop

    monkeypatch.setattr(features, "extract_features", fake_extract)
    monkeypatch.setattr(features, "for_view", lambda embedder, view: embedder)
    with pytest.raises(Stop):
        features.embed_images(object(), [write_image(tmp_path / "a.jpg")])
    assert seen == [UNKNOWN_LABEL]


def test_list_images_missing_folder_is_empty(tmp_path: Path) -> None:
    assert list_images(tmp_path / "missing") == []


def test_names_file_order_preserved(flat160k: Path) -> None:
    q = load_flat_queries(flat160k / "query_drone_160k_wx_24", flat160k / "query_drone_name.txt")
    assert q.names == ["zQ3.jpeg", "aB1.jpeg", "mM2.jpeg", "Cc4.jpeg"]
    assert [p.name for p in q.paths] == q.names
    g = load_flat_gallery(flat160k / "gallery_satellite_160k")
    assert g.stems == ["g1", "g2", "g3", "g4", "g5"]


def test_names_file_without_extensions_and_crlf(flat160k: Path) -> None:
    names = flat160k / "names.txt"
    names.write_bytes(b"\xef\xbb\xbfmM2\r\nzQ3\r\n\r\n")
    q = load_flat_queries(flat160k / "query_drone_160k_wx_24", names)
    assert [p.name for p in q.paths] == ["mM2.jpeg", "zQ3.jpeg"]


def test_names_file_errors(flat160k: Path) -> None:
    qdir = flat160k / "query_drone_160k_wx_24"
    bad = flat160k / "bad.txt"
    bad.write_text("zQ3.jpeg\nmissing.jpeg\n")
    with pytest.raises(UserError, match=r"1 queries .* have no image .*missing\.jpeg"):
        load_flat_queries(qdir, bad)
    bad.write_text("zQ3.jpeg\nzQ3.jpeg\n")
    with pytest.raises(UserError, match="twice"):
        read_names_file(bad)
    bad.write_text("\n\n")
    with pytest.raises(UserError, match="no query"):
        read_names_file(bad)
    with pytest.raises(UserError, match="does not exist"):
        read_names_file(flat160k / "nope.txt")
    names = flat160k / "query_drone_name.txt"
    with pytest.raises(UserError, match=r"query folder .*name\.txt is a file, not a folder"):
        load_flat_queries(names, names)
    with pytest.raises(UserError, match=r"gallery folder .*name\.txt is a file, not a folder"):
        load_flat_gallery(names)


def test_names_with_dots_match_only_their_own_image(tmp_path: Path) -> None:
    # "a.v2" is a name without extension, not "a" with extension ".v2": it has no image
    # here and must not be answered with a.jpeg's.
    write_image(tmp_path / "q" / "a.jpeg")
    write_image(tmp_path / "q" / "b.c.JPEG")
    names = tmp_path / "names.txt"
    names.write_text("a.JPG\nb.c\n")
    q = load_flat_queries(tmp_path / "q", names)
    assert [p.name for p in q.paths] == ["a.jpeg", "b.c.JPEG"]
    names.write_text("a\na.v2\n")
    with pytest.raises(UserError, match=r"1 queries .* have no image .*: a\.v2$"):
        load_flat_queries(tmp_path / "q", names)


def test_names_file_listing_one_image_twice_is_refused(tmp_path: Path) -> None:
    # Two spellings of one query would give it two answer lines and shift every later one.
    write_image(tmp_path / "q" / "abc.jpeg")
    write_image(tmp_path / "q" / "d.jpeg")
    names = tmp_path / "names.txt"
    names.write_text("abc\nd\nabc.JPEG\n")
    with pytest.raises(UserError, match=r"lists abc\.jpeg twice \(as 'abc' and 'abc\.JPEG'\)"):
        load_flat_queries(tmp_path / "q", names)


def test_gallery_duplicate_stems_rejected(tmp_path: Path) -> None:
    write_image(tmp_path / "g" / "abc.jpg")
    write_image(tmp_path / "g" / "abc.png")
    with pytest.raises(UserError, match="stems must be unique"):
        load_flat_gallery(tmp_path / "g")


def test_loading_warns_about_broken_symlinks(u1652: Path, flat160k: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    drone = u1652 / "train" / "drone" / "0002"
    (drone / "image-09.jpeg").symlink_to(u1652 / "missing.jpeg")
    query = flat160k / "query_drone_160k_wx_24"
    (query / "zz9.jpeg").symlink_to(flat160k / "missing.jpeg")
    with caplog.at_level("WARNING", logger="mcgf.data.layout"):
        fs = read_class_folders(u1652 / "train" / "drone", "drone")
        q = load_flat_queries(query, flat160k / "query_drone_name.txt")
    assert fs.broken == [drone / "image-09.jpeg"] and len(fs.classes["0002"]) == 2
    assert q.broken == [query / "zz9.jpeg"] and len(q.paths) == 4
    assert [r.getMessage() for r in caplog.records] == [
        f"{u1652 / 'train' / 'drone'}: 1 broken symbolic link skipped (target missing), e.g. {drone / 'image-09.jpeg'}",
        f"{query}: 1 broken symbolic link skipped (target missing), e.g. {query / 'zz9.jpeg'}",
    ]
    # a listed query whose file is a broken link is missing, and the error says why
    (query / "aB1.jpeg").unlink()
    (query / "aB1.jpeg").symlink_to(flat160k / "missing2.jpeg")
    with pytest.raises(UserError, match=r"1 queries .* \(2 broken symbolic links in that folder\): aB1.jpeg"):
        load_flat_queries(query, flat160k / "query_drone_name.txt")
