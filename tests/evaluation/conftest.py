"""Tiny University-1652 and University-160k trees made by the tests (a few 24-px images)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def location_image(rng: np.random.Generator, base: np.ndarray, noise: int = 25, size: int = 24) -> Image.Image:
    big = np.array(Image.fromarray(base).resize((size, size), Image.Resampling.BILINEAR), dtype=np.int64)
    return Image.fromarray(np.clip(big + rng.integers(-noise, noise + 1, big.shape), 0, 255).astype(np.uint8))


@pytest.fixture
def tiny_u1652(tmp_path: Path) -> Path:
    """test/ with 5 classes (0101..0105) + a distractor tile 0900 in gallery_satellite;
    query_drone: 3 views per class; gallery_drone: 2; query_satellite: 1 per class;
    class 0105 has no satellite tile (its drone queries have no true match)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "University-Release" / "test"
    for c in [101, 102, 103, 104, 105, 900]:
        base = rng.integers(0, 256, (3, 3, 3), dtype=np.uint8)
        name = f"{c:04d}"
        counts = {"query_drone": 3, "gallery_drone": 2, "query_satellite": 1, "gallery_satellite": 1}
        if c == 900:
            counts = {"gallery_satellite": 1}
        if c == 105:
            counts["gallery_satellite"] = 0
            counts["query_satellite"] = 0
        for folder, n in counts.items():
            d = root / folder / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                fname = f"image-{i + 1:02d}.jpeg" if "drone" in folder else f"{name}.jpg"
                location_image(rng, base).save(d / fname)
    return tmp_path / "University-Release"


@pytest.fixture
def tiny_160k(tmp_path: Path) -> tuple[Path, Path]:
    """(160k root, ground-truth file): 12 gallery tiles, 8 queries (2 per location 0-3)."""
    rng = np.random.default_rng(1)
    root = tmp_path / "U160k"
    qdir, gdir = root / "query_drone_160k_wx", root / "gallery_satellite_160k"
    qdir.mkdir(parents=True)
    gdir.mkdir()
    names, truth = [], []
    for c in range(12):
        base = rng.integers(0, 256, (3, 3, 3), dtype=np.uint8)
        stem = f"G{c:02d}x{rng.integers(1e9)}"
        location_image(rng, base, noise=0).save(gdir / f"{stem}.webp")
        if c < 4:
            for v in range(2):
                q = f"Q{c}{v}y{rng.integers(1e9)}"
                location_image(rng, base).save(qdir / f"{q}.jpeg")
                names.append(f"{q}.jpeg")
                truth.append(f"{q}.jpeg\t{stem}")
    order = rng.permutation(len(names))
    (root / "query_drone_name.txt").write_text("".join(names[i] + "\n" for i in order))
    gt = tmp_path / "ground_truth_160k.txt"
    gt.write_text("".join(truth[i] + "\n" for i in order))
    return root, gt


def prerendered_copies(root: Path, wx: Path, *conditions: str) -> Path:
    """A ``--wx-dir`` folder whose conditions are byte copies of ``root``'s clean queries."""
    for name in conditions:
        shutil.copytree(root / "test" / "query_drone", wx / name)
    return wx
