"""Two-process DDP on CPU (gloo): both ranks train, only rank 0 writes."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.training.test_loop import config, read_log
from tests.training.test_loop import root as root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, cfg: dict, out: str) -> None:
    import torch.distributed as dist

    from mcgf.training.config import parse_run_config
    from mcgf.training.loop import train

    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        train(parse_run_config(cfg, "t"), out, progress=False)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_gloo_training(root: Path, tmp_path: Path) -> None:
    cfg = config(root, epochs=2, device="cpu")  # P=2: 2 batches per epoch → 1 per rank
    out = tmp_path / "ddp"
    mp.spawn(_worker, args=(2, _free_port(), cfg, str(out)), nprocs=2, join=True)
    rows = read_log(out)
    assert [int(r["step"]) for r in rows] == [1, 2]
    from mcgf.training import load_checkpoint

    assert load_checkpoint(out / "last", load_train_state=True).train_state.step == 2
