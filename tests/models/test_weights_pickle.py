"""Pickled weights files: refused without running anything, with one line saying how to
convert them to safetensors."""

from __future__ import annotations

import builtins
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mcgf.cli.main import main
from mcgf.errors import UserError
from mcgf.models.backbone import read_state_dict
from mcgf.safeload import PickledObjectsError


class Trap:
    """Unpickling this calls ``open(marker, "w")``: the file appears if the pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (builtins.open, (str(self.marker), "w"))


class Plain:
    """An ordinary Python object (not a tensor)."""

    def __init__(self) -> None:
        self.layers = 3


def _assert_refused(path: Path, refused: str) -> str:
    with pytest.raises(PickledObjectsError) as info:
        read_state_dict(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"weights file {path} holds pickled Python objects or code, not plain "
                          f"tensors (refused: {refused})")
    # The conversion command: torch.load on a trusted machine, then safetensors' save_file.
    assert f"sd = torch.load({str(path)!r}, map_location='cpu', weights_only=False)" in msg
    assert "st.save_file(" in msg and f"{str(path.with_suffix('.safetensors'))!r}" in msg
    return msg


def test_a_pickle_that_would_run_code_is_refused_and_does_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "net.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hook": Trap(marker)}, path)
    assert not marker.exists()
    _assert_refused(path, "io.open")  # builtins.open pickles as io.open
    assert not marker.exists()


def test_a_plain_pickled_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "net.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "meta": Plain()}, path)
    _assert_refused(path, f"{__name__}.Plain")
    # A pickle.dump of a whole object (no torch archive) is refused as well.
    raw = tmp_path / "raw.pth"
    raw.write_bytes(pickle.dumps(Plain(), protocol=4))
    _assert_refused(raw, "Unsupported operand 149")


def test_the_suggested_conversion_gives_a_loadable_file(tmp_path: Path) -> None:
    path = tmp_path / "net.pt"
    torch.save({"state_dict": {"w": torch.arange(4.0).view(2, 2).t()}, "meta": Plain()}, path)
    with pytest.raises(PickledObjectsError) as info:
        read_state_dict(path)
    command = str(info.value).split('python -c "', 1)[1].split('" and pass', 1)[0]
    exec(command, {})  # what the user runs on a machine that trusts the file
    got = read_state_dict(path.with_suffix(".safetensors"))
    assert torch.equal(got["w"], torch.arange(4.0).view(2, 2).t())


def test_damaged_files_are_one_line_errors_too(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint\n")
    truncated = tmp_path / "cut.pt"
    torch.save({"w": torch.zeros(100)}, tmp_path / "whole.pt")
    truncated.write_bytes((tmp_path / "whole.pt").read_bytes()[:200])
    cut_st = tmp_path / "cut.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(100)}, str(tmp_path / "whole.safetensors"))
    cut_st.write_bytes((tmp_path / "whole.safetensors").read_bytes()[:100])
    for path in (junk, truncated, cut_st):
        with pytest.raises(UserError) as info:
            read_state_dict(path)
        msg = str(info.value)
        assert msg.startswith(f"cannot read weights file {path}: ") and "\n" not in msg, msg
        assert not isinstance(info.value, PickledObjectsError)


def test_train_with_pickled_model_weights_stops_with_one_line(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    root = tmp_path / "u"
    for c in range(2):
        for view in ("drone", "satellite"):
            d = root / "train" / view / f"{c + 1:04d}"
            d.mkdir(parents=True)
            Image.fromarray(np.full((16, 16, 3), 60 * c, np.uint8)).save(d / "0.png")
    marker = tmp_path / "ran"
    weights = tmp_path / "resnet.ckpt"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(8, 3, 7, 7)}, "x": Trap(marker)}, weights)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": {"root": str(root), "locations_per_batch": 2, "drones_per_location": 1},
        "model": {"backbone_name": "resnet18", "img_size": 16, "restoration": False,
                  "weights": str(weights)},
        "train": {"device": "cpu"},
    }))
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds pickled Python objects or code" in err
    assert "safetensors" in err and not marker.exists()
    assert not (tmp_path / "run" / "last").exists()


def test_a_state_dict_under_an_unknown_key_names_the_file_s_keys(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save({"net": {"conv.weight": torch.zeros(2)}, "epoch": 3}, path)
    with pytest.raises(UserError) as info:
        read_state_dict(path)
    assert str(info.value) == (
        f"weights file {path} holds no tensor at its top level (its keys: 'net', 'epoch'): "
        "save the state dict itself, or under one of the keys 'state_dict', 'model', "
        "'model_state', 'module', 'ema'")
