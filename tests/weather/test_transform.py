"""WeatherTransform: the dataset-side entry point."""

from __future__ import annotations

import multiprocessing
import pickle

import numpy as np
import pytest
from PIL import Image

from mcgf.errors import UserError
from mcgf.weather import CONDITIONS, WeatherTransform, apply_weather, choose_condition

from .conftest import natural_image

KEYS = [f"{c:04d}/image-{i:02d}.jpeg" for c in (1, 2) for i in (1, 2, 3)]


def _render_all(args: tuple[WeatherTransform, list[str]]) -> list[tuple[str, bytes]]:
    transform, keys = args
    img = natural_image(48, seed=7)
    return [(c, out.tobytes()) for out, c in (transform(img, k) for k in keys)]


def test_random_transform_matches_the_functional_api():
    t = WeatherTransform(seed=4)
    img = natural_image(48, seed=7)
    for key in KEYS:
        out, condition = t(img, key)
        assert condition == choose_condition(4, key)
        np.testing.assert_array_equal(out, apply_weather(img, condition, seed=4, key=key))


def test_pickles_and_is_independent_of_workers():
    t = WeatherTransform(conditions=["fog", "rain", "snow", "wind"], seed=1, dark_variant="test")
    clone = pickle.loads(pickle.dumps(t))
    assert repr(clone) == repr(t)
    sequential = _render_all((t, KEYS))
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:  # each worker takes a different share of the keys
        parts = pool.map(_render_all, [(clone, KEYS[0::2]), (clone, KEYS[1::2])])
    by_key = dict(zip(KEYS[0::2] + KEYS[1::2], parts[0] + parts[1], strict=True))
    assert [by_key[k] for k in KEYS] == sequential


def test_pil_images_keep_their_mode():
    img = natural_image(48, seed=2)
    t = WeatherTransform("snow", seed=0)
    for mode, arr in (("RGB", img), ("L", img[:, :, 0]), ("RGBA", np.dstack([img, img[:, :, 0]]))):
        out, condition = t(Image.fromarray(arr, mode=mode), "k/a.jpg")
        assert isinstance(out, Image.Image) and out.mode == mode and out.size == (48, 48)
        assert condition == "snow"
    out, _ = t(Image.fromarray(img).convert("P"), "k/a.jpg")
    assert out.mode == "RGB"


def test_fixed_condition_and_epochs():
    img = natural_image(48, seed=3)
    fixed = WeatherTransform("fog", seed=2)
    assert {fixed(img, k)[1] for k in KEYS} == {"fog"}
    t = WeatherTransform(seed=2)
    first = [t(img, k)[1] for k in KEYS * 3]
    t.set_epoch(0)
    assert [t(img, k)[1] for k in KEYS * 3] == first  # epoch 0 is the plain seed
    t.set_epoch(1)
    assert t.effective_seed != 2
    later = [t(img, k)[1] for k in KEYS * 3]
    assert later != first
    assert set(later) <= set(CONDITIONS)


def test_bad_arguments():
    with pytest.raises(UserError, match="unknown weather condition"):
        WeatherTransform("hail")
    with pytest.raises(UserError):
        WeatherTransform(["fog", "hail"])
    with pytest.raises(UserError, match="dark variant"):
        WeatherTransform(dark_variant="night")


def test_clean_fraction_leaves_that_share_clean_reproducibly() -> None:
    keys = [f"{c:04d}/image-{i:02d}.jpeg" for c in range(40) for i in range(10)]
    t = WeatherTransform("random", seed=5, clean_fraction=0.5)
    conds = [t.condition_for(k) for k in keys]
    share = conds.count("normal") / len(conds)
    # Half left clean, plus a tenth of the other half drawing "normal" from all ten.
    assert 0.49 < share < 0.61
    assert conds == [WeatherTransform("random", seed=5, clean_fraction=0.5).condition_for(k) for k in keys]
    assert all(c == "normal" for c in (WeatherTransform("fog", clean_fraction=1.0).condition_for(k) for k in keys))
    assert "normal" not in {WeatherTransform("fog", clean_fraction=0.0).condition_for(k) for k in keys}
    with pytest.raises(ValueError, match="clean_fraction"):
        WeatherTransform("fog", clean_fraction=1.5)


def test_weights_draw_conditions_in_proportion_and_reproducibly() -> None:
    keys = [f"{c:04d}/image-{i:02d}.jpeg" for c in range(400) for i in range(10)]
    t = WeatherTransform(["fog", "rain", "snow"], seed=3, weights={"fog": 2, "snow": 0})
    conds = [t.condition_for(k) for k in keys]
    assert "snow" not in conds  # weight 0: never drawn
    assert conds.count("fog") / len(conds) == pytest.approx(2 / 3, abs=0.03)
    again = WeatherTransform(["fog", "rain", "snow"], seed=3, weights={"fog": 2, "snow": 0})
    assert conds == [again.condition_for(k) for k in keys]
    # With clean images too: the weights share out the weathered part only.
    t = WeatherTransform("random", seed=3, clean_fraction=0.5, weights={"fog": 10})
    conds = [t.condition_for(k) for k in keys]
    assert conds.count("normal") / len(conds) == pytest.approx(0.5, abs=0.03)
    assert conds.count("fog") / len(conds) == pytest.approx(0.5 * 10 / 18, abs=0.03)
    # No weights: exactly the uniform draws.
    plain = WeatherTransform("random", seed=3)
    assert [plain.condition_for(k) for k in keys[:50]] == [choose_condition(3, k) for k in keys[:50]]
    assert pickle.loads(pickle.dumps(t)).condition_for(keys[7]) == t.condition_for(keys[7])


def test_weights_may_be_numpy_numbers() -> None:
    keys = [f"{i:04d}/image-01.jpeg" for i in range(50)]
    plain = WeatherTransform(["fog", "rain"], seed=1, weights={"fog": 3, "rain": 1.5})
    numpy = WeatherTransform(["fog", "rain"], seed=1, weights={"fog": np.int64(3), "rain": np.float32(1.5)})
    assert [numpy.condition_for(k) for k in keys] == [plain.condition_for(k) for k in keys]


@pytest.mark.parametrize("weights", [{"hail": 1}, {"snow": 1}, {"fog": -1}, {"fog": 0, "rain": 0},
                                     {"fog": "2"}, {"fog": True}, {"fog": np.bool_(True)},
                                     {"fog": float("nan")}])
def test_bad_weights_are_user_errors(weights: dict) -> None:
    with pytest.raises(UserError, match="weights"):
        WeatherTransform(["fog", "rain"], weights=weights)


def test_render_size_weathers_an_enlargement_and_shrinks_it_back() -> None:
    import cv2

    img = natural_image(48, seed=5)
    t = WeatherTransform("rain", seed=3, render_size=192)
    out, condition = t(img, "0001/a.jpg")
    assert condition == "rain" and out.shape == img.shape and out.dtype == np.uint8
    big = cv2.resize(img, (192, 192), interpolation=cv2.INTER_CUBIC)
    expected = cv2.resize(apply_weather(big, "rain", seed=3, key="0001/a.jpg"), (48, 48),
                          interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(out, expected)
    native, _ = WeatherTransform("rain", seed=3)(img, "0001/a.jpg")
    assert np.abs(out.astype(int) - native.astype(int)).mean() > 1.0
    # Thin streaks drawn at 192 px reach the 48-px image blended: less pixel-level contrast.
    residual = np.abs(out.astype(float) - img).mean()
    assert 0 < residual < np.abs(native.astype(float) - img).mean() * 1.5


def test_render_size_keeps_shapes_and_leaves_large_or_clean_images_alone() -> None:
    img = natural_image(48, seed=6)
    # At or above render_size the weather is the native one.
    same, _ = WeatherTransform("snow", seed=1, render_size=48)(img, "k/a.jpg")
    np.testing.assert_array_equal(same, WeatherTransform("snow", seed=1)(img, "k/a.jpg")[0])
    clean, condition = WeatherTransform(seed=1, clean_fraction=1.0, render_size=512)(img, "k/a.jpg")
    assert condition == "normal"
    np.testing.assert_array_equal(clean, img)
    t = WeatherTransform("fog", seed=1, render_size=96)
    grey, _ = t(img[:, :30, :1], "k/a.jpg")
    assert grey.shape == (48, 30, 1)
    flt, _ = t(img.astype(np.float32) / 255, "k/a.jpg")
    assert flt.dtype == np.float32 and flt.min() >= 0.0 and flt.max() <= 1.0
    pil, _ = t(Image.fromarray(img[:, :, 0], mode="L"), "k/a.jpg")
    assert pil.mode == "L" and pil.size == (48, 48)
    assert "render_size=96" in repr(pickle.loads(pickle.dumps(t)))
    with pytest.raises(ValueError, match="render_size"):
        WeatherTransform(render_size=0)


def test_render_size_takes_every_dtype_that_apply_weather_takes() -> None:
    # OpenCV cannot resize float16 (it failed deep inside cv2.resize); it now goes through
    # float32 and gives the float32 image's weather in float16.
    img = natural_image(32, seed=4)
    t = WeatherTransform("fog", seed=2, render_size=64)
    half, _ = t((img / 255).astype(np.float16), "k/a.jpg")
    single, _ = t((img / 255).astype(np.float16).astype(np.float32), "k/a.jpg")
    assert half.dtype == np.float16 and half.shape == img.shape
    np.testing.assert_array_equal(half, single.astype(np.float16))
    # An unsupported dtype or range is the engine's own error, not one of OpenCV's.
    with pytest.raises(TypeError, match="unsupported image dtype int32"):
        t(img.astype(np.int32), "k/a.jpg")
    with pytest.raises(ValueError, match="values in \\[0, 1\\]"):
        t(img.astype(np.float32), "k/a.jpg")
