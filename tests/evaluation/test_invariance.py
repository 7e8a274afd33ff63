"""The pure maths of the weather-invariance probes (mcgf.evaluation.invariance)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mcgf.evaluation.invariance import condition_probe, cosine_invariance, group_folds

K = 10  # conditions, as University-WX


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def dataset(locations: int = 40, views: int = 3, dim: int = 16, seed: int = 0
            ) -> tuple[np.ndarray, np.ndarray]:
    """Clean embeddings (location centre + view noise) and their location labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(locations, dim))
    labels = np.repeat(np.arange(locations), views)
    return unit(centres[labels] + 0.3 * rng.normal(size=(len(labels), dim))), labels


def stack(per_condition: list[np.ndarray], labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(samples, condition of each, location of each) of K aligned embedding matrices."""
    x = np.concatenate(per_condition)
    y = np.repeat(np.arange(len(per_condition)), len(labels))
    return x, y, np.tile(labels, len(per_condition))


# --------------------------------------------------------------------------- cosine


def test_cosine_of_identical_embeddings_is_one_and_baseline_matches_brute_force() -> None:
    clean, labels = dataset()
    res = cosine_invariance(clean, clean * 3.0, labels)  # any scale: normalised inside
    assert res.cosine == pytest.approx(1.0) and res.cosine_std == pytest.approx(0.0, abs=1e-12)
    assert res.normalised == pytest.approx(1.0) and res.images == len(labels)
    sims = clean @ clean.T
    other = labels[:, None] != labels[None, :]
    expect = np.mean((sims * other).sum(axis=1) / other.sum(axis=1))
    assert res.baseline == pytest.approx(expect, abs=1e-12)


def test_cosine_of_a_perturbed_condition_against_brute_force() -> None:
    clean, labels = dataset(seed=1)
    rng = np.random.default_rng(5)
    weathered = unit(clean + 0.8 * rng.normal(size=clean.shape))
    valid = np.ones(len(labels), bool)
    valid[[0, 7]] = False  # unreadable images are left out of both terms
    res = cosine_invariance(clean, weathered, labels, valid)
    c, w, lab = clean[valid], weathered[valid], labels[valid]
    same = np.sum(c * w, axis=1)
    other = lab[:, None] != lab[None, :]
    base = np.mean(((w @ c.T) * other).sum(axis=1) / other.sum(axis=1))
    assert res.images == len(lab)
    assert res.cosine == pytest.approx(same.mean()) and res.cosine_std == pytest.approx(same.std())
    assert res.baseline == pytest.approx(base)
    assert res.normalised == pytest.approx((same.mean() - base) / (1 - base))
    assert 0 < res.normalised < 1


def test_cosine_baseline_needs_two_locations_and_inputs_must_align() -> None:
    clean, _ = dataset(locations=1)
    res = cosine_invariance(clean, clean, np.zeros(len(clean), int))
    assert res.baseline is None and res.normalised is None and res.cosine == pytest.approx(1.0)
    with pytest.raises(ValueError, match="must be"):
        cosine_invariance(clean, clean[:-1], np.zeros(len(clean), int))
    with pytest.raises(ValueError, match="no valid"):
        cosine_invariance(clean, clean, np.zeros(len(clean), int), np.zeros(len(clean), bool))


# --------------------------------------------------------------------------- folds


def test_group_folds_never_split_a_location_and_are_balanced() -> None:
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 23, 500)  # unequal group sizes, samples in random order
    fold = group_folds(groups, 5, seed=3)
    assert fold.shape == groups.shape and set(fold.tolist()) == set(range(5))
    for g in np.unique(groups):
        assert len(set(fold[groups == g].tolist())) == 1
    for f in range(5):  # no location on both sides of any split
        assert not set(groups[fold == f].tolist()) & set(groups[fold != f].tolist())
    per_fold = [len(set(groups[fold == f].tolist())) for f in range(5)]
    assert max(per_fold) - min(per_fold) <= 1  # 23 locations: 5,5,5,4,4
    assert np.array_equal(fold, group_folds(groups, 5, seed=3))
    assert not np.array_equal(fold, group_folds(groups, 5, seed=4))
    with pytest.raises(ValueError, match="folds must be"):
        group_folds(groups, 24)
    with pytest.raises(ValueError, match="folds must be"):
        group_folds(groups, 1)


# --------------------------------------------------------------------------- probe


def test_probe_on_identical_embeddings_is_exactly_at_chance() -> None:
    # Every image appears under all K conditions with the same embedding, and a location's
    # images never leave their fold, so each test image contributes K samples with one input:
    # whatever the classifier predicts for it is right for exactly one of them. Accuracy is
    # therefore exactly 100/K on every fold, for any classifier: no tolerance is needed
    # beyond float rounding.
    clean, labels = dataset()
    x, y, g = stack([clean] * K, labels)
    res = condition_probe(x, y, g, folds=5, seed=0)
    assert res.chance == pytest.approx(100 / K)
    assert res.accuracy == pytest.approx(100 / K, abs=1e-9)
    assert res.fold_accuracies == pytest.approx([100 / K] * 5, abs=1e-9)
    assert res.accuracy_std == pytest.approx(0.0, abs=1e-9)
    assert res.folds == 5 and res.n == K * len(labels) and res.groups == 40


def test_probe_on_condition_free_noise_stays_near_chance() -> None:
    # Independent noise per (image, condition), no condition-specific structure: on unseen
    # locations the predictions are independent of the labels, so the pooled accuracy is a
    # binomial proportion around 1/K; 4 standard deviations (n = 1200 samples: ±3.5 points)
    # bound it with a false-failure rate below 1e-4 (it is seeded, so it cannot flake).
    clean, labels = dataset()
    rng = np.random.default_rng(7)
    x, y, g = stack([clean + 0.2 * rng.normal(size=clean.shape) for _ in range(K)], labels)
    res = condition_probe(x, y, g, folds=5, seed=0)
    sigma = 100 * math.sqrt(0.1 * 0.9 / res.n)
    assert abs(res.accuracy - 100 / K) < 4 * sigma


def test_probe_finds_a_distinct_offset_per_condition() -> None:
    clean, labels = dataset()
    rng = np.random.default_rng(2)
    offsets = rng.normal(size=(K, clean.shape[1]))
    x, y, g = stack([clean + 0.5 * offsets[k] for k in range(K)], labels)
    res = condition_probe(x, y, g, folds=5, seed=0, names=[f"c{k}" for k in range(K)])
    assert res.accuracy >= 99.0 and min(res.class_recall) >= 95.0
    assert res.conditions == tuple(f"c{k}" for k in range(K))


def test_location_grouping_stops_the_probe_from_memorising_places() -> None:
    # Each (location, condition) pair gets its own random offset: the weather "looks"
    # different at every place and there is no shared weather direction. Seen places are
    # memorised (a split by image scores far above chance), unseen ones are not (the
    # location-grouped folds stay at chance): the grouping measures the weather, not places.
    locations, dim = 20, 128
    clean, labels = dataset(locations=locations, views=6, dim=dim)
    rng = np.random.default_rng(4)
    shift = 4.0 * rng.normal(size=(locations, K, dim)) / np.sqrt(dim)
    x, y, g = stack([clean + shift[labels, k] for k in range(K)], labels)
    grouped = condition_probe(x, y, g, folds=5, seed=0)
    by_image = condition_probe(x, y, np.tile(np.arange(len(labels)), K), folds=5, seed=0)
    # The views of a location under one condition share its offset, so the independent
    # units are the 200 (location, condition) pairs: 4 binomial standard deviations of
    # 200 trials at p = 0.1 are 8.5 points.
    sigma = 100 * math.sqrt(0.1 * 0.9 / (locations * K))
    assert abs(grouped.accuracy - 100 / K) < 4 * sigma
    assert by_image.accuracy > 95.0


def test_probe_is_seeded() -> None:
    clean, labels = dataset()
    rng = np.random.default_rng(3)
    x, y, g = stack([clean + 0.3 * rng.normal(size=clean.shape) + 0.05 * k for k in range(K)], labels)
    a = condition_probe(x, y, g, folds=5, seed=11)
    b = condition_probe(x, y, g, folds=5, seed=11)
    c = condition_probe(x, y, g, folds=5, seed=12)
    assert a == b  # every number, fold by fold
    assert a.fold_accuracies != c.fold_accuracies


def test_probe_folds_shrink_to_the_locations_and_bad_input_raises() -> None:
    clean, labels = dataset(locations=3)
    x, y, g = stack([clean, clean + 1.0], labels)
    res = condition_probe(x, y, g, folds=5)
    assert res.folds == 3 and res.chance == pytest.approx(50.0)
    with pytest.raises(ValueError, match="2 conditions"):
        condition_probe(clean, np.zeros(len(clean), int), labels)
    with pytest.raises(ValueError, match="2 locations"):
        condition_probe(x, y, np.zeros(len(y), int))
    with pytest.raises(ValueError, match="must be"):
        condition_probe(x, y[:-1], g)
