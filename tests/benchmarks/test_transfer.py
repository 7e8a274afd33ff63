"""benchmarks/transfer.py: its summary of evaluation metrics and its table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "transfer.py"


def load():
    spec = importlib.util.spec_from_file_location("transfer", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["transfer"] = mod
    spec.loader.exec_module(mod)
    return mod


def _row(cond: str, r1: float, ap: float, direction: str = "drone->satellite") -> dict:
    return {"condition": cond, "direction": direction, "metrics": {"R@1": r1, "AP": ap}}


def test_summarise_separates_clean_from_the_weathered_mean() -> None:
    tr = load()
    metrics = {"results": [_row("normal", 60.0, 65.0), _row("fog", 30.0, 35.0),
                           _row("dark", 50.0, 55.0), _row("normal", 1.0, 1.0, "satellite->drone")]}
    assert tr.summarise(metrics) == {"R@1_clean": 60.0, "R@1_weather": 40.0,
                                     "AP_clean": 65.0, "AP_weather": 45.0}
    with pytest.raises(ValueError, match="weathered"):
        tr.summarise({"results": [_row("normal", 1.0, 1.0)]})


def test_markdown_rows_are_training_styles_and_labels_are_folder_safe() -> None:
    tr = load()
    cell = {"R@1_clean": 50.0, "R@1_weather": 42.25, "AP_clean": 0.0, "AP_weather": 0.0}
    text = tr.markdown({"default": {"default": cell, "town": cell}, "town": {"default": cell, "town": cell}})
    assert "| trained on \\ tested on | default | town |" in text
    assert "| town | 50.0 / 42.2 | 50.0 / 42.2 |" in text
    assert tr.style_label("styles/dusk.yaml") == "dusk"
    assert tr.style_label("town") == "town"


def test_one_style_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    tr = load()
    assert tr.main(["--styles", "default", "--out", str(tmp_path)]) == 2
    assert "at least two styles" in capsys.readouterr().err


def test_style_path_pairs() -> None:
    tr = load()
    assert tr.pairs(["default=runs/demo/data"], "--data") == {"default": Path("runs/demo/data")}
    with pytest.raises(tr.UserError, match="--run 'x' must look like STYLE=PATH"):
        tr.pairs(["x"], "--run")
