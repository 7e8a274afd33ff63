"""``mcgf train --resume`` checks every file of the checkpoint folder before using it: a
damaged or foreign file stops it with exit code 2 and one line naming the file."""

from __future__ import annotations

import builtins
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from mcgf.cli.main import main
from mcgf.models.checkpoint import (
    TrainState,
    read_train_state,
    recover_interrupted_save,
    save_checkpoint,
    train_state_problem,
)
from mcgf.training.config import parse_run_config
from mcgf.training.loop import train
from tests.training.tiny_run import tiny_config, write_config, write_tree


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models train faster on one thread than on two contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:
    """A run folder after one of two epochs (its ``last/`` can be resumed)."""
    base = tmp_path_factory.mktemp("resume-files")
    root = write_tree(base / "University-Release")
    run = base / "run"
    train(parse_run_config(tiny_config(root), "t"), run, progress=False, stop_after=1)
    return run


def _resume(run: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    """Resume ``run``; it must stop with exit code 2 and one line, which is returned."""
    assert main(["train", "--out", str(run), "--resume", "--quiet", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mcgf: error: "), err
    return err.removeprefix("mcgf: error: ").strip()


def _copy(trained: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    return run


def _state(run: Path) -> dict:
    return torch.load(run / "last" / "state.pt", weights_only=True)


class Trap:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (builtins.open, (str(self.marker), "w"))


STATE_CASES: list[tuple[str, Callable[[dict], object], str]] = [
    ("plain tensor dict", lambda s: {"w": torch.zeros(3), "b": torch.ones(1)},
     "it lacks step and epoch (it holds 'w', 'b')"),
    ("a list", lambda s: [1, 2], "it holds a list, not a mapping"),
    ("no epoch", lambda s: {k: v for k, v in s.items() if k != "epoch"}, "it lacks epoch"),
    ("step a string", lambda s: {**s, "step": "2"}, "step is '2', not a non-negative integer"),
    ("negative epoch", lambda s: {**s, "epoch": -1}, "epoch is -1, not a non-negative integer"),
    ("optimizer a list", lambda s: {**s, "optimizer": [1]},
     "optimizer is not an optimizer state (state, param_groups with params)"),
    ("optimizer without groups", lambda s: {**s, "optimizer": {"state": {}}},
     "optimizer is not an optimizer state"),
    ("scheduler a number", lambda s: {**s, "scheduler": 3}, "scheduler is an int, not a mapping"),
    ("rng a string", lambda s: {**s, "rng": "x"}, "rng: a str, not a mapping"),
    ("rng torch state a float tensor", lambda s: {**s, "rng": {**s["rng"], "torch": torch.zeros(3)}},
     "rng: torch is not a torch RNG state"),
    ("rng numpy state missing", lambda s: {**s, "rng": {**s["rng"], "numpy": None}},
     "rng: numpy is not a NumPy RNG state"),
]


@pytest.mark.parametrize(("case", "make", "problem"), STATE_CASES, ids=[c[0] for c in STATE_CASES])
def test_state_file_of_the_wrong_structure(case: str, make: Callable[[dict], object], problem: str,
                                           trained: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy(trained, tmp_path)
    torch.save(make(_state(run)), run / "last" / "state.pt")
    state = run / "last" / "state.pt"
    assert _resume(run, capsys).startswith(
        f"{state} is not a training state saved by mcgf: {problem}")


def test_state_that_fits_another_model_or_lacks_the_optimizer(trained: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy(trained, tmp_path)
    state = run / "last" / "state.pt"
    saved = _state(run)
    other = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters())
    torch.save({**saved, "optimizer": other.state_dict()}, state)
    err = _resume(run, capsys)
    assert err.startswith(f"{state}: its optimizer state does not fit this run's model and config")
    torch.save({**saved, "optimizer": None}, state)
    assert _resume(run, capsys).startswith(f"{state} holds no optimizer state")
    torch.save({**saved, "scheduler": {"base_lrs": []}}, state)
    assert _resume(run, capsys).startswith(f"{state}: its scheduler state does not fit")


def test_state_file_holding_code_or_bytes(trained: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy(trained, tmp_path)
    state = run / "last" / "state.pt"
    marker = tmp_path / "ran"
    torch.save({**_state(run), "extra": {"hook": Trap(marker)}}, state)
    err = _resume(run, capsys)
    assert err.startswith(f"training state {state} holds pickled Python objects or code")
    assert not marker.exists()
    state.write_bytes(state.read_bytes()[:1000])
    assert _resume(run, capsys).startswith(f"cannot read training state {state}: ")


def test_damaged_weights_file(trained: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.torch import load_file, save_file

    run = _copy(trained, tmp_path)
    weights = run / "last" / "model.safetensors"
    whole = weights.read_bytes()
    for cut in (5, 100, len(whole) // 2, len(whole) - 1):
        weights.write_bytes(whole[:cut])
        err = _resume(run, capsys)
        assert err.startswith(f"cannot read {weights}: ") and "damaged" in err, (cut, err)
    weights.write_bytes(b"\xff" * len(whole))
    assert _resume(run, capsys).startswith(f"cannot read {weights}: ")
    weights.write_bytes(whole)
    tensors = load_file(str(weights))
    save_file(tensors, str(weights), metadata={"aliases": "[1, 2]"})
    assert "aliases" in _resume(run, capsys)
    save_file({k: v for k, v in list(tensors.items())[1:]}, str(weights))
    err = _resume(run, capsys)
    assert err.startswith(f"weights in {weights} do not match the model in {run / 'last' / 'config.json'}")
    weights.unlink()
    assert _resume(run, capsys).startswith(f"checkpoint {run / 'last'} has no model.safetensors")


def test_damaged_config_file(trained: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy(trained, tmp_path)
    config = run / "last" / "config.json"
    saved = json.loads(config.read_text())
    config.write_text("{not json")
    assert _resume(run, capsys).startswith(f"cannot read {config}: ")
    config.write_bytes(b"\xff\xfe\x00")
    assert _resume(run, capsys).startswith(f"cannot read {config}: ")
    config.write_text("[1, 2]")
    assert _resume(run, capsys).startswith(f"{config} is not an mcgf checkpoint config")
    config.write_text(json.dumps({**saved, "model": "resnet"}))
    assert _resume(run, capsys).startswith(f"{config} lacks the model section")
    config.write_text(json.dumps({**saved, "train": [1]}))
    assert _resume(run, capsys).startswith(f"{config}: 'train' must be a mapping of options")
    config.write_text(json.dumps({**saved, "model": {**saved["model"], "restoration_width": 4}}))
    assert _resume(run, capsys) == (f"{config}: model.restoration_width must be a positive "
                                    "multiple of 8 (got 4)")
    # With --config the saved model options are still checked before they are used.
    config.write_text(json.dumps({**saved, "model": {**saved["model"], "dropout": "x"}}))
    cfg = write_config(tmp_path / "c.yaml", tiny_config(saved["data"]["root"]))
    err = _resume(run, capsys, "--config", str(cfg))
    assert err == f"{config}: model.dropout must be a number (got 'x')"


def test_damaged_log(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy(trained, tmp_path)
    log = run / "log.csv"
    log.write_text("step,epoch\nx,1\n")
    assert _resume(run, capsys).startswith(f"cannot continue {log}: invalid literal")
    log.write_text("when,what\n1,2\n")
    assert _resume(run, capsys).startswith(f"cannot continue {log}: no step column")


def test_a_good_copy_still_resumes(trained: Path, tmp_path: Path) -> None:
    run = _copy(trained, tmp_path)
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 0
    assert read_train_state(run / "last").epoch == 2


def test_train_state_problem_accepts_what_save_checkpoint_writes(tmp_path: Path) -> None:
    from mcgf.training.resume import capture_rng_state

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    state = TrainState(step=1, epoch=1, optimizer=opt.state_dict(), rng=capture_rng_state(
        {"g": torch.Generator().manual_seed(0)}))
    assert train_state_problem(state.as_dict()) is None
    assert train_state_problem(TrainState().as_dict()) is None
    scaled = TrainState(step=1, epoch=1, scaler=torch.amp.GradScaler("cpu").state_dict())
    assert train_state_problem(scaled.as_dict()) is None
    assert train_state_problem({**scaled.as_dict(), "scaler": [2.0]}) == \
        "scaler is a list, not a mapping"


def test_recover_interrupted_save(tmp_path: Path) -> None:
    """The folder states a kill inside save_checkpoint can leave, and what resume makes of them."""
    model = torch.nn.Linear(2, 2)
    cfg = {"name": "mcgf"}
    last = tmp_path / "last"
    save_checkpoint(last, model, cfg, train_state=TrainState(step=1, epoch=1))
    # Killed between the swap's two renames: no last, the previous one aside, the new one
    # complete in its temporary folder; plus an older save cut while writing its weights.
    last.rename(tmp_path / ".last.old-1a2b3c4d")
    save_checkpoint(tmp_path / "new", model, cfg, train_state=TrainState(step=2, epoch=2))
    (tmp_path / "new").rename(tmp_path / ".last.tmp-5e6f7a8b")
    (tmp_path / ".last.tmp-99999999").mkdir()
    (tmp_path / ".last.tmp-99999999" / "model.safetensors").write_bytes(b"\x00" * 10)
    assert recover_interrupted_save(last) is True
    assert read_train_state(last).epoch == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    # Nothing to do: unchanged.
    assert recover_interrupted_save(last) is False
    assert read_train_state(last).epoch == 1
    assert recover_interrupted_save(tmp_path / "none" / "last") is False
