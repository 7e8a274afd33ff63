"""The restoration branch draws its diffusion t and noise from a generator of its own, so
that switching it on or off leaves torch's global RNG stream (dropout, ...) as it was:
ablation variants of one seed are paired. Its state is saved and restored on resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mcgf.models.checkpoint import read_train_state
from mcgf.models.model_registry import create_model
from mcgf.training.config import parse_run_config
from mcgf.training.loop import train
from mcgf.training.step import Objective, model_generator, train_step
from tests.training.tiny_run import tiny_config, write_tree

CPU = torch.device("cpu")


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(lambda_restore: float) -> torch.nn.Module:
    cfg = tiny_config(Path("unused"), lambda_restore=lambda_restore)["model"]
    torch.manual_seed(0)
    return create_model("mcgf", num_classes=3, **{**cfg, "dropout": 0.3}).train()


def _batch() -> dict:
    g = torch.Generator().manual_seed(0)
    return {"drone": torch.randn(4, 3, 16, 16, generator=g),
            "drone_clean": torch.randn(4, 3, 16, 16, generator=g),
            "drone_condition": ["fog", "rain", "fog", "dark"],
            "drone_label": torch.tensor([0, 0, 1, 2]),
            "satellite": torch.randn(3, 3, 16, 16, generator=g),
            "satellite_label": torch.tensor([0, 1, 2])}


def _global_state_after_step(lambda_restore: float, dedicated: bool) -> torch.Tensor:
    model = _model(lambda_restore)
    gen = model_generator(3, 0, CPU) if dedicated else None
    opt = torch.optim.AdamW(model.param_groups(1e-3, 0.0))
    torch.manual_seed(123)
    res = train_step(Objective(model, gen), opt, None, _batch())
    assert ("restore" in res.terms[0]) == (lambda_restore > 0)
    return torch.get_rng_state()


def test_the_branch_leaves_the_global_rng_stream_alone() -> None:
    on = _global_state_after_step(0.5, dedicated=True)
    off = _global_state_after_step(0.0, dedicated=True)
    assert torch.equal(on, off)
    # Drawing the noise from the global RNG instead would shift it (what the generator avoids).
    assert not torch.equal(_global_state_after_step(0.5, dedicated=False), off)


def test_model_generator_is_reproducible_and_distinct_per_rank() -> None:
    draws = [torch.rand(4, generator=model_generator(seed, rank, CPU))
             for seed, rank in ((0, 0), (0, 0), (0, 1), (1, 0))]
    assert torch.equal(draws[0], draws[1])
    assert not torch.equal(draws[0], draws[2]) and not torch.equal(draws[0], draws[3])


def test_runs_with_the_term_on_and_off_are_paired(tmp_path: Path, one_thread: None) -> None:
    """Same seed, branch built in both, restoration term on vs off: the same number of
    draws from torch's global RNG over a whole run, and the noise generator's state is
    saved with the checkpoint."""
    root = write_tree(tmp_path / "U")
    states = {}
    for lam in (0.5, 0.0):
        cfg = tiny_config(root, lambda_restore=lam, epochs=1)
        cfg["model"]["dropout"] = 0.3
        train(parse_run_config(cfg, "t"), tmp_path / str(lam), progress=False)
        states[lam] = torch.get_rng_state()
    assert torch.equal(states[0.5], states[0.0])
    rng = read_train_state(tmp_path / "0.5" / "last").rng
    assert rng is not None and rng["generators"]["model"]["kind"] == "torch"
    fresh = model_generator(3, 0, CPU).get_state()
    assert not torch.equal(rng["generators"]["model"]["state"], fresh)  # it drew noise
    unused = read_train_state(tmp_path / "0.0" / "last").rng["generators"]["model"]["state"]
    assert torch.equal(unused, fresh)  # no branch term: no draw


def test_the_number_of_loader_workers_changes_nothing(tmp_path: Path, one_thread) -> None:
    """Items are seeded per (seed, epoch, index), and the loader's own seed draw (every
    epoch without workers, once with persistent ones) leaves the global RNG (dropout)
    alone: the runs of 0 and 1 worker log the same losses and end with the same weights."""
    from safetensors.torch import load_file

    root = write_tree(tmp_path / "University-Release")
    runs = []
    for workers in (0, 1):
        cfg = tiny_config(root, epochs=2)
        cfg["data"]["workers"] = workers
        out = tmp_path / f"w{workers}"
        train(parse_run_config(cfg, "t"), out, progress=False)
        rows = (out / "log.csv").read_text().splitlines()
        col = rows[0].split(",").index("images_per_s")
        runs.append(([r.split(",")[:col] + r.split(",")[col + 1:] for r in rows],
                     load_file(str(out / "last" / "model.safetensors"))))
    (log0, w0), (log1, w1) = runs
    assert log0 == log1
    assert all(torch.equal(w0[k], w1[k]) for k in w0)


def test_validation_leaves_the_training_stream_alone(tmp_path: Path, one_thread) -> None:
    """A validation that draws random numbers (as the evaluation's DataLoader does when it
    starts) changes nothing in the training after it: the run validated after each epoch
    logs the losses and ends with the weights of the run never validated."""
    from safetensors.torch import load_file

    root = write_tree(tmp_path / "University-Release")

    def validate(model: torch.nn.Module) -> dict[str, float]:
        return {"val_R@1": float(torch.rand(1)) + float(torch.randn(5).sum())}

    runs = []
    for every in (0, 1):
        cfg = tiny_config(root, epochs=3, eval_every=every)
        out = tmp_path / f"e{every}"
        train(parse_run_config(cfg, "t"), out, progress=False, validate=validate)
        rows = (out / "log.csv").read_text().splitlines()
        header = rows[0].split(",")
        keep = [i for i, c in enumerate(header) if c != "images_per_s" and not c.startswith("val_")]
        table = [[r.split(",")[i] for i in keep] for r in rows[1:]]
        runs.append(([row for row in table if row[header.index("total")]],
                     load_file(str(out / "last" / "model.safetensors"))))
    (log0, w0), (log1, w1) = runs
    assert len(log0) == 6 and log0 == log1
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
