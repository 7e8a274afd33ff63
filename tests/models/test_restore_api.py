"""Restoration previews: restore_images, panels and restoration_preview."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mcgf.data.transforms import Preprocess
from mcgf.errors import UserError
from mcgf.models.mcgf_model import MCGFModel
from mcgf.models.restore_api import load_restoration_model, restore_images
from mcgf.panels import BACKGROUND, GAP, side_by_side, stack_rows
from mcgf.reporting.restoration import restoration_preview
from mcgf.training import save_checkpoint
from mcgf.weather import apply_weather

CONFIG = {"name": "mcgf", "backbone_name": "vit_tiny_patch16_224", "num_classes": 3,
          "img_size": 32, "bottleneck_dim": 16, "dropout": 0.0, "restoration": True,
          "restoration_width": 8, "restoration_mults": [1, 2], "restoration_blocks": 1,
          "restore_size": 16}


def tiny_restorer(seed: int = 0, **over: object) -> MCGFModel:
    """A random tiny MCGF model (0 training steps) whose denoiser output is not zero."""
    torch.manual_seed(seed)
    kwargs = {k: v for k, v in {**CONFIG, **over}.items() if k != "name"}
    model = MCGFModel(**kwargs).eval()  # type: ignore[arg-type]
    if model.restoration is not None:
        # The last convolution starts at zero (ε = 0); random weights make every step matter.
        with torch.no_grad():
            model.restoration.denoiser.conv_out.weight.normal_(0.0, 0.05)
    return model


def save_tiny_restorer(path: Path, **over: object) -> MCGFModel:
    """Save :func:`tiny_restorer` as a checkpoint folder at ``path``."""
    model = tiny_restorer(**over)
    save_checkpoint(path, model, {**CONFIG, **over})
    return model


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: on these tiny tensors thread hand-offs cost more than they save."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model(one_thread: None) -> MCGFModel:
    return tiny_restorer()


def test_restore_images_is_seeded_and_keeps_sizes(model: MCGFModel) -> None:
    images = [random_image(40, 56, 1), random_image(32, 32, 2), random_image(23, 17, 3)]
    a = restore_images(model, images, steps=5, seed=0)
    b = restore_images(model, images, steps=5, seed=0)
    c = restore_images(model, images, steps=5, seed=1)
    assert [x.shape for x in a] == [im.shape for im in images]
    assert all(x.dtype == np.uint8 for x in a)
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b, strict=True))
    assert all(not np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    # Not a constant picture: the branch's output varies over the image.
    assert all(x.std() > 5 for x in a)


def test_restore_images_is_evaluation_preprocess_then_model_restore(model: MCGFModel) -> None:
    image = random_image(50, 70, 4)
    (out,) = restore_images(model, [image], steps=3, seed=7)
    x = Preprocess.for_embedder(model)(Image.fromarray(image))[None]
    ref = model.restore(x, steps=3, generator=torch.Generator().manual_seed(7))
    assert ref.shape[-2:] == (16, 16)  # the branch works at restore_size
    ref = torch.nn.functional.interpolate(ref, size=(50, 70), mode="bicubic", align_corners=False)
    ref_u8 = (ref[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(out, ref_u8)


def test_noise_per_image_does_not_depend_on_batch_size(model: MCGFModel) -> None:
    images = [random_image(32, 32, s) for s in range(3)]
    one = restore_images(model, images, steps=4, seed=3, batch_size=1)
    three = restore_images(model, images, steps=4, seed=3, batch_size=3)
    # Equal up to float rounding in batched arithmetic (different noise would differ a lot).
    for x, y in zip(one, three, strict=True):
        assert np.abs(x.astype(int) - y.astype(int)).max() <= 1


def test_noise_per_image_does_not_depend_on_batch_size_at_any_working_size() -> None:
    # 3 · 15 · 15 values per image: not a multiple of the 16 that CPU randn fills at once,
    # so one draw for the whole batch would give each image other noise than a draw alone.
    model = tiny_restorer(restore_size=15)
    images = [random_image(32, 32, s) for s in range(3)]
    one = restore_images(model, images, steps=4, seed=3, batch_size=1)
    three = restore_images(model, images, steps=4, seed=3, batch_size=3)
    for x, y in zip(one, three, strict=True):
        assert np.abs(x.astype(int) - y.astype(int)).max() <= 1


@pytest.mark.parametrize("steps", [1, 7, 25])
def test_ddim_calls_the_denoiser_once_per_step_and_batch(model: MCGFModel, steps: int) -> None:
    calls: list[int] = []
    assert model.restoration is not None
    handle = model.restoration.denoiser.register_forward_hook(
        lambda mod, inp, out: calls.append(inp[0].shape[0]))
    try:
        restore_images(model, [random_image(32, 32, s) for s in range(3)], steps=steps,
                       batch_size=2)
    finally:
        handle.remove()
    assert calls == [2] * steps + [1] * steps


def test_errors(model: MCGFModel) -> None:
    plain = tiny_restorer(restoration=False)
    with pytest.raises(UserError, match=r"checkpoint ck/x was trained without the restoration "
                                        r"branch \(model\.restoration: false\)"):
        restore_images(plain, [random_image(8, 8)], source="ck/x")
    for bad in (0, 1001):
        with pytest.raises(UserError, match="steps must be an integer from 1 to 1000"):
            restore_images(model, [random_image(8, 8)], steps=bad)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        restore_images(model, [np.zeros((8, 8), np.uint8)])
    with pytest.raises(UserError, match="unknown weather condition 'hail'"):
        restoration_preview(model, random_image(8, 8), conditions=["fog", "hail"])


def test_a_model_of_another_kind_is_not_said_to_have_model_restoration_false() -> None:
    """Only MCGF has the ``model.restoration`` option; another model (a comparison method,
    one of a user's own) is named instead."""
    from mcgf.models.model_registry import create_model

    lpn = create_model("lpn", backbone_name="resnet18", num_classes=2, blocks=1,
                       backbone_args={"layers": [1, 1, 1, 1], "channels": [8, 8, 8, 8]})
    with pytest.raises(UserError) as err:
        restore_images(lpn, [random_image(8, 8)], source="ck/lpn")
    assert str(err.value).startswith("checkpoint ck/lpn holds a model without a restoration "
                                     "branch (LPNModel)")
    assert "model.restoration: false" not in str(err.value)


def test_load_restoration_model(tmp_path: Path) -> None:
    saved = save_tiny_restorer(tmp_path / "ck")
    loaded = load_restoration_model(tmp_path / "ck", "cpu")
    image = random_image(32, 32)
    assert np.array_equal(restore_images(saved, [image], steps=2)[0],
                          restore_images(loaded, [image], steps=2)[0])
    save_tiny_restorer(tmp_path / "plain", restoration=False)
    with pytest.raises(UserError, match=r"plain was trained without the restoration branch"):
        load_restoration_model(tmp_path / "plain", "cpu")


def test_side_by_side_and_stack_rows_geometry() -> None:
    a, b = random_image(60, 30, 1), random_image(60, 30, 2)
    strip = side_by_side([a, b])
    assert strip.shape == (60, 2 * 30 + GAP, 3)
    assert np.array_equal(strip[:, :30], a) and np.array_equal(strip[:, 30 + GAP :], b)
    assert (strip[:, 30 : 30 + GAP] == BACKGROUND).all()
    labelled = side_by_side([a, b], ["fog", "restored"])
    assert labelled.shape == strip.shape
    # The label darkens a band at the top and leaves the rest of the panel alone.
    assert labelled[:3, :30].mean() < a[:3].mean()
    assert np.array_equal(labelled[-3:], strip[-3:])
    tall = side_by_side([a, random_image(66, 10, 3)])
    assert tall.shape == (66, 30 + GAP + 10, 3) and (tall[60:, :30] == BACKGROUND).all()
    grid = stack_rows([strip, strip, strip])
    assert grid.shape == (3 * 60 + 2 * GAP, 2 * 30 + GAP, 3)
    assert np.array_equal(grid[60 + GAP : 120 + GAP], strip)
    with pytest.raises(ValueError, match="labels"):
        side_by_side([a, b], ["one"])


def test_preview_of_a_weathered_image(model: MCGFModel) -> None:
    image = random_image(32, 40, 5)
    grid = restoration_preview(model, image, steps=3, seed=2, labels=False)
    assert grid.shape == (32, 2 * 40 + GAP, 3)
    assert np.array_equal(grid[:, :40], image)
    (restored,) = restore_images(model, [image], steps=3, seed=2)
    assert np.array_equal(grid[:, 40 + GAP :], restored)


def test_preview_rows_weathered_restored_clean(model: MCGFModel) -> None:
    image = random_image(32, 32, 6)
    conditions = ["fog", "dark", "wind"]
    grid = restoration_preview(model, image, conditions=conditions, steps=2, seed=4, key="0001/a.jpeg",
                               labels=False)
    assert grid.shape == (3 * 32 + 2 * GAP, 3 * 32 + 2 * GAP, 3)
    for row, condition in enumerate(conditions):
        y = row * (32 + GAP)
        weathered = apply_weather(image, condition, seed=4, key="0001/a.jpeg", dark_variant="test")
        assert np.array_equal(grid[y : y + 32, :32], weathered)
        assert np.array_equal(grid[y : y + 32, 2 * (32 + GAP) :], image)
    small = restoration_preview(model, image, conditions=["fog"], steps=2, tile=16)
    # 16 px panels are too short for a label band: the condition is captioned above the row.
    assert small.shape == (16 + 16, 3 * 16 + 2 * GAP, 3)
