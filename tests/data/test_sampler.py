from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from mcgf.data.sampler import CrossViewBatchSampler, LocationIndex


def make_index(views_per_location: list[int], sats_per_location: int = 1) -> LocationIndex:
    drone, sat, nxt = [], [], 0
    for n in views_per_location:
        drone.append(list(range(nxt, nxt + n)))
        nxt += n
    for _ in views_per_location:
        sat.append(list(range(nxt, nxt + sats_per_location)))
        nxt += sats_per_location
    return LocationIndex(drone, sat)


def location_of(index: LocationIndex) -> dict[int, int]:
    out = {}
    for loc, (d, s) in enumerate(zip(index.drone, index.satellite, strict=True)):
        out.update({i: loc for i in d})
        out.update({i: loc for i in s})
    return out


@pytest.mark.parametrize("P,M", [(4, 2), (3, 4), (5, 1)])
def test_batches_aligned_and_every_drone_image_once(P: int, M: int) -> None:
    views = [54, 54, 54, 54, 54, 54, 54]
    idx = make_index(views)
    loc = location_of(idx)
    sampler = CrossViewBatchSampler(idx, P, M, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    used = Counter()
    for b in batches:
        assert len(b) % (M + 1) == 0
        groups = [b[i : i + M + 1] for i in range(0, len(b), M + 1)]
        locs = [loc[g[0]] for g in groups]
        assert len(set(locs)) == len(locs), "locations in a batch must be distinct"
        for g in groups:
            sat, drones = g[0], g[1:]
            assert sat in idx.satellite[loc[sat]]
            assert all(loc[d] == loc[sat] for d in drones), "drone labels aligned with satellite"
            used.update(drones)
    all_drones = {i for d in idx.drone for i in d}
    assert set(used) == all_drones
    # Re-use only fills short last chunks (at most M-1 extra per location) and joins a
    # location left alone in a tail batch (M views of another location per such batch).
    extra = sum(used.values()) - len(all_drones) - sum((-n) % M for n in views)
    tails = sum(1 for b in batches if len(b) == 2 * (M + 1))
    assert extra % M == 0 and 0 <= extra <= M * tails
    # All but possibly the tail batches are full.
    assert sum(1 for b in batches if len(b) < P * (M + 1)) <= 1 + max(views) // M


@pytest.mark.parametrize("views,M", [([3] * 50, 2), ([5, 7, 9] * 10, 4), ([1, 2, 4] * 10, 3)])
def test_a_filled_chunk_repeats_no_view(views: list[int], M: int) -> None:
    """A short last chunk is filled with other views of its location: a view twice in
    one chunk would be the same item twice in a batch (only a location with fewer than M
    views has to repeat one)."""
    idx = make_index(views)
    for seed in range(3):
        for b in CrossViewBatchSampler(idx, 4, M, seed=seed).plan():
            for g in range(0, len(b), M + 1):
                chunk = b[g + 1: g + M + 1]
                n_views = views[location_of(idx)[chunk[0]]]
                assert len(set(chunk)) == min(M, n_views), chunk


def test_uneven_locations_keep_batches_distinct() -> None:
    idx = make_index([1, 2, 10, 3, 7, 1, 1, 12])
    loc = location_of(idx)
    sampler = CrossViewBatchSampler(idx, 3, 2, seed=0)
    for b in sampler:
        sats = b[0::3]
        assert len({loc[s] for s in sats}) == len(sats)


def test_same_seed_same_plan_new_epoch_new_plan() -> None:
    idx = make_index([6] * 10)
    a = CrossViewBatchSampler(idx, 4, 2, seed=1)
    b = CrossViewBatchSampler(idx, 4, 2, seed=1)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    c = CrossViewBatchSampler(idx, 4, 2, seed=2)
    assert list(c) != list(b)


@pytest.mark.parametrize("world", [2, 3, 4])
def test_distributed_shards_disjoint_equal_and_covering(world: int) -> None:
    idx = make_index([5, 9, 4, 7, 6, 8, 3, 5, 9])
    single = CrossViewBatchSampler(idx, 3, 2, seed=7)
    shards = [list(CrossViewBatchSampler(idx, 3, 2, seed=7, num_replicas=world, rank=r)) for r in range(world)]
    assert len({len(s) for s in shards}) == 1, "every rank runs the same number of steps"
    plan = single.plan()
    n_real = len(plan)
    # Rank r holds exactly the global batches r, r+W, ...: disjoint positions.
    padded = CrossViewBatchSampler(idx, 3, 2, seed=7, num_replicas=world).plan()
    assert padded[:n_real] == plan
    for r, s in enumerate(shards):
        assert s == padded[r::world]
    covered = {i for s in shards for b in s for i in b}
    assert {i for d in idx.drone for i in d} <= covered


def test_multiple_satellite_tiles_drawn_from_own_location() -> None:
    idx = make_index([4, 4, 4], sats_per_location=3)
    loc = location_of(idx)
    for b in CrossViewBatchSampler(idx, 3, 2, seed=0):
        for g in range(0, len(b), 3):
            assert loc[b[g]] == loc[b[g + 1]] == loc[b[g + 2]]


def test_drop_last_and_validation() -> None:
    idx = make_index([2, 2, 2])
    sampler = CrossViewBatchSampler(idx, 2, 2, seed=0, drop_last=True)
    assert all(len(b) == 6 for b in sampler)
    with pytest.raises(ValueError):
        CrossViewBatchSampler(idx, 0, 1)
    with pytest.raises(ValueError):
        CrossViewBatchSampler(idx, 2, 1, num_replicas=2, rank=2)
    with pytest.raises(ValueError):
        LocationIndex([[0]], [[]])


def test_university_scale_plan_is_fast_and_full() -> None:
    idx = make_index([54] * 701)
    sampler = CrossViewBatchSampler(idx, 8, 4, seed=0)
    plan = sampler.plan()
    # 701 locations x 14 chunks (54 views / 4) = 9814 chunks, 8 per batch
    assert len(plan) == int(np.ceil(701 * 14 / 8))


@pytest.mark.parametrize("views,P,M", [([3, 1, 1], 2, 1), ([12, 2, 3], 3, 2), ([54] * 701, 2, 2)])
def test_no_batch_holds_a_single_location(views: list[int], P: int, M: int) -> None:
    """A head's BatchNorm cannot train on one satellite tile: a location left alone at the
    end of the plan is joined by random views of another location."""
    idx = make_index(views)
    loc = location_of(idx)
    for seed in range(3):
        sampler = CrossViewBatchSampler(idx, P, M, seed=seed)
        plan = sampler.plan()
        sizes = [len({loc[i] for i in b}) for b in plan]
        assert min(sizes) == 2 and len(sampler) == len(plan)
        used = {i for b in plan for i in b}
        assert {i for d in idx.drone for i in d} <= used
        for b in plan:  # still aligned: each satellite followed by M views of its own place
            for g in range(0, len(b), M + 1):
                assert {loc[i] for i in b[g: g + M + 1]} == {loc[b[g]]}
