"""Feature extraction: flip TTA, normalisation, the cache and bad images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mcgf.data.layout import ImageRecord
from mcgf.data.transforms import Preprocess
from mcgf.errors import ImageReadError
from mcgf.evaluation.cache import cache_key, file_fingerprint
from mcgf.evaluation.features import extract_features


class LeftRight:
    """Not flip-invariant: feature = (mean of left half, mean of right half, 1)."""

    identity = "left-right-test"
    input_size = (8, 8)
    mean = (0.0, 0.0, 0.0)
    std = (1.0, 1.0, 1.0)

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        left = images[..., :4].mean(dim=(1, 2, 3))
        right = images[..., 4:].mean(dim=(1, 2, 3))
        return torch.stack([left, right, torch.ones_like(left)], dim=1)


def write(path: Path, left: int, right: int) -> ImageRecord:
    arr = np.zeros((8, 8, 3), np.uint8)
    arr[:, :4] = left
    arr[:, 4:] = right
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return ImageRecord(path, 1, "drone")


def test_flip_tta_sums_then_normalises(tmp_path: Path) -> None:
    recs = [write(tmp_path / "a" / "x.png", 255, 0), write(tmp_path / "a" / "y.png", 51, 102)]
    emb = LeftRight()
    plain = extract_features(recs, emb, flip=False, progress=False, device="cpu")
    tta = extract_features(recs, emb, flip=True, progress=False, device="cpu")
    expect_plain = np.array([[1.0, 0.0, 1.0], [0.2, 0.4, 1.0]])
    expect_plain /= np.linalg.norm(expect_plain, axis=1, keepdims=True)
    assert np.allclose(plain.features, expect_plain, atol=1e-5)
    # flip swaps the halves: sum = (l + r, l + r, 2)
    expect_tta = np.array([[1.0, 1.0, 2.0], [0.6, 0.6, 2.0]])
    expect_tta /= np.linalg.norm(expect_tta, axis=1, keepdims=True)
    assert np.allclose(tta.features, expect_tta, atol=1e-5)
    assert plain.valid.all() and not plain.from_cache


class InPlace(LeftRight):
    """LeftRight computed after scaling its input in place (as an in-place
    de-normalisation would)."""

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return super().embed(images.mul_(2.0).sub_(0.5))


class OutOfPlace(LeftRight):
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return super().embed(images * 2.0 - 0.5)


def test_flip_tta_embeds_the_flip_of_the_original_batch(tmp_path: Path) -> None:
    """An embed that changes its input in place must not change the flipped copy."""
    recs = [write(tmp_path / "a" / "x.png", 255, 0), write(tmp_path / "a" / "y.png", 51, 102)]
    got = extract_features(recs, InPlace(), flip=True, progress=False, device="cpu")
    want = extract_features(recs, OutOfPlace(), flip=True, progress=False, device="cpu")
    assert np.allclose(got.features, want.features, atol=1e-6)


class OneBuffer(LeftRight):
    """LeftRight written into one float64 buffer that every call returns (as a runtime
    with static output buffers does)."""

    def __init__(self, numpy: bool) -> None:
        super().__init__()
        self.numpy = numpy
        self.buffer = torch.zeros(2, 3, dtype=torch.float64)

    def embed(self, images: torch.Tensor) -> torch.Tensor | np.ndarray:
        self.buffer.copy_(super().embed(images))
        return self.buffer.numpy() if self.numpy else self.buffer


@pytest.mark.parametrize("numpy", [False, True])
def test_flip_tta_keeps_the_first_output_when_embed_reuses_its_buffer(tmp_path: Path,
                                                                      numpy: bool) -> None:
    recs = [write(tmp_path / "a" / "x.png", 255, 0), write(tmp_path / "a" / "y.png", 51, 102)]
    got = extract_features(recs, OneBuffer(numpy), flip=True, progress=False, device="cpu")
    want = extract_features(recs, LeftRight(), flip=True, progress=False, device="cpu")
    assert np.allclose(got.features, want.features, atol=1e-6)


def test_cache_hit_and_invalidation(tmp_path: Path) -> None:
    recs = [write(tmp_path / "d" / f"{i}.png", 10 * i, 200 - 10 * i) for i in range(5)]
    cache = tmp_path / "cache"
    emb = LeftRight()
    first = extract_features(recs, emb, batch_size=2, cache_dir=cache, progress=False, device="cpu")
    calls = emb.calls
    again = extract_features(recs, emb, batch_size=2, cache_dir=cache, progress=False, device="cpu")
    assert again.from_cache and emb.calls == calls
    assert np.array_equal(first.features, again.features)
    assert not [p for p in os.listdir(cache) if p.endswith(".tmp")]
    # a different TTA setting is a different entry
    other = extract_features(recs, emb, flip=False, cache_dir=cache, progress=False, device="cpu")
    assert not other.from_cache
    # changing one image (content, size and time) misses the cache and recomputes it
    write(recs[2].path, 255, 255)
    st = os.stat(recs[2].path)
    os.utime(recs[2].path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    changed = extract_features(recs, emb, batch_size=2, cache_dir=cache, progress=False, device="cpu")
    assert not changed.from_cache
    assert not np.allclose(changed.features[2], first.features[2])
    assert np.allclose(changed.features[[0, 1, 3, 4]], first.features[[0, 1, 3, 4]])


def test_a_new_image_decoder_misses_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mcgf.evaluation.features as features

    recs = [write(tmp_path / "d" / f"{i}.png", 10 * i, 90) for i in range(2)]
    cache = tmp_path / "cache"
    extract_features(recs, LeftRight(), cache_dir=cache, progress=False, device="cpu")
    assert extract_features(recs, LeftRight(), cache_dir=cache, progress=False, device="cpu").from_cache
    # the same files may decode to other pixels under another decoder version
    monkeypatch.setattr(features, "DECODER_VERSION", features.DECODER_VERSION + 1)
    assert not extract_features(recs, LeftRight(), cache_dir=cache, progress=False, device="cpu").from_cache


def test_cache_key_depends_on_every_ingredient(tmp_path: Path) -> None:
    p = write(tmp_path / "k.png", 1, 2).path
    files = file_fingerprint([p])
    base = cache_key(embedder="a", preprocess="p", files=files)
    assert base == cache_key(embedder="a", preprocess="p", files=files)
    assert base != cache_key(embedder="b", preprocess="p", files=files)
    assert base != cache_key(embedder="a", preprocess="q", files=files)
    assert base != cache_key(embedder="a", preprocess="p", files=files, extra={"flip": True})
    assert base != cache_key(embedder="a", preprocess="p", files=[*files, *files])


def test_a_file_name_that_is_not_utf8_is_cached(tmp_path: Path) -> None:
    # Linux hands such a name to Python with its stray byte as a lone surrogate.
    rec = write(tmp_path / "d" / os.fsdecode(b"image\xff.png"), 10, 20)
    emb = LeftRight()
    first = extract_features([rec], emb, cache_dir=tmp_path / "cache", progress=False, device="cpu")
    again = extract_features([rec], emb, cache_dir=tmp_path / "cache", progress=False, device="cpu")
    assert again.from_cache and np.array_equal(first.features, again.features)
    # Every valid UTF-8 path keeps its key (pinned), so existing caches stay valid.
    key = cache_key(embedder="a", preprocess="p", files=[("/d/caf\u00e9.png", 3, 4)])
    assert key == "c0d1a69299978cdea973e2cbf56d35b3f431be9e742c4e6af40f84e97a14c219"


def test_bad_images_stop_or_skip(tmp_path: Path) -> None:
    good = write(tmp_path / "c" / "ok.png", 100, 100)
    bad_path = tmp_path / "c" / "bad.jpg"
    bad_path.write_bytes(b"not an image")
    bad = ImageRecord(bad_path, 1, "drone")
    with pytest.raises(ImageReadError, match=r"bad\.jpg"):
        extract_features([good, bad], LeftRight(), progress=False, device="cpu")
    fs = extract_features([good, bad, good], LeftRight(), on_bad_image="skip", progress=False, device="cpu")
    assert fs.valid.tolist() == [True, False, True] and fs.num_skipped == 1
    assert np.all(fs.features[1] == 0) and np.allclose(np.linalg.norm(fs.features[0]), 1.0)


def test_transform_runs_before_resize_and_needs_an_id(tmp_path: Path) -> None:
    rec = write(tmp_path / "t" / "a.png", 0, 0)
    seen = []

    def invert(img: np.ndarray, key: str) -> tuple[np.ndarray, str]:
        seen.append((img.shape, key))
        return 255 - img, "inverted"

    with pytest.raises(ValueError):
        extract_features([rec], LeftRight(), transform=invert, progress=False)
    fs = extract_features([rec], LeftRight(), transform=invert, transform_id="invert",
                          flip=False, progress=False, device="cpu")
    assert seen == [((8, 8, 3), rec.key)]
    assert np.allclose(fs.features[0], np.array([1, 1, 1]) / np.sqrt(3), atol=1e-5)


def test_preprocess_resizes_and_normalises() -> None:
    pre = Preprocess((4, 6), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    x = pre(Image.new("RGB", (10, 10), (255, 0, 255)))
    assert x.shape == (3, 4, 6)
    assert torch.allclose(x[0], torch.ones(4, 6)) and torch.allclose(x[1], -torch.ones(4, 6))
    assert "resize4x6" in pre.describe()


class NaNOnBright(LeftRight):
    """NaN features for images whose left half is brighter than 100 (a broken model)."""

    identity = "nan-on-bright-test"

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        f = super().embed(images)
        return torch.where(f[:, :1] > 100 / 255, torch.full_like(f, float("nan")), f)


def test_non_finite_features_name_the_image_and_are_never_cached(tmp_path: Path) -> None:
    from mcgf.errors import UserError

    recs = [write(tmp_path / "d" / f"{i}.png", 40 * i, 0) for i in range(5)]  # 3 and 4 bright
    cache = tmp_path / "cache"
    for _ in range(2):  # the second run fails the same way: nothing was cached
        with pytest.raises(UserError, match=r"non-finite features for .*3\.png"):
            extract_features(recs, NaNOnBright(), batch_size=2, flip=False, cache_dir=cache,
                             progress=False, device="cpu")
    assert not cache.exists() or not [p for p in os.listdir(cache) if p.endswith(".json")]


class Scaled(LeftRight):
    """LeftRight times a factor: huge (a float32 norm of it overflows), zero, or, in float64,
    outside float32's range (or tiny in it)."""

    def __init__(self, factor: float, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.factor = factor
        self.dtype = dtype
        in64 = "float64-" if dtype == torch.float64 else ""
        self.identity = f"left-right-{in64}times-{factor}"

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return super().embed(images).to(self.dtype) * self.factor


def test_any_finite_output_is_normalised_and_zero_stays_zero(tmp_path: Path) -> None:
    recs = [write(tmp_path / "s" / f"{i}.png", 30 * i, 200) for i in range(3)]
    ref = extract_features(recs, LeftRight(), progress=False, device="cpu").features
    huge = extract_features(recs, Scaled(1e20), progress=False, device="cpu").features
    assert np.allclose(np.linalg.norm(huge, axis=1), 1.0, atol=1e-6)  # was all zero
    assert np.allclose(huge, ref, atol=1e-6)
    zero = extract_features(recs, Scaled(0.0), progress=False, device="cpu")
    assert zero.valid.all() and not zero.features.any()


def test_non_finite_cache_entry_is_a_miss(tmp_path: Path) -> None:
    from mcgf.evaluation.cache import CachedFeatures, FeatureCache
    from mcgf.evaluation.features import feature_cache_key

    recs = [write(tmp_path / "n" / f"{i}.png", 50 * i, 0) for i in range(2)]
    emb = LeftRight()
    key = feature_cache_key(recs, emb, flip=True, transform_id="", device="cpu")
    bad = np.full((2, 3), np.nan, np.float32)
    FeatureCache(tmp_path / "cache").store(key, CachedFeatures(bad, np.ones(2, bool)), {})
    fs = extract_features(recs, emb, cache_dir=tmp_path / "cache", progress=False, device="cpu")
    assert not fs.from_cache and np.isfinite(fs.features).all() and emb.calls > 0


class Returning(LeftRight):
    """LeftRight's features passed through ``shape`` (e.g. one row for the whole batch)."""

    def __init__(self, shape: str) -> None:
        super().__init__()
        self.shape = shape

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        f = super().embed(images)
        if self.shape == "first-row":  # a pooling over the batch by mistake
            return f[:1]
        if self.shape == "numpy":
            return f.numpy()  # type: ignore[return-value]
        if self.shape == "vector":
            return f[:, 0]
        if self.shape == "growing":  # the feature size changes from call to call
            return torch.cat([f, torch.zeros(len(f), self.calls)], dim=1)
        raise AssertionError(self.shape)


def test_embedder_output_must_have_one_row_per_image(tmp_path: Path) -> None:
    from mcgf.errors import UserError

    recs = [write(tmp_path / "r" / f"{i}.png", 40 * i, 255 - 40 * i) for i in range(5)]
    ref = extract_features(recs, LeftRight(), batch_size=2, progress=False, device="cpu")
    # One row for a batch of two was copied to both images, silently.
    with pytest.raises(UserError, match=r"returned shape \(1, 3\) for a batch of 2 images"):
        extract_features(recs, Returning("first-row"), batch_size=2, progress=False, device="cpu")
    with pytest.raises(UserError, match=r"returned shape \(2,\)"):
        extract_features(recs, Returning("vector"), batch_size=2, progress=False, device="cpu")
    with pytest.raises(UserError, match=r"gave 5 features for .*2\.png but 4"):
        extract_features(recs, Returning("growing"), batch_size=2, flip=False, progress=False,
                         device="cpu")
    as_numpy = extract_features(recs, Returning("numpy"), batch_size=2, progress=False, device="cpu")
    assert np.array_equal(as_numpy.features, ref.features)


@pytest.mark.parametrize("damage", ["truncated", "empty"])
@pytest.mark.parametrize("safetensors", [True, False])
def test_damaged_cache_entry_is_recomputed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           damage: str, safetensors: bool) -> None:
    import mcgf.evaluation.cache as cache_module

    if not safetensors:
        monkeypatch.setattr(cache_module, "_safetensors", lambda: None)
    elif cache_module._safetensors() is None:
        pytest.skip("safetensors is not installed")
    recs = [write(tmp_path / "c" / f"{i}.png", 50 * i, 0) for i in range(3)]
    cache = tmp_path / "cache"
    first = extract_features(recs, LeftRight(), cache_dir=cache, progress=False, device="cpu")
    (entry,) = [p for p in cache.iterdir() if p.suffix in (".safetensors", ".npy")]
    data = entry.read_bytes()
    entry.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
    emb = LeftRight()
    again = extract_features(recs, emb, cache_dir=cache, progress=False, device="cpu")
    assert not again.from_cache and emb.calls > 0
    assert np.array_equal(again.features, first.features)
    assert extract_features(recs, emb, cache_dir=cache, progress=False, device="cpu").from_cache


@pytest.mark.parametrize("factor", [1e-13, 1e-30, 1e-60, 1e40])
def test_tiny_and_float64_outputs_become_unit_vectors(tmp_path: Path, factor: float) -> None:
    recs = [write(tmp_path / "t" / f"{i}.png", 30 * i, 200) for i in range(3)]
    ref = extract_features(recs, LeftRight(), progress=False, device="cpu").features
    # A norm below 1e-12 was clamped (1e-13: rows of norm about 0.1, smaller: zero rows),
    # and float64 outputs were cast to float32 first (1e40: "non-finite features").
    got = extract_features(recs, Scaled(factor, torch.float64), progress=False, device="cpu").features
    assert np.allclose(got, ref, atol=1e-6)


def test_cache_key_follows_image_key_prefixes(tmp_path: Path) -> None:
    # Keys seed per-image weather: a key prefix (SUES-200's height) changes the pixels.
    from dataclasses import replace

    from mcgf.evaluation.features import feature_cache_key

    recs = [write(tmp_path / "d" / "0001" / "0.png", 1, 2)]
    plain = feature_cache_key(recs, LeftRight(), flip=False, transform_id="fog", device="cpu")
    prefixed = [replace(recs[0], key_prefix="150/")]
    assert feature_cache_key(prefixed, LeftRight(), flip=False, transform_id="fog", device="cpu") != plain


class Dropping(torch.nn.Module):
    """An ``nn.Module`` embedder whose training mode changes its output (dropout)."""

    identity = "dropping-test"
    input_size = (8, 8)
    mean = (0.0, 0.0, 0.0)
    std = (1.0, 1.0, 1.0)

    def __init__(self) -> None:
        super().__init__()
        self.drop = torch.nn.Dropout(0.9)
        self.frozen = torch.nn.Dropout(0.5)
        self.modes: list[bool] = []

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        x = torch.stack([images[..., :4].mean(dim=(1, 2, 3)) + 1.0,
                         images[..., 4:].mean(dim=(1, 2, 3)) + 1.0], dim=1)
        return self.drop(x)


def test_a_module_embedder_runs_in_eval_mode_and_gets_its_modes_back(tmp_path: Path) -> None:
    recs = [write(tmp_path / "a" / f"{i}.png", 10 * i, 200) for i in range(6)]
    emb = Dropping()
    emb.frozen.eval()  # a user's own mix of modes must come back as it was
    got = extract_features(recs, emb, flip=False, progress=False, device="cpu")
    assert emb.modes and not any(emb.modes)
    x = np.array([[10 * i / 255 + 1.0, 200 / 255 + 1.0] for i in range(6)])
    assert np.allclose(got.features, x / np.linalg.norm(x, axis=1, keepdims=True), atol=1e-5)
    assert emb.training and emb.drop.training and not emb.frozen.training


class BatchRounding(LeftRight):
    """Rounds like a convolution kernel whose blocking follows the batch size: the same
    image gets a feature that differs in the last bits from one batch size to another."""

    identity = "batch-rounding-test"

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return super().embed(images) * (1.0 + 1e-6 * images.shape[0])


def test_duplicate_images_get_identical_features_in_a_short_last_batch(tmp_path: Path) -> None:
    # Five records in batches of three: the copy of the first image falls in the short
    # last batch; an exact tie needs the two rows equal bit for bit.
    recs = [write(tmp_path / "a" / f"{i}.png", 40 * i, 200 - 30 * i) for i in range(4)]
    recs.append(recs[0])
    fs = extract_features(recs, BatchRounding(), batch_size=3, progress=False, device="cpu")
    assert np.array_equal(fs.features[4], fs.features[0])
    assert fs.features.shape == (5, 3)
    assert fs.valid.all()
