"""benchmarks/ablation.py: variant configs, statistics, Markdown, and a tiny run end to end."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

from mcgf.errors import UserError
from mcgf.models.model_registry import model_options
from mcgf.training.config import parse_run_config
from tests.training.test_loop import root as root

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ablation.py"
CONDS = ["normal", "fog", "rain", "snow", "dark", "light", "fog_rain", "fog_snow", "rain_snow", "wind"]
HAS_CONDITION = "restoration_condition" in model_options("mcgf")


@pytest.fixture(scope="module")
def abl() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ablation", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["ablation"] = mod
    spec.loader.exec_module(mod)
    return mod


BASE = {"data": {"root": "/data/U", "locations_per_batch": 2},
        "weather": {"conditions": "random", "clean_fraction": 0.5},
        "model": {"restoration": True, "img_size": 32, "restoration_width": 8},
        "train": {"epochs": 3, "seed": 7, "lr": 1.0}}


def _diff(a: dict, b: dict) -> set[str]:
    """Dotted keys whose value differs between two two-level configs."""
    keys = {f"{s}.{k}" for c in (a, b) for s, opts in c.items() for k in opts}
    return {k for k in keys if a.get(k.split(".")[0], {}).get(k.split(".")[1], "<absent>")
            != b.get(k.split(".")[0], {}).get(k.split(".")[1], "<absent>")}


# ---------------------------------------------------------------- configs


def test_variant_configs_differ_from_the_base_only_in_their_keys(abl: ModuleType) -> None:
    documented = {"model.restoration", "model.restoration_condition", "model.lambda_restore", "train.seed"}
    for name in abl.VARIANTS:
        cfg = abl.variant_config(BASE, name, 2)
        extra = {"weather.conditions"} if name == "no-weather" else set()
        assert _diff(BASE, cfg) <= documented | extra, name
        assert cfg["train"]["seed"] == 2
        assert cfg["data"] == BASE["data"] and cfg["train"]["epochs"] == 3 and cfg["train"]["lr"] == 1.0
    assert BASE["train"]["seed"] == 7 and BASE["model"]["restoration"] is True  # input untouched

    off = abl.variant_config(BASE, "weather", 0)
    assert off["model"]["restoration"] is False and off["model"]["lambda_restore"] == 0.0
    assert off["weather"] == BASE["weather"] and "restoration_condition" not in off["model"]
    assert abl.variant_config(BASE, "no-weather", 0)["weather"] == {"conditions": "none", "clean_fraction": 0.5}
    image = abl.variant_config(BASE, "mcgf-image", 0)
    assert image["model"]["restoration_condition"] == "features+image"
    assert image["model"]["lambda_restore"] == 0.1
    for name, lam in (("mcgf-features-0.1", 0.1), ("mcgf-features-0.5", 0.5), ("mcgf-features-1", 1.0)):
        cfg = abl.variant_config(BASE, name, 0)
        assert cfg["model"] == {**BASE["model"], "restoration": True, "restoration_condition": "features",
                                "lambda_restore": lam}
    # A base config of the former layout (loss weights under train:) gets them moved first.
    old = {**BASE, "train": {**BASE["train"], "lambda_restore": 0.3, "infonce": 0.2}}
    cfg = abl.variant_config(old, "mcgf-features-0.5", 0)
    assert cfg["model"]["lambda_restore"] == 0.5 and cfg["model"]["infonce"] == 0.2
    assert "lambda_restore" not in cfg["train"] and "infonce" not in cfg["train"]
    assert abl.variant_config(old, "weather", 0)["model"]["lambda_restore"] == 0.0


def test_variant_config_adds_missing_sections(abl: ModuleType) -> None:
    cfg = abl.variant_config({"data": {"root": "x"}}, "mcgf-features-0.5", 1)
    assert cfg["model"] == {"restoration": True, "restoration_condition": "features",
                            "lambda_restore": 0.5}
    assert cfg["train"] == {"seed": 1}


@pytest.mark.skipif(not HAS_CONDITION, reason="this MCGFModel has no restoration_condition option")
def test_every_variant_is_a_valid_run_config(abl: ModuleType) -> None:
    for name in abl.VARIANTS:
        cfg = parse_run_config(abl.variant_config(BASE, name, 0), "t")
        assert cfg.train.seed == 0


def test_parse_variants_and_missing_options(abl: ModuleType) -> None:
    assert abl.parse_variants(None) == list(abl.VARIANTS)
    assert abl.parse_variants("weather, no-weather") == ["no-weather", "weather"]  # canonical order
    with pytest.raises(UserError, match="unknown variant 'mcgf'"):
        abl.parse_variants("weather,mcgf")
    with pytest.raises(UserError, match="no variant"):
        abl.parse_variants(",")
    accepted = {"restoration", "img_size", "lambda_restore"}
    assert abl.missing_model_options(["weather", "no-weather"], accepted) == {}
    assert abl.missing_model_options(["weather", "mcgf-image"], accepted) == {
        "mcgf-image": ["restoration_condition"]}


# ---------------------------------------------------------------- statistics


def test_mean_std_is_the_sample_std(abl: ModuleType) -> None:
    mean, std = abl.mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and std == pytest.approx(math.sqrt(5 / 3))
    assert abl.mean_std([3.0]) == (3.0, None)
    assert abl.mean_std([]) == (None, None)


def test_weather_mean_leaves_out_normal(abl: ModuleType) -> None:
    rows = {"normal": {"R@1": 90.0}, "fog": {"R@1": 10.0}, "rain": {"R@1": 20.0}}
    assert abl.weather_mean(rows, "R@1") == 15.0
    with pytest.raises(ValueError):
        abl.weather_mean({"normal": {"R@1": 1.0}}, "R@1")


def test_paired_comparison_known_values(abl: ModuleType) -> None:
    base = {0: 10.0, 1: 12.0, 2: 11.0}  # seed noise σ = 1
    p = abl.paired_comparison(base, {0: 12.0, 1: 13.0, 2: 14.0})
    assert p["seeds"] == [0, 1, 2] and p["differences"] == [2.0, 1.0, 3.0]
    assert p["mean"] == 2.0 and p["std"] == pytest.approx(1.0) and p["noise_std"] == pytest.approx(1.0)
    assert p["t"] == pytest.approx(2.0 / (1.0 / math.sqrt(3))) and p["df"] == 2
    assert p["beats_by_2sigma"] is False  # mean Δ = 2σ exactly: not more than 2σ


def test_verdict_flips_at_two_sigma(abl: ModuleType) -> None:
    base = {0: 10.0, 1: 12.0, 2: 11.0}
    below = abl.paired_comparison(base, {s: v + 1.99 for s, v in base.items()})
    above = abl.paired_comparison(base, {s: v + 2.01 for s, v in base.items()})
    assert below["beats_by_2sigma"] is False and above["beats_by_2sigma"] is True
    # Constant differences: no spread, so no t.
    assert above["t"] is None and above["std"] == pytest.approx(0.0, abs=1e-12)
    worse = abl.paired_comparison(base, {0: 8.0, 1: 11.0, 2: 9.0})
    assert worse["mean"] == -5 / 3 and worse["t"] < 0 and worse["beats_by_2sigma"] is False


def test_paired_comparison_one_seed_and_unpaired_seeds(abl: ModuleType) -> None:
    p = abl.paired_comparison({0: 10.0, 1: 11.0}, {1: 15.0, 2: 3.0})
    assert p["seeds"] == [1] and p["differences"] == [4.0] and p["mean"] == 4.0
    assert p["std"] is None and p["noise_std"] is None and p["t"] is None and p["df"] is None
    assert p["beats_by_2sigma"] is None


# ---------------------------------------------------------------- metrics.json


def metrics(r1: float, *, cosine: float | None = None, probe: float | None = None) -> dict:
    """A drone→satellite ``metrics.json`` with R@1 = r1 (+1 clean), AP = r1 / 2."""
    results = [{"condition": c, "direction": "drone->satellite",
                "metrics": {"R@1": r1 + (1.0 if c == "normal" else 0.0), "AP": r1 / 2, "R@5": 0.0}}
               for c in CONDS]
    results.append({"condition": "normal", "direction": "satellite->drone", "metrics": {"R@1": 0.0, "AP": 0.0}})
    out: dict = {"results": results}
    if cosine is not None:
        per = [{"condition": c, "cosine": 1.0 if c == "normal" else cosine,
                "normalised": 1.0 if c == "normal" else cosine / 2, "same_as_clean": c == "normal"}
               for c in CONDS]
        out["invariance"] = {"per_condition": per,
                             "probe": None if probe is None else {"accuracy": probe, "chance": 10.0}}
    return out


def test_read_invariance(abl: ModuleType) -> None:
    assert abl.read_invariance(metrics(10.0)) is None
    inv = abl.read_invariance(metrics(10.0, cosine=0.6, probe=30.0))
    assert inv == {"cosine": pytest.approx(0.6), "normalised": pytest.approx(0.3),
                   "probe_accuracy": 30.0, "probe_chance": 10.0}  # normal (same as clean) left out
    no_probe = abl.read_invariance(metrics(10.0, cosine=0.6))
    assert no_probe["probe_accuracy"] is None and no_probe["cosine"] == pytest.approx(0.6)
    m = metrics(10.0, cosine=0.6)
    for r in m["invariance"]["per_condition"]:
        r["normalised"] = None
    assert abl.read_invariance(m)["normalised"] is None


def test_run_record(abl: ModuleType) -> None:
    rec = abl.run_record("weather", 1, metrics(10.0), 12.5)
    assert list(rec["conditions"]) == CONDS  # drone→satellite only
    assert rec["conditions"]["normal"] == {"R@1": 11.0, "AP": 5.0}
    assert rec["weather_mean"] == {"R@1": 10.0, "AP": 5.0}
    assert rec["invariance"] is None and rec["train_seconds"] == 12.5


def ablation(abl: ModuleType, with_probes: bool) -> dict:
    """Two seeds of weather (10, 12), mcgf-image (13, 16) and no-weather (5, 5)."""
    def rec(v: str, s: int, r1: float, cos: float, probe: float) -> dict:
        m = metrics(r1, cosine=cos, probe=probe) if with_probes else metrics(r1)
        return abl.run_record(v, s, m, 100.0 + s if s == 0 else None)

    runs = [rec("no-weather", 0, 5.0, 0.2, 80.0), rec("weather", 0, 10.0, 0.5, 40.0),
            rec("mcgf-image", 0, 13.0, 0.7, 30.0),
            rec("no-weather", 1, 5.0, 0.2, 80.0), rec("weather", 1, 12.0, 0.5, 40.0),
            rec("mcgf-image", 1, 16.0, 0.4, 45.0)]
    summary = abl.summarise(runs)
    return {"config": "c.yaml", "overrides": ["train.lr=1"], "epochs": 2, "weather_seed": "0",
            "seeds": [0, 1], "runs": runs, "summary": summary, "paired": abl.compare(runs, summary)}


def test_summary_and_paired_comparison(abl: ModuleType) -> None:
    res = ablation(abl, with_probes=True)
    s = res["summary"]
    assert list(s) == ["no-weather", "weather", "mcgf-image"]
    assert s["weather"]["seeds"] == [0, 1]
    assert s["weather"]["weather_mean"]["R@1"]["mean"] == 11.0
    assert s["weather"]["weather_mean"]["R@1"]["std"] == pytest.approx(math.sqrt(2))
    assert s["weather"]["conditions"]["normal"]["R@1"]["mean"] == 12.0
    assert s["no-weather"]["conditions"]["fog"]["AP"] == {"mean": 2.5, "std": 0.0, "n": 2}
    assert s["weather"]["train_seconds"] == {"mean": 100.0, "std": None, "n": 1}
    assert s["mcgf-image"]["invariance"]["cosine"]["mean"] == pytest.approx(0.55)
    p = res["paired"]
    assert list(p) == ["mcgf-image"]  # only MCGF variants are compared
    assert p["mcgf-image"]["differences"] == [3.0, 4.0]
    assert p["mcgf-image"]["mean"] == 3.5 and p["mcgf-image"]["df"] == 1
    assert p["mcgf-image"]["t"] == pytest.approx(3.5 / (math.sqrt(0.5) / math.sqrt(2)))
    # σ = √2, 2σ ≈ 2.83 < 3.5
    assert p["mcgf-image"]["beats_by_2sigma"] is True
    assert p["mcgf-image"]["invariance"] == {"cosine_up": True, "normalised_up": True, "probe_down": True}
    json.dumps(res, allow_nan=False)


def test_markdown(abl: ModuleType) -> None:
    text = abl.markdown(ablation(abl, with_probes=True))
    assert "| condition | no-weather | weather | mcgf-image |" in text
    assert "| fog | 5.00 ± 0.00 | 11.00 ± 1.41 | 14.50 ± 2.12 |" in text
    assert "| **nine-weather mean** | 5.00 ± 0.00 | 11.00 ± 1.41 | 14.50 ± 2.12 |" in text
    assert "| fog | 2.50 | 5.50 | 7.25 |" in text  # AP means
    assert "| mcgf-image | 0: +3.00, 1: +4.00 | +3.50 ± 0.71 | 1.41 | yes | +7.00 (1) |" in text
    assert "| mcgf-image | 0.550 ± 0.212 | 0.275 ± 0.106 | 37.5 ± 10.6 | yes | yes | yes |" in text
    assert "| weather | 0.500 ± 0.000 |" in text
    assert "| weather | 100 | – | 100 |" in text
    assert "`--set train.lr=1`" in text


def test_markdown_without_probes_or_baseline(abl: ModuleType) -> None:
    res = ablation(abl, with_probes=False)
    text = abl.markdown(res)
    assert "No invariance probes" in text and "clean–weathered cosine" not in text
    assert res["paired"]["mcgf-image"]["invariance"] is None
    runs = [r for r in res["runs"] if r["variant"] != "weather"]
    summary = abl.summarise(runs)
    assert abl.compare(runs, summary) == {}
    text = abl.markdown({**res, "runs": runs, "summary": summary, "paired": {}})
    assert "No paired comparison" in text


# ---------------------------------------------------------------- the script


def test_bad_input_is_one_line_and_exit_2(abl: ModuleType, tmp_path: Path, capsys, monkeypatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {root: x}\n")
    for argv, msg in ((["--seeds", "0"], "--seeds must be >= 1"),
                      (["--variants", "nope"], "unknown variant 'nope'"),
                      (["--epochs", "0"], "--epochs must be >= 1")):
        assert abl.main(["--config", str(cfg), "--out", str(tmp_path / "o"), *argv]) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1
    none = tmp_path / "n.yaml"
    none.write_text("data: {root: x}\nweather: {conditions: none}\n")
    assert abl.main(["--config", str(none), "--out", str(tmp_path / "o")]) == 2
    assert "weather.conditions is 'none'" in capsys.readouterr().err
    # A model without restoration_condition (before that option existed) stops the MCGF variants.
    import mcgf.models.model_registry as registry

    monkeypatch.setattr(registry, "model_options",
                        lambda name: {"restoration", "img_size", "lambda_restore"})
    assert abl.main(["--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "variant mcgf-image needs model.restoration_condition" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_tiny_ablation_end_to_end(abl: ModuleType, root: Path, tmp_path: Path) -> None:
    # The training tree of the loop tests has no test split: evaluate on a copy of train.
    data = tmp_path / "U"
    shutil.copytree(root, data)
    test = data / "test"
    shutil.copytree(data / "train" / "drone", test / "query_drone")
    shutil.copytree(data / "train" / "satellite", test / "gallery_satellite")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"data: {{root: {data}, locations_per_batch: 2, drones_per_location: 2, workers: 0}}\n"
        "weather: {conditions: random}\n"
        "model: {backbone_name: vit_tiny_patch16_224, img_size: 32, bottleneck_dim: 8,"
        " restoration_width: 8, restoration_mults: [1], restoration_blocks: 1}\n"
        "train: {epochs: 3, lr: 0.001, lambda_restore: 0.3}\n")  # the former layout still works
    out = tmp_path / "abl"
    argv = ["--config", str(cfg), "--out", str(out), "--seeds", "1", "--epochs", "1",
            "--variants", "weather,no-weather"]
    assert abl.main(argv) == 0
    result = json.loads((out / "ablation.json").read_text())
    assert result["seeds"] == [0] and result["epochs"] == 1
    assert list(result["summary"]) == ["no-weather", "weather"]
    assert [(r["variant"], r["seed"]) for r in result["runs"]] == [("no-weather", 0), ("weather", 0)]
    assert all(len(r["conditions"]) == 10 and r["train_seconds"] > 0 for r in result["runs"])
    assert result["paired"] == {}  # no MCGF variant ran
    for v, conditions in (("weather", "random"), ("no-weather", "none")):
        saved = json.loads((out / v / "seed0" / "last" / "config.json").read_text())
        assert saved["model"]["restoration"] is False and saved["model"]["lambda_restore"] == 0.0
        assert "lambda_restore" not in saved["train"]
        assert saved["weather"]["conditions"] == conditions
        assert saved["train"]["epochs"] == 1 and saved["train"]["seed"] == 0
    has_probes = "invariance" in json.loads((out / "weather" / "seed0" / "eval" / "metrics.json").read_text())
    assert (result["runs"][0]["invariance"] is not None) == has_probes
    text = (out / "ablation.md").read_text()
    assert "| **nine-weather mean** |" in text and "## Training time (s)" in text

    # A second call reuses both runs (and their recorded training time).
    stamp = (out / "weather" / "seed0" / "last" / "config.json").stat().st_mtime_ns
    assert abl.main(argv) == 0
    again = json.loads((out / "ablation.json").read_text())
    assert (out / "weather" / "seed0" / "last" / "config.json").stat().st_mtime_ns == stamp
    assert [r["train_seconds"] for r in again["runs"]] == [r["train_seconds"] for r in result["runs"]]
