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
