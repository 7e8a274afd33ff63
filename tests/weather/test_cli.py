"""``mcgf weather``: preview and render from the command line, one-line errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mcgf.cli.main import main

from .conftest import natural_image
from .test_render import make_class_folders, make_flat


def one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> None:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err


def test_list(capsys):
    assert main(["weather", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == [
        "normal", "fog", "rain", "snow", "dark", "light", "fog_rain", "fog_snow", "rain_snow", "wind"]


def test_preview_writes_a_labelled_grid(tmp_path, capsys):
    src = tmp_path / "0001" / "image-01.png"
    src.parent.mkdir()
    Image.fromarray(natural_image(96, seed=1)).save(src)
    out = tmp_path / "grid.png"
    assert main(["weather", "preview", str(src), "-o", str(out), "--tile", "64", "--seed", "3"]) == 0
    grid = np.asarray(Image.open(out))
    assert grid.shape == (2 * 64 + 3 * 4, 5 * 64 + 6 * 4, 3)
    tiles = [grid[4:68, 4 + i * 68 : 68 + i * 68] for i in range(5)]
    # normal, fog, rain, snow, dark: fog is brighter and dark darker than normal.
    assert tiles[1][20:].mean() > tiles[0][20:].mean() + 30
    assert tiles[4][20:].mean() < tiles[0][20:].mean() - 40
    # The default key is the dataset's: "<class folder>/<file name>".
    assert "'0001/image-01.png'" in capsys.readouterr().out


def test_preview_default_key_of_a_bare_file_name(tmp_path, capsys, monkeypatch):
    # Run from inside the class folder, the key is still the dataset's, not "/image-01.png".
    src = tmp_path / "0001" / "image-01.png"
    src.parent.mkdir()
    Image.fromarray(natural_image(40, seed=1)).save(src)
    monkeypatch.chdir(src.parent)
    assert main(["weather", "preview", "image-01.png", "-o", str(tmp_path / "g.png"), "--tile", "32"]) == 0
    assert "'0001/image-01.png'" in capsys.readouterr().out


def test_preview_errors(tmp_path, capsys):
    assert main(["weather", "preview", str(tmp_path / "nope.jpg"), "-o", str(tmp_path / "g.png")]) == 2
    one_line_error(capsys, "nope.jpg", "does not exist")
    img = tmp_path / "a.png"
    Image.fromarray(natural_image(40)).save(img)
    assert main(["weather", "preview", str(img), "-o", str(tmp_path / "g.gif")]) == 2
    one_line_error(capsys, ".png or .jpg")
    (tmp_path / "g.png").mkdir()
    assert main(["weather", "preview", str(img), "-o", str(tmp_path / "g.png")]) == 2
    one_line_error(capsys, "g.png", "is a folder")
    (tmp_path / "g.png").rmdir()
    assert main(["weather", "preview", str(img), "-o", str(img / "g.png")]) == 2
    one_line_error(capsys, "a.png is a file")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    assert main(["weather", "preview", str(bad), "-o", str(tmp_path / "g.png")]) == 2
    one_line_error(capsys, "bad.png")
    assert not (tmp_path / "g.png").exists()


def test_render_both_protocols(tmp_path, capsys):
    src = make_class_folders(tmp_path / "query_drone", classes=("0007",), per_class=1)
    dst = tmp_path / "wx"
    code = main(["weather", "render", str(src), str(dst), "--protocol", "university-wx",
                 "--workers", "2", "--conditions", "fog,wind"])
    assert code == 0
    assert sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*.jpeg")) == [
        "fog/0007/image-01.jpeg", "wind/0007/image-01.jpeg"]
    names = make_flat(tmp_path / "flat", n=3)
    code = main(["weather", "render", str(tmp_path / "flat"), str(tmp_path / "wx160"),
                 "--protocol", "160k-wx", "--seed", "4", "--workers", "1"])
    assert code == 0
    with (tmp_path / "wx160" / "manifest.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["image"] for r in rows) == sorted(f"{n}.jpeg" for n in names)
    assert "3 images written" in capsys.readouterr().out
    # "all" is the default's ten conditions (a resume: same settings, nothing to write)
    assert main(["weather", "render", str(tmp_path / "flat"), str(tmp_path / "wx160"),
                 "--protocol", "160k-wx", "--seed", "4", "--workers", "1",
                 "--conditions", "all"]) == 0
    assert "0 images written" in capsys.readouterr().out
    # --quiet: the summary only, no progress bar on stderr
    assert main(["weather", "render", str(src), str(tmp_path / "wxq"), "--protocol",
                 "university-wx", "--workers", "1", "--conditions", "fog", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "1 images written" in captured.out and "weather" not in captured.err
    # A name given twice is rendered once, as every other --weather/--condition option.
    assert main(["weather", "render", str(src), str(tmp_path / "wx2"), "--protocol", "university-wx",
                 "--workers", "1", "--conditions", "wind,fog,wind"]) == 0
    assert json.loads((tmp_path / "wx2" / "weather_render.json").read_text())["conditions"] == ["wind", "fog"]


def test_render_errors(tmp_path, capsys):
    src = make_class_folders(tmp_path / "src", classes=("0001",), per_class=1)
    assert main(["weather", "render", str(src), str(tmp_path / "o"), "--protocol", "university-wx",
                 "--conditions", "fog,hail"]) == 2
    one_line_error(capsys, "unknown weather condition 'hail'", "--conditions")
    assert main(["weather", "render", str(src), str(tmp_path / "o"), "--protocol", "university-wx",
                 "--conditions", ""]) == 2
    one_line_error(capsys, "--conditions is empty")
    assert not (tmp_path / "o").exists()
    assert main(["weather", "render", str(tmp_path / "missing"), str(tmp_path / "o"),
                 "--protocol", "160k-wx"]) == 2
    one_line_error(capsys, "missing", "does not exist")
    (tmp_path / "file").write_text("x")
    assert main(["weather", "render", str(src), str(tmp_path / "file"), "--protocol", "university-wx"]) == 2
    one_line_error(capsys, "destination", "not a folder")
    assert main(["weather", "render", str(src), str(tmp_path / "o"), "--protocol", "university-wx",
                 "--workers", "0"]) == 2
    one_line_error(capsys, "--workers")
    assert not Path(tmp_path / "o" / "manifest.csv").exists()
