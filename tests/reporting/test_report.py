"""build_report end to end on a tiny run, the run-folder discovery and the CLI."""

from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from mcgf.cli.main import main
from mcgf.errors import UserError
from mcgf.reporting.build import pick_queries
from mcgf.reporting.sources import resolve_run
from tests.reporting.conftest import make_dataset


class Refs(HTMLParser):
    """Collects every src/href of a page and its <img> tags."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.images: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.refs.append(value)
        if tag == "img":
            self.images.append(dict(attrs))


def parse(index: Path) -> Refs:
    refs = Refs()
    refs.feed(index.read_text(encoding="utf-8"))
    return refs


def test_the_page_references_only_files_beside_it(built_report: Path) -> None:
    refs = parse(built_report)
    files = [r for r in refs.refs if not r.startswith("#")]
    assert files, "no picture in the report"
    for ref in files:
        assert not re.match(r"^[a-z]+:", ref), f"external reference {ref}"
        assert (built_report.parent / ref).is_file(), ref
    # Every picture written is used, and nothing outside img/ is.
    written = {f"img/{p.name}" for p in (built_report.parent / "img").iterdir()}
    assert written == set(files)
    text = built_report.read_text(encoding="utf-8")
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in text and "<script" not in text


def test_the_page_has_every_section(built_report: Path) -> None:
    text = built_report.read_text(encoding="utf-8")
    names = sorted(p.name for p in (built_report.parent / "img").iterdir())
    # Two queries: 2 drone->satellite grids, 2 satellite->drone (when the location has a
    # satellite query), heatmaps and restoration previews.
    assert len([n for n in names if n.startswith("grid-d2s-")]) == 2
    assert len([n for n in names if n.startswith("heatmap-")]) == 2
    assert len([n for n in names if n.startswith("restore-")]) == 2
    for anchor in ("metrics", "training", "grids", "heatmaps", "restoration", "posture"):
        assert f'id="{anchor}"' in text
    # Metrics table values and the settings read from metrics.json (seed 3, dark test).
    assert "40.00" in text and "weather seed 3, dark variant test" in text
    # Training curves: four loss series and the validation points.
    assert text.count('class="curve"') >= 5
    # Posture from the synthetic metadata: heading, altitude and distance charts.
    assert "R@1 vs heading" in text and "R@1 vs altitude" in text
    # Satellite->drone rows under weather are missing from the cache and say so.
    assert "Rows left out" in text


def test_image_sizes_in_the_page_match_the_files(built_report: Path) -> None:
    from PIL import Image

    for img in parse(built_report).images:
        with Image.open(built_report.parent / str(img["src"])) as im:
            assert (str(im.width), str(im.height)) == (img["width"], img["height"])


def test_report_replaces_an_earlier_one_atomically(tiny_run: tuple[Path, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from mcgf.reporting import build, build_report

    run, _ = tiny_run
    out = tmp_path / "rep"
    out.mkdir()
    (out / "index.html").write_text("old")

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(build, "posture_section", boom)
    with pytest.raises(RuntimeError):
        build_report(run, out=out, queries=1, device="cpu", progress=False, heatmaps=False,
                     restore_steps=1, tile=32, threads=1, cache_dir=tmp_path / "cache")
    assert (out / "index.html").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".rep")] == []
    monkeypatch.undo()
    index = build_report(run, out=out, queries=1, device="cpu", progress=False, heatmaps=False,
                         restore_steps=1, tile=32, threads=1, cache_dir=tmp_path / "cache")
    assert index == out / "index.html" and index.read_text()[:3] != "old"
    assert "Heatmaps turned off" in index.read_text()


def test_plain_training_folder_with_data(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    run, data = tiny_run
    plain = tmp_path / "plain"
    shutil.copytree(run / "train", plain)  # last/ and log.csv, no eval/, no data/
    inputs = resolve_run(plain, data_root=data)
    assert inputs.checkpoint == plain / "last" and inputs.log_csv == plain / "log.csv"
    assert inputs.metrics == [] and any("No metrics.json" in n for n in inputs.notes)
    # Without --data the checkpoint's data.root is not a dataset here: a one-line error.
    with pytest.raises(UserError, match="--data ROOT"):
        resolve_run(plain)


def test_one_line_errors(tiny_run: tuple[Path, Path], tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    run, data = tiny_run
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        ([str(tmp_path / "nope")], "does not exist"),
        ([str(empty), "--data", str(data)], "no checkpoint"),
        ([str(run), "--checkpoint", str(empty)], "not a checkpoint folder"),
        ([str(run), "--data", str(empty)], "no train/ or test/"),
        ([str(run), "--queries", "x"], "--queries must be an integer"),
        ([str(run), "--query", "0101/image-99.jpeg", "--out", str(tmp_path / "r")], "--query"),
        ([str(run), "--device", "cuda:7", "--out", str(tmp_path / "r")], "--device"),
        ([str(run), "--layout", "university", "--out", str(tmp_path / "r")],
         "unknown dataset layout 'university'"),
        ([str(run), "--restore-steps", "1001", "--out", str(tmp_path / "r")],
         "restore steps must be at most 1000"),
    ]
    for argv, message in cases:
        if "cuda" in " ".join(argv):
            import torch

            if torch.cuda.is_available():
                continue
        assert main(["report", *argv, "--quiet"]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, (argv, err)
    assert not (tmp_path / "r").exists()


def test_query_picking_is_seeded_and_prefers_matched_locations(tmp_path: Path) -> None:
    from mcgf.data.layout import load_university1652

    root = make_dataset(tmp_path / "d", views=3, metadata=False)
    records = load_university1652(root, splits=("test",)).test["query_drone"].records()
    a = pick_queries(records, 4, 0, {101, 102, 103, 104})
    assert a == pick_queries(records, 4, 0, {101, 102, 103, 104})
    assert sorted(r.label for r in a) == [101, 102, 103, 104]  # 0105 has no tile
    assert len({r.key for r in pick_queries(records, 9, 1, {101})}) == 1
    keys = pick_queries(records, ["0102/image-03.jpeg", "0105"], 0, set())
    assert keys[0].key == "0102/image-03.jpeg" and keys[1].label == 105


def test_checkpoint_without_restoration_branch_gets_a_note(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    import torch

    from mcgf.models.mcgf_model import MCGFModel
    from mcgf.reporting import build_report
    from mcgf.training import save_checkpoint
    from tests.reporting.conftest import MODEL_CONFIG

    run, _ = tiny_run
    cfg = {**MODEL_CONFIG, "restoration": False}
    torch.manual_seed(1)
    model = MCGFModel(**{k: v for k, v in cfg.items() if k != "name"}).eval()  # type: ignore[arg-type]
    save_checkpoint(tmp_path / "plain", model, cfg)
    index = build_report(run, checkpoint=tmp_path / "plain", out=tmp_path / "rep", queries=1,
                         device="cpu", progress=False, heatmaps=False, tile=32, threads=1,
                         cache_dir=tmp_path / "cache")
    text = index.read_text()
    assert "was trained without the restoration branch (model.restoration: false)" in text
    assert not [p for p in (index.parent / "img").iterdir() if p.name.startswith("restore-")]


def test_out_that_is_not_a_report_is_refused_before_any_work(
        tiny_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The report replaces its folder: a file, the run folder itself or another folder
    with files of its own is left alone with a one-line error."""
    run, data = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    config = tmp_path / "config.yaml"
    config.write_text("keep: me\n")
    for out, message in ((config, "is not a folder"), (copy, "not a report"),
                         (notes, "not a report")):
        argv = ["report", str(copy), "--data", str(data), "--out", str(out), "--quiet"]
        assert main(argv) == 2, out
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err and str(out) in err, err
    assert config.read_text() == "keep: me\n"
    assert (notes / "todo.txt").read_text() == "keep me"
    assert (copy / "train" / "last" / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "notes", "run"]


def test_a_model_embedding_without_autograd_gets_a_note_instead_of_heatmaps(
        tiny_run: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from mcgf.models.mcgf_model import MCGFModel
    from mcgf.reporting import build_report

    embed = MCGFModel.embed

    def frozen(self, images, view):  # a user's model that embeds under no_grad
        with torch.no_grad():
            return embed(self, images, view)

    monkeypatch.setattr(MCGFModel, "embed", frozen)
    run, _ = tiny_run
    index = build_report(run, out=tmp_path / "rep", queries=1, device="cpu", progress=False,
                         restore_steps=1, tile=32, threads=1, cache_dir=tmp_path / "cache")
    text = index.read_text()
    assert "No heatmaps: model.embed(images, view) returns features without a gradient" in text
    assert not [p for p in (index.parent / "img").iterdir() if p.name.startswith("heatmap-")]
    assert [p for p in (index.parent / "img").iterdir() if p.name.startswith("grid-d2s-")]


def test_a_prerendered_evaluation_is_said_not_to_be_what_the_pictures_show(tmp_path: Path) -> None:
    from mcgf.reporting.build import weather_notes
    from mcgf.reporting.featurestore import FeatureStore
    from mcgf.reporting.sources import MetricsFile

    store = FeatureStore(embedder=None, caches=[], weather_seed=3, dark_variant="train")  # type: ignore[arg-type]
    wx = MetricsFile(tmp_path / "wx" / "metrics.json",
                     {"results": [], "weather": {"mode": "pre-rendered", "folder": "/data/wx"}})
    fly = MetricsFile(tmp_path / "fly" / "metrics.json",
                      {"results": [], "weather": {"mode": "on-the-fly", "seed": 3}})
    notes = weather_notes([fly, wx], store)
    assert notes == [f"{wx.path} scores pre-rendered weathered images (/data/wx); the pictures "
                     "render the weather on the fly (seed 3, dark variant train), so their "
                     "weathered images are not the ones its rows scored."]
    assert weather_notes([fly], store) == []


def test_the_pictures_note_of_a_layout_with_several_test_sets_names_what_the_metrics_cover(
        tmp_path: Path) -> None:
    import json

    from mcgf.reporting.build import _shown_test_set
    from tests.layouts.conftest import make_tree
    from tests.reporting.conftest import save_model

    root = make_tree(tmp_path / "sues", "sues200", train=1, test=2, views=1) / "SUES-200"
    run = tmp_path / "run"
    save_model(run / "last")
    inputs = resolve_run(run, data_root=root)
    _shown_test_set(inputs)
    pictures = [n for n in inputs.notes if n.startswith("Pictures:")]
    assert pictures == [f"Pictures: the height 150 m test set of SUES-200 ({root / 'Testing' / '150'}); "
                        "it has a test set per height (150, 200, 250, 300)."]
    (run / "eval").mkdir()
    (run / "eval" / "metrics.json").write_text(json.dumps({"results": []}))
    inputs = resolve_run(run, data_root=root)
    _shown_test_set(inputs)
    assert next(n for n in inputs.notes if n.startswith("Pictures:")).endswith(
        "; the metrics cover every height (150, 200, 250, 300).")


def test_without_recorded_weather_the_pictures_use_the_evaluation_defaults(tmp_path: Path) -> None:
    """A clean-only or pre-rendered evaluation records no on-the-fly weather: the pictures
    then render it as mcgf evaluate --weather does by default (the milder test dark, JPEG
    95), not the nearly black training dark."""
    from mcgf.evaluation.university import WX_JPEG_QUALITY
    from mcgf.reporting.build import _feature_store
    from mcgf.reporting.sources import MetricsFile, RunInputs

    class Embedder:
        base_identity = identity = "x"

    wx = MetricsFile(tmp_path / "wx" / "metrics.json",
                     {"results": [], "embedder": "x",
                      "weather": {"mode": "pre-rendered", "folder": "/data/wx"}})
    for metrics in ([], [wx]):
        inputs = RunInputs(run_dir=tmp_path, checkpoint=tmp_path, data_root=tmp_path,
                           metrics=metrics)
        store = _feature_store(inputs, Embedder(), "cpu", cache_dir="none", weather_seed=None,
                               dark_variant=None, batch_size=2, progress=False, log=print)
        assert (store.dark_variant, store.weather_jpeg, store.weather_seed) == \
            ("test", WX_JPEG_QUALITY, 0)
    fly = MetricsFile(tmp_path / "fly" / "metrics.json",
                      {"results": [], "embedder": "x",
                       "weather": {"mode": "on-the-fly", "seed": 3, "dark_variant": "train",
                                   "jpeg_quality": None}})
    inputs = RunInputs(run_dir=tmp_path, checkpoint=tmp_path, data_root=tmp_path, metrics=[fly])
    store = _feature_store(inputs, Embedder(), "cpu", cache_dir="none", weather_seed=None,
                           dark_variant=None, batch_size=2, progress=False, log=print)
    assert (store.dark_variant, store.weather_jpeg, store.weather_seed) == ("train", None, 3)


def test_a_drone_to_satellite_only_evaluation_gets_no_satellite_to_drone_grids(
        tiny_run: tuple[Path, Path], tmp_path: Path, built_report: Path) -> None:
    """Those grids need the whole drone gallery embedded (51,355 images in
    University-1652) for a direction the evaluation did not score."""
    import json

    from mcgf.reporting import build_report

    assert list(built_report.parent.glob("**/grid-s2d-*.jpg"))  # both directions scored
    run, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    metrics = copy / "eval" / "metrics.json"
    report = json.loads(metrics.read_text())
    report["results"] = [r for r in report["results"] if r["direction"] == "drone->satellite"]
    metrics.write_text(json.dumps(report))
    index = build_report(copy, queries=1, device="cpu", progress=False, heatmaps=False,
                         restore_steps=1, tile=32, threads=1, cache_dir=tmp_path / "cache")
    assert not list(index.parent.glob("**/grid-s2d-*.jpg"))
    assert list(index.parent.glob("**/grid-d2s-*.jpg"))
    assert "scored drone → satellite only: satellite → drone grids skipped" in index.read_text()
