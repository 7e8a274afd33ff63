"""``mcgf train``'s own checks of its options."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcgf.cli.main import main


@pytest.mark.parametrize("config", [False, True], ids=["saved-config", "with-config"])
def test_resume_without_a_checkpoint_says_to_train_first(
        config: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With or without --config, --resume into a folder with no checkpoint gets the same
    line: there is nothing to continue, train without --resume first."""
    from tests.training.tiny_run import tiny_config, write_config

    argv = ["train", "--out", str(tmp_path / "run"), "--resume", "--quiet"]
    if config:
        argv += ["--config", str(write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "d")))]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (f"mcgf: error: --resume: {tmp_path / 'run' / 'last'} holds no resumable "
                   "checkpoint (train without --resume first)\n"), err


def test_a_bad_set_value_is_named_as_the_set_not_as_the_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad or misspelled option given with --set is reported as that --set: the file
    (and on --resume the checkpoint's config.json, which would look damaged) does not hold
    it. An error in the file itself still names the file."""
    from tests.training.tiny_run import tiny_config, write_config

    cfg = write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "d"))
    base = ["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--quiet"]
    cases = {
        ("--set", "train.epochs=abc"): "--set train.epochs=abc: train.epochs must be an "
                                       "integer (got 'abc')",
        ("--set", "train.epoch=3"): "--set train.epoch=3: unknown option train.epoch (known: ",
        ("--set", "tran.epochs=3"): "--set tran.epochs=3: unknown section 'tran' (known: ",
        ("--set", "model.dropout=0.2", "--set", "model.dropout=2"):
            "--set model.dropout=2: model.dropout must be in [0, 1) (got 2)",
        ("--set", "train.lr=0.1", "--set", "train.epochs=0"):
            "--set train.epochs=0: train.epochs must be >= 1 (got 0)",
    }
    for extra, start in cases.items():
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"mcgf: error: {start}"), err
        assert err.count("\n") == 1
    bad = write_config(tmp_path / "bad.yaml", {**tiny_config(tmp_path / "d"), "train": {"epochs": 0}})
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r"),
                 "--set", "train.lr=0.1"]) == 2
    assert capsys.readouterr().err == f"mcgf: error: {bad}: train.epochs must be >= 1 (got 0)\n"


_HOLD_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_second_train_into_a_run_folder_in_use_stops_and_touches_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """While another process trains into OUT (it holds the folder's lock), ``--resume``
    there stops with one line, before it takes the other run's checkpoint write in
    progress (``.last.tmp-*``) for a killed save's leftover and deletes it."""
    import subprocess
    import sys

    out = tmp_path / "run"
    (out / "last").mkdir(parents=True)
    (out / ".last.tmp-0123abcd").mkdir()  # the other run's save, under way
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(out)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 2
    finally:
        holder.communicate("", timeout=30)
    assert capsys.readouterr().err == (
        f"mcgf: error: {out} is in use by another mcgf train (a run or --resume going on "
        "there): wait for it to end, or train into another --out\n")
    assert sorted(p.name for p in out.iterdir()) == [".last.tmp-0123abcd", "last"]


def test_a_rank_other_than_0_leaves_a_save_under_way_in_out_alone(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``torchrun`` only rank 0 takes OUT's lock: rank 1 of a second job into a
    folder where another run is saving must not take that save (``.last.tmp-*``, or the
    checkpoint set aside between the swap's renames) for a killed one's leftovers."""
    from tests.training.tiny_run import tiny_config, write_config

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")  # a rank of a job of two
    cfg = write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "d"))
    out = tmp_path / "run"
    (out / "last").mkdir(parents=True)
    (out / ".last.tmp-0123abcd").mkdir()  # the other run's save, under way
    assert main(["train", "--config", str(cfg), "--out", str(out), "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [".last.tmp-0123abcd", "last"]
    # Between the renames: rank 1 waits for it to be back (here: the other run's swap).
    (out / "last").rename(out / ".last.old-0123abcd")
    (out / ".last.old-0123abcd" / "config.json").write_text("{}\n")
    import threading

    swap = threading.Timer(0.3, lambda: (out / ".last.tmp-0123abcd").rename(out / "last"))
    swap.start()
    assert main(["train", "--config", str(cfg), "--out", str(out), "--quiet"]) == 2
    swap.join()
    assert "already exists" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [".last.old-0123abcd", "last"]


def test_a_new_run_into_a_folder_whose_save_was_killed_between_renames_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A kill between the two renames of a checkpoint swap leaves ``last`` aside as
    ``.last.old-*``: a new run there is refused as with ``last`` in place (it would
    start over, overwrite log.csv and never put the checkpoint back), and ``last`` is back."""
    from tests.training.tiny_run import tiny_config, write_config, write_tree

    path = write_config(tmp_path / "c.yaml", tiny_config(write_tree(tmp_path / "data"), epochs=1))
    out = tmp_path / "run"
    aside = out / ".last.old-0123abcd"
    aside.mkdir(parents=True)
    (aside / "config.json").write_text("{}\n")
    (out / "log.csv").write_text("step,epoch,lr\n1,1,0.001\n")
    assert main(["train", "--config", str(path), "--out", str(out), "--quiet"]) == 2
    assert capsys.readouterr().err == (f"mcgf: error: {out / 'last'} already exists: pass --resume "
                                       "to continue it or choose another --out\n")
    assert sorted(p.name for p in out.iterdir()) == ["last", "log.csv"]
    assert (out / "last" / "config.json").read_text() == "{}\n"
    assert (out / "log.csv").read_text() == "step,epoch,lr\n1,1,0.001\n"


def test_a_resume_whose_data_moved_says_how_to_point_at_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The checkpoint's data.root no longer exists: the line names it and --set data.root,
    and with --set the run goes on."""
    from tests.training.tiny_run import tiny_config, write_config, write_tree

    data = write_tree(tmp_path / "data")
    path = write_config(tmp_path / "c.yaml", tiny_config(data, epochs=1))
    out = tmp_path / "run"
    assert main(["train", "--config", str(path), "--out", str(out), "--quiet"]) == 0
    moved = data.rename(tmp_path / "moved")
    capsys.readouterr()
    argv = ["train", "--out", str(out), "--resume", "--quiet", "--set", "train.epochs=2"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"mcgf: error: --resume: data.root {data} (from {out / 'last' / 'config.json'}) is not "
        "a folder: if the data moved, resume with --set data.root=NEW_FOLDER\n")
    assert main([*argv, "--set", f"data.root={moved}"]) == 0


def test_validation_during_training_follows_data_on_bad_image(tmp_path: Path) -> None:
    """``data.on_bad_image: skip`` applies to the validation's test images too (an
    unreadable query counts as a miss, as in ``mcgf evaluate``), instead of stopping the run (losing the epoch) with a message that says to set
    what is set."""
    import shutil

    import torch

    from mcgf.cli.train import _validator
    from mcgf.errors import ImageReadError
    from mcgf.models.mcgf_model import MCGFModel
    from mcgf.training.config import parse_run_config
    from tests.evaluation.conftest import tiny_u1652
    from tests.training.tiny_run import tiny_config

    root = tiny_u1652.__wrapped__(tmp_path / "a")  # type: ignore[attr-defined]
    bad = next((root / "test" / "query_drone" / "0102").iterdir())
    without = Path(shutil.copytree(root, tmp_path / "b" / root.name))
    (without / "test" / "query_drone" / "0102" / bad.name).unlink()
    bad.write_bytes(b"not an image")

    def validator(data: Path, policy: str) -> object:
        cfg = tiny_config(data, eval_every=1, restore_val_images=0)
        cfg["data"]["on_bad_image"] = policy
        return _validator(parse_run_config(cfg, "c.yaml"))

    torch.manual_seed(0)
    model = MCGFModel("vit_tiny_patch16_224", num_classes=3, img_size=32, bottleneck_dim=16,
                      restoration=False)
    skipped = validator(root, "skip")(model)  # type: ignore[operator]
    readable = validator(without, "stop")(model)  # type: ignore[operator]
    # As in mcgf evaluate, the unreadable query counts as a miss: 1 of the 15.
    assert set(skipped) == {"val_R@1", "val_AP"} and readable["val_R@1"] > 0
    for key in skipped:
        assert skipped[key] == pytest.approx(readable[key] * 14 / 15)
    with pytest.raises(ImageReadError):
        validator(root, "stop")(model)  # type: ignore[operator]
