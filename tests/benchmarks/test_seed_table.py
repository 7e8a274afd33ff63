"""benchmarks/seed_table.py: options, the table from fake runs, and a tiny run end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import ModuleType

import pytest

from mcgf.errors import UserError
from mcgf.training.config import parse_run_config
from tests.benchmarks.conftest import load_script
from tests.synth.conftest import TINY

CONDS = ["normal", "fog", "rain", "snow", "dark", "light", "fog_rain", "fog_snow", "rain_snow", "wind"]


@pytest.fixture(scope="module")
def st() -> ModuleType:
    return load_script("seed_table")


# ---------------------------------------------------------------- options and configs


def test_parse_methods(st: ModuleType) -> None:
    assert st.parse_methods(None) == ["mcgf", "lpn", "mbeg", "sample4geo", "musenet"]
    assert st.parse_methods("lpn, sample4geo,mcgf") == ["mcgf", "lpn", "sample4geo"]  # table order
    with pytest.raises(UserError, match="unknown method 'wagl'"):
        st.parse_methods("lpn,wagl")
    with pytest.raises(UserError, match="no method given"):
        st.parse_methods(" , ")


def test_split_overrides(st: ModuleType) -> None:
    common, own = st.split_overrides(["train.lr=0.1", "lpn:model.blocks=2", "mbeg:model.weights=a:b.pt"])
    assert common == ["train.lr=0.1"]
    assert own == {"lpn": ["model.blocks=2"], "mbeg": ["model.weights=a:b.pt"]}
    with pytest.raises(UserError, match="unknown method 'wagl'"):
        st.split_overrides(["wagl:model.x=1"])
    for item, option in (("data.root=/x", "--data-root"), ("lpn:train.seed=3", "--seeds"),
                         ("train.epochs=2", "--epochs")):
        with pytest.raises(UserError, match=option):
            st.split_overrides([item])


@pytest.mark.parametrize("scale", ["demo", "paper"])
def test_every_method_gets_the_same_data_weather_seed_and_budget(st: ModuleType, scale: str) -> None:
    cfgs = {m: parse_run_config(st.method_config(m, scale, ["train.lr=0.5"], [], "/d/U", 3, 2), m)
            for m in st.METHODS}
    assert {c.model["name"] for c in cfgs.values()} == set(st.METHODS)
    for c in cfgs.values():
        assert (c.data.root, c.train.seed, c.train.epochs, c.train.lr) == ("/d/U", 2, 3, 0.5)
    st.check_same_weather(cfgs)  # the ten conditions, one weather seed, for all
    own = st.method_config("lpn", scale, [], ["model.blocks=2"], "/d/U", None, 0)
    assert own["model"]["blocks"] == 2 and own["train"]["seed"] == 0
    assert own["train"]["epochs"] == (14 if scale == "demo" else 2)  # the file's own without --epochs
    odd = dict(cfgs)
    odd["lpn"] = parse_run_config(st.method_config("lpn", scale, ["weather.seed=9"], [], "/d", 1, 0), "x")
    with pytest.raises(UserError, match="lpn: its weather section"):
        st.check_same_weather(odd)


def test_demo_budget_fits_the_target(st: ModuleType) -> None:
    est = st.estimate_demo_seconds(list(st.METHODS), st.DEMO_EPOCHS)
    assert est["train"] == pytest.approx(3.98 * 500)  # 1.0 + 0.87 + 0.53 + 0.36 + 1.22 s × 500 steps
    assert est["total"] == pytest.approx(1990 + 5 * 105 + 45)
    assert est["total"] <= st.DEMO_TARGET_SECONDS
    assert st.estimate_demo_seconds(list(st.METHODS), 16)["total"] > st.DEMO_TARGET_SECONDS


def test_notes_random_encoder_and_missing_weights(st: ModuleType, monkeypatch) -> None:
    mbeg = {"name": "mbeg", "pretrained": False, "allow_random_encoder": True}
    assert st.random_encoder_note(mbeg, "MBEG") == "random frozen encoder: not a measurement of MBEG"
    assert st.random_encoder_note({**mbeg, "pretrained": True}, "MBEG") is None
    assert st.random_encoder_note({**mbeg, "weights": "w.safetensors"}, "MBEG") is None
    assert st.random_encoder_note({"name": "lpn"}, "LPN") is None

    import mcgf.models.backbone as backbone

    asked = []

    def unavailable(name: str, overlay: object = None) -> object:
        asked.append((name, overlay))
        raise UserError(f"no pretrained weights for backbone {name!r} and HF_HUB_OFFLINE is set")

    monkeypatch.setattr(backbone, "pretrained_file", unavailable)
    problem = st.weights_problem({"backbone_name": "resnet50.tv_in1k", "pretrained": True,
                                  "backbone_args": {"pretrained_cfg_overlay": {"file": "x"}}})
    assert problem.startswith("pretrained weights unavailable (no pretrained weights for backbone "
                              "'resnet50.tv_in1k'")
    assert asked == [("resnet50.tv_in1k", {"file": "x"})]
    assert st.weights_problem({"backbone_name": "r", "pretrained": False}) is None
    assert st.weights_problem({"backbone_name": "r", "pretrained": True, "weights": "w.pt"}) is None
    assert len(asked) == 1  # neither looked anything up


# ---------------------------------------------------------------- the table from fake runs


def metrics(r1: float) -> dict:
    """A ``metrics.json``: drone→satellite R@1 = r1 (+10 clean), R@5 = r1 + 20, R@10 =
    r1 + 30, AP = r1 / 2, a mean of 10 with R@1 = r1 + 1, and a satellite→drone row."""
    rows = [{"condition": c, "direction": "drone->satellite",
             "metrics": {"R@1": r1 + (10.0 if c == "normal" else 0.0), "R@5": r1 + 20, "R@10": r1 + 30,
                         "AP": r1 / 2, "R@top1%": 0.0}} for c in CONDS]
    rows.append({"condition": "normal", "direction": "satellite->drone",
                 "metrics": {"R@1": 0.0, "R@5": 0.0, "R@10": 0.0, "AP": 0.0}})
    mean = [{"condition": "mean", "direction": "drone->satellite",
             "metrics": {"conditions": 10, "R@1": r1 + 1, "R@5": r1 + 20, "R@10": r1 + 30, "AP": r1 / 2}}]
    return {"results": rows, "mean": mean}


def score(r1: float) -> dict:
    return {"embedder": "x", "R@1": r1, "R@5": r1 + 5, "R@10": r1 + 10, "AP": r1 + 1, "num_queries": 9}


def fake_table(st: ModuleType) -> dict:
    """MCGF seeds 0, 1 (R@1 10 / 14); MBEG seed 0 with a random encoder; Muse-Net skipped."""
    timing = {"epochs": 10, "steps": 500, "eval_seconds": 60.0}
    runs = [st.run_record("mcgf", 0, metrics(10.0), score(20.0), {**timing, "train_seconds": 100.0},
                          (1_250_000, 1_250_000)),
            st.run_record("mbeg", 0, metrics(4.0), score(3.0), {**timing, "train_seconds": 40.0},
                          (900_000, 100_000)),
            st.run_record("mcgf", 1, metrics(14.0), score(24.0), {**timing, "train_seconds": 110.0},
                          (1_250_000, 1_250_000))]
    methods = ["mcgf", "mbeg", "musenet"]
    notes = {"mcgf": None, "mbeg": st.RANDOM_ENCODER.format(label="MBEG"), "musenet": None}
    skipped = {"musenet": "pretrained weights unavailable (offline)"}
    return {"scale": "demo", "methods": methods, "seeds": [0, 1], "epochs": 10, "overrides": ["train.lr=1"],
            "weather": {"conditions": "random", "seed": 0}, "weather_seed": "0",
            "hardware": "Some CPU (CPU, 2 threads), 2 CPU cores",
            "configs": {"mcgf": "configs/demo-cpu.yaml", "mbeg": "configs/mbeg-demo-cpu.yaml",
                        "musenet": "configs/musenet-demo-cpu.yaml"},
            "data": {"root": "runs/t/data", "wx160k": "runs/t/data/University-160k-WX",
                     "ground_truth": "runs/t/data/ground_truth_160k.txt"},
            "skipped": skipped, "runs": runs, "summary": st.summarise(runs, methods, notes, skipped)}


def test_run_record_reads_drone_to_satellite_and_the_mean(st: ModuleType) -> None:
    rec = fake_table(st)["runs"][0]
    assert list(rec["conditions"]) == [*CONDS, "mean"]
    assert rec["conditions"]["normal"] == {"R@1": 20.0, "R@5": 30.0, "R@10": 40.0, "AP": 5.0}
    assert rec["conditions"]["mean"]["R@1"] == 11.0
    assert rec["challenge"] == {"R@1": 20.0, "R@5": 25.0, "R@10": 30.0, "AP": 21.0}
    assert (rec["parameters"], rec["trainable_parameters"], rec["steps"]) == (1_250_000, 1_250_000, 500)


def test_summary_mean_std_and_published(st: ModuleType) -> None:
    res = fake_table(st)
    s = res["summary"]
    assert list(s) == ["mcgf", "mbeg", "musenet"]
    mcgf = s["mcgf"]
    assert mcgf["seeds"] == [0, 1]
    assert mcgf["challenge"]["R@1"] == {"mean": 22.0, "std": pytest.approx(math.sqrt(8)), "n": 2}
    assert mcgf["conditions"]["fog"]["R@1"]["mean"] == 12.0
    assert mcgf["conditions"]["mean"]["AP"] == {"mean": 6.0, "std": pytest.approx(math.sqrt(2)), "n": 2}
    assert mcgf["train_seconds"]["mean"] == 105.0
    assert mcgf["published_160k"] == {"R@1": 84.68, "R@5": None, "R@10": None, "AP": 88.71}
    assert s["mbeg"]["challenge"]["R@1"] == {"mean": 3.0, "std": None, "n": 1}
    assert s["mbeg"]["published_160k"]["R@1"] == 26.17
    assert s["mbeg"]["note"] == "random frozen encoder: not a measurement of MBEG"
    assert s["musenet"]["skipped"].startswith("pretrained weights unavailable")
    assert s["musenet"]["challenge"] is None and s["musenet"]["conditions"] == {}
    assert s["musenet"]["published_wx_mean"] == {"R@1": 65.15, "AP": 69.16}
    json.dumps(res, allow_nan=False)


def test_markdown(st: ModuleType) -> None:
    text = st.markdown(fake_table(st))
    assert "# Comparison methods, demo scale (2 seeds: 0, 1)" in text
    assert "Hardware: Some CPU (CPU, 2 threads), 2 CPU cores." in text
    assert "budget (10 epochs), `--set train.lr=1`" in text
    # Measured mean ± std beside the paper's numbers (R@5 / R@10: not in the paper's table).
    assert ("| MCGF | 22.00 ± 2.83 | 27.00 ± 2.83 | 32.00 ± 2.83 | 23.00 ± 2.83 | 84.68 | – | – | 88.71 |  |"
            in text)
    assert ("| MBEG | 3.00 | 8.00 | 13.00 | 4.00 | 26.17 | – | – | 29.32 | "
            "random frozen encoder: not a measurement of MBEG |") in text
    assert ("| Muse-Net | – | – | – | – | 50.48 | – | – | 53.27 | not run: pretrained weights "
            "unavailable (offline) |") in text
    # Per condition: the caveat marks MBEG's column, the skipped method has none.
    assert "| condition | MCGF | MBEG† |" in text
    assert "| fog | 12.00 ± 2.83 | 4.00 |" in text
    assert "| **mean of 10** | 13.00 ± 2.83 | 5.00 |" in text
    assert "| fog | 6.00 ± 1.41 | 2.00 |" in text  # AP
    assert "† random frozen encoder: not a measurement of MBEG." in text
    assert ("| MCGF | `configs/demo-cpu.yaml` | 10 | 500 | 105.0 ± 7.1 | 60.0 ± 0.0 | 1.25 M | 1.25 M |  |"
            in text)
    assert "| MBEG | `configs/mbeg-demo-cpu.yaml` | 10 | 500 | 40.0 | 60.0 | 0.90 M | 0.10 M |" in text


def test_markdown_published_wx_mean_and_unscored_split(st: ModuleType) -> None:
    res = fake_table(st)
    runs = [*res["runs"], st.run_record("sample4geo", 0, metrics(30.0), None,
                                        {"train_seconds": None, "epochs": 10, "steps": 500}, (1, 1))]
    methods = ["mcgf", "sample4geo"]
    res.update(methods=methods, runs=runs, skipped={}, summary=st.summarise(runs, methods, {}, {}),
               data={**res["data"], "ground_truth": None},
               configs={**res["configs"], "sample4geo": "configs/sample4geo-demo-cpu.yaml"})
    text = st.markdown(res)
    assert "| *published mean of 10 (University-WX)* | – | 85.58 |" in text
    assert "| *published mean of 10 (University-WX)* | – | 88.24 |" in text  # AP
    assert "not scored: `runs/t/data` has no `ground_truth_160k.txt`" in text
    assert "| Sample4Geo | – | – | – | – | – | – | – | – |  |" in text
    res["data"]["wx160k"] = None
    assert "has no University-160k(-WX) folder" in st.markdown(res)


# ---------------------------------------------------------------- the script


def test_bad_input_is_one_line_and_exit_2(st: ModuleType, tmp_path: Path, capsys) -> None:
    out = tmp_path / "o"
    for argv, msg in ((["--seeds", "0"], "--seeds must be at least 1"),
                      (["--seeds", "two"], "--seeds must be an integer"),
                      (["--epochs", "0"], "--epochs must be at least 1"),
                      (["--methods", "nope"], "unknown method 'nope'"),
                      (["--scale", "huge"], "--scale must be demo or paper"),
                      (["--data-root", str(tmp_path / "absent")], "is not a folder"),
                      (["--set", "data.root=/x"], "data.root is set by --data-root"),
                      (["--set", "wagl:model.x=1"], "unknown method 'wagl'"),
                      (["--methods", "lpn", "--set", "mbeg:model.ntxent=0"], "mbeg is not among --methods"),
                      (["--set", "model.blocks=0"], "model.blocks"),
                      (["--set", "weather.conditions=hail"], "weather.conditions")):
        assert st.main(["--out", str(out), *argv]) == 2, argv
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, (argv, err)
    assert not out.exists()


def test_ensure_benchmark_renders_once(st: ModuleType, tmp_path: Path) -> None:
    cfg = {"synth": {"train": 2, "test": 2, "distractors": 1, "extra_distractors": 1, "views": 2,
                     "size": 64, "seed": 3}}
    data = tmp_path / "data"
    assert st.synth_argv(data, cfg["synth"])[:6] == ["synth", str(data), "--train", "2", "--test", "2"]
    # One process keeps this test fast on two cores.
    assert st.ensure_benchmark(data, cfg, "t.yaml", workers=1) is True
    stamp = (data / "metadata.json").stat().st_mtime_ns
    assert st.ensure_benchmark(data, cfg, "t.yaml", workers=1) is False
    assert (data / "metadata.json").stat().st_mtime_ns == stamp
    assert st.ensure_benchmark(data, {"synth": {**cfg["synth"], "views": 3}}, "t.yaml",
                               workers=1) is True
    paths = st.find_data(data)
    assert paths.university == data / "University-Release"
    assert paths.wx160k == data / "University-160k-WX" and paths.ground_truth is not None


@pytest.fixture(scope="module")
def tiny_data(st: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tests' tiny benchmark with 5 satellite-only distractors: a 160k gallery of 10
    tiles, as many as an answer line names."""
    fields = ("train", "test", "distractors", "views", "size", "seed")
    data = tmp_path_factory.mktemp("seed_table") / "data"
    st.ensure_benchmark(data, {"synth": {**{k: getattr(TINY, k) for k in fields},
                                         "extra_distractors": 5}}, "tiny", workers=1)
    return data


def test_tiny_table_end_to_end(st: ModuleType, tiny_data: Path, tmp_path: Path, monkeypatch,
                               capsys) -> None:
    # Muse-Net's weights "cannot be had": its row says so and the other two still run.
    real = st.weights_problem
    monkeypatch.setattr(st, "weights_problem", lambda model: "pretrained weights unavailable (offline)"
                        if model["name"] == "musenet" else real(model))
    out = tmp_path / "table"
    argv = ["--methods", "sample4geo,lpn,musenet", "--epochs", "1", "--data-root", str(tiny_data),
            "--out", str(out), "--set", "data.locations_per_batch=2", "--set", "data.drones_per_location=2",
            "--set", "data.workers=0"]
    assert st.main(argv) == 0
    result = json.loads((out / "seed_table.json").read_text())
    assert result["methods"] == ["lpn", "sample4geo", "musenet"] and result["epochs"] == 1
    assert [(r["method"], r["seed"]) for r in result["runs"]] == [("lpn", 0), ("sample4geo", 0)]
    assert result["skipped"] == {"musenet": "pretrained weights unavailable (offline)"}
    for r in result["runs"]:
        assert list(r["conditions"]) == [*CONDS, "mean"]
        assert r["train_seconds"] > 0 and r["epochs"] == 1 and r["steps"] >= 1
        assert r["parameters"] >= r["trainable_parameters"] > 100_000  # the demo configs' encoders
        assert set(r["challenge"]) == {"R@1", "R@5", "R@10", "AP"}
        assert r["challenge"]["R@10"] == 100.0  # 10 answers from a gallery of 10 tiles
        score = json.loads((out / r["method"] / "seed0" / "predict" / "score.json").read_text())
        assert r["challenge"]["R@1"] == score["R@1"] and score["num_queries"] == 9
        saved = json.loads((out / r["method"] / "seed0" / "last" / "config.json").read_text())
        assert saved["train"]["epochs"] == 1 and saved["train"]["seed"] == 0
        assert saved["data"]["root"] == str(tiny_data / "University-Release")
    assert result["summary"]["lpn"]["published_160k"]["R@1"] == 7.98
    text = (out / "seed_table.md").read_text()
    assert "| LPN | " in text and "| Sample4Geo | " in text
    assert "not run: pretrained weights unavailable (offline)" in text
    assert "| condition | LPN | Sample4Geo |" in text and "Hardware: " in text
    assert "musenet not run" in capsys.readouterr().err

    # A second call reuses both runs and their recorded training time.
    stamp = (out / "lpn" / "seed0" / "last" / "config.json").stat().st_mtime_ns
    assert st.main(argv) == 0
    again = json.loads((out / "seed_table.json").read_text())
    assert (out / "lpn" / "seed0" / "last" / "config.json").stat().st_mtime_ns == stamp
    assert [r["train_seconds"] for r in again["runs"]] == [r["train_seconds"] for r in result["runs"]]
    assert [r["challenge"] for r in again["runs"]] == [r["challenge"] for r in result["runs"]]
