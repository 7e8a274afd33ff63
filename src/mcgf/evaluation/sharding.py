"""Feature extraction split across the processes of a ``torch.distributed`` group.

Under ``torchrun`` every rank validates together (see :mod:`mcgf.evaluation.validation`):
each embeds one contiguous run of whole batches of the record list, then the ranks
all-gather their rows, so every rank ends with the full feature matrix, in record order,
and computes the same metrics. The runs start at multiples of the batch size, so every
batch holds exactly the images it holds in a single-process extraction: the features
are those of one process, not merely close to them.

A rank whose embedding fails still takes part in the gathers (with a failure flag), and
every rank then raises: a failure on one rank never leaves the others waiting in a
collective until the process group's timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from mcgf.errors import UserError

#: All-gather of one tensor (equal shapes on every rank) → every rank's, in rank order.
GatherFn = Callable[[torch.Tensor], list[torch.Tensor]]


def all_gather(tensor: torch.Tensor) -> list[torch.Tensor]:
    """``torch.distributed.all_gather`` of ``tensor`` on the default group, on the CPU
    for gloo and on this rank's current CUDA device for NCCL; results on the CPU."""
    import torch.distributed as dist

    dev = (torch.device("cuda", torch.cuda.current_device())
           if dist.get_backend() == "nccl" else torch.device("cpu"))
    local = tensor.to(dev).contiguous()
    out = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(out, local)
    return [t.cpu() for t in out]


@dataclass(frozen=True)
class Shard:
    """This process's part of an extraction split over ``world`` processes.

    Attributes:
        rank, world: this process and the number of processes (``0 <= rank < world``).
        gather: the all-gather the ranks exchange their rows with (default: through
            ``torch.distributed``; tests may pass another). Every rank must call the
            extraction with the same records and batch size.
    """

    rank: int
    world: int
    gather: GatherFn = field(default=all_gather, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise ValueError(f"a shard needs 0 <= rank < world, got rank {self.rank} of {self.world}")

    def span(self, n: int, batch_size: int) -> tuple[int, int]:
        """``(start, end)`` of this rank's records among ``n``: a run of whole batches of
        ``batch_size`` (the last one may be short), ranks differing by one batch at most."""
        batches = -(-n // batch_size)
        first = self.rank * batches // self.world
        last = (self.rank + 1) * batches // self.world
        return min(first * batch_size, n), min(last * batch_size, n)


def current_shard() -> Shard | None:
    """This process's shard when ``torch.distributed`` has a group of several processes,
    else ``None`` (one process: nothing to split)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return Shard(dist.get_rank(), dist.get_world_size())


def gather_rows(features: np.ndarray | None, valid: np.ndarray | None, shard: Shard,
                error: BaseException | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every rank's rows of a sharded extraction, concatenated in rank order (the record
    order, see :meth:`Shard.span`): ``(features (N, D) float32, valid (N,) bool)``.

    Args:
        features, valid: this rank's rows (``(n_r, D)``; ``D`` may be 0 when it embedded
            no image) and which of them are real images; ``None`` when ``error`` is set.
        shard: this rank and the gather.
        error: what this rank's extraction raised (re-raised after the gathers).

    Raises:
        the rank's own ``error``, or UserError: another rank's extraction failed.
    """
    rows = 0 if features is None else int(features.shape[0])
    dim = 0 if features is None else int(features.shape[1])
    metas = shard.gather(torch.tensor([rows, dim, int(error is not None)], dtype=torch.int64))
    failed = [r for r, m in enumerate(metas) if int(m[2])]
    if error is not None:
        raise error
    if failed:
        raise UserError(f"feature extraction failed on rank {failed[0]} of {shard.world} "
                        "(its own error says why)")
    counts = [int(m[0]) for m in metas]
    dims = {int(m[1]) for m in metas} - {0}
    if len(dims) > 1:
        raise ValueError(f"ranks embedded to different feature sizes {sorted(dims)}")
    width = dims.pop() if dims else 0
    assert features is not None and valid is not None
    if not sum(counts):
        return np.zeros((0, width), np.float32), np.zeros(0, bool)
    # One tensor per rank, padded to the longest shard; the last column carries `valid`.
    packed = torch.zeros(max(counts), width + 1, dtype=torch.float32)
    if rows:
        packed[:rows, :dim] = torch.from_numpy(np.ascontiguousarray(features, np.float32))
        packed[:rows, width] = torch.from_numpy(valid.astype(np.float32))
    parts = [p[:n] for p, n in zip(shard.gather(packed), counts, strict=True)]
    full = torch.cat(parts).numpy()
    return np.ascontiguousarray(full[:, :width]), full[:, width] > 0.5
