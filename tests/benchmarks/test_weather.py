"""``benchmarks/weather.py``: bad input is one line naming the option, before any timing."""

from __future__ import annotations

import sys

import pytest

from .conftest import load_script


def _run(monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    monkeypatch.setattr(sys, "argv", ["weather.py", *argv])
    with pytest.raises(SystemExit) as exc:
        load_script("weather").main()
    return int(exc.value.code)


def test_unreadable_image_names_the_option_and_no_option_the_script_lacks(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "drone.jpeg"
    bad.write_bytes(b"not an image")
    assert _run(monkeypatch, "--image", str(bad)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"weather.py: error: --image: cannot read image {bad}:")
    # The script has no --on-bad-image option, so the message must not suggest it.
    assert "--on-bad-image" not in err
    assert err.endswith("(fix or remove the file)")


def test_missing_image_and_bad_counts_are_refused(tmp_path, monkeypatch, capsys):
    assert _run(monkeypatch, "--image", str(tmp_path / "missing.jpeg")) == 2
    assert "does not exist" in capsys.readouterr().err
    assert _run(monkeypatch, "--images", "0") == 2
    assert "--images must be >= 1" in capsys.readouterr().err
