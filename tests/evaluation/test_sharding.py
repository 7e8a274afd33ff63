"""Feature extraction split across ranks gives every rank the single-process features.

The ranks are threads exchanging tensors through a barrier (the all-gather's contract:
equal shapes in, every rank's tensor out, in rank order), so no process group is needed.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mcgf.data.layout import read_class_folders
from mcgf.errors import UserError
from mcgf.evaluation.features import extract_features
from mcgf.evaluation.sharding import Shard
from mcgf.models.baselines import ThumbnailEmbedder
from tests.evaluation.conftest import tiny_u1652  # noqa: F401  (fixture)


class BatchMixing(ThumbnailEmbedder):
    """A thumbnail plus its batch's mean: equal features only from equal batches."""

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        f = super().embed(images)
        return f + 0.5 * f.mean(dim=0, keepdim=True)


class ThreadGroup:
    """``world`` threads' all-gather through a barrier; checks the shapes match."""

    def __init__(self, world: int) -> None:
        self.world = world
        self.slots: list[Any] = [None] * world
        self.barrier = threading.Barrier(world, timeout=30)
        self.calls = [0] * world

    def gather(self, rank: int) -> Callable[[torch.Tensor], list[torch.Tensor]]:
        def gather(t: torch.Tensor) -> list[torch.Tensor]:
            self.calls[rank] += 1
            self.slots[rank] = t.clone()
            self.barrier.wait()
            out = list(self.slots)
            self.barrier.wait()
            assert len({tuple(o.shape) for o in out}) == 1, [o.shape for o in out]
            return out
        return gather

    def run(self, fn: Callable[[Shard], Any]) -> list[Any]:
        """``fn(shard)`` on every rank at once: each rank's result or exception."""
        results: list[Any] = [None] * self.world

        def work(rank: int) -> None:
            try:
                results[rank] = fn(Shard(rank, self.world, self.gather(rank)))
            except Exception as err:  # the test inspects it
                results[rank] = err

        threads = [threading.Thread(target=work, args=(r,)) for r in range(self.world)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads), "a rank hangs"
        return results


@pytest.mark.parametrize(("n", "batch", "world"), [(10, 3, 2), (10, 3, 4), (5, 4, 3), (7, 7, 2),
                                                   (0, 2, 2), (12, 2, 3)])
def test_spans_are_whole_batches_covering_the_records_in_order(n: int, batch: int, world: int) -> None:
    spans = [Shard(r, world).span(n, batch) for r in range(world)]
    assert spans[0][0] == 0 and spans[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert all(s % batch == 0 for s, _ in spans)
    sizes = [-(-(e - s) // batch) for s, e in spans]  # batches per rank
    assert max(sizes) - min(sizes) <= 1


def test_bad_shard_is_refused() -> None:
    with pytest.raises(ValueError, match="rank 2 of 2"):
        Shard(2, 2)


@pytest.mark.parametrize(("world", "batch"), [(2, 4), (3, 4), (4, 2), (6, 4)])
def test_sharded_features_equal_one_process_bit_for_bit(tiny_u1652: Path, world: int,  # noqa: F811
                                                        batch: int) -> None:
    records = read_class_folders(tiny_u1652 / "test" / "query_drone", "drone").records()
    broken = records[5].path
    broken.write_bytes(b"not an image")  # a skipped row in the middle of a shard
    emb = BatchMixing(grid=2, size=16)
    kw: dict[str, Any] = {"batch_size": batch, "flip": True, "progress": False,
                          "on_bad_image": "skip", "device": "cpu"}
    one = extract_features(records, emb, **kw)
    group = ThreadGroup(world)
    got = group.run(lambda shard: extract_features(records, emb, shard=shard, **kw))
    assert not one.valid[5] and one.valid.sum() == len(records) - 1
    for fs in got:
        assert not isinstance(fs, Exception), fs
        assert np.array_equal(fs.features, one.features) and np.array_equal(fs.valid, one.valid)
    assert group.calls == [2] * world  # the shape exchange, then the rows
    # A batch-sensitive embedder would differ if the ranks' batches did not align.
    assert not np.array_equal(one.features,
                              extract_features(records, emb, **{**kw, "batch_size": batch + 1}).features)


def test_a_failing_rank_makes_every_rank_raise_without_waiting(tiny_u1652: Path) -> None:  # noqa: F811
    records = read_class_folders(tiny_u1652 / "test" / "query_drone", "drone").records()
    records[-1].path.write_bytes(b"broken")  # in the last rank's shard only
    group = ThreadGroup(3)
    got = group.run(lambda shard: extract_features(records, ThumbnailEmbedder(grid=2, size=16),
                                                   batch_size=2, progress=False, device="cpu",
                                                   shard=shard))
    assert isinstance(got[2], UserError) and "cannot read image" in str(got[2])
    assert all(isinstance(e, UserError) and "failed on rank 2 of 3" in str(e) for e in got[:2])


def test_sharding_refuses_a_cache(tiny_u1652: Path, tmp_path: Path) -> None:  # noqa: F811
    records = read_class_folders(tiny_u1652 / "test" / "query_drone", "drone").records()
    with pytest.raises(ValueError, match="not cached"):
        extract_features(records, ThumbnailEmbedder(), cache_dir=tmp_path, shard=Shard(0, 2))
