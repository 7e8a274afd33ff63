"""Tiny University-1652 / 160k-style trees written by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_image(path: Path, seed: int = 0, size: int = 8, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt)
    return path


@pytest.fixture
def u1652(tmp_path: Path) -> Path:
    """A University-1652-like tree with the real data's oddities.

    train: classes 0001..0004; drone views 3/2/0(empty folder)/4, satellite for
    0001, 0002, 0004 and an empty 0003; google/0002 empty; street missing entirely.
    test: query_drone 0010, 0011; gallery_satellite 0010, 0011 + distractor 0012;
    mixed-case extensions and hidden files sprinkled in.
    """
    root = tmp_path / "University-Release"
    seed = 0
    drone_views = {"0001": 3, "0002": 2, "0003": 0, "0004": 4}
    for cls, n in drone_views.items():
        (root / "train" / "drone" / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            ext = [".jpeg", ".JPG", ".png", ".WebP"][i % 4]
            write_image(root / "train" / "drone" / cls / f"image-{i + 1:02d}{ext}", seed := seed + 1)
    for cls in ("0001", "0002", "0004"):
        write_image(root / "train" / "satellite" / cls / f"{cls}.jpg", seed := seed + 1)
    (root / "train" / "satellite" / "0003").mkdir(parents=True)
    (root / "train" / "google" / "0002").mkdir(parents=True)
    (root / "train" / "drone" / "0001" / ".DS_Store").write_bytes(b"\0\1")
    (root / "train" / "drone" / "0001" / "notes.txt").write_text("not an image")
    for cls in ("0010", "0011"):
        for i in range(2):
            write_image(root / "test" / "query_drone" / cls / f"image-{i + 1:02d}.jpeg", seed := seed + 1)
    for cls in ("0010", "0011", "0012"):
        write_image(root / "test" / "gallery_satellite" / cls / f"{cls}.jpg", seed := seed + 1)
    (root / "test" / ".hidden_folder").mkdir()
    return root


@pytest.fixture
def flat160k(tmp_path: Path) -> Path:
    """A University-160k-WX-like flat split: 4 queries listed out of name order, 5 gallery tiles."""
    root = tmp_path / "160k"
    qnames = ["zQ3.jpeg", "aB1.jpeg", "mM2.jpeg", "Cc4.jpeg"]
    for i, n in enumerate(qnames):
        write_image(root / "query_drone_160k_wx_24" / n, i)
    (root / "query_drone_name.txt").write_text("\n".join(qnames) + "\n")
    for i, n in enumerate(["g1", "g2", "g3", "g4", "g5"]):
        write_image(root / "gallery_satellite_160k" / f"{n}.webp", 100 + i, fmt="WEBP")
    return root
