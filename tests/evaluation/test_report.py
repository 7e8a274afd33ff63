"""``metrics.json`` and ``metrics.md`` of an evaluation are written as one unit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import mcgf.evaluation.report as report_module
from mcgf.evaluation.report import write_report


def test_an_evaluation_interrupted_while_writing_its_report_keeps_the_earlier_pair(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while the table is made leaves the earlier metrics.json and metrics.md, not
    new metrics beside the table of the earlier evaluation; a complete write has both new."""
    monkeypatch.setattr(report_module, "render_markdown", lambda report: f"table {report['n']}\n")
    json_path, md_path = write_report(tmp_path, {"n": 1})
    assert (json.loads(json_path.read_text()), md_path.read_text()) == ({"n": 1}, "table 1\n")

    def interrupted(report: dict) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(report_module, "render_markdown", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_report(tmp_path, {"n": 2})
    assert (json.loads(json_path.read_text()), md_path.read_text()) == ({"n": 1}, "table 1\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "metrics.md"]
