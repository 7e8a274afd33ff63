"""Two-process DDP on CPU (gloo): both ranks train, only rank 0 writes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

import mcgf
from tests.training.test_loop import config, read_log
from tests.training.test_loop import root as root
from tests.training.tiny_run import tiny_config, write_config, write_tree


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


@pytest.fixture(scope="module")
def val_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 locations: train/ (2 drone views + the tile) and test/ (3 drone queries, the
    tile, and a distractor tile in the gallery), 32 px."""
    base = tmp_path_factory.mktemp("u1652val") / "University-Release"
    rng = np.random.default_rng(1)
    folders = (("train/drone", 2), ("train/satellite", 1), ("test/query_drone", 3),
               ("test/gallery_satellite", 1))
    for c in range(5):
        colour = 128 + rng.integers(-24, 24, 3)  # close colours: retrieval is not trivial
        for folder, n in folders if c < 4 else folders[3:]:
            d = base / folder / f"{c + 1:04d}"
            d.mkdir(parents=True)
            for i in range(n):
                arr = np.clip(colour + rng.normal(0, 60, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")
    return base


def _validator(root: str) -> Any:
    """Retrieval in batches of 2 (12 queries, 5 tiles: both ranks get a share) and the
    restoration of 4 weathered queries."""
    from mcgf.evaluation.validation import (
        combine_validators,
        restoration_validator,
        university_validator,
    )

    return combine_validators([university_validator(root, batch_size=2, device="cpu"),
                               restoration_validator(root, images=4, steps=2)])


def _validating_worker(rank: int, world: int, port: int, cfg: dict, out: str) -> None:
    """Train with validation each epoch; write what this rank validated and embedded."""
    import torch.distributed as dist

    import mcgf.evaluation.features as features
    from mcgf.training.config import parse_run_config
    from mcgf.training.loop import train

    embedded: list[int] = []
    embed_loader = features._embed_loader

    def counting(loader: Any, records: Any, *args: Any, **kwargs: Any) -> Any:
        embedded.append(len(records))
        return embed_loader(loader, records, *args, **kwargs)

    features._embed_loader = counting  # type: ignore[assignment]
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        result = train(parse_run_config(cfg, "t"), out, progress=False,
                       validate=_validator(cfg["data"]["root"]))
    finally:
        dist.destroy_process_group()
    Path(out, f"rank{rank}.json").write_text(json.dumps({"validation": result.validation,
                                                         "embedded": embedded}))


def test_validation_under_two_processes_equals_one_process_validation(val_root: Path,
                                                                      tmp_path: Path) -> None:
    """With validation every epoch both ranks validate together (each embeds part of the
    test images, the features are gathered), the run finishes, and the logged
    val_R@1 / val_AP equal a 1-process validation of the final checkpoint."""
    cfg = config(val_root, epochs=2, device="cpu", eval_every=1)
    out = tmp_path / "ddp"
    mp.spawn(_validating_worker, args=(2, _free_port(), cfg, str(out)), nprocs=2, join=True)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    rows = [r for r in read_log(out) if r.get("val_R@1")]
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    # Each validation embeds 12 queries + 5 tiles, split across the ranks.
    assert sum(ranks[0]["embedded"]) + sum(ranks[1]["embedded"]) == 2 * (12 + 5)
    assert 0 < sum(ranks[0]["embedded"]) < 2 * (12 + 5)

    from mcgf.runtime import torch_threads
    from mcgf.training import load_checkpoint

    model = load_checkpoint(out / "last").model
    with torch_threads(1):
        single = _validator(str(val_root))(model)
    assert {"val_R@1", "val_AP", "val_restore_psnr", "val_restore_ssim"} <= set(single)
    assert 0 < single["val_R@1"] < 100 and 0 < single["val_AP"] < 100
    for r in ranks:
        assert r["validation"]["val_R@1"] == single["val_R@1"]
        assert r["validation"]["val_AP"] == single["val_AP"]
        assert r["validation"]["val_restore_psnr"] == pytest.approx(single["val_restore_psnr"],
                                                                    rel=1e-5)
    for key in ("val_R@1", "val_AP"):
        assert float(rows[-1][key]) == pytest.approx(single[key], rel=1e-5)


def test_two_processes_with_every_speed_lever_log_what_they_log_without(
        root: Path, tmp_path: Path) -> None:
    """DDP with the restoration branch, gradient checkpointing of the encoder and of the
    denoiser, one encoder pass over both views and compiled blocks (``aot_eager``): the
    same losses as the plain 2-process run, logged on every step. Half the drone images
    stay clean, so a rank's micro-batch may lack the restoration term the other has."""
    cfg = config(root, epochs=2, device="cpu", grad_norms_every=0)
    cfg["weather"]["clean_fraction"] = 0.5
    logs = []
    for levers in (False, True):
        run = {**cfg, "model": dict(cfg["model"]), "train": dict(cfg["train"])}
        if levers:
            run["model"].update(grad_checkpointing=True, restoration_grad_checkpointing=True,
                                joint_views=True)
            run["train"]["compile"] = "aot_eager"
        out = tmp_path / f"levers-{levers}"
        mp.spawn(_worker, args=(2, _free_port(), run, str(out)), nprocs=2, join=True)
        logs.append(read_log(out))
    plain, fast = logs
    assert [r["step"] for r in fast] == ["1", "2"]
    for a, b in zip(plain, fast, strict=True):
        for key in ("ce", "infonce", "restore", "total"):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-4), key


def _torchrun(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``torchrun --nproc_per_node 2 -m mcgf train ARGS`` on one thread per process."""
    src = str(Path(mcgf.__file__).resolve().parents[1])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p))
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", "-m", "mcgf", "train", *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


def test_mcgf_train_under_torchrun_prints_its_summary_once(tmp_path: Path) -> None:
    """Every rank returns from the loop; only rank 0 prints the closing line."""
    cfg = write_config(tmp_path / "cfg.yaml",
                       tiny_config(write_tree(tmp_path / "data", locations=5), epochs=1))
    out = tmp_path / "run"
    done = _torchrun("--config", str(cfg), "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained 1 epochs") == 1, done.stdout
    assert [int(r["step"]) for r in read_log(out)] == [1, 2]  # 5 locations / P=2 → 4 batches
    again = _torchrun("--config", str(cfg), "--out", str(out), "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("nothing to train") == 1, again.stdout


def _resuming_worker(rank: int, world: int, port: int, cfg: dict, out: str) -> None:
    """Set up the resumed run and write this rank's model generator state."""
    import torch.distributed as dist

    from mcgf.training.config import parse_run_config
    from mcgf.training.loop import setup_run

    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        run = setup_run(parse_run_config(cfg, "t"), out, resume=True, progress=False)
        torch.save(run.generator.get_state(), Path(out, f"generator{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_resumed_with_another_process_count_each_rank_draws_its_own_noise(tmp_path: Path) -> None:
    """A 1-process checkpoint resumed by 2 processes: the ranks' model generators (the
    diffusion t and noise) differ, from each other and from the saved one."""
    from mcgf.training import load_checkpoint
    from mcgf.training.config import parse_run_config
    from mcgf.training.loop import train

    cfg = tiny_config(write_tree(tmp_path / "data"), epochs=2)
    out = tmp_path / "run"
    train(parse_run_config(cfg, "t"), out, progress=False, stop_after=1)
    saved = load_checkpoint(out / "last", load_train_state=True).train_state.rng
    mp.spawn(_resuming_worker, args=(2, _free_port(), cfg, str(out)), nprocs=2, join=True)
    states = [torch.load(out / f"generator{r}.pt") for r in range(2)]
    assert not torch.equal(states[0], states[1])
    assert not any(torch.equal(s, saved["generators"]["model"]["state"]) for s in states)


def test_a_batch_skipped_on_one_rank_is_skipped_on_every_rank(tmp_path: Path) -> None:
    """``on_bad_image: skip`` with the drone views of two of five locations unreadable:
    the first batch of rank 1's shard (epoch 1) and the second of rank 0's (epoch 2) hold
    no readable drone view. Every rank skips them, so none waits alone in the gradient
    all-reduce, and the run finishes."""
    from mcgf.training import load_checkpoint

    data = write_tree(tmp_path / "data", locations=5)
    for location in ("0002", "0005"):
        for image in (data / "train" / "drone" / location).iterdir():
            image.write_bytes(b"not an image")
    cfg = tiny_config(data, epochs=2)
    cfg["data"]["on_bad_image"] = "skip"
    out = tmp_path / "run"
    ctx = mp.spawn(_worker, args=(2, _free_port(), cfg, str(out)), nprocs=2, join=False)
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=2):
        if time.monotonic() > deadline:
            for process in ctx.processes:
                process.kill()
            pytest.fail("the ranks did not finish: one waits in a collective call")
    state = load_checkpoint(out / "last", load_train_state=True).train_state
    assert state.epoch == 2 and state.step == 2  # of 2 × 2: one batch pair skipped per epoch
    assert [int(r["step"]) for r in read_log(out)] == [1, 2]
