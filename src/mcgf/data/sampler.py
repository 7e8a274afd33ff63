"""Paired cross-view batches that use every drone image once per epoch.

A batch holds ``P`` distinct locations; each contributes its satellite tile and ``M``
of its drone views. The public University-1652 baselines draw one random drone view per
location per epoch (about 700 of 37,854 drone images); here each epoch walks every
drone image instead:

1. every location's drone images are shuffled and cut into chunks of ``M``; a short last
   chunk is filled up with other views of the same location;
2. batches are formed greedily from the locations with the most chunks left (ties broken
   by a fresh random key), which keeps ``P`` locations distinct per batch for as long as
   ``P`` locations have chunks left; a batch that would hold a single location (the
   last one or more, when one location has more chunks than any other) gets random
   views of another location too;
3. with several ranks, the batch list is padded to a multiple of the world size with
   extra chunks, and rank ``r`` takes batches ``r, r + W, ...``: shards are disjoint,
   have equal length (so DDP never waits on a missing step) and together cover every
   drone image.

The schedule depends only on ``(seed, epoch)`` and the dataset, never on the rank
reading it, so every rank builds the same plan.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LocationIndex:
    """Dataset indices grouped by location, as the sampler needs them.

    ``drone[i]`` and ``satellite[i]`` are the dataset indices of location ``i``'s drone
    views and satellite tiles (each non-empty).
    """

    drone: Sequence[Sequence[int]]
    satellite: Sequence[Sequence[int]]

    def __post_init__(self) -> None:
        if len(self.drone) != len(self.satellite):
            raise ValueError("drone and satellite index lists must have one entry per location")
        for i, (d, s) in enumerate(zip(self.drone, self.satellite, strict=True)):
            if not d or not s:
                raise ValueError(f"location {i} has no drone view or no satellite tile")


class CrossViewBatchSampler:
    """Yields lists of dataset indices, ``P`` locations per batch, each laid out as
    ``[satellite, drone_1, ..., drone_M]`` (so labels of both views stay aligned).

    Args:
        locations: dataset indices per location.
        locations_per_batch: ``P``.
        drones_per_location: ``M``.
        seed: base seed; the plan of epoch ``e`` depends on ``(seed, e)`` only.
        num_replicas: world size for distributed training (``W``).
        rank: this process's rank.
        drop_last: end the plan at the first batch with fewer than ``P`` locations (the
            drone views left for the epoch's tail batches go unused).

    Call :meth:`set_epoch` before each epoch, as with
    :class:`torch.utils.data.DistributedSampler`.
    """

    def __init__(
        self,
        locations: LocationIndex,
        locations_per_batch: int,
        drones_per_location: int = 1,
        *,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
    ) -> None:
        if locations_per_batch < 1 or drones_per_location < 1:
            raise ValueError("locations_per_batch and drones_per_location must be >= 1")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside [0, {num_replicas})")
        if not locations.drone:
            raise ValueError("no location has both a drone view and a satellite tile")
        self.locations = locations
        self.P = locations_per_batch
        self.M = drones_per_location
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        self.epoch = 0
        self._cached: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose plan :meth:`__iter__` yields."""
        self.epoch = epoch

    # -- planning --------------------------------------------------------------

    def _chunks(self, rng: np.random.Generator) -> list[list[np.ndarray]]:
        """Per location, its drone views shuffled and cut into chunks of exactly M."""
        out: list[list[np.ndarray]] = []
        for views in self.locations.drone:
            views = np.asarray(views, dtype=np.int64)
            order = views[rng.permutation(len(views))]
            n_chunks = -(-len(order) // self.M)
            short = n_chunks * self.M - len(order)
            if short:
                # Fill the last chunk with views of the same location from its other
                # chunks: a view drawn twice into one chunk is the same image with the same
                # weather (EpochTagged gives each appearance its own augmentation). Only a
                # location with fewer than M views (a single chunk) must repeat one.
                others = order[: len(order) - (self.M - short)]
                pool = others if len(others) else views
                fill = rng.choice(pool, size=short, replace=short > len(pool))
                order = np.concatenate([order, fill])
            out.append(list(order.reshape(n_chunks, self.M)))
        return out

    def plan(self, epoch: int | None = None) -> list[list[int]]:
        """The global batch list of an epoch (all ranks), before sharding."""
        epoch = self.epoch if epoch is None else epoch
        if self._cached is not None and self._cached[0] == epoch:
            return self._cached[1]
        batches = self._make_plan(epoch)
        self._cached = (epoch, batches)
        return batches

    def _make_plan(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        chunks = self._chunks(rng)
        remaining = np.array([len(c) for c in chunks], dtype=np.int64)
        cursor = np.zeros_like(remaining)
        batches: list[list[int]] = []
        while True:
            live = np.flatnonzero(remaining)
            if live.size == 0:
                break
            # Most chunks left first; a random key breaks ties (and shuffles locations).
            key = remaining[live] + rng.random(live.size)
            take = live[np.argsort(-key, kind="stable")[: self.P]]
            take = take[rng.permutation(take.size)]
            if take.size < self.P and self.drop_last:
                break
            if take.size == 1 < self.P and len(chunks) > 1:
                batches.append(self._with_another_location(int(take[0]), chunks, cursor, rng))
            else:
                batches.append(self._batch(take, chunks, cursor, rng))
            cursor[take] += 1
            remaining[take] -= 1
        # Equal shard lengths across ranks: pad with extra batches of random views.
        while len(batches) % self.num_replicas:
            n_loc = len(self.locations.drone)
            take = rng.permutation(n_loc)[: self.P]
            extra = [self._random_chunk(int(i), rng) for i in take]
            batches.append(self._layout(take, extra, rng))
        return batches

    def _batch(self, take: np.ndarray, chunks: list[list[np.ndarray]], cursor: np.ndarray,
               rng: np.random.Generator) -> list[int]:
        return self._layout(take, [chunks[i][cursor[i]] for i in take], rng)

    def _with_another_location(self, loc: int, chunks: list[list[np.ndarray]],
                               cursor: np.ndarray, rng: np.random.Generator) -> list[int]:
        """The batch of location ``loc``'s next chunk, when no other location has chunks
        left, plus random views of a random other location: a batch of one location has
        no batch statistics for a head's BatchNorm (training stops on it) and no negatives."""
        other = int(rng.integers(len(chunks) - 1))
        other += other >= loc
        return self._layout(np.array([loc, other]),
                            [chunks[loc][cursor[loc]], self._random_chunk(other, rng)], rng)

    def _random_chunk(self, loc: int, rng: np.random.Generator) -> np.ndarray:
        """``M`` random drone views of location ``loc`` (with replacement): the extra
        chunks that pad a plan or join a lone location."""
        return rng.choice(np.asarray(self.locations.drone[loc]), size=self.M)

    def _layout(self, take: np.ndarray, drone_chunks: Sequence[np.ndarray],
                rng: np.random.Generator) -> list[int]:
        batch: list[int] = []
        for loc, drones in zip(take, drone_chunks, strict=True):
            sats = self.locations.satellite[int(loc)]
            sat = sats[0] if len(sats) == 1 else sats[int(rng.integers(len(sats)))]
            batch.append(int(sat))
            batch.extend(int(d) for d in drones)
        return batch

    # -- Sampler protocol --------------------------------------------------------

    def __iter__(self) -> Iterator[list[int]]:
        plan = self.plan()
        yield from plan[self.rank :: self.num_replicas]

    def __len__(self) -> int:
        return len(self.plan()) // self.num_replicas
