"""Checkpoint folders: round trips, training state, atomicity, errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from mcgf.errors import UserError
from mcgf.models import checkpoint as ckpt
from mcgf.models.mcgf_model import MCGFModel
from mcgf.training import (
    TrainState,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)

CONFIG = {"name": "mcgf", "backbone_name": "vit_tiny_patch16_224", "num_classes": 3,
          "img_size": 32, "bottleneck_dim": 16, "dropout": 0.0, "restoration_width": 8,
          "restoration_mults": [1], "restoration_blocks": 1}


def make_model(seed: int = 0, **over: object) -> MCGFModel:
    torch.manual_seed(seed)
    kwargs = {k: v for k, v in {**CONFIG, **over}.items() if k != "name"}
    return MCGFModel(**kwargs).eval()  # type: ignore[arg-type]


def test_round_trip_weights_embeddings_and_config(tmp_path: Path) -> None:
    model = make_model()
    path = save_checkpoint(tmp_path / "ck", model, CONFIG, extra_config={"train": {"lr": 0.1}})
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_checkpoint(path)
    assert not loaded.model.training and loaded.train_state is None
    assert loaded.config["format"] == "mcgf-checkpoint" and loaded.config["version"] == 1
    assert loaded.config["train"] == {"lr": 0.1}
    # The option whose absence would mean the legacy variant is always written out.
    assert loaded.config["model"] == {**CONFIG, "restoration_condition": "features"}
    a, b = model.state_dict(), loaded.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # The shared encoder is stored once and stays one module after loading.
    assert loaded.model.satellite_encoder is loaded.model.drone_encoder
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.embed(x, "drone"), loaded.model.embed(x, "drone"))


def test_unshared_encoders_round_trip(tmp_path: Path) -> None:
    cfg = {**CONFIG, "share_encoder": False, "restoration": False}
    model = make_model(share_encoder=False, restoration=False)
    with torch.no_grad():  # make the satellite encoder differ from its drone twin
        next(model.satellite_encoder.parameters()).add_(1.0)
    loaded = load_checkpoint(save_checkpoint(tmp_path / "ck", model, cfg)).model
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.embed(x, "satellite"), loaded.embed(x, "satellite"))
        assert not torch.equal(loaded.embed(x, "satellite"), loaded.embed(x, "drone"))


def test_train_state_round_trip_resumes_exactly(tmp_path: Path) -> None:
    model = make_model().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    batch = {"drone": torch.randn(2, 3, 32, 32), "drone_label": torch.tensor([0, 1]),
             "satellite": torch.randn(2, 3, 32, 32), "satellite_label": torch.tensor([0, 1])}
    model.loss(batch)["total"].backward()
    opt.step()
    sched.step()
    np_gen = np.random.default_rng(5)
    np_gen.random(3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)  # fp16 training's loss scale
    state = TrainState(step=1, epoch=2, optimizer=opt.state_dict(), scheduler=sched.state_dict(),
                       rng=capture_rng_state({"data": np_gen}), scaler=scaler.state_dict())
    save_checkpoint(tmp_path / "ck", model, CONFIG, train_state=state)
    expected = (random.random(), np.random.random(), torch.rand(3), np_gen.random(2))

    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    loaded = load_checkpoint(tmp_path / "ck", load_train_state=True)
    ts = loaded.train_state
    assert ts is not None and (ts.step, ts.epoch) == (1, 2)
    assert sorted(torch.load(tmp_path / "ck" / "state.pt", weights_only=True)) == [
        "epoch", "optimizer", "rank_rng", "rng", "scaler", "scheduler", "step"]
    scaler2 = torch.amp.GradScaler("cpu")
    scaler2.load_state_dict(ts.scaler)  # type: ignore[arg-type]
    assert scaler2.get_scale() == 2.0**12
    opt2 = torch.optim.AdamW(loaded.model.parameters(), lr=1e-3)
    opt2.load_state_dict(ts.optimizer)  # type: ignore[arg-type]
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=1, gamma=0.5)
    sched2.load_state_dict(ts.scheduler)  # type: ignore[arg-type]
    assert sched2.get_last_lr() == pytest.approx([5e-4])
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert s1.keys() == s2.keys() and len(s1) > 0
    for k in s1:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(s1[k][name], s2[k][name])
    gen2 = np.random.default_rng(0)
    assert ts.rng is not None
    restore_rng_state(ts.rng, {"data": gen2})
    got = (random.random(), np.random.random(), torch.rand(3), gen2.random(2))
    assert got[0] == expected[0] and got[1] == expected[1]
    assert torch.equal(got[2], expected[2]) and np.array_equal(got[3], expected[3])


def test_state_file_is_read_without_pickle(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "ck", make_model(), CONFIG,
                    train_state=TrainState(rng=capture_rng_state()))
    data = torch.load(tmp_path / "ck" / "state.pt", weights_only=True)
    assert data["step"] == 0 and isinstance(data["rng"]["torch"], torch.Tensor)
    # A state holding an arbitrary object is refused, not unpickled.
    torch.save({"step": 1, "bad": Path("x")}, tmp_path / "ck" / "state.pt")
    with pytest.raises(UserError, match=r"state\.pt"):
        load_checkpoint(tmp_path / "ck", load_train_state=True)


def test_missing_train_state_is_an_error(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "ck", make_model(), CONFIG)
    with pytest.raises(UserError, match=r"no state\.pt"):
        load_checkpoint(tmp_path / "ck", load_train_state=True)


def test_failed_save_keeps_previous_checkpoint_and_no_temp(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    old = make_model(seed=0)
    save_checkpoint(tmp_path / "ck", old, CONFIG)
    before = (tmp_path / "ck" / "model.safetensors").read_bytes()

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "ck", make_model(seed=1), CONFIG, train_state=TrainState())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    assert (tmp_path / "ck" / "model.safetensors").read_bytes() == before
    monkeypatch.undo()
    # A successful save replaces the old folder and leaves nothing else behind.
    save_checkpoint(tmp_path / "ck", make_model(seed=1), CONFIG, train_state=TrainState())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    assert (tmp_path / "ck" / "model.safetensors").read_bytes() != before
    assert (tmp_path / "ck" / "state.pt").is_file()


def test_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(UserError, match=f"{missing} does not exist"):
        load_checkpoint(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=f"{empty} is not an mcgf checkpoint"):
        load_checkpoint(empty)
    # a training run's folder: its checkpoint is run/last, which the error names
    run = tmp_path / "run"
    save_checkpoint(run / "last", make_model(), CONFIG)
    with pytest.raises(UserError, match=f"{run} is a training run folder: pass its checkpoint {run / 'last'}"):
        load_checkpoint(run)
    with pytest.raises(UserError, match=f"{empty} is not an mcgf checkpoint: it has no config.json; pass"):
        load_checkpoint(empty)

    path = save_checkpoint(tmp_path / "ck", make_model(), CONFIG)
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "format": "other"}))
    with pytest.raises(UserError, match="not an mcgf checkpoint"):
        load_checkpoint(path)
    (path / "config.json").write_text(json.dumps({**cfg, "version": 2}))
    with pytest.raises(UserError, match=r"version 2.*upgrade mcgf"):
        load_checkpoint(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(UserError, match=r"config\.json"):
        load_checkpoint(path)
    # Config that does not match the stored weights.
    (path / "config.json").write_text(json.dumps({**cfg, "model": {**CONFIG, "num_classes": 7}}))
    with pytest.raises(UserError, match=r"model\.safetensors do not match"):
        load_checkpoint(path)
    (path / "config.json").write_text(json.dumps(cfg))
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(UserError, match=f"cannot read {weights}"):
        load_checkpoint(path)
    weights.unlink()
    with pytest.raises(UserError, match=r"no model\.safetensors"):
        load_checkpoint(path)


def test_a_model_registered_elsewhere_names_the_checkpoint(tmp_path: Path) -> None:
    """A checkpoint of a model whose registering module is not imported: the error names
    the checkpoint's config and says how to import the module."""
    path = save_checkpoint(tmp_path / "ck", make_model(), CONFIG)
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "model": {**CONFIG, "name": "mine"}}))
    with pytest.raises(UserError, match=rf"^{path / 'config.json'}: model.name: unknown model "
                                        r"'mine': .*mcgf --import MODULE\)$"):
        load_checkpoint(path)


def test_a_weights_file_given_as_checkpoint_says_where_it_goes(tmp_path: Path) -> None:
    """A timm or torch weights file is no checkpoint: the error says what is, and where
    such a file is taken (the initial weights of a training run)."""
    weights = tmp_path / "resnet18.safetensors"
    from safetensors.torch import save_file

    save_file({"conv1.weight": torch.zeros(2, 3, 1, 1)}, str(weights))
    with pytest.raises(UserError) as info:
        load_checkpoint(weights)
    assert str(info.value) == (
        f"checkpoint {weights} is a file, not an mcgf checkpoint folder (one holding config.json "
        "and model.safetensors): pass the folder that mcgf train wrote (OUT/last); a weights "
        "file of a backbone is read as the initial weights of a training run (model.weights)")


def test_a_backbone_tag_the_installed_timm_lacks_is_named(tmp_path: Path) -> None:
    """A checkpoint from a newer timm naming a pretrained tag this one lacks."""
    path = save_checkpoint(tmp_path / "ck", make_model(), CONFIG)
    cfg = json.loads((path / "config.json").read_text())
    cfg["model"]["backbone_name"] = "vit_tiny_patch16_224.future_tag"
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match=r"config\.json: model\.backbone_name .*future_tag"):
        load_checkpoint(path)


def test_file_inside_the_folder_is_accepted(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "ck", make_model(), CONFIG)
    loaded = load_checkpoint(path / "model.safetensors")
    assert loaded.config["model"]["num_classes"] == 3


def test_offline_options_are_forced(tmp_path: Path) -> None:
    cfg = {**CONFIG, "pretrained": True, "weights": str(tmp_path / "absent.safetensors")}
    path = save_checkpoint(tmp_path / "ck", make_model(), cfg)
    assert load_checkpoint(path).config["model"]["pretrained"] is True  # recorded as given


def test_every_checkpoint_file_gets_the_permissions_of_a_normal_file(tmp_path: Path) -> None:
    """Whoever may read config.json may read the weights too (a shared run folder)."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "ck", make_model(), CONFIG,
                               train_state=TrainState(step=1, epoch=1))
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.iterdir()}
    assert modes == {"config.json": 0o644, "model.safetensors": 0o644, "state.pt": 0o644}
