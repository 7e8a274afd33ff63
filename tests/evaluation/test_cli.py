"""``mcgf evaluate`` and ``mcgf predict`` end to end on tiny datasets made here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mcgf.cli.main import main
from mcgf.data.layout import load_university1652
from mcgf.evaluation.features import extract_features
from mcgf.evaluation.university import Condition, evaluate_university, mean_over_conditions
from mcgf.models import build_embedder
from tests.evaluation.conftest import prerendered_copies
from tests.retrieval.test_metrics import naive_query

COMMON = ["--workers", "0", "--quiet", "--device", "cpu"]


def naive_direction(root: Path, qfolder: str, gfolder: str) -> dict[str, float]:
    """R@1 / AP / no-match count computed independently of the ranking code."""
    data = load_university1652(root, splits=("test",))
    emb = build_embedder("thumbnail")
    q = data.folder("test", qfolder).records()
    g = data.folder("test", gfolder).records()
    qf = extract_features(q, emb, progress=False, device="cpu").features.astype(np.float64)
    gf = extract_features(g, emb, progress=False, device="cpu").features.astype(np.float64)
    firsts, aps = [], []
    for i, rec in enumerate(q):
        s = gf @ qf[i]
        order = sorted(range(len(g)), key=lambda j: (-s[j], j))
        f, ap = naive_query([g[j].label for j in order], rec.label)
        firsts.append(f)
        aps.append(ap)
    n = len(q)
    return {"R@1": 100 * sum(f == 0 for f in firsts) / n, "AP": 100 * sum(aps) / n,
            "no_match": sum(f < 0 for f in firsts), "n": n}


def test_evaluate_matches_naive_metrics(tiny_u1652: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ev"
    assert main(["evaluate", str(tiny_u1652), "--out", str(out), *COMMON]) == 0
    printed = capsys.readouterr().out
    assert "| clean | drone->satellite |" in printed and "metrics.json" in printed
    report = json.loads((out / "metrics.json").read_text())
    assert report["protocol"] == "university-1652"
    rows = {r["direction"]: r["metrics"] for r in report["results"]}
    for direction, (qf, gf) in {"drone->satellite": ("query_drone", "gallery_satellite"),
                                "satellite->drone": ("query_satellite", "gallery_drone")}.items():
        expect = naive_direction(tiny_u1652, qf, gf)
        m = rows[direction]
        assert m["R@1"] == pytest.approx(expect["R@1"]) and m["AP"] == pytest.approx(expect["AP"])
        assert m["queries_without_match"] == expect["no_match"] and m["num_queries"] == expect["n"]
    d2s = rows["drone->satellite"]
    assert d2s["queries_without_match"] == 3 and d2s["gallery_size"] == 5  # distractor kept
    assert (out / "metrics.md").read_text().count("| clean |") == 2
    assert any(out.joinpath("feature-cache").iterdir())


def test_evaluate_exclude_policy_changes_denominator(tiny_u1652: Path, tmp_path: Path) -> None:
    args = [str(tiny_u1652), "--directions", "d2s", *COMMON]
    assert main(["evaluate", *args, "--out", str(tmp_path / "a")]) == 0
    assert main(["evaluate", *args, "--out", str(tmp_path / "b"), "--no-match", "exclude"]) == 0
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())["results"][0]["metrics"]
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())["results"][0]["metrics"]
    assert b["R@1"] == pytest.approx(a["R@1"] * 15 / 12) and b["queries_in_mean"] == 12


def test_evaluate_prerendered_wx(tiny_u1652: Path, tmp_path: Path) -> None:
    wx = tmp_path / "wx"
    prerendered_copies(tiny_u1652, wx, "normal", "zz_custom")
    out = tmp_path / "ev"
    assert main(["evaluate", str(tiny_u1652), "--wx-dir", str(wx), "--directions", "d2s",
                 "--out", str(out), *COMMON]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["protocol"] == "university-wx"
    assert [r["condition"] for r in report["results"]] == ["normal", "zz_custom"]
    assert report["mean"][0]["metrics"]["R@1"] == pytest.approx(report["results"][0]["metrics"]["R@1"])


def test_on_the_fly_weather_rows(tiny_u1652: Path) -> None:
    pytest.importorskip("mcgf.weather")
    from mcgf.evaluation.university import on_the_fly_conditions

    emb = build_embedder("thumbnail")
    conds = on_the_fly_conditions(["normal", "dark"], seed=3)
    from mcgf.evaluation.university import ExtractOptions

    opts = ExtractOptions(progress=False, device="cpu")
    rows = evaluate_university(tiny_u1652, emb, directions=["drone->satellite"], conditions=conds,
                               options=opts)
    clean = evaluate_university(tiny_u1652, emb, directions=["drone->satellite"], options=opts)
    assert rows[0].metrics["AP"] == pytest.approx(clean[0].metrics["AP"])  # normal == clean
    mean = mean_over_conditions(rows)[0].metrics
    assert mean["AP"] == pytest.approx((rows[0].metrics["AP"] + rows[1].metrics["AP"]) / 2)
    assert isinstance(conds[1], Condition) and conds[1].transform_id.startswith("weather:dark")


def test_evaluate_user_errors_are_one_line(tmp_path: Path, tiny_u1652: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        ["evaluate", str(tmp_path / "missing")],
        ["evaluate", str(tiny_u1652), "--directions", "up"],
        ["evaluate", str(tiny_u1652), "--embedder", "nope"],
        ["evaluate", str(tiny_u1652), "--embedder-arg", "grid"],
        ["evaluate", str(tiny_u1652), "--embedder-arg", "colour=3"],
        ["evaluate", str(tiny_u1652), "--batch-size", "x"],
        ["evaluate", str(tiny_u1652), "--checkpoint", str(tmp_path / "none.pt")],
        ["evaluate", str(tiny_u1652), "--wx-dir", str(tmp_path / "nowx")],
    ]
    for argv in cases:
        assert main([*argv, "--out", str(tmp_path / "o"), *COMMON]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("mcgf: error:") and "Traceback" not in err
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_predict_writes_valid_answer_and_scores(tiny_160k: tuple[Path, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    root, gt = tiny_160k
    out = tmp_path / "pred"
    assert main(["predict", str(root), "--out", str(out), "--ground-truth", str(gt), *COMMON]) == 0
    printed = capsys.readouterr().out
    lines = (out / "answer.txt").read_text().splitlines()
    names = (root / "query_drone_name.txt").read_text().split()
    stems = {p.stem for p in (root / "gallery_satellite_160k").iterdir()}
    assert len(lines) == len(names)
    for line in lines:
        parts = line.split("\t")
        assert len(parts) == 10 and len(set(parts)) == 10 and set(parts) <= stems
    score = json.loads((out / "score.json").read_text())
    assert "R@1" in printed and 0 <= score["R@1"] <= 100
    # the queries are noisy copies of their tiles: the thumbnail finds most of them
    assert score["R@10"] == 100.0 and score["R@1"] >= 50.0
    # --score-only gives the same numbers from the zip
    assert main(["predict", "--score-only", str(out / "answer.zip"), "--ground-truth", str(gt)]) == 0
    assert f"R@1 {score['R@1']:.2f}" in capsys.readouterr().out
    # a new answer without --ground-truth takes the old score with the old answer
    assert main(["predict", str(root), "--out", str(out), "--separator", "space", *COMMON]) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["answer.txt", "answer.zip",
                                                                     "prediction.json"]
    assert " " in (out / "answer.txt").read_text().splitlines()[0]


def test_score_only_with_root_follows_its_names_file(tiny_160k: tuple[Path, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """ROOT's names file fixes the answer's line order, whatever the ground truth's order."""
    root, gt = tiny_160k
    out = tmp_path / "pred"
    assert main(["predict", str(root), "--out", str(out), "--ground-truth", str(gt), *COMMON]) == 0
    score = json.loads((out / "score.json").read_text())
    capsys.readouterr()
    shuffled = tmp_path / "gt_sorted.txt"
    shuffled.write_text("".join(sorted(gt.read_text().splitlines(keepends=True))))
    assert shuffled.read_text() != gt.read_text()
    argv = ["predict", str(root), "--score-only", str(out / "answer.zip"), "--ground-truth", str(shuffled)]
    assert main(argv) == 0
    assert f"R@1 {score['R@1']:.2f}  R@5 {score['R@5']:.2f}" in capsys.readouterr().out
    # a ROOT without a names file (nor a split one folder down) is a one-line error, not
    # the ground truth's order
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(tmp_path / "empty"), *argv[2:]]) == 2
    assert "query_drone_name.txt" in capsys.readouterr().err


def test_predict_user_errors(tiny_160k: tuple[Path, Path], tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    root, _gt = tiny_160k
    out = tmp_path / "p"
    (tmp_path / "empty").mkdir()
    cases = [
        ["predict", "--out", str(out)],
        ["predict", str(tmp_path / "empty"), "--out", str(out)],
        ["predict", "--score-only", str(tmp_path / "a.txt")],
        ["predict", str(root), "--names", str(tmp_path / "none.txt"), "--out", str(out)],
    ]
    for argv in cases:
        assert main([*argv, *COMMON]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
    assert not (out / "answer.txt").exists()


def test_predict_root_with_an_override_for_a_part_it_cannot_resolve(
        tiny_160k: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """ROOT with two query folders (the 2023 and the 2024 queries side by side) and
    --queries naming one: ROOT still gives the names file and the gallery."""
    root, gt = tiny_160k
    shutil.copytree(root / "query_drone_160k_wx", root / "query_drone_160k")
    out = tmp_path / "pred"
    argv = ["predict", str(root), "--queries", str(root / "query_drone_160k_wx"), "--out", str(out),
            "--ground-truth", str(gt), *COMMON]
    assert main(argv) == 0, capsys.readouterr().err
    assert len((out / "answer.txt").read_text().splitlines()) == len(gt.read_text().splitlines())
    # without --queries the choice is still the user's, in one line
    assert main(["predict", str(root), "--out", str(tmp_path / "p2"), *COMMON]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--queries" in err and "Traceback" not in err
    # a ROOT without names file and gallery is fine when both are given
    bare = tmp_path / "bare"
    shutil.copytree(root / "query_drone_160k_wx", bare / "query_drone_x")
    assert main(["predict", str(bare), "--names", str(root / "query_drone_name.txt"),
                 "--gallery", str(root / "gallery_satellite_160k"), "--out", str(tmp_path / "p3"),
                 *COMMON]) == 0


def test_predict_root_one_level_above_the_split(tiny_160k: tuple[Path, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """As mcgf evaluate and mcgf data check: ROOT may be the folder an archive was unpacked
    into, holding the split one level down."""
    root, gt = tiny_160k
    parent = tmp_path / "unpacked"
    parent.mkdir()
    root.rename(parent / root.name)
    (parent / "README.txt").write_text("readme")
    out = tmp_path / "pred"
    assert main(["predict", str(parent), "--out", str(out), "--ground-truth", str(gt), *COMMON]) == 0
    assert len((out / "answer.txt").read_text().splitlines()) == len(gt.read_text().splitlines())
    # two splits below: the user picks one, in one line
    shutil.copytree(parent / root.name, parent / "copy")
    assert main(["predict", str(parent), "--out", str(tmp_path / "p2"), *COMMON]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "copy" in err and "Traceback" not in err


def test_predict_refuses_a_gallery_name_an_answer_cannot_hold_before_embedding(
        tiny_160k: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A gallery file named with a space (a copy a file manager made) cannot be written in
    an answer line: the run stops before embedding anything, naming the file."""
    root, _gt = tiny_160k
    gallery = root / "gallery_satellite_160k"
    first = sorted(gallery.iterdir())[0]
    shutil.copy(first, gallery / f"{first.stem} 2{first.suffix}")
    out = tmp_path / "pred"
    assert main(["predict", str(root), "--out", str(out), *COMMON]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{first.stem} 2{first.suffix}" in err and "rename" in err
    assert not out.exists()
    from mcgf.data.check import check_dataset

    rep = check_dataset(root, decode=False)
    assert not rep.ok and any(f"{first.stem} 2" in e for e in rep.errors)


def test_predict_checks_the_ground_truth_before_embedding(
        tiny_160k: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing ground-truth file, or one that lacks a query, stops the run before the
    gallery is embedded (hours at 160k scale), and no answer is written."""
    root, gt = tiny_160k
    short = tmp_path / "short.txt"
    short.write_text("".join(gt.read_text().splitlines(keepends=True)[1:]))
    for bad, says in ((tmp_path / "none.txt", "does not exist"), (short, "is not in")):
        out = tmp_path / f"pred-{bad.stem}"
        assert main(["predict", str(root), "--out", str(out), "--ground-truth", str(bad), *COMMON]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err and str(bad) in err
        assert not out.exists()


def test_metrics_markdown_states_the_tie_rule() -> None:
    from mcgf.evaluation.report import render_markdown

    row = {"condition": "clean", "direction": "drone->satellite",
           "metrics": {"R@1": 1.0, "R@5": 1.0, "R@10": 1.0, "R@top1%": 1.0, "AP": 1.0,
                       "queries": 1, "queries_without_match": 0}}
    text = render_markdown({"protocol": "university-1652", "results": [row]})
    assert "Equal scores rank the lower gallery index first" in text


def test_metrics_record_feature_cache_hits(tiny_u1652: Path, tmp_path: Path) -> None:
    out = tmp_path / "ev"
    args = ["evaluate", str(tiny_u1652), "--out", str(out), "--directions", "d2s", *COMMON]
    assert main(args) == 0
    first = json.loads((out / "metrics.json").read_text())
    assert first["feature_cache"] == {"hits": 0, "sets": 2}
    assert first["results"][0]["metrics"]["query_features_cached"] is False
    assert main(args) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["feature_cache"] == {"hits": 2, "sets": 2}
    assert again["results"][0]["metrics"]["gallery_features_cached"] is True


def test_evaluate_says_its_device_and_precision_first(tiny_u1652: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from mcgf import runtime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "cpu_fallback_reason", lambda: "an NVIDIA driver is present but")
    args = ["evaluate", str(tiny_u1652), "--out", str(tmp_path / "ev"), "--workers", "0",
            "--directions", "d2s"]
    assert main(args) == 0  # --device auto
    assert capsys.readouterr().out.splitlines()[0] == \
        "device: cpu, precision fp32 (an NVIDIA driver is present but)"
    assert main([*args, "--device", "cpu"]) == 0  # asked for: no reason to give
    assert capsys.readouterr().out.splitlines()[0] == "device: cpu, precision fp32"
    assert main([*args, "--quiet"]) == 0
    assert "device:" not in capsys.readouterr().out


def test_on_the_fly_weather_is_stored_as_jpeg_like_the_published_sets(
        tiny_u1652: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("mcgf.weather")
    from mcgf.cli import evaluate as cli_evaluate
    from mcgf.evaluation.features import weather_transform
    from mcgf.evaluation.university import WX_JPEG_QUALITY
    from mcgf.weather import apply_weather
    from mcgf.weather.arrays import jpeg_round_trip

    assert cli_evaluate.WX_JPEG_QUALITY == WX_JPEG_QUALITY == 95
    _, plain_id = weather_transform("fog", 2, "test")
    stored, stored_id = weather_transform("fog", 2, "test", 95)
    assert stored_id == plain_id + ":jpeg=95"  # cached features of either never mix
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(stored(img, "0001/a.jpg")[0],
                                  jpeg_round_trip(apply_weather(img, "fog", seed=2, key="0001/a.jpg",
                                                                dark_variant="test"), 95))
    runs = {}
    for name, extra in (("default", []), ("none", ["--weather-jpeg", "none"])):
        out = tmp_path / name
        assert main(["evaluate", str(tiny_u1652), "--weather", "normal,rain", "--directions", "d2s",
                     "--probe-folds", "2", "--out", str(out), "--workers", "0", "--quiet",
                     "--device", "cpu", *extra]) == 0
        runs[name] = json.loads((out / "metrics.json").read_text())
    assert runs["default"]["weather"]["jpeg_quality"] == 95
    assert runs["none"]["weather"]["jpeg_quality"] is None
    # The clean images are the same either way; the weathered ones are not (their
    # embeddings move: the clean-weathered cosine changes).
    r = {k: {row["condition"]: row["metrics"]["AP"] for row in v["results"]} for k, v in runs.items()}
    assert r["default"]["normal"] == r["none"]["normal"]
    cos = {k: {c["condition"]: c["cosine"] for c in v["invariance"]["per_condition"]}
           for k, v in runs.items()}
    assert cos["default"]["normal"] == pytest.approx(1.0) == cos["none"]["normal"]
    assert abs(cos["default"]["rain"] - cos["none"]["rain"]) > 1e-6
    capsys.readouterr()
    assert main(["evaluate", str(tiny_u1652), "--weather", "rain", "--weather-jpeg", "0",
                 "--out", str(tmp_path / "bad"), "--quiet"]) != 0
    err = capsys.readouterr().err
    assert "--weather-jpeg must be a JPEG quality 1..100 or 'none'" in err and err.count("\n") == 1


def test_out_and_cache_that_are_files_are_one_line_errors(
        tiny_u1652: Path, tiny_160k: tuple[Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Checked before the features are extracted, not when the results are written."""
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    root, _gt = tiny_160k
    cases = [
        (["evaluate", str(tiny_u1652), "--out", str(notes)], "--out"),
        (["evaluate", str(tiny_u1652), "--out", str(notes / "eval")], "--out"),
        (["evaluate", str(tiny_u1652), "--out", str(tmp_path / "o"), "--cache-dir", str(notes)],
         "--cache-dir"),
        (["predict", str(root), "--out", str(notes)], "--out"),
    ]
    for argv, option in cases:
        assert main([*argv, *COMMON]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"mcgf: error: {option} " in err and "not a folder" in err, err
    assert notes.read_text() == "keep me"
    assert not (tmp_path / "o").exists()
