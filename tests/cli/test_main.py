from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mcgf.cli.main import main
from tests.evaluation.conftest import tiny_u1652  # noqa: F401  (fixture)


def test_help_lists_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("demo", "synth", "data", "evaluate", "predict", "weather"):
        assert cmd in out


def test_help_texts_show_a_percent_sign_once() -> None:
    """argparse reads ``%%`` as ``%`` in an option's help but not in a description."""
    import argparse

    from mcgf.cli.main import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        assert "%%" not in sub.format_help(), name


USER_MODULE = """
from mcgf.models import register_embedder


@register_embedder("{name}")
class MeanColour:
    identity = "{name}"
    input_size = (8, 8)
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)

    def embed(self, images):
        return images.mean((2, 3))
"""


def test_import_loads_a_module_of_ones_own_before_the_command(
        tiny_u1652: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
        capsys: pytest.CaptureFixture[str]) -> None:
    """``mcgf --import MODULE`` (a .py file, or a module name found in the current folder)
    registers a user's embedder or model for the command that follows."""
    from mcgf.models import registry

    code = tmp_path / "code"
    code.mkdir()
    (code / "user_file_emb.py").write_text(USER_MODULE.format(name="user-file-emb"))
    (code / "user_name_emb.py").write_text(USER_MODULE.format(name="user-name-emb"))
    common = ["evaluate", str(tiny_u1652), "--workers", "0", "--quiet", "--device", "cpu"]
    monkeypatch.setattr(sys, "path", list(sys.path))  # --import adds the file's folder
    try:
        assert main(["--import", str(code / "user_file_emb.py"), *common,
                     "--embedder", "user-file-emb", "--out", str(tmp_path / "a")]) == 0
        assert (tmp_path / "a" / "metrics.json").exists()
        monkeypatch.chdir(code)
        monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(code))])
        assert main(["--import", "user_name_emb", *common,
                     "--embedder", "user-name-emb", "--out", str(tmp_path / "b")]) == 0
        capsys.readouterr()
        assert main(["--import", "no_such_module_here", *common]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--import no_such_module_here" in err
        assert main(["--import", str(code / "missing.py"), *common]) == 2
        assert "missing.py" in capsys.readouterr().err
        # A name nothing registered says how a module of one's own is loaded.
        assert main([*common, "--embedder", "user-unloaded-emb"]) == 2
        assert "mcgf --import MODULE" in capsys.readouterr().err
    finally:
        for name in ("user-file-emb", "user-name-emb"):
            registry._REGISTRY._factories.pop(name, None)
        for name in ("user_file_emb", "user_name_emb"):
            sys.modules.pop(name, None)


def test_python_dash_m_works() -> None:
    res = subprocess.run([sys.executable, "-m", "mcgf", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.startswith("mcgf ")


def test_data_check_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "check", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and "Traceback" not in err
    assert main(["data", "check", str(tmp_path), "--workers", "0"]) == 2


def test_data_check_on_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.data.conftest import write_image

    root = tmp_path / "ds"
    write_image(root / "train" / "drone" / "0001" / "image-01.jpeg")
    write_image(root / "train" / "satellite" / "0001" / "0001.jpg")
    assert main(["data", "check", str(root), "--per-class"]) == 0
    out = capsys.readouterr().out
    assert "per class, train/drone:" in out and "OK: the dataset can be used" in out
    (root / "train" / "satellite" / "0001" / "0001.jpg").write_bytes(b"garbage")
    assert main(["data", "check", str(root)]) == 1


def test_unreadable_image_says_how_the_command_skips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.training.tiny_run import tiny_config, write_config, write_tree

    root = write_tree(tmp_path / "ds")
    (root / "train" / "satellite" / "0002" / "0.png").write_bytes(b"")
    cfg = write_config(tmp_path / "c.yaml", tiny_config(root, epochs=1))
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "0002/0.png" in err
    assert "data.on_bad_image" in err and "--on-bad-image" not in err
    # predict cannot skip a query: the message offers no option.
    from tests.data.conftest import write_image

    flat = tmp_path / "160k"
    (flat / "query_drone").mkdir(parents=True)
    (flat / "query_drone" / "q1.jpeg").write_bytes(b"")
    (flat / "query_drone_name.txt").write_text("q1.jpeg\n")
    for i in range(10):
        write_image(flat / "gallery_satellite_160k" / f"g{i}.webp", i, fmt="WEBP")
    assert main(["predict", str(flat), "--out", str(tmp_path / "p"), "--workers", "0",
                 "--device", "cpu", "--quiet", "--cache-dir", "none"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "q1.jpeg" in err and "skip" not in err


def test_under_torchrun_only_rank_0_prints_warnings_and_every_rank_its_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    """Each rank of ``torchrun`` runs the command: a deprecated option or a note logged as a
    warning is printed by rank 0 alone, once, while an error still stops every rank."""
    import logging

    from mcgf.errors import UserError
    from tests.training.tiny_run import tiny_config, write_config

    cfg = tiny_config(tmp_path / "data")
    cfg["train"]["infonce"] = cfg["model"].pop("infonce")  # the former layout: a warning
    path = write_config(tmp_path / "old.yaml", cfg)

    def train(*args: object, **kwargs: object) -> None:
        logging.getLogger("mcgf.data.layout").warning("2 broken links in a folder")
        raise UserError("no space left on the device")

    monkeypatch.setattr("mcgf.training.loop.train", train)
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in (1, 0):
        monkeypatch.setenv("RANK", str(rank))
        caplog.clear()
        assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err.splitlines()
        logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert err[-1] == "mcgf: error: no space left on the device", (rank, err)
        if rank:
            assert len(err) == 1 and not logged, (err, logged)
        else:
            assert len(err) == 2 and err[0].startswith("mcgf: warning: ") and "train.infonce" in err[0]
            assert logged == ["2 broken links in a folder"]
    assert logging.getLogger("mcgf").level == logging.NOTSET  # left as it was


def _two_ranks(code: str, *args: str, timeout: float = 240) -> list[subprocess.CompletedProcess[str]]:
    """Run ``python -c code ARGS`` as ranks 0 and 1 of a 2-process gloo job, as
    ``torchrun`` starts them (without its agent, which would stop the other rank once
    one fails): each rank's exit code and its own output."""
    import os
    import socket

    import mcgf

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = str(Path(mcgf.__file__).resolve().parents[1])
    procs = []
    for rank in range(2):
        env = dict(os.environ, OMP_NUM_THREADS="1", WORLD_SIZE="2", RANK=str(rank),
                   LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   PYTHONPATH=os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p))
        procs.append(subprocess.Popen([sys.executable, "-c", code, *args], env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def _own_lines(stderr: str) -> list[str]:
    """The lines of a rank's stderr without torch's C++ warnings (``[W...] ...``)."""
    import re

    return [line for line in stderr.splitlines() if not re.match(r"(\[rank\d+\]:)?\[W", line)]


_MCGF = "import sys; from mcgf.cli.main import main; sys.exit(main(sys.argv[1:]))"


def test_a_user_error_on_one_rank_ends_every_rank_without_a_traceback(tmp_path: Path) -> None:
    """A rank that cannot read an image of its share stops with the one-line error; the
    other rank, whose collective call fails as its peer leaves, ends with one line
    too, and a non-zero exit code, instead of the collective's traceback."""
    from tests.training.tiny_run import tiny_config, write_config, write_tree

    root = write_tree(tmp_path / "data", locations=5)
    (root / "train" / "drone" / "0005" / "0.png").write_bytes(b"not an image")
    cfg = write_config(tmp_path / "c.yaml", tiny_config(root, epochs=1))
    ranks = _two_ranks(_MCGF, "train", "--config", str(cfg), "--out", str(tmp_path / "run"),
                       "--quiet")
    for rank in ranks:
        lines = _own_lines(rank.stderr)
        assert rank.returncode != 0 and len(lines) == 1, rank.stderr[-3000:]
        assert lines[0].startswith("mcgf: error: ")
    assert any("cannot read image" in r.stderr and r.returncode == 2 for r in ranks)


def test_a_crash_on_one_rank_keeps_its_traceback(tmp_path: Path) -> None:
    """A bug on rank 1 still shows its traceback there; rank 0, left alone in a
    collective call, says so in one line."""
    from tests.training.tiny_run import tiny_config, write_config, write_tree

    cfg = write_config(tmp_path / "c.yaml", tiny_config(write_tree(tmp_path / "data"), epochs=1))
    crash = ("import os, mcgf.training.loop as loop\n"
             "def step(*args, **kwargs):\n"
             "    raise ZeroDivisionError('a bug')\n"
             "if os.environ['RANK'] == '1':\n"
             "    loop.train_step = step\n" + _MCGF.replace("; ", "\n"))
    first, second = _two_ranks(crash, "train", "--config", str(cfg), "--out",
                               str(tmp_path / "run"), "--quiet")
    assert second.returncode == 1 and "Traceback" in second.stderr
    assert "ZeroDivisionError: a bug" in second.stderr
    lines = _own_lines(first.stderr)
    assert first.returncode != 0 and len(lines) == 1, first.stderr[-3000:]
    assert lines[0].startswith("mcgf: error: ") and "Traceback" not in first.stderr


def test_import_may_also_follow_the_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``mcgf train --import mymodels ...`` was an unrecognised argument: --import was
    accepted only before the command."""
    import mcgf.cli.main as cli_main

    seen: list[list[str]] = []
    monkeypatch.setattr(cli_main, "import_modules", lambda names: seen.append(list(names)))
    missing = str(tmp_path / "missing")
    assert main(["--import", "a", "data", "check", "--import", "b", missing, "--import", "c"]) == 2
    assert main(["train", "--import", "d", "--out", missing]) == 2
    assert main(["data", "check", missing]) == 2
    assert seen == [["a", "b", "c"], ["d"], []]


def test_a_full_disk_while_saving_is_one_line_and_keeps_the_previous_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """torch.save on a full disk raises a RuntimeError from the OSError: the run stops
    with one line naming the cause and how to go on, not a traceback, and ``last`` is the
    previous complete checkpoint, with no hidden folder of the failed save beside it."""
    import errno

    import torch

    from tests.training.tiny_run import tiny_config, write_config, write_tree

    cfg = tiny_config(write_tree(tmp_path / "data"), epochs=1)
    path = write_config(tmp_path / "cfg.yaml", cfg)
    out = tmp_path / "run"
    assert main(["train", "--config", str(path), "--out", str(out), "--quiet"]) == 0
    before = {p.name: p.read_bytes() for p in (out / "last").iterdir()}
    capsys.readouterr()

    def full_disk(*args: object, **kwargs: object) -> None:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as err:
            raise RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos") from err

    monkeypatch.setattr(torch, "save", full_disk)
    code = main(["train", "--out", str(out), "--resume", "--quiet", "--set", "train.epochs=2"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    assert err == [f"mcgf: error: no space left on device: free some space and run the command "
                   f"again with --resume, which goes on from the last complete checkpoint {out / 'last'}"]
    assert {p.name: p.read_bytes() for p in (out / "last").iterdir()} == before
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    # The first save of a run has no checkpoint to go on from: no --resume hint.
    fresh = tmp_path / "fresh"
    assert main(["train", "--config", str(path), "--out", str(fresh), "--quiet"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "mcgf: error: no space left on device: free some space and run the command again"]


@pytest.mark.parametrize(("error", "said"), [
    (OSError(28, "No space left on device", "out/a.npy"), "no space left on device (out/a.npy)"),
    (OSError(122, "Disk quota exceeded"), "disk quota exceeded"),
    (RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"),
     "no space left on device"),
    (OSError(13, "Permission denied"), None),
    (RuntimeError("CUDA out of memory"), None),
])
def test_what_counts_as_a_full_disk(error: Exception, said: str | None) -> None:
    from mcgf.cli.process import disk_full

    assert disk_full(error) == said



def test_sigterm_while_saving_is_one_line_exit_143_and_leaves_the_previous_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A scheduler's SIGTERM during a checkpoint write unwinds like Ctrl-C: the half-written
    hidden folder is removed and ``last`` kept, one line, exit code 143; the handler is
    put back afterwards."""
    import os
    import signal
    import time

    import torch

    import mcgf.models.checkpoint as checkpoint
    from tests.training.tiny_run import tiny_config, write_config

    path = write_config(tmp_path / "cfg.yaml", tiny_config(tmp_path / "data"))
    out = tmp_path / "run"
    model = torch.nn.Linear(2, 2)
    checkpoint.save_checkpoint(out / "last", model, {"name": "linear"})
    (out / "last" / "state.pt").write_bytes(b"")  # resumable, as far as the CLI looks
    (tmp_path / "data").mkdir()
    before = {p.name: p.read_bytes() for p in (out / "last").iterdir()}
    save_weights = checkpoint._save_weights

    def terminated_while_saving(model: torch.nn.Module, path: Path) -> None:
        save_weights(model, path)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)  # the handler interrupts it

    def train(cfg: object, out: Path, **kwargs: object) -> None:
        with torch.no_grad():
            model.weight += 1
        checkpoint.save_checkpoint(out / "last", model, {"name": "linear"})

    monkeypatch.setattr(checkpoint, "_save_weights", terminated_while_saving)
    monkeypatch.setattr("mcgf.training.loop.train", train)
    handler = signal.getsignal(signal.SIGTERM)
    started = time.monotonic()
    code = main(["train", "--config", str(path), "--out", str(out), "--resume", "--quiet"])
    assert (code, capsys.readouterr().err) == (143, "mcgf: terminated\n")
    assert time.monotonic() - started < 5
    assert sorted(p.name for p in out.iterdir()) == ["last"]
    assert {p.name: p.read_bytes() for p in (out / "last").iterdir()} == before
    assert signal.getsignal(signal.SIGTERM) == handler


def test_output_a_non_utf8_stdout_cannot_encode_gets_ascii_stand_ins(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under PYTHONIOENCODING=ascii or a non-UTF-8 locale, printing evaluate's table
    (``–``) or its probe line (``±``) raised UnicodeEncodeError (a traceback, exit 1)."""
    import io

    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii")
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr("mcgf.cli.data.run_check",
                        lambda args: print("R@1 50.0 \u00b1 1.2 | \u2013 | drone \u2192 satellite \u00e9") or 0)
    assert main(["data", "check", str(tmp_path)]) == 0
    out.flush()
    assert raw.getvalue().decode("ascii") == "R@1 50.0 +/- 1.2 | - | drone -> satellite ?\n"


@pytest.mark.parametrize("argv", [[], ["weather"]])
def test_a_missing_command_prints_its_help_on_stderr(argv: list[str],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """``mcgf`` or ``mcgf weather`` without a command printed the help on stdout with exit
    code 2, where a script keeps results; argparse's own usage errors go to stderr."""
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("usage: mcgf")


_LOADING_UNTIL_SIGTERM = """
import time
import torch
from mcgf.cli.process import Terminated, sigterm_interrupts

class Slow(torch.utils.data.Dataset):
    def __len__(self):
        return 1000

    def __getitem__(self, i):
        time.sleep(0.02)
        return i

try:
    with sigterm_interrupts():
        loader = torch.utils.data.DataLoader(Slow(), num_workers=2, persistent_workers=True)
        for i, batch in enumerate(loader):
            if i == 2:
                print("loading", flush=True)
except Terminated:
    print("terminated", flush=True)
"""


def test_sigterm_to_the_process_group_leaves_no_dataloader_worker_traceback() -> None:
    """torchrun (to each rank's process group) and schedulers send SIGTERM to the
    DataLoader workers too: they die of it, and the loader's shutdown must not print a
    "worker is killed by signal" traceback after the one line."""
    import os
    import signal

    import mcgf

    src = str(Path(mcgf.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", _LOADING_UNTIL_SIGTERM], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None and proc.stdout.readline() == "loading\n"
    os.killpg(proc.pid, signal.SIGTERM)  # from outside, as torchrun does: workers die of it
    out, err = proc.communicate(timeout=60)
    assert (out, err) == ("terminated\n", "")


def test_import_between_a_command_and_its_action_is_kept_beside_one_after_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``mcgf data --import a check --import b`` imported only ``b``: the action's value
    replaced the command's."""
    import mcgf.cli.main as cli_main

    seen: list[list[str]] = []
    monkeypatch.setattr(cli_main, "import_modules", lambda names: seen.append(list(names)))
    missing = str(tmp_path / "missing")
    assert main(["--import", "z", "data", "--import", "a", "check", "--import", "b", missing]) == 2
    assert main(["data", "--import", "a", "check", missing]) == 2
    assert seen == [["z", "a", "b"], ["a"]]
