"""A tiny University-1652 test split, a tiny MCGF checkpoint and a run folder around them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

#: Locations with a satellite tile; 0105 has drone queries but no tile; 0900 is a distractor.
LOCATIONS = (101, 102, 103, 104)
MODEL_CONFIG = {"name": "mcgf", "backbone_name": "vit_tiny_patch16_224", "num_classes": 4,
                "img_size": 32, "bottleneck_dim": 16, "dropout": 0.0, "restoration": True,
                "restoration_width": 8, "restoration_mults": [1, 2], "restoration_blocks": 1,
                "restore_size": 16}


def _image(rng: np.random.Generator, base: np.ndarray, size: int = 32, noise: int = 20) -> Image.Image:
    big = np.asarray(Image.fromarray(base).resize((size, size), Image.Resampling.BILINEAR), np.int64)
    return Image.fromarray(np.clip(big + rng.integers(-noise, noise + 1, big.shape), 0, 255).astype(np.uint8))


def make_dataset(root: Path, *, views: int = 3, metadata: bool = True) -> Path:
    """``root/University-Release/test/...`` (+ ``root/metadata.json`` with drone poses)."""
    rng = np.random.default_rng(0)
    test = root / "University-Release" / "test"
    locations: dict[str, dict] = {}
    for c in (*LOCATIONS, 105, 900):
        name = f"{c:04d}"
        base = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        counts = {"query_drone": views, "gallery_drone": 2, "query_satellite": 1, "gallery_satellite": 1}
        if c == 105:
            counts.update(query_satellite=0, gallery_satellite=0)
        if c == 900:
            counts = {"gallery_satellite": 1}
        for folder, n in counts.items():
            d = test / folder / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                fname = f"image-{i + 1:02d}.jpeg" if "drone" in folder else f"{name}.jpg"
                _image(rng, base).save(d / fname)
        locations[name] = {"drone": [
            {"file": f"image-{i + 1:02d}.jpeg", "view": i + 1,
             "pose": {"heading_deg": 90.0 * i, "altitude_m": 150.0 - 30.0 * i, "distance_m": 110.0 + i}}
            for i in range(views)]}
    if metadata:
        (root / "metadata.json").write_text(json.dumps({"locations": locations}))
    return root / "University-Release"


def save_model(path: Path) -> None:
    """A random tiny MCGF model with the restoration branch, saved as a checkpoint folder."""
    from mcgf.models.mcgf_model import MCGFModel
    from mcgf.training import save_checkpoint

    torch.manual_seed(0)
    model = MCGFModel(**{k: v for k, v in MODEL_CONFIG.items() if k != "name"}).eval()  # type: ignore[arg-type]
    save_checkpoint(path, model, MODEL_CONFIG)


def make_run(run: Path, data: Path) -> Path:
    """A demo-style run folder: train/last, train/log.csv, eval/metrics.json, data/."""
    save_model(run / "train" / "last")
    (run / "train" / "log.csv").write_text(
        "step,epoch,lr,ce,infonce,restore,total,images_per_s,val_R@1,val_AP\n"
        "5,1,0.001,4.0,2.0,1.0,6.5,50,,\n10,1,0.001,3.0,1.5,0.9,4.9,50,20,25\n"
        "15,2,0.001,2.5,1.0,0.8,3.9,50,,\n20,2,0.001,2.0,0.8,0.7,3.2,50,40,45\n")
    rows = [{"condition": c, "direction": d, "metrics": {"R@1": r, "R@5": 60.0, "R@10": 80.0,
                                                        "R@top1%": 50.0, "AP": r + 5.0,
                                                        "num_queries": 15, "gallery_size": 5,
                                                        "queries_without_match": 3}}
            for c, r in (("normal", 40.0), ("fog", 20.0)) for d in ("drone->satellite", "satellite->drone")]
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "metrics.json").write_text(json.dumps({
        "protocol": "university-wx", "dataset": str(data), "embedder": "test", "flip_tta": True,
        "weather": {"mode": "on-the-fly", "conditions": ["normal", "fog"], "seed": 3,
                    "dark_variant": "test"}, "results": rows}))
    return run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run folder, dataset root) shared by the report tests (read-only for them)."""
    base = tmp_path_factory.mktemp("report")
    data = make_dataset(base / "run" / "data")
    return make_run(base / "run", data), data


@pytest.fixture(scope="session")
def built_report(tiny_run: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """index.html of a report of the tiny run (2 queries, 2 DDIM steps)."""
    from mcgf.reporting import build_report

    run, _ = tiny_run
    out = tmp_path_factory.mktemp("built") / "report"
    return build_report(run, out=out, queries=2, seed=0, device="cpu", progress=False,
                        restore_steps=2, tile=48, threads=1,
                        cache_dir=tmp_path_factory.mktemp("cache"))
