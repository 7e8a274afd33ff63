"""A tiny University-1652 tree and a training config that trains on it in about a second
per epoch on a CPU: a narrow ResNet at 16 px with the restoration branch, weather and
every augmentation on, so that a resume has every RNG to restore."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image


def write_tree(base: Path, locations: int = 4, drones: int = 2, size: int = 24) -> Path:
    """``locations`` × (``drones`` drone views + 1 satellite tile), distinct per location."""
    rng = np.random.default_rng(0)
    for c in range(locations):
        colour = rng.integers(0, 255, 3)
        for view, n in (("drone", drones), ("satellite", 1)):
            d = base / "train" / view / f"{c + 1:04d}"
            d.mkdir(parents=True)
            for i in range(n):
                arr = np.clip(colour + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")
    return base


#: Keyword arguments of :func:`tiny_config` that are model options (loss weights).
MODEL_KEYS = ("lambda_restore", "infonce", "consistency", "label_smoothing")


def tiny_config(root: Path, **train: Any) -> dict[str, Any]:
    """The config (``train`` entries override the ``train:`` section, or the ``model:``
    section for the loss options of :data:`MODEL_KEYS`)."""
    model = {k: train.pop(k) for k in MODEL_KEYS if k in train}
    return {
        "data": {"root": str(root), "locations_per_batch": 2, "drones_per_location": 2,
                 "workers": 0, "satellite_rotate": 180, "drone_flip": True, "scale_jitter": 0.1,
                 "shift_jitter": 0.05},
        "weather": {"conditions": ["fog", "rain", "dark"], "seed": 1, "clean_fraction": 0.3},
        "model": {"backbone_name": "resnet18", "img_size": 16, "pretrained": False,
                  "backbone_args": {"layers": [1, 1, 1, 1], "channels": [8, 8, 16, 16],
                                    "stem_width": 8},
                  "bottleneck_dim": 8, "dropout": 0.1, "restoration_width": 8,
                  "restoration_mults": [1], "restoration_blocks": 1, "restore_size": 8,
                  "infonce": 0.1, "lambda_restore": 0.5, **model},
        "train": {"epochs": 2, "seed": 3, "lr": 1e-3, "warmup_steps": 1, "device": "cpu",
                  "log_every": 1, **train},
    }


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path
