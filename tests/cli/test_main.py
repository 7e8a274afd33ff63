from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mcgf.cli.main import main


def test_help_lists_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("demo", "synth", "data", "evaluate", "predict", "weather"):
        assert cmd in out


def test_python_dash_m_works() -> None:
    res = subprocess.run([sys.executable, "-m", "mcgf", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.startswith("mcgf ")


def test_data_check_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "check", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and "Traceback" not in err
    assert main(["data", "check", str(tmp_path), "--workers", "0"]) == 2


def test_data_check_on_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.data.conftest import write_image

    root = tmp_path / "ds"
    write_image(root / "train" / "drone" / "0001" / "image-01.jpeg")
    write_image(root / "train" / "satellite" / "0001" / "0001.jpg")
    assert main(["data", "check", str(root), "--per-class"]) == 0
    out = capsys.readouterr().out
    assert "per class, train/drone:" in out and "OK: the dataset can be used" in out
    (root / "train" / "satellite" / "0001" / "0001.jpg").write_bytes(b"garbage")
    assert main(["data", "check", str(root)]) == 1


def test_unreadable_image_says_how_the_command_skips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.training.tiny_run import tiny_config, write_config, write_tree

    root = write_tree(tmp_path / "ds")
    (root / "train" / "satellite" / "0002" / "0.png").write_bytes(b"")
    cfg = write_config(tmp_path / "c.yaml", tiny_config(root, epochs=1))
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "0002/0.png" in err
    assert "data.on_bad_image" in err and "--on-bad-image" not in err
    # predict cannot skip a query: the message offers no option.
    from tests.data.conftest import write_image

    flat = tmp_path / "160k"
    (flat / "query_drone").mkdir(parents=True)
    (flat / "query_drone" / "q1.jpeg").write_bytes(b"")
    (flat / "query_drone_name.txt").write_text("q1.jpeg\n")
    for i in range(10):
        write_image(flat / "gallery_satellite_160k" / f"g{i}.webp", i, fmt="WEBP")
    assert main(["predict", str(flat), "--out", str(tmp_path / "p"), "--workers", "0",
                 "--device", "cpu", "--quiet", "--cache-dir", "none"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "q1.jpeg" in err and "skip" not in err
