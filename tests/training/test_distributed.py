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


def _worker(rank: int, world: int, port: int, cfg: dict, out: str, resume: bool = False,
            stop_after: int | None = None) -> None:
    import torch.distributed as dist

    from mcgf.training.config import parse_run_config
    from mcgf.training.loop import train

    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        train(parse_run_config(cfg, "t"), out, progress=False, resume=resume, stop_after=stop_after)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_gloo_training(root: Path, tmp_path: Path) -> None:
    """Both ranks train; each rank's RNG states are saved (per-rank dropout and diffusion
    noise), and a run resumed with as many processes ends with the uninterrupted weights."""
    cfg = config(root, epochs=2, device="cpu")  # P=2: 2 batches per epoch → 1 per rank
    cfg["model"]["dropout"] = 0.2
    out = tmp_path / "ddp"
    mp.spawn(_worker, args=(2, _free_port(), cfg, str(out)), nprocs=2, join=True)
    rows = read_log(out)
    assert [int(r["step"]) for r in rows] == [1, 2]
    from mcgf.training import load_checkpoint

    state = load_checkpoint(out / "last", load_train_state=True).train_state
    assert state.step == 2
    ranks = state.rank_rng
    assert len(ranks) == 2 and torch.equal(ranks[0]["torch"], state.rng["torch"])
    assert not torch.equal(ranks[0]["torch"], ranks[1]["torch"])
    assert not torch.equal(ranks[0]["generators"]["model"]["state"],
                           ranks[1]["generators"]["model"]["state"])
    part = tmp_path / "part"
    mp.spawn(_worker, args=(2, _free_port(), cfg, str(part), False, 1), nprocs=2, join=True)
    mp.spawn(_worker, args=(2, _free_port(), cfg, str(part), True), nprocs=2, join=True)
    a = load_checkpoint(out / "last").model.state_dict()
    b = load_checkpoint(part / "last").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_processes_match_one_process_with_the_same_global_batch(root: Path, tmp_path: Path) -> None:
    """DDP over 2 gloo ranks (P=2 each) ≡ 1 process accumulating the same 2 micro-batches.

    Rank r takes batches r, r+2, ... of the shared plan, so an optimizer step sees the
    same two micro-batches in both runs; gradients are averaged over ranks in one and
    over micro-batches in the other. Randomness that differs by process (augmentation
    draws, diffusion noise, dropout) is off so that only float reduction order differs.
    """
    cfg = config(root, epochs=3, device="cpu", infonce=0.0, lambda_restore=0.0)
    cfg["data"]["satellite_flip"] = False
    cfg["model"]["restoration"] = False
    ddp_out = tmp_path / "ddp"
    mp.spawn(_worker, args=(2, _free_port(), cfg, str(ddp_out)), nprocs=2, join=True)

    from mcgf.training import load_checkpoint
    from mcgf.training.config import parse_run_config
    from mcgf.training.loop import train

    single = {**cfg, "train": {**cfg["train"], "accumulate": 2}}
    one_out = tmp_path / "one"
    train(parse_run_config(single, "t"), one_out, progress=False)
    a = load_checkpoint(ddp_out / "last", load_train_state=True)
    b = load_checkpoint(one_out / "last", load_train_state=True)
    assert a.train_state.step == b.train_state.step == 3
    # Logged losses are the global batch's (DDP averages them over ranks).
    ca = [float(r["ce"]) for r in read_log(ddp_out)]
    cb = [float(r["ce"]) for r in read_log(one_out)]
    assert len(ca) == 3 and ca[:2] == pytest.approx(cb[:2], rel=1e-5)
    assert ca[2] == pytest.approx(cb[2], rel=1e-3)  # after two Adam steps (see below)
    # Weights: Adam moves each weight by about ±lr whatever its gradient's size, so float
    # noise in near-zero gradients flips some steps; the update as a whole must agree.
    from mcgf.models.model_registry import create_model

    torch.manual_seed(cfg["train"]["seed"])
    fresh = create_model(**b.config["model"]).state_dict()
    keys = [k for k in fresh if fresh[k].is_floating_point() and "running" not in k]
    da = torch.cat([(a.model.state_dict()[k] - fresh[k]).flatten() for k in keys])
    db = torch.cat([(b.model.state_dict()[k] - fresh[k]).flatten() for k in keys])
    assert db.abs().max() > 1e-4  # training moved the weights
    cosine = float(torch.nn.functional.cosine_similarity(da, db, dim=0))
    assert cosine > 0.98, cosine
