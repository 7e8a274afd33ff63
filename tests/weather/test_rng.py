"""Per-image randomness: stable across runs and machines, independent of call order."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import pytest

from mcgf.errors import UserError
from mcgf.weather import CONDITIONS, choose_condition
from mcgf.weather.rng import image_rng, mix_seed


def test_generator_depends_only_on_seed_key_purpose():
    a = image_rng(0, "0001/image-01.jpeg", "fog").random(5)
    b = image_rng(0, "0001/image-01.jpeg", "fog").random(5)
    np.testing.assert_array_equal(a, b)
    for other in (image_rng(1, "0001/image-01.jpeg", "fog"), image_rng(0, "0001/image-02.jpeg", "fog"),
                  image_rng(0, "0001/image-01.jpeg", "rain")):
        assert not np.array_equal(a, other.random(5))


def test_generator_is_stable_across_processes_and_versions():
    # BLAKE2b + SeedSequence + PCG64 are specified algorithms: these numbers must never
    # change, or every published weathered set would silently change with them.
    draws = image_rng(0, "0001/image-01.jpeg", "fog").integers(0, 2**31, 3)
    assert draws.tolist() == [951440161, 1518656125, 438763294]
    assert mix_seed(7, "epoch", 3) == 7943600034074938753


def test_parts_are_separated():
    # ("a", "bc") and ("ab", "c") must not collide.
    assert not np.array_equal(image_rng(1, "a", "bc").random(3), image_rng(1, "ab", "c").random(3))


def test_seed_must_be_an_integer():
    with pytest.raises(TypeError):
        image_rng(True, "k", "fog")
    with pytest.raises(TypeError):
        image_rng(1.5, "k", "fog")  # type: ignore[arg-type]


def test_choose_condition_is_reproducible_and_golden():
    keys = [f"0001/image-{i:02d}.jpeg" for i in range(1, 6)]
    assert [choose_condition(0, k) for k in keys] == ["snow", "fog", "wind", "rain_snow", "dark"]
    assert [choose_condition(0, k) for k in reversed(keys)] == ["dark", "rain_snow", "wind", "fog", "snow"]


def test_choose_condition_is_uniform():
    counts = Counter(choose_condition(3, f"q/{i}.jpeg") for i in range(5000))
    assert set(counts) == set(CONDITIONS)
    assert all(400 < n < 600 for n in counts.values()), counts


def test_choose_condition_subset_and_errors():
    subset = ("fog", "rain")
    picks = {choose_condition(0, f"k{i}", subset) for i in range(50)}
    assert picks == set(subset)
    with pytest.raises(UserError, match="unknown weather"):
        choose_condition(0, "k", ("fog", "hail"))
    with pytest.raises(UserError, match="empty"):
        choose_condition(0, "k", ())
    with pytest.raises(ValueError):
        choose_condition(0, "k", ("fog", "fog"))


def test_key_from_a_file_name_that_is_not_utf8():
    # os.listdir gives b"image\xff.jpeg" as "image\udcff.jpeg"; its weather must be drawn
    # (reproducibly, and apart from other names) rather than fail to hash.
    key = os.fsdecode(b"0001/image\xff.jpeg")
    a = image_rng(0, key, "fog").random(3)
    np.testing.assert_array_equal(a, image_rng(0, key, "fog").random(3))
    assert not np.array_equal(a, image_rng(0, "0001/image.jpeg", "fog").random(3))
    assert choose_condition(0, key) in CONDITIONS
