"""Pre-rendering weathered splits: layout, manifest, determinism, resume, errors."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mcgf.data.weather_render import MANIFEST, SETTINGS, RenderSettings, plan_jobs, render_jobs
from mcgf.errors import UserError
from mcgf.weather import CONDITIONS, choose_condition
from mcgf.weather.plan import ENGINE_VERSION

from .conftest import natural_image


def make_class_folders(root: Path, classes=("0001", "0002"), per_class=2) -> Path:
    for ci, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(natural_image(48, seed=10 * ci + i)).save(root / c / f"image-{i + 1:02d}.jpeg")
    return root


def make_flat(root: Path, n=5) -> list[str]:
    root.mkdir(parents=True)
    names = [f"q{i}abcXYZ{i}" for i in range(n)]
    for i, name in enumerate(names):
        Image.fromarray(natural_image(40, seed=i)).save(root / f"{name}.jpeg")
    return names


def settings(protocol: str, seed: int = 0, conditions=CONDITIONS) -> RenderSettings:
    return RenderSettings(protocol=protocol, seed=seed, dark_variant="test",
                          conditions=tuple(conditions), jpeg_quality=90)


def read_manifest(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_university_wx_layout_manifest_and_worker_independence(tmp_path):
    src = make_class_folders(tmp_path / "query_drone")
    outs = {}
    for workers in (1, 2):
        dst = tmp_path / f"out{workers}"
        jobs = plan_jobs("university-wx", src, seed=5)
        summary = render_jobs(jobs, dst, settings("university-wx", 5), workers=workers)
        assert summary.written == 40 and summary.existing == 0
        rows = read_manifest(dst / MANIFEST)
        assert len(rows) == 40 and set(rows[0]) == {"image", "condition", "seed"}
        for row in rows:
            cond, cls, _ = row["image"].split("/")
            assert cond == row["condition"] and cls in ("0001", "0002") and row["seed"] == "5"
            assert (dst / row["image"]).is_file()
        outs[workers] = {r["image"]: (dst / r["image"]).read_bytes() for r in rows}
    assert outs[1] == outs[2]  # byte-identical whatever the worker count
    # normal is the source file itself; the others differ from it.
    normal_file = tmp_path / "out1/normal/0001/image-01.jpeg"
    assert normal_file.read_bytes() == (src / "0001/image-01.jpeg").read_bytes()
    normal = np.asarray(Image.open(normal_file)).astype(int)
    fog = np.asarray(Image.open(tmp_path / "out1/fog/0001/image-01.jpeg")).astype(int)
    assert fog.mean() > normal.mean() + 30


def test_160k_wx_one_condition_per_image_in_names_order(tmp_path):
    names = make_flat(tmp_path / "query")
    names_file = tmp_path / "names.txt"
    names_file.write_text("\n".join(names[3::-1]) + "\n")  # 4 of 5, reversed
    jobs = plan_jobs("160k-wx", tmp_path / "query", seed=9, names_file=names_file)
    summary = render_jobs(jobs, tmp_path / "wx", settings("160k-wx", 9), workers=2)
    assert summary.written == 4
    rows = read_manifest(tmp_path / "wx" / MANIFEST)
    assert [r["image"] for r in rows] == [f"{n}.jpeg" for n in names[3::-1]]
    for r in rows:
        assert r["condition"] == choose_condition(9, r["image"])
    assert not (tmp_path / "wx" / f"{names[4]}.jpeg").exists()


def test_resume_keeps_finished_files_and_refuses_other_settings(tmp_path):
    src = make_class_folders(tmp_path / "src", classes=("0001",), per_class=2)
    dst = tmp_path / "dst"
    jobs = plan_jobs("university-wx", src, seed=0, conditions=("fog", "rain"))
    s = settings("university-wx", 0, ("fog", "rain"))
    render_jobs(jobs, dst, s)
    (dst / "rain/0001/image-02.jpeg").unlink()
    again = render_jobs(jobs, dst, s)
    assert (again.written, again.existing) == (1, 3)
    assert len(read_manifest(dst / MANIFEST)) == 4
    with pytest.raises(UserError, match="other settings"):
        render_jobs(jobs, dst, settings("university-wx", 1, ("fog", "rain")))
    redo = render_jobs(jobs, dst, settings("university-wx", 1, ("fog", "rain")), overwrite=True)
    assert redo.written == 4


def test_settings_record_the_engine_version(tmp_path):
    src = make_class_folders(tmp_path / "src", classes=("0001",), per_class=1)
    dst = tmp_path / "dst"
    jobs = plan_jobs("university-wx", src, seed=0, conditions=("fog",))
    render_jobs(jobs, dst, settings("university-wx", 0, ("fog",)))
    record = json.loads((dst / SETTINGS).read_text())
    assert record["engine"] == ENGINE_VERSION
    # A render by an engine that drew other pixels is not resumed.
    record["engine"] = "1"
    (dst / SETTINGS).write_text(json.dumps(record))
    with pytest.raises(UserError, match="other settings"):
        render_jobs(jobs, dst, settings("university-wx", 0, ("fog",)))


def test_interrupted_run_leaves_no_manifest(tmp_path):
    src = make_class_folders(tmp_path / "src", classes=("0001",), per_class=2)
    dst = tmp_path / "dst"
    jobs = plan_jobs("university-wx", src, seed=0, conditions=("fog", "snow"))

    def stop_after_two(results, total):
        for i, r in enumerate(results):
            if i == 2:
                raise KeyboardInterrupt
            yield r

    with pytest.raises(KeyboardInterrupt):
        render_jobs(jobs, dst, settings("university-wx", 0, ("fog", "snow")), progress=stop_after_two)
    assert not (dst / MANIFEST).exists()
    done = [p for p in dst.rglob("*.jpeg")]
    assert 1 <= len(done) <= 4 and not list(dst.rglob("*.tmp"))
    for p in done:  # every file present is complete
        Image.open(p).load()
    summary = render_jobs(jobs, dst, settings("university-wx", 0, ("fog", "snow")))
    assert summary.written + summary.existing == 4
    assert len(read_manifest(dst / MANIFEST)) == 4


def test_resuming_an_interrupted_overwrite_keeps_no_old_image(tmp_path):
    src = make_class_folders(tmp_path / "src", classes=("0001",), per_class=4)
    jobs = plan_jobs("university-wx", src, seed=0, conditions=("fog",))
    seed0, seed1 = settings("university-wx", 0, ("fog",)), settings("university-wx", 1, ("fog",))
    render_jobs(jobs, tmp_path / "fresh", seed1)
    dst = tmp_path / "dst"
    render_jobs(jobs, dst, seed0)

    def stop_after_one(results, total):
        for i, r in enumerate(results):
            if i == 1:
                raise KeyboardInterrupt
            yield r

    with pytest.raises(KeyboardInterrupt):
        render_jobs(jobs, dst, seed1, overwrite=True, progress=stop_after_one)
    summary = render_jobs(jobs, dst, seed1)  # resumed without --overwrite
    assert summary.written + summary.existing == 4 and summary.written >= 2
    rows = read_manifest(dst / MANIFEST)
    assert len(rows) == 4 and {r["seed"] for r in rows} == {"1"}
    for r in rows:  # every image is the seed-1 render the manifest says it is
        assert (dst / r["image"]).read_bytes() == (tmp_path / "fresh" / r["image"]).read_bytes()


def test_an_overwrite_stopped_while_clearing_is_not_resumed(tmp_path, monkeypatch):
    src = make_class_folders(tmp_path / "src", classes=("0001",), per_class=2)
    jobs = plan_jobs("university-wx", src, seed=0, conditions=("fog",))
    dst = tmp_path / "dst"
    render_jobs(jobs, dst, settings("university-wx", 0, ("fog",)))

    def interrupted(self, missing_ok=False):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Path, "unlink", interrupted)
        with pytest.raises(KeyboardInterrupt):
            render_jobs(jobs, dst, settings("university-wx", 1, ("fog",)), overwrite=True)
    with pytest.raises(UserError, match="pass --overwrite again"):
        render_jobs(jobs, dst, settings("university-wx", 1, ("fog",)))
    assert render_jobs(jobs, dst, settings("university-wx", 1, ("fog",)), overwrite=True).written == 2


def test_bad_images(tmp_path):
    src = make_class_folders(tmp_path / "src", classes=("0001",), per_class=1)
    (src / "0001" / "broken.jpeg").write_bytes(b"not a jpeg")
    jobs = plan_jobs("university-wx", src, seed=0, conditions=("fog",))
    with pytest.raises(UserError, match=r"broken\.jpeg"):
        render_jobs(jobs, tmp_path / "a", settings("university-wx", 0, ("fog",)))
    summary = render_jobs(jobs, tmp_path / "b", settings("university-wx", 0, ("fog",)), on_bad_image="skip")
    assert summary.written == 1 and len(summary.skipped_bad) == 1
    assert [r["image"] for r in read_manifest(tmp_path / "b" / MANIFEST)] == ["fog/0001/image-01.jpeg"]


def test_planning_errors(tmp_path):
    src = make_class_folders(tmp_path / "src", classes=("0001",), per_class=1)
    with pytest.raises(UserError, match="unknown weather condition"):
        plan_jobs("university-wx", src, seed=0, conditions=("fog", "hail"))
    with pytest.raises(UserError, match="names-file"):
        plan_jobs("university-wx", src, seed=0, names_file=tmp_path / "n.txt")
    with pytest.raises(UserError, match="protocol"):
        plan_jobs("university", src, seed=0)
    with pytest.raises(UserError):
        plan_jobs("university-wx", tmp_path / "missing", seed=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no image"):
        plan_jobs("160k-wx", tmp_path / "empty", seed=0)
    jobs = plan_jobs("university-wx", src, seed=0, conditions=("fog",))
    with pytest.raises(UserError, match="inside the source"):
        render_jobs(jobs, src / "0001" / "out", settings("university-wx", 0, ("fog",)))
    for dst in (src / "wx", src, src / "9999"):  # the view's own folder: a class to its readers
        with pytest.raises(UserError, match="inside the source"):
            render_jobs(jobs, dst, settings("university-wx", 0, ("fog",)))
    assert sorted(p.name for p in src.iterdir()) == ["0001"]
    flat = tmp_path / "flat"
    make_flat(flat, n=1)
    render_jobs(plan_jobs("160k-wx", flat, seed=0), tmp_path / "flat_wx", settings("160k-wx"))
    with pytest.raises(UserError, match="inside the source"):
        render_jobs(plan_jobs("160k-wx", flat, seed=0), flat / "wx", settings("160k-wx"))


def test_a_file_name_that_is_not_utf8_is_rendered_and_listed_as_on_disk(tmp_path):
    src = make_class_folders(tmp_path / "src", classes=("0001",), per_class=1)
    raw = b"image-\xff.jpeg"  # e.g. a Latin-1 name on a UTF-8 system
    (src / "0001" / "image-01.jpeg").rename(src / "0001" / os.fsdecode(raw))
    dst = tmp_path / "dst"
    jobs = plan_jobs("university-wx", src, seed=0, conditions=("fog",))
    assert render_jobs(jobs, dst, settings("university-wx", 0, ("fog",))).written == 1
    assert (dst / "fog" / "0001" / os.fsdecode(raw)).is_file()
    assert (dst / MANIFEST).read_bytes() == b"image,condition,seed\nfog/0001/" + raw + b",fog,0\n"
