"""The comparison methods' configs: a paper-scale one and a CPU demo one per method, the
demo sharing the MCGF demo's data, weather and training, the paper one the MCGF paper
config's data root and weather."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from mcgf.config import load_config
from mcgf.models.model_registry import create_model
from mcgf.training.config import parse_run_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
METHODS = ("lpn", "mbeg", "sample4geo")


def _model(path: Path, **over: Any) -> torch.nn.Module:
    cfg = parse_run_config(load_config(path), str(path))
    options = {**cfg.model, "pretrained": False, "weights": None, "num_classes": 701, **over}
    return create_model(**options)


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("method", METHODS)
def test_paper_config(method: str) -> None:
    path = CONFIGS / f"{method}.yaml"
    cfg, paper = load_config(path), load_config(CONFIGS / "mcgf-eva02-l-448.yaml")
    assert cfg["model"]["name"] == method and cfg["model"]["pretrained"] is True
    assert cfg["data"]["root"] == paper["data"]["root"] and cfg["weather"] == paper["weather"]
    # Every value says where it comes from.
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("  ") and ":" in ln
             and not ln.strip().startswith("#") and ln.split(":")[1].split("#")[0].strip()]
    unmarked = [ln for ln in lines if "from source" not in ln and "guess" not in ln
                and ln.split(":")[0].strip() not in {"root", "workers", "seed", "accumulate",
                                                     "device", "amp", "pretrained", "name",
                                                     "conditions", "log_every", "drone_flip"}]
    assert not unmarked, unmarked
    with torch.device("meta"):
        model = _model(path)
    assert model.input_size == (cfg["model"]["img_size"],) * 2


def test_paper_scale_architectures() -> None:
    with torch.device("meta"):
        lpn, mbeg, s4g = (_model(CONFIGS / f"{m}.yaml") for m in METHODS)
    # ResNet-50 (23.5 M) with 4 ring heads; EVA-02-L (304 M) frozen; ConvNeXt-B (87.6 M).
    assert _params(lpn.encoder) == pytest.approx(23.5e6, rel=1e-2) and len(lpn.heads) == 4
    assert _params(mbeg.encoder) == pytest.approx(304.1e6, rel=1e-3)
    assert mbeg.encoder_parameters() == [] and mbeg.random_encoder is True
    assert _params(s4g.encoder) == pytest.approx(87.6e6, rel=1e-2)


@pytest.mark.parametrize("method", METHODS)
def test_demo_config_is_the_mcgf_demo_with_another_model(method: str) -> None:
    path = CONFIGS / f"{method}-demo-cpu.yaml"
    cfg, demo = load_config(path), load_config(CONFIGS / "demo-cpu.yaml")
    assert {k: cfg[k] for k in ("data", "weather", "train")} == \
        {k: demo[k] for k in ("data", "weather", "train")}
    m = cfg["model"]
    assert m["name"] == method and m["img_size"] == 64 and m["pretrained"] is False
    assert m["backbone_args"]
    model = _model(path, num_classes=40)
    assert model.input_size == (64, 64)
    assert _params(model) < 3e6  # CPU-sized
    with torch.no_grad():
        emb = model.eval().embed(torch.randn(2, 3, 64, 64), "drone")
    assert emb.shape[0] == 2 and torch.isfinite(emb).all()
