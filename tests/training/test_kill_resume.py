"""Faults: ``mcgf train`` killed with SIGKILL mid-epoch or while it writes its checkpoint,
then resumed, ends with weights identical to those of an uninterrupted run.

The runs train on one thread everywhere: the number of threads changes the order of
floating-point sums, so runs on different thread counts differ in the last bits anyway.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import mcgf
from mcgf.cli.main import main
from mcgf.models.checkpoint import read_train_state
from mcgf.training.config import parse_run_config
from mcgf.training.loop import train
from tests.training.tiny_run import tiny_config, write_config, write_tree

# tqdm's bar of an epoch after some but not all of its steps: "epoch 2/3: ... | 1/2 [".
BAR = re.compile(r"epoch (\d+)/\d+:[^\r\n]*?\| *(\d+)/(\d+) \[")
TIMEOUT = 300.0


@pytest.fixture
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Run:
    """``mcgf train`` in a child process, its stderr (the progress bar) collected."""

    def __init__(self, out: Path, *args: str) -> None:
        # tqdm (>= 4.66) reads its defaults from TQDM_* variables: a bar line per step.
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1",
                   TQDM_MININTERVAL="0", TQDM_MINITERS="1")
        src = str(Path(mcgf.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        self.out = out
        self.proc = subprocess.Popen([sys.executable, "-m", "mcgf", "train", "--out", str(out), *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        self.err = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for chunk in iter(lambda: os.read(self.proc.stderr.fileno(), 4096), b""):
            self.err += chunk.decode("utf-8", "replace")

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.wait(30) == -signal.SIGKILL
        self._reader.join(10)

    def kill_mid_epoch(self, epoch: int) -> None:
        """SIGKILL once the bar shows epoch ``epoch`` with some but not all steps done."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and self.proc.poll() is None:
            if any(int(e) == epoch and 0 < int(k) < int(n) for e, k, n in BAR.findall(self.err)):
                self.kill()
                return
            time.sleep(0.002)
        raise AssertionError(f"no step of epoch {epoch} seen (exit {self.proc.poll()}): {self.err[-500:]}")

    def kill_while_saving(self) -> bool:
        """SIGKILL as soon as a checkpoint's temporary folder appears; whether the save was
        cut (the folder is still there) rather than finished in the meantime."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and self.proc.poll() is None:
            with os.scandir(self.out) as entries:
                if any(e.name.startswith(".last.tmp-") for e in entries):
                    self.kill()
                    return any(p.name.startswith(".last.tmp-") for p in self.out.iterdir())
        raise AssertionError(f"no checkpoint write seen (exit {self.proc.poll()}): {self.err[-500:]}")


def _same_weights(a: Path, b: Path) -> None:
    from safetensors.torch import load_file

    wa, wb = load_file(str(a / "last" / "model.safetensors")), load_file(str(b / "last" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def _setup(tmp_path: Path, **train_opts: object) -> tuple[Path, dict]:
    root = write_tree(tmp_path / "University-Release")
    cfg = tiny_config(root, **train_opts)
    return write_config(tmp_path / "c.yaml", cfg), cfg


@pytest.mark.parametrize("workers", [0, 1])
def test_killed_mid_epoch_then_resumed_equals_uninterrupted(workers: int, tmp_path: Path,
                                                            one_thread: None) -> None:
    """With and without (persistent) DataLoader worker processes."""
    cfg_path, cfg = _setup(tmp_path, epochs=2)
    cfg["data"]["workers"] = workers
    write_config(cfg_path, cfg)
    run = tmp_path / "run"
    child = Run(run, "--config", str(cfg_path))
    # Meanwhile the uninterrupted reference, in this process.
    train(parse_run_config(cfg, "t"), tmp_path / "full", progress=False)
    child.kill_mid_epoch(2)
    assert read_train_state(run / "last").epoch == 1
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 0
    _same_weights(run, tmp_path / "full")
    assert read_train_state(run / "last").step == read_train_state(tmp_path / "full" / "last").step


@pytest.mark.slow
def test_killed_mid_epoch_and_during_checkpoint_writes_equals_uninterrupted(
        tmp_path: Path, one_thread: None) -> None:
    # Four epochs; a DataLoader worker process, as the demo uses.
    cfg_path, cfg = _setup(tmp_path, epochs=4)
    cfg["data"]["workers"] = 1
    write_config(cfg_path, cfg)
    run = tmp_path / "run"
    child = Run(run, "--config", str(cfg_path))
    train(parse_run_config(cfg, "t"), tmp_path / "full", progress=False)
    child.kill_mid_epoch(2)
    assert read_train_state(run / "last").epoch == 1
    cut = 0
    for _ in range(3):  # until a kill lands inside a save (about 50 ms of each epoch)
        before = read_train_state(run / "last").epoch
        child = Run(run, "--resume")
        if child.kill_while_saving():
            cut += 1
            # The interrupted save left its temporary folder; the checkpoint is the previous one.
            assert read_train_state(run / "last").epoch == before
            break
    assert cut == 1, "no kill landed inside a checkpoint write"
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 0
    assert not [p.name for p in run.iterdir() if p.name.startswith(".last.")]
    _same_weights(run, tmp_path / "full")


def test_resume_after_a_kill_between_the_swaps_renames(tmp_path: Path, one_thread: None) -> None:
    """No ``last``: the previous checkpoint is aside as ``.last.old-*`` and the new one complete
    in ``.last.tmp-*`` (the state a kill between the two renames leaves)."""
    _, cfg = _setup(tmp_path, epochs=2)
    run, full = tmp_path / "run", tmp_path / "full"
    train(parse_run_config(cfg, "t"), full, progress=False)
    train(parse_run_config(cfg, "t"), run, progress=False, stop_after=1)
    (run / "last").rename(run / ".last.old-0badc0de")
    (run / ".last.tmp-1badc0de").mkdir()  # a save cut earlier
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 0
    assert sorted(p.name for p in run.iterdir() if p.name.startswith((".last", "last"))) == ["last"]
    _same_weights(run, full)
