"""Training augmentation on top of the shared preprocessing."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from mcgf.data.transforms import Preprocess, TrainAugment, _random_affine

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


def test_rotation_of_a_non_square_image_is_rigid(monkeypatch) -> None:
    """A quarter turn of a 32 x 64 image turns its central 32 x 32 square exactly (the
    grid's coordinates are normalised per axis; unscaled, the turn would shear it)."""
    x = torch.rand(3, 32, 64, generator=torch.Generator().manual_seed(0))
    # Draws (¾, ½, ½, ½): angle +90°, no scale change, no shift.
    monkeypatch.setattr(torch, "rand", lambda *shape: torch.tensor([0.75, 0.5, 0.5, 0.5]))
    turned = _random_affine(x, 180, 0, 0)
    centre = x[:, :, 16:48]
    assert torch.allclose(turned[:, :, 16:48], torch.rot90(centre, 1, dims=(1, 2)), atol=1e-4)


def test_color_jitter_changes_colour_only_within_its_strength_and_replays() -> None:
    x = BASE(image())
    aug = TrainAugment(BASE, color=0.2)
    torch.manual_seed(5)
    a = aug(image())
    torch.manual_seed(5)
    assert torch.equal(aug(image()), a)  # the same RNG state gives the same jitter (clean twins)
    assert not torch.equal(a, x)
    # Back in [0, 1]: still an image, and the layout is untouched (the jitter is per pixel
    # colour): the luminance pattern correlates strongly with the original one.
    unnorm = a * 0.25 + 0.5
    assert float(unnorm.min()) >= -1e-6 and float(unnorm.max()) <= 1 + 1e-6
    corr = np.corrcoef(a.mean(0).flatten().numpy(), x.mean(0).flatten().numpy())[0, 1]
    assert corr > 0.8
    # Strength 0 is the plain preprocessing.
    torch.manual_seed(5)
    assert torch.equal(TrainAugment(BASE, color=0.0)(image()), x)


def test_color_jitter_reaches_the_training_transforms(u1652) -> None:
    from types import SimpleNamespace

    from mcgf.training.config import parse_run_config
    from mcgf.training.loop import build_dataset, read_train_split

    cfg = parse_run_config({"data": {"root": str(u1652), "color_jitter": 0.15}}, "t")
    model = SimpleNamespace(input_size=(3, 16, 16), mean=(0.5,) * 3, std=(0.25,) * 3,
                            needs_clean_targets=False)
    ds = build_dataset(cfg, *read_train_split(str(u1652)), model)
    assert ds.drone_transform.color == 0.15 and ds.satellite_transform.color == 0.15


def test_preprocess_values_are_the_normalisation_formula() -> None:
    # (x / 255 - mean) / std as x · a + b in float32, per channel, in (C, H, W) order;
    # a second call reuses the instance's coefficients and gives the same values.
    pre = Preprocess((24, 40), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    rng = np.random.default_rng(5)
    for shape in ((24, 40, 3), (31, 17, 3)):
        im = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
        sized = im if im.size == (40, 24) else im.resize((40, 24), Image.Resampling.BICUBIC)
        a = np.asarray([1.0 / (255.0 * s) for s in pre.std], np.float32)
        b = np.asarray([-m / s for m, s in zip(pre.mean, pre.std, strict=True)], np.float32)
        want = torch.from_numpy(np.ascontiguousarray((np.asarray(sized) * a + b).transpose(2, 0, 1)))
        for _ in range(2):
            got = pre(im)
            assert got.dtype == torch.float32 and got.is_contiguous()
            assert torch.equal(got, want)
