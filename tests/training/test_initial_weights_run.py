"""Initial weights in a training run: the load report is printed with the device line and
kept in the checkpoint's ``config.json``; partial weights stop the run unless allowed; a
resumed run never needs the initial weights again (the hub unreachable, the
``model.weights`` file deleted), and checkpoints without a report still read alike."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from mcgf.cli.main import main
from mcgf.models.backbone import create_backbone
from mcgf.models.checkpoint import load_checkpoint, read_config, read_train_state
from mcgf.training.config import parse_run_config
from mcgf.training.loop import finished_run, train
from tests.models.test_initial_weights import hf_home as hf_home
from tests.models.test_initial_weights import no_download, write_hub_file
from tests.training.tiny_run import tiny_config, write_config, write_tree


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models train faster on one thread
    yield write_tree(tmp_path_factory.mktemp("initial-weights") / "University-Release")
    torch.set_num_threads(before)


def encoder_state(cfg: dict[str, Any], seed: int = 11) -> dict[str, torch.Tensor]:
    """Weights for the config's encoder (as a pretrained file would hold them)."""
    m = cfg["model"]
    torch.manual_seed(seed)
    model = create_backbone(m["backbone_name"], img_size=m["img_size"],
                            model_args=m["backbone_args"]).model
    return {k: v.clone().contiguous() for k, v in model.state_dict().items()}


@pytest.fixture
def offline(hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache with downloads off (any attempt fails the test)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.hf_hub_download", no_download)
    return hf_home


def test_report_is_printed_saved_and_resume_needs_no_weights_file(
        root: Path, tmp_path: Path, offline: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tiny_config(root)
    state = encoder_state(cfg)
    weights = tmp_path / "init.safetensors"
    save_file(state, str(weights))
    # pretrained as well: the file takes precedence, and the hub is never asked.
    cfg["model"].update(pretrained=True, weights=str(weights))
    whole = train(parse_run_config(cfg, "t"), tmp_path / "whole", progress=False)
    capsys.readouterr()
    run = tmp_path / "run"
    train(parse_run_config(cfg, "t"), run, progress=True, stop_after=1)
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["device: cpu, precision fp32",
                       f"initial weights {weights}: {len(state)} tensors matched, 0 missing, "
                       "0 unexpected, 0 resized"]
    report = {"file": str(weights), "origin": None, "matched": len(state),
              "missing": 0, "first_missing": [], "unexpected": 0, "first_unexpected": [],
              "resized": 0, "first_resized": []}
    assert read_config(run / "last")["weights_report"] == report
    weights.unlink()
    assert main(["train", "--out", str(run), "--resume"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("device: cpu, precision fp32\n") and "initial weights" not in out
    saved = read_config(run / "last")
    assert saved["weights_report"] == report  # the first build's report is kept
    assert (saved["model"]["weights"], saved["model"]["pretrained"]) == (str(weights), True)
    assert read_train_state(run / "last").epoch == 2
    a, b = (load_checkpoint(p).model.state_dict() for p in (whole.checkpoint, run / "last"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # resumed exactly
    assert finished_run(run, parse_run_config(cfg, "t", resume=True))


def test_pretrained_run_resumes_with_the_hub_gone(root: Path, tmp_path: Path, hf_home: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_config(root)
    cfg["model"]["pretrained"] = True
    state = encoder_state(cfg)
    write_hub_file(hf_home / "hub", state, "timm/resnet18.a1_in1k")
    monkeypatch.setattr("huggingface_hub.hf_hub_download", no_download)
    run = tmp_path / "run"
    train(parse_run_config(cfg, "t"), run, progress=False, stop_after=1)
    report = read_config(run / "last")["weights_report"]
    assert (report["origin"], report["matched"], report["missing"]) == \
        ("hf-hub:timm/resnet18.a1_in1k", len(state), 0)
    shutil.rmtree(hf_home)

    def unreachable(*args: Any, **kwargs: Any) -> str:
        raise ConnectionError("no network")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", unreachable)
    with pytest.raises(Exception, match="the Hugging Face Hub is unreachable"):
        create_backbone("resnet18", pretrained=True)  # what a new run would meet
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 0
    assert read_train_state(run / "last").epoch == 2
    assert load_checkpoint(run / "last").config["model"]["pretrained"] is True


def test_partial_weights_stop_the_run_unless_allowed(root: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tiny_config(root, epochs=1)
    state = encoder_state(cfg)
    gone = [k for k in state if k.startswith("layer4.")]
    # BatchNorm fills in a missing batch counter itself: the rest stays unset.
    dropped = [k for k in gone if not k.endswith("num_batches_tracked")]
    save_file({k: v for k, v in state.items() if k not in gone}, str(tmp_path / "w.safetensors"))
    cfg["model"]["weights"] = str(tmp_path / "w.safetensors")
    path = write_config(tmp_path / "c.yaml", cfg)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "a"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"leaves {len(dropped)} of {len(state)} tensors of ResNet " \
        "unset" in err and err.rstrip().endswith("set model.allow_partial_weights: true to accept")
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "b"),
                 "--set", "model.allow_partial_weights=true"]) == 0
    out = capsys.readouterr().out
    assert f"{len(state) - len(gone)} tensors matched, {len(dropped)} missing (" in out
    report = read_config(tmp_path / "b" / "last")["weights_report"]
    assert report["missing"] == len(dropped) and report["first_missing"] == dropped[:5]


def test_checkpoints_without_a_report_read_resume_and_finish_alike(root: Path,
                                                                   tmp_path: Path) -> None:
    cfg = tiny_config(root, epochs=1)
    run = tmp_path / "run"
    train(parse_run_config(cfg, "t"), run, progress=False)
    config_path = run / "last" / "config.json"
    saved = json.loads(config_path.read_text())
    assert saved["weights_report"] is None  # random initial weights
    del saved["weights_report"]  # as written before the report existed
    config_path.write_text(json.dumps(saved))
    assert finished_run(run, parse_run_config(cfg, "t"))
    assert "weights_report" not in load_checkpoint(run / "last").config
    assert main(["train", "--out", str(run), "--resume", "--quiet",
                 "--set", "train.epochs=2"]) == 0
    assert read_config(run / "last")["weights_report"] is None
    assert finished_run(run, parse_run_config(tiny_config(root, epochs=2), "t"))
