"""Weather-invariance probes inside ``mcgf evaluate`` (tiny generated trees, thumbnail embedder)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mcgf.cli.main import main
from mcgf.evaluation.probes import InvarianceProbes, summary_line
from mcgf.evaluation.university import ExtractOptions, evaluate_university, on_the_fly_conditions
from mcgf.models import build_embedder
from tests.evaluation.conftest import prerendered_copies

COMMON = ["--workers", "0", "--quiet", "--device", "cpu"]


def test_evaluate_writes_the_invariance_section(tiny_u1652: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("mcgf.weather")
    out = tmp_path / "ev"
    assert main(["evaluate", str(tiny_u1652), "--weather", "normal,fog,dark", "--out", str(out),
                 *COMMON]) == 0
    printed = capsys.readouterr().out
    inv = json.loads((out / "metrics.json").read_text())["invariance"]
    assert inv["folder"] == "query_drone" and inv["images"] == 15 and inv["notes"] == []
    rows = {r["condition"]: r for r in inv["per_condition"]}
    assert list(rows) == ["normal", "fog", "dark"]
    # normal is the clean image: same features, cosine exactly 1
    assert rows["normal"]["same_as_clean"] and rows["normal"]["cosine"] == pytest.approx(1.0)
    assert rows["normal"]["normalised"] == pytest.approx(1.0)
    for name in ("fog", "dark"):
        r = rows[name]
        assert not r["same_as_clean"] and r["images"] == 15
        # weathered, yet still closer to its own clean image than to other locations
        assert r["baseline"] < r["cosine"] < 1.0 and 0.0 < r["normalised"] < 1.0
        assert -1.0 <= r["baseline"] <= 1.0
    probe = inv["probe"]
    assert probe["folds"] == 5 and probe["groups"] == 5 and probe["grouping"] == "location"
    assert probe["n"] == 45 and probe["images"] == 15 and probe["chance"] == pytest.approx(100 / 3)
    assert probe["conditions"] == ["normal", "fog", "dark"]
    assert 0.0 <= probe["accuracy"] <= 100.0 and len(probe["fold_accuracies"]) == 5
    assert probe["accuracy"] == pytest.approx(np.mean(probe["fold_accuracies"]))
    # balanced classes: the overall accuracy is the mean of the per-condition recalls
    assert probe["accuracy"] == pytest.approx(np.mean([r["probe_recall"] for r in rows.values()]))
    assert "condition probe" in printed and "chance 33.3 %" in printed
    md = (out / "metrics.md").read_text()
    assert "## Weather invariance (query_drone, 15 images)" in md and "| fog | " in md


def test_prerendered_copies_are_perfectly_invariant(tiny_u1652: Path, tmp_path: Path) -> None:
    # Two pre-rendered "conditions" that are byte copies of the clean images: cosine 1 and
    # a probe at exactly chance (each image's two samples have one embedding, so any
    # classifier gets exactly one of them right).
    wx = tmp_path / "wx"
    prerendered_copies(tiny_u1652, wx, "normal", "fog")
    out = tmp_path / "ev"
    assert main(["evaluate", str(tiny_u1652), "--wx-dir", str(wx), "--directions", "d2s",
                 "--out", str(out), *COMMON]) == 0
    inv = json.loads((out / "metrics.json").read_text())["invariance"]
    for row in inv["per_condition"]:
        assert row["cosine"] == pytest.approx(1.0) and not row["same_as_clean"]
    assert inv["probe"]["accuracy"] == pytest.approx(50.0) and inv["probe"]["chance"] == 50.0


def test_prerendered_images_that_do_not_align_are_skipped_with_a_note(
        tiny_u1652: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wx = tmp_path / "wx"
    prerendered_copies(tiny_u1652, wx, "normal", "fog")
    for p in sorted((wx / "fog").rglob("*.jpeg")):
        p.rename(p.with_name("renamed-" + p.name))
    out = tmp_path / "ev"
    assert main(["evaluate", str(tiny_u1652), "--wx-dir", str(wx), "--directions", "d2s",
                 "--out", str(out), *COMMON]) == 0
    inv = json.loads((out / "metrics.json").read_text())["invariance"]
    assert [r["condition"] for r in inv["per_condition"]] == ["normal"]
    assert inv["probe"] is None
    assert any(n.startswith("fog: its images do not align by key") for n in inv["notes"])
    assert "note: fog: its images do not align" in capsys.readouterr().out


def test_prerendered_images_align_across_extension_and_id_spelling(
        tiny_u1652: Path, tmp_path: Path) -> None:
    """A condition saved as .png in folders named 101 (not 0101) holds the same images as
    test/query_drone, as the coverage check and the labels read them: the probes use it."""
    wx = tmp_path / "wx"
    prerendered_copies(tiny_u1652, wx, "normal", "fog")
    for p in sorted((wx / "fog").rglob("*.jpeg")):
        p.rename(p.with_suffix(".PNG"))
    for d in sorted((wx / "fog").iterdir()):
        d.rename(d.with_name(str(int(d.name))))
    out = tmp_path / "ev"
    assert main(["evaluate", str(tiny_u1652), "--wx-dir", str(wx), "--directions", "d2s",
                 "--out", str(out), *COMMON]) == 0
    inv = json.loads((out / "metrics.json").read_text())["invariance"]
    assert [r["condition"] for r in inv["per_condition"]] == ["normal", "fog"] and inv["notes"] == []
    assert all(r["cosine"] == pytest.approx(1.0) and r["images"] == 15 for r in inv["per_condition"])
    assert inv["probe"]["accuracy"] == pytest.approx(50.0)


def test_probes_off_switches(tiny_u1652: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("mcgf.weather")
    cases: list[tuple[list[str], str]] = [
        (["--weather", "normal,fog", "--no-probes"], ""),
        (["--weather", "fog"], ""),  # one condition: nothing to compare
        ([], ""),  # clean evaluation
        (["--weather", "normal,fog", "--directions", "s2d"], "invariance probes skipped"),
    ]
    for i, (extra, note) in enumerate(cases):
        out = tmp_path / f"o{i}"
        assert main(["evaluate", str(tiny_u1652), *extra, "--out", str(out), *COMMON]) == 0, extra
        assert "invariance" not in json.loads((out / "metrics.json").read_text()), extra
        printed = capsys.readouterr().out
        assert (note in printed) if note else "invariance" not in printed
    assert main(["evaluate", str(tiny_u1652), "--weather", "normal,fog", "--probe-folds", "1",
                 "--out", str(tmp_path / "bad"), *COMMON]) == 2
    assert capsys.readouterr().err.count("\n") == 1


class CountingEmbedder:
    """The thumbnail embedder, counting the images it embeds."""

    def __init__(self) -> None:
        self.inner = build_embedder("thumbnail")
        self.images = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def embed(self, images: Any) -> Any:
        self.images += int(images.shape[0])
        return self.inner.embed(images)


def test_probes_cost_no_extra_embedding_pass_and_are_seeded(tiny_u1652: Path) -> None:
    pytest.importorskip("mcgf.weather")
    conds = on_the_fly_conditions(["normal", "fog", "rain"], seed=1)
    opts = ExtractOptions(progress=False, device="cpu", flip=False)
    plain, tapped = CountingEmbedder(), CountingEmbedder()
    sections = []
    for seed in (0, 0):
        probes = InvarianceProbes(seed=seed)
        emb = tapped if not sections else CountingEmbedder()
        rows = evaluate_university(tiny_u1652, emb, directions=["drone->satellite"], conditions=conds,
                                   options=opts, tap=probes, tap_folders=("query_drone",))
        sections.append(probes.result())
    base = evaluate_university(tiny_u1652, plain, directions=["drone->satellite"], conditions=conds,
                               options=opts)
    assert [r.metrics for r in rows] == [r.metrics for r in base]
    assert tapped.images == plain.images  # the tap reuses the evaluation's features
    assert sections[0] == sections[1]  # seeded: identical numbers
    assert sections[0] is not None and "condition probe" in summary_line(sections[0])
