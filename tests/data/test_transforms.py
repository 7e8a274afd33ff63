"""Training augmentation on top of the shared preprocessing."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from mcgf.data.transforms import Preprocess, TrainAugment

BASE = Preprocess((32, 32), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def image(seed: int = 0) -> Image.Image:
    # Smooth content (4×4 random blocks, upsampled): interpolation keeps its contrast.
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    return small.resize((32, 32), Image.Resampling.BILINEAR)


def test_no_augmentation_is_the_preprocessing() -> None:
    torch.manual_seed(0)
    assert torch.equal(TrainAugment(BASE)(image()), BASE(image()))


def test_seeded_and_random() -> None:
    aug = TrainAugment(BASE, flip=True, rotate=180, scale=0.1, translate=0.05)
    torch.manual_seed(3)
    a = aug(image())
    torch.manual_seed(3)
    assert torch.equal(aug(image()), a)
    assert not torch.equal(aug(image()), a)


def test_half_turn_is_exact_and_reflection_keeps_the_content(monkeypatch) -> None:
    aug = TrainAugment(BASE, rotate=180)
    x = BASE(image())
    # Draws (1, ½, ½, ½): angle +180°, no scale change, no shift → the image turned by 180°.
    monkeypatch.setattr(torch, "rand", lambda *shape: torch.tensor([1.0, 0.5, 0.5, 0.5]))
    assert torch.allclose(aug(image()), torch.rot90(x, 2, dims=(1, 2)), atol=1e-4)
    monkeypatch.undo()
    # Any rotation keeps the image statistics close (reflection, not black corners).
    torch.manual_seed(1)
    z = aug(image())
    assert abs(float(z.mean() - x.mean())) < 0.1
    assert float(z.std()) > 0.8 * float(x.std())
