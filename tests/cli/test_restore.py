"""`mcgf restore`: outputs, determinism, naming and one-line errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from mcgf.cli.main import main
from mcgf.panels import GAP
from tests.models.test_restore_api import one_thread, random_image, save_tiny_restorer  # noqa: F401

H, W = 48, 64


def write_png(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


def read_png(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def ck(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:  # noqa: F811
    path = tmp_path_factory.mktemp("ck") / "ck"
    save_tiny_restorer(path)
    return path


@pytest.fixture()
def image(tmp_path: Path) -> Path:
    return write_png(tmp_path / "0001" / "image-01.png", random_image(H, W, 9))


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_one_weathered_image(ck: Path, image: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "a.png"
    rc, stdout, _ = run(capsys, "restore", image, "--checkpoint", ck, "-o", out, "--steps", 3,
                        "--device", "cpu")
    assert rc == 0 and stdout.strip() == str(out)
    grid = read_png(out)
    assert grid.shape == (H, 2 * W + GAP, 3)
    # The left panel is the input (below the label band).
    assert np.array_equal(grid[H // 2 :, :W], read_png(image)[H // 2 :])
    again = tmp_path / "b.png"
    other = tmp_path / "c.png"
    assert run(capsys, "restore", image, "--checkpoint", ck, "-o", again, "--steps", 3)[0] == 0
    assert run(capsys, "restore", image, "--checkpoint", ck, "-o", other, "--steps", 3,
               "--seed", 1)[0] == 0
    assert out.read_bytes() == again.read_bytes()
    assert not np.array_equal(grid[:, W + GAP :], read_png(other)[:, W + GAP :])


def test_condition_all_gives_ten_rows(ck: Path, image: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "all.png"
    assert run(capsys, "restore", image, "--checkpoint", ck, "-o", out, "--condition", "all",
               "--steps", 2)[0] == 0
    grid = read_png(out)
    # 48 px panels are too short for a label band: each row has its condition in a 16 px
    # caption above it.
    row_h = 16 + H
    assert grid.shape == (10 * row_h + 9 * GAP, 3 * W + 2 * GAP, 3)
    # Right column: the clean image in every row.
    clean = read_png(image)
    for row in range(10):
        y = row * (row_h + GAP) + 16
        assert np.array_equal(grid[y : y + H, 2 * (W + GAP) :], clean)
    out = tmp_path / "fog.png"
    assert run(capsys, "restore", image, "--checkpoint", ck, "-o", out, "--condition", "fog",
               "--steps", 2, "--tile", 32)[0] == 0
    assert read_png(out).shape == (16 + round(32 * H / W), 3 * 32 + 2 * GAP, 3)


def test_several_images_go_to_a_folder(ck: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    a = write_png(tmp_path / "in" / "a.png", random_image(H, W, 1))
    b = write_png(tmp_path / "in" / "b.jpg", random_image(32, 32, 2))
    rc, stdout, _ = run(capsys, "restore", a, b, "--checkpoint", ck, "-o", tmp_path / "out",
                        "--steps", 2)
    assert rc == 0
    assert stdout.split() == [str(tmp_path / "out" / "a.png"), str(tmp_path / "out" / "b.png")]
    assert read_png(tmp_path / "out" / "b.png").shape == (32, 2 * 32 + GAP, 3)
    # A picture does not depend on the other images of the command line.
    assert run(capsys, "restore", a, "--checkpoint", ck, "-o", tmp_path / "single.png",
               "--steps", 2)[0] == 0
    assert (tmp_path / "single.png").read_bytes() == (tmp_path / "out" / "a.png").read_bytes()
    # A folder stands for the images in it, sorted by name.
    rc, stdout, _ = run(capsys, "restore", tmp_path / "in", "--checkpoint", ck, "-o",
                        tmp_path / "byfolder", "--steps", 2)
    assert rc == 0 and stdout.split() == [str(tmp_path / "byfolder" / n) for n in ("a.png", "b.png")]
    assert (tmp_path / "byfolder" / "a.png").read_bytes() == (tmp_path / "out" / "a.png").read_bytes()
    (tmp_path / "empty").mkdir()
    rc, _, err = run(capsys, "restore", tmp_path / "empty", "--checkpoint", ck, "-o",
                     tmp_path / "e", "--steps", 1)
    assert rc == 2 and err.count("\n") == 1 and "holds no image" in err
    # University-1652 names every class's views alike: the class folder disambiguates.
    c = write_png(tmp_path / "0001" / "image-01.jpeg", random_image(H, W, 3))
    d = write_png(tmp_path / "0002" / "image-01.jpeg", random_image(H, W, 4))
    _, stdout, _ = run(capsys, "restore", c, d, "--checkpoint", ck, "-o", tmp_path / "u",
                       "--steps", 1)
    assert stdout.split() == [str(tmp_path / "u" / "0001_image-01.png"),
                              str(tmp_path / "u" / "0002_image-01.png")]


def test_inputs_are_never_written_over(ck: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    a = write_png(tmp_path / "in" / "a.png", random_image(H, W, 1))
    b = write_png(tmp_path / "in" / "b.jpg", random_image(32, 32, 2))
    before = {p: p.read_bytes() for p in (a, b)}
    # -o the images' own folder: a.png would become the picture of a.png.
    for argv in ([a, b, "-o", tmp_path / "in"], [a, "-o", a], [a, "-o", tmp_path / "in"]):
        rc, stdout, err = run(capsys, "restore", *argv, "--checkpoint", ck, "--steps", 1)
        assert rc == 2 and stdout == ""
        assert err.count("\n") == 1 and f"would write over the input image {a}" in err, err
    assert {p: p.read_bytes() for p in (a, b)} == before
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["a.png", "b.jpg"]
    # An input of another suffix shares its folder with its picture without harm.
    assert run(capsys, "restore", b, "--checkpoint", ck, "-o", tmp_path / "in", "--steps", 1)[0] == 0
    assert (tmp_path / "in" / "b.png").is_file() and b.read_bytes() == before[b]


def test_errors_are_one_line(ck: Path, image: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    plain = tmp_path / "plain"
    save_tiny_restorer(plain, restoration=False)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    out = tmp_path / "o.png"
    cases = [
        ([tmp_path / "missing.png", "--checkpoint", ck], "missing.png: file does not exist"),
        ([bad, "--checkpoint", ck], "bad.jpg: not a recognised image format"),
        ([image, "--checkpoint", tmp_path / "nope"], "does not exist"),
        ([image, "--checkpoint", tmp_path / "0001"], "is not an mcgf checkpoint"),
        ([image, "--checkpoint", plain], "trained without the restoration branch "
                                         "(model.restoration: false)"),
        ([image, "--checkpoint", ck, "--steps", 0], "--steps must be at least 1"),
        ([image, "--checkpoint", ck, "--steps", 1001], "--steps must be at most 1000"),
        ([image, "--checkpoint", ck, "--condition", "hail"],
         "unknown weather condition 'hail' in --condition: use one of normal, fog"),
        ([image, image, "--checkpoint", ck], "-o must be a folder"),
        ([image, "--checkpoint", ck, "--device", "tpu!"], "is not a device name"),
    ]
    for argv, message in cases:
        rc, _, err = run(capsys, "restore", *argv, "-o", out)
        assert rc == 2, message
        assert err.count("\n") == 1 and message in err and "Traceback" not in err, err
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0001", "bad.jpg", "plain"]


def test_checkpoint_saved_before_the_conditioning_option_restores(
        image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    ck = tmp_path / "old"
    save_tiny_restorer(ck, restoration_condition="features+image")
    config = json.loads((ck / "config.json").read_text())
    del config["model"]["restoration_condition"]  # as such checkpoints were written
    (ck / "config.json").write_text(json.dumps(config))
    out = tmp_path / "a.png"
    rc, _, _ = run(capsys, "restore", image, "--checkpoint", ck, "-o", out, "--steps", 2,
                   "--device", "cpu")
    assert rc == 0 and read_png(out).shape == (H, 2 * W + GAP, 3)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_an_output_place_that_takes_no_file_is_one_line(ck: Path, image: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """-o in a folder that takes no new file (read-only, /proc) ended in an OSError traceback
    at the first write, after the model had run; now a one-line error before it."""
    two = write_png(tmp_path / "0002" / "image-01.png", random_image(H, W, 3))
    for argv, place in (([image], "/proc/grid.png"), ([image, two], "/proc/mcgf-previews")):
        rc, stdout, err = run(capsys, "restore", *argv, "--checkpoint", ck, "-o", place, "--steps", 1)
        assert (rc, stdout) == (2, "")
        assert err.startswith(f"mcgf: error: -o {place} cannot be written: nothing can be created "
                              "in /proc") and err.count("\n") == 1
