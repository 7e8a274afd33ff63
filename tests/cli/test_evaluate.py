"""``mcgf evaluate``: options of on-the-fly weather without --weather."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcgf.cli.main import main
from tests.evaluation.conftest import tiny_u1652  # noqa: F401  (fixture)

COMMON = ["--workers", "0", "--quiet", "--device", "cpu", "--directions", "d2s"]


@pytest.mark.parametrize("option, value", [("--weather-seed", "3"), ("--dark-variant", "train"),
                                           ("--weather-jpeg", "none"), ("--weather-jpeg", "200")])
def test_weather_options_without_weather_are_refused(tiny_u1652: Path, tmp_path: Path,  # noqa: F811
                                                     option: str, value: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """They would change nothing: a clean evaluation (or one of --wx-dir) that the user
    believes weathered or seeded otherwise. One line, exit code 2, nothing written."""
    out = tmp_path / "ev"
    for extra in ([], ["--wx-dir", str(tmp_path / "wx")]):
        assert main(["evaluate", str(tiny_u1652), "--out", str(out), option, value, *extra,
                     *COMMON]) == 2
        err = capsys.readouterr().err
        assert err == f"mcgf: error: {option} applies to on-the-fly weather (--weather) only\n"
        assert not out.exists()


def test_weather_defaults_when_left_out(tiny_u1652: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "ev"
    assert main(["evaluate", str(tiny_u1652), "--out", str(out), "--weather", "fog", "--no-probes",
                 *COMMON]) == 0
    weather = json.loads((out / "metrics.json").read_text())["weather"]
    assert weather == {"mode": "on-the-fly", "conditions": ["fog"], "seed": 0,
                       "dark_variant": "test", "jpeg_quality": 95}
    assert main(["evaluate", str(tiny_u1652), "--out", str(out), "--weather", "dark",
                 "--weather-seed", "2", "--dark-variant", "train", "--weather-jpeg", "none",
                 "--no-probes", *COMMON]) == 0
    weather = json.loads((out / "metrics.json").read_text())["weather"]
    assert (weather["seed"], weather["dark_variant"], weather["jpeg_quality"]) == (2, "train", None)
