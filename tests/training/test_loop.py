"""The training loop end to end on a tiny University-1652 tree written by the tests."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mcgf.cli.main import main
from mcgf.training import load_checkpoint
from mcgf.training.config import parse_run_config
from mcgf.training.loop import train
from tests.training.tiny_run import MODEL_KEYS
from tests.training.toy_model import toy_registered as toy_registered


def make_tree(base: Path, locations: int = 4) -> Path:
    """``locations`` × (2 drone views + 1 satellite tile), 32 px, distinct per location."""
    rng = np.random.default_rng(0)
    for c in range(locations):
        colour = rng.integers(0, 255, 3)
        for view, n in (("drone", 2), ("satellite", 1)):
            d = base / "train" / view / f"{c + 1:04d}"
            d.mkdir(parents=True)
            for i in range(n):
                arr = np.clip(colour + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")
    return base


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 locations × (2 drone views + 1 satellite tile)."""
    return make_tree(tmp_path_factory.mktemp("u1652") / "University-Release")


def config(root: Path, **train: object) -> dict:
    """The test config; loss options among ``train`` go to the ``model:`` section."""
    model = {k: train.pop(k) for k in MODEL_KEYS if k in train}
    return {
        "data": {"root": str(root), "locations_per_batch": 2, "drones_per_location": 2, "workers": 0},
        "weather": {"conditions": ["fog", "rain"], "seed": 1},
        "model": {"backbone_name": "vit_tiny_patch16_224", "img_size": 32, "bottleneck_dim": 16,
                  "dropout": 0.0, "restoration_width": 8, "restoration_mults": [1],
                  "restoration_blocks": 1, "infonce": 0.1, "lambda_restore": 0.5, **model},
        "train": {"epochs": 2, "seed": 3, "lr": 1e-3, "warmup_steps": 1, "log_every": 1,
                  **train},
    }


def read_log(out: Path) -> list[dict[str, str]]:
    with open(out / "log.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_two_epochs_log_checkpoint_and_embedding(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = train(parse_run_config(config(root), "test"), out, progress=False)
    assert result.steps == 4 and result.epochs == 2  # 4 locations / P=2 → 2 steps per epoch
    assert all(np.isfinite(v) for v in result.final_losses.values())
    assert set(result.final_losses) == {"ce", "infonce", "restore", "total"}
    rows = read_log(out)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert [int(r["epoch"]) for r in rows] == [1, 1, 2, 2]
    assert tuple(rows[0]) == ("step", "epoch", "lr", "ce", "infonce", "restore", "total",
                              "images_per_s", "grad_encoder_ce", "grad_encoder_infonce",
                              "grad_encoder_restore")
    assert all(float(r["images_per_s"]) > 0 and r["restore"] != "" for r in rows)
    # Warmup: step 1 runs at half the base LR (warmup_steps=1), then the cosine decays.
    assert float(rows[0]["lr"]) == pytest.approx(5e-4)
    assert float(rows[1]["lr"]) == pytest.approx(1e-3)
    assert float(rows[3]["lr"]) < float(rows[2]["lr"]) < 1e-3

    ck = load_checkpoint(out / "last", load_train_state=True)
    assert ck.train_state is not None and ck.train_state.step == 4 and ck.train_state.epoch == 2
    assert ck.config["model"]["num_classes"] == 4 and ck.config["train"]["seed"] == 3
    emb = ck.model.embed(torch.zeros(3, 3, 32, 32), "drone")
    assert emb.shape == (3, 16) and torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)


def test_resume_after_epoch_one_matches_uninterrupted_run(root: Path, tmp_path: Path) -> None:
    full = tmp_path / "full"
    train(parse_run_config(config(root), "t"), full, progress=False)
    part = tmp_path / "part"
    train(parse_run_config(config(root), "t"), part, progress=False, stop_after=1)
    # Change the global RNG in between: resume must restore it from the checkpoint.
    torch.manual_seed(12345)
    train(parse_run_config(config(root), "t"), part, resume=True, progress=False)
    a = load_checkpoint(full / "last").model.state_dict()
    b = load_checkpoint(part / "last").model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert [r["step"] for r in read_log(part)] == ["1", "2", "3", "4"]
    assert read_log(part)[3]["total"] == read_log(full)[3]["total"]


def test_loss_decreases_on_a_tiny_overfit_set(root: Path, tmp_path: Path) -> None:
    cfg = config(root, epochs=8, lr=1e-2, infonce=0.0, lambda_restore=0.0, warmup_steps=0,
                 min_lr_ratio=1.0)
    cfg["weather"] = {"conditions": "none"}
    train(parse_run_config(cfg, "t"), tmp_path / "o", progress=False)
    totals = [float(r["total"]) for r in read_log(tmp_path / "o")]
    assert "restore" not in read_log(tmp_path / "o")[0]
    # Chance level is 2·ln(4) ≈ 2.77 (cross-entropy of both views over 4 locations).
    assert np.mean(totals[:3]) == pytest.approx(2 * np.log(4), rel=0.1)
    assert np.mean(totals[-3:]) < 0.75 * np.mean(totals[:3])


def test_cli_trains_resumes_and_refuses_to_overwrite(root: Path, tmp_path: Path, capsys) -> None:
    import yaml

    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(config(root)))
    out = tmp_path / "cli"
    argv = ["train", "--config", str(cfg_path), "--out", str(out), "--quiet"]
    assert main([*argv, "--set", "train.epochs=1"]) == 0
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    # Resume without --config reads the saved config; --set raises the epoch count.
    assert main(["train", "--out", str(out), "--resume", "--quiet", "--set", "train.epochs=2"]) == 0
    assert load_checkpoint(out / "last", load_train_state=True).train_state.epoch == 2
    capsys.readouterr()
    # Fewer epochs than the checkpoint holds: nothing trains, and the run says so.
    assert main(["train", "--out", str(out), "--resume", "--set", "train.epochs=1"]) == 0
    said = capsys.readouterr().out
    assert "nothing to train" in said and "already holds 2 epochs (train.epochs 1)" in said
    assert load_checkpoint(out / "last", load_train_state=True).train_state.epoch == 2
    assert main(["train", "--out", str(tmp_path / "none"), "--resume", "--quiet"]) == 2
    assert "train without --resume first" in capsys.readouterr().err


def test_resume_may_change_how_the_model_computes_but_not_the_model(
        root: Path, tmp_path: Path, capsys) -> None:
    """On a smaller GPU a run resumes with checkpointing or one pass over both views
    switched on; an option that changes the model itself is still refused."""
    import yaml

    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(config(root)))
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg_path), "--out", str(out), "--quiet",
                 "--set", "train.epochs=1"]) == 0
    faster = ["--set", "model.grad_checkpointing=true", "--set",
              "model.restoration_grad_checkpointing=true", "--set", "model.joint_views=true"]
    assert main(["train", "--out", str(out), "--resume", "--quiet", "--set", "train.epochs=2",
                 *faster]) == 0
    ck = load_checkpoint(out / "last", load_train_state=True)
    assert ck.train_state.epoch == 2 and ck.config["model"]["joint_views"] is True
    assert main(["train", "--out", str(out), "--resume", "--quiet", "--set", "train.epochs=3",
                 "--set", "model.bottleneck_dim=8"]) == 2
    err = capsys.readouterr().err
    assert "model section differs" in err and "restoration_grad_checkpointing" in err


def test_validation_runs_every_n_epochs_and_is_logged(root: Path, tmp_path: Path) -> None:
    calls: list[bool] = []

    def validate(model: torch.nn.Module) -> dict[str, float]:
        calls.append(model.training)
        return {"val_R@1": 10.0 * len(calls), "val_AP": 5.0}

    cfg = config(root, epochs=3, eval_every=2, lambda_restore=0.0, infonce=0.0)
    result = train(parse_run_config(cfg, "t"), tmp_path / "run", progress=False, validate=validate)
    assert len(calls) == 2  # after epoch 2 and after the last epoch (3)
    assert result.validation == {"val_R@1": 20.0, "val_AP": 5.0}
    rows = [r for r in read_log(tmp_path / "run") if r["val_R@1"]]
    assert [(int(r["epoch"]), float(r["val_R@1"])) for r in rows] == [(2, 10.0), (3, 20.0)]
    # TensorBoard events beside log.csv, with the validation scalars.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "run" / "tb"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("val/R@1")] == [10.0, 20.0]
    assert [e.step for e in acc.Scalars("train/ce")] == [1, 2, 3, 4, 5, 6]  # log_every=1
    # eval_every=0 never validates.
    calls.clear()
    train(parse_run_config(config(root, epochs=1), "t"), tmp_path / "off", progress=False,
          validate=validate)
    assert calls == []


def test_encoder_gradient_norms_are_logged_per_term_on_logged_steps(root: Path, tmp_path: Path) -> None:
    cfg = config(root, epochs=2, log_every=2, infonce=0.0)
    train(parse_run_config(cfg, "t"), tmp_path / "on", progress=False)
    rows = read_log(tmp_path / "on")
    assert [int(r["step"]) for r in rows] == [2, 4]  # 2 steps per epoch, one row every 2
    for r in rows:
        for term in ("ce", "restore"):
            assert 0 < float(r[f"grad_encoder_{term}"]) < float("inf")
    assert "grad_encoder_infonce" not in rows[0] and "infonce" not in rows[0]
    # No branch: no restoration term and no gradient column for it.
    cfg = config(root, epochs=1, lambda_restore=0.0, infonce=0.0)
    cfg["model"]["restoration"] = False
    train(parse_run_config(cfg, "t"), tmp_path / "off", progress=False)
    rows = read_log(tmp_path / "off")
    assert "restore" not in rows[0] and "grad_encoder_restore" not in rows[0]
    assert all(float(r["grad_encoder_ce"]) > 0 for r in rows)


def test_gradient_norms_only_on_every_nth_row_and_the_epochs_last(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "data" / "University-Release", locations=8)

    def measured(every: int) -> list[int]:
        cfg = config(root, epochs=1, infonce=0.0, grad_norms_every=every)  # 4 steps, 4 rows
        out = tmp_path / f"every{every}"
        train(parse_run_config(cfg, "t"), out, progress=False)
        rows = read_log(out)
        assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
        return [int(r["step"]) for r in rows if r.get("grad_encoder_ce")]

    assert measured(1) == [1, 2, 3, 4]
    assert measured(3) == [3, 4]  # the third row, then the epoch's last
    assert measured(0) == []


def test_gradient_norm_rows_are_counted_over_the_run_and_across_a_resume(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "data" / "University-Release", locations=8)
    cfg = parse_run_config(config(root, epochs=2, infonce=0.0, grad_norms_every=3), "t")  # 4 rows an epoch

    def measured(out: Path) -> list[int]:
        rows = read_log(out)
        assert [int(r["step"]) for r in rows] == list(range(1, 9))
        return [int(r["step"]) for r in rows if r.get("grad_encoder_ce")]

    train(cfg, tmp_path / "whole", progress=False)
    # Rows 3 and 6 of the run, and each epoch's last (4, 8); not row 3 of the second epoch.
    assert measured(tmp_path / "whole") == [3, 4, 6, 8]
    train(cfg, tmp_path / "resumed", progress=False, stop_after=1)
    train(cfg, tmp_path / "resumed", progress=False, resume=True)
    assert measured(tmp_path / "resumed") == [3, 4, 6, 8]


def test_encoder_gradient_norm_matches_the_gradient_of_the_weighted_term() -> None:
    from mcgf.training.loop import encoder_gradient_norms

    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    other = torch.nn.Parameter(torch.tensor(1.0))
    terms = {"a": (w**2).sum() / 2, "b": other * 2, "total": (w**2).sum() / 2 + other * 2}
    norms = encoder_gradient_norms(terms, [w], {"a": 0.5})
    assert norms == {"grad_encoder_a": pytest.approx(2.5), "grad_encoder_b": 0.0}
    assert w.grad is None  # nothing accumulated


def test_cli_restoration_only_validation_logs_psnr_and_ssim(root: Path, tmp_path: Path) -> None:
    import shutil

    import yaml

    # A validation tree with drone queries only: enough for restoration validation.
    val = tmp_path / "val"
    for c in ("0001", "0002"):
        shutil.copytree(root / "train" / "drone" / c, val / "test" / "query_drone" / c)
    cfg = config(root, epochs=2, eval_every=2, val_retrieval=False, restore_val_images=3,
                 restore_val_steps=2)
    cfg["data"]["val_root"] = str(val)
    cfg["model"].update(restoration_mults=[1, 2], restore_size=16)
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(cfg_path), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    rows = read_log(tmp_path / "o")
    val_rows = [r for r in rows if r.get("val_restore_psnr")]
    assert [int(r["epoch"]) for r in val_rows] == [2]
    assert 0 < float(val_rows[0]["val_restore_psnr"]) < 60
    assert -1 < float(val_rows[0]["val_restore_ssim"]) <= 1
    assert "val_R@1" not in rows[0]
    assert list(rows[0])[-2:] == ["val_restore_psnr", "val_restore_ssim"]


def test_resume_says_which_optimizer_settings_it_keeps(root: Path, tmp_path: Path, caplog) -> None:
    """The optimizer state brings back the checkpoint's learning rates and weight decay:
    a changed ``train.lr`` is not applied, and the run says so instead of ignoring it."""
    from mcgf.training.config import TrainConfig
    from mcgf.training.loop import kept_on_resume

    saved = {"lr": 1e-3, "weight_decay": 0.05, "layer_decay": None, "epochs": 2}
    assert kept_on_resume(saved, TrainConfig(lr=1e-3, weight_decay=0.05, epochs=9)) is None
    note = kept_on_resume(saved, TrainConfig(lr=2e-3, weight_decay=0.05, layer_decay=0.9))
    assert "train.lr 0.001 -> 0.002" in note and "train.layer_decay None -> 0.9" in note
    assert "weight_decay" not in note.split(" not applied")[0]
    assert kept_on_resume(None, TrainConfig()) is None

    out = tmp_path / "run"
    train(parse_run_config(config(root, epochs=1), "t"), out, progress=False)
    with caplog.at_level("WARNING", logger="mcgf.training.loop"):
        train(parse_run_config(config(root, lr=5e-3), "t"), out, resume=True, progress=False)
    assert [r.getMessage().split(" not applied")[0] for r in caplog.records
            if r.name == "mcgf.training.loop"] == ["train.lr 0.001 -> 0.005"]
    # the saved rates were kept: the second epoch's logged lr follows the 1e-3 schedule
    assert max(float(r["lr"]) for r in read_log(out)) <= 1e-3 + 1e-12


def test_resume_names_the_options_that_changed_since_the_checkpoint(root: Path, tmp_path: Path,
                                                                   monkeypatch) -> None:
    """A resume with another seed or other data settings goes on with them: the run says
    which ones, instead of passing for the uninterrupted run; bookkeeping options and the
    same folder spelled another way are not named."""
    from mcgf.training.loop import changed_on_resume

    saved = parse_run_config(config(root), "t").as_dict()
    monkeypatch.chdir(root.parent)
    same = config(Path(root.name), epochs=5, eval_every=1)
    same["data"]["workers"] = 1
    assert changed_on_resume(saved, parse_run_config(same, "t")) is None
    moved = config(tmp_path / "moved")  # data that moved, as the resume error advises
    assert changed_on_resume(saved, parse_run_config(moved, "t")) is None
    other = config(root, seed=4)
    other["weather"]["seed"] = 2
    other["data"]["drone_flip"] = True
    note = changed_on_resume(saved, parse_run_config(other, "t"))
    assert note is not None
    named = note.split(": ", 1)[1].split(" (")[0].split(", ")
    assert named == ["data.drone_flip False -> True", "weather.seed 1 -> 2", "train.seed 3 -> 4"]


def test_a_relative_data_root_is_stored_absolute_so_resume_works_from_elsewhere(
        root: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """``--resume`` without ``--config`` reads ``data.root`` from the checkpoint; written
    relative to the folder the run started in, it was not found from any other."""
    import json

    monkeypatch.chdir(root.parent)
    out = tmp_path / "run"
    train(parse_run_config(config(Path(root.name), epochs=1), "t"), out, progress=False)
    saved = json.loads((out / "last" / "config.json").read_text())
    assert saved["data"]["root"] == str(root)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--out", str(out), "--resume", "--quiet", "--set", "train.epochs=2"]) == 0
    assert [int(r["epoch"]) for r in read_log(out)][-1] == 2


def test_every_batch_has_two_locations_and_one_location_is_refused(tmp_path: Path) -> None:
    """3 locations of one chunk each at P=2: the epoch's last batch had a single
    location, whose lone satellite tile BatchNorm refused in training mode."""
    from mcgf.errors import UserError
    from tests.training.tiny_run import tiny_config, write_tree

    root = write_tree(tmp_path / "three" / "University-Release", locations=3)
    result = train(parse_run_config(tiny_config(root, epochs=1), "t"), tmp_path / "run",
                   progress=False)
    assert result.steps == 2
    one = write_tree(tmp_path / "one" / "University-Release", locations=1)
    with pytest.raises(UserError, match=r"1 training location.* at least 2"):
        train(parse_run_config(tiny_config(one, epochs=1), "t"), tmp_path / "run1",
              progress=False)


def test_a_run_killed_right_after_a_checkpoint_resumes_with_its_whole_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The log of an epoch is on disk before its checkpoint: a run that dies once the
    checkpoint of epoch 2 is written resumes with epoch 2's rows, not without them."""
    import mcgf.training.loop as loop
    from tests.training.tiny_run import tiny_config, write_tree

    root = write_tree(tmp_path / "University-Release")
    cfg = parse_run_config(tiny_config(root, epochs=3), "t")
    train(cfg, tmp_path / "full", progress=False)
    save = loop.save_checkpoint

    def save_then_die(*args: object, **kwargs: object) -> None:
        save(*args, **kwargs)  # type: ignore[arg-type]
        if kwargs["train_state"].epoch == 2:  # type: ignore[attr-defined]
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "run", progress=False)
    monkeypatch.setattr(loop, "save_checkpoint", save)
    train(cfg, tmp_path / "run", resume=True, progress=False)

    def rows(out: Path) -> list[dict[str, str]]:
        return [{k: v for k, v in r.items() if k != "images_per_s"} for r in read_log(out)]

    assert rows(tmp_path / "run") == rows(tmp_path / "full")


def test_tensorboard_shows_each_step_once_after_a_resume(root: Path, tmp_path: Path) -> None:
    """Steps of an interrupted epoch are redone on resume: their old events are purged,
    like their rows in log.csv."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    cfg = parse_run_config(config(root, epochs=2), "t")
    out = tmp_path / "run"
    train(cfg, out, progress=False, stop_after=1)  # checkpoint after steps 1, 2
    stale = SummaryWriter(str(out / "tb"))  # what an interrupted epoch 2 left behind
    for step in (3, 4):
        stale.add_scalar("train/ce", 1e6, step)
    stale.close()
    train(cfg, out, resume=True, progress=False)
    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    events = acc.Scalars("train/ce")
    assert [e.step for e in events] == [1, 2, 3, 4]
    assert max(e.value for e in events) < 1e6
    assert [e.value for e in events] == pytest.approx([float(r["ce"]) for r in read_log(out)],
                                                      rel=1e-5)


def test_resume_on_other_training_data_says_so(root: Path, tmp_path: Path, capsys) -> None:
    """The saved config holds the location count of the data the run started on: resuming
    on a tree with another count names that, not the model option a resume cannot drop."""
    import yaml

    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(config(root)))
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg_path), "--out", str(out), "--quiet",
                 "--set", "train.epochs=1"]) == 0
    other = make_tree(tmp_path / "three" / "University-Release", locations=3)
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--quiet",
                 "--set", f"data.root={other}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has 4 locations" in err and "3 training locations" in err
    assert "training data the run started with" in err


def test_skipped_images_never_leave_a_batch_with_one_image_of_a_view(tmp_path: Path) -> None:
    """With two of five satellite tiles unreadable and ``on_bad_image: skip``, batches
    left with a single tile (which a head's BatchNorm cannot train on) are skipped and
    the others train."""
    from tests.training.tiny_run import tiny_config, write_tree

    data = write_tree(tmp_path / "data", locations=5)
    for location in ("0002", "0005"):
        (data / "train" / "satellite" / location / "0.png").write_bytes(b"not an image")
    cfg = tiny_config(data, epochs=2)
    cfg["data"]["on_bad_image"] = "skip"
    result = train(parse_run_config(cfg, "t"), tmp_path / "run", progress=False)
    assert 0 < result.steps < 2 * 3  # 5 locations / P=2 → 3 batches per epoch
    assert [int(r["step"]) for r in read_log(tmp_path / "run")] == list(range(1, result.steps + 1))


def test_locations_lacking_a_view_are_named_when_left_out(tmp_path: Path, caplog) -> None:
    """A location with drone images and no satellite tile (or the other way round) is left
    out of training: the run says how many, with an example, not silently."""
    import shutil

    from tests.training.tiny_run import tiny_config, write_tree

    root = write_tree(tmp_path / "University-Release", locations=5)
    shutil.rmtree(root / "train" / "satellite" / "0002")
    for f in (root / "train" / "drone" / "0004").iterdir():
        f.unlink()
    shutil.rmtree(root / "train" / "drone" / "0005")
    with caplog.at_level("WARNING", logger="mcgf"):
        train(parse_run_config(tiny_config(root, epochs=1), "t"), tmp_path / "run", progress=False)
    notes = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert notes == [
        f"{root}: 3 of 5 training locations left out, 1 without satellite images (e.g. "
        f"{root / 'train' / 'satellite' / '0002'} does not exist) and 2 without drone images "
        f"(e.g. {root / 'train' / 'drone' / '0004'} is empty); training on the 2 locations "
        "with both views"]
    assert load_checkpoint(tmp_path / "run" / "last").config["model"]["num_classes"] == 2
    # A complete split says nothing.
    caplog.clear()
    whole = write_tree(tmp_path / "whole", locations=2)
    with caplog.at_level("WARNING", logger="mcgf"):
        train(parse_run_config(tiny_config(whole, epochs=1), "t"), tmp_path / "w", progress=False)
    assert not [r for r in caplog.records if "left out" in r.getMessage()]


def test_resume_with_other_steps_per_epoch_goes_on_with_the_schedule(tmp_path: Path,
                                                                     caplog) -> None:
    """Resumed with twice the locations per batch (half the steps per epoch), the run's
    schedule used to span 1 step × 3 epochs while the checkpoint had taken 4 steps: the
    whole third epoch trained at learning rate 0. It now goes on from step 4 over the
    epoch left, and says so; resumed with the same batches, nothing changes."""
    from mcgf.training.schedule import warmup_cosine
    from tests.training.tiny_run import tiny_config, write_tree

    root = write_tree(tmp_path / "University-Release")
    cfg = tiny_config(root, epochs=2)  # 4 locations, P=2: 2 steps per epoch
    train(parse_run_config(cfg, "t"), tmp_path / "run", progress=False)
    wider = {**cfg, "data": {**cfg["data"], "locations_per_batch": 4},
             "train": {**cfg["train"], "epochs": 4}}
    with caplog.at_level("WARNING", logger="mcgf"):
        train(parse_run_config(wider, "t"), tmp_path / "run", resume=True, progress=False)
    notes = [r.getMessage() for r in caplog.records if "steps per epoch" in r.getMessage()]
    assert notes == ["--resume: the checkpoint took 2 optimizer steps per epoch and this run "
                     "takes 1: the learning-rate schedule goes on from step 4 over the epochs "
                     "left (2 steps)"]
    rows = read_log(tmp_path / "run")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    # warmup 1, then a cosine to step 6 (4 taken + 2 left); logged: the rate of each step.
    assert [float(r["lr"]) for r in rows[4:]] == pytest.approx(
        [1e-3 * warmup_cosine(s, 6, 1) for s in (4, 5)], rel=1e-5)
    assert float(rows[4]["lr"]) > 1e-4
    # Resumed again with the same batches: no note, the same layout stretched.
    caplog.clear()
    longer = {**wider, "train": {**wider["train"], "epochs": 5}}
    with caplog.at_level("WARNING", logger="mcgf"):
        train(parse_run_config(longer, "t"), tmp_path / "run", resume=True, progress=False)
    assert not [r for r in caplog.records if "steps per epoch" in r.getMessage()]
    assert float(read_log(tmp_path / "run")[-1]["lr"]) == pytest.approx(
        1e-3 * warmup_cosine(6, 7, 1), rel=1e-5)


def test_an_error_inside_an_epoch_closes_its_progress_bar(root: Path, tmp_path: Path, monkeypatch) -> None:
    """The bar stayed open when an error left the epoch, so the CLI's one-line message
    was printed on the bar's line (``epoch 1/1: 0%| ... ]mcgf: error: ...``)."""
    import tqdm as tqdm_module

    import mcgf.training.loop as loop
    from mcgf.errors import UserError

    bars: list[object] = []

    class Recorded(tqdm_module.tqdm):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            bars.append(self)

    def failing_step(*args, **kwargs):
        raise UserError("MyModel.loss returned no 'total' term")

    monkeypatch.setattr(tqdm_module, "tqdm", Recorded)
    run = loop.setup_run(parse_run_config(config(root, epochs=1), "t"), tmp_path / "run",
                         progress=True)
    monkeypatch.setattr(loop, "train_step", failing_step)
    with pytest.raises(UserError):
        loop.train_one_epoch(run, 0)
    assert len(bars) == 1 and bars[0].disable is True  # tqdm.close() sets disable


def test_the_bar_in_a_log_file_is_not_redrawn_at_each_logged_step(
        root: Path, tmp_path: Path, monkeypatch) -> None:
    """With stderr in a file, each log.csv row (every step by default) redrew the bar
    through its loss postfix, past the factory's redraw interval; now only the bar's
    opening draw (and the blank that clears it) is written in a short epoch."""
    import io

    import mcgf.training.loop as loop

    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    monkeypatch.delenv("TQDM_MAXINTERVAL", raising=False)
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    run = loop.setup_run(parse_run_config(config(root, epochs=1, log_every=1), "t"),
                         tmp_path / "run", progress=True)
    loop.train_one_epoch(run, 0)
    assert run.steps_per_epoch >= 2 and len(read_log(tmp_path / "run")) == run.steps_per_epoch
    assert log.getvalue().count("epoch 1/1") == 1 and "loss=" not in log.getvalue()


def test_a_run_stopped_during_validation_keeps_the_epoch_it_trained(root: Path, tmp_path: Path) -> None:
    """Validation ran before the checkpoint: a stop during it (minutes at paper scale)
    lost the whole epoch. The checkpoint now comes first."""
    from mcgf.models.checkpoint import read_train_state

    def stopped(model: torch.nn.Module) -> dict[str, float]:
        raise KeyboardInterrupt

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(parse_run_config(config(root, eval_every=1), "t"), out, progress=False,
              validate=stopped)
    assert read_train_state(out / "last").epoch == 1
    rows = read_log(out)
    assert rows and all(r.get("val_R@1", "") == "" for r in rows)


def test_an_error_in_train_closes_the_log_and_its_tensorboard_writer(root: Path, tmp_path: Path,
                                                                     monkeypatch) -> None:
    import mcgf.training.loop as loop

    logs: list[object] = []

    class Recorded(loop.TrainLog):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            self.closed = 0
            logs.append(self)

        def close(self) -> None:
            self.closed += 1
            super().close()

    def validate(model: object) -> dict[str, float]:
        raise KeyboardInterrupt  # a notebook user stopping the run

    monkeypatch.setattr(loop, "TrainLog", Recorded)
    cfg = parse_run_config(config(root, epochs=1, eval_every=1), "t")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "run", progress=False, validate=validate)
    assert [log.closed for log in logs] == [1]
    assert len(read_log(tmp_path / "run")) == 2  # the epoch's rows were written


def test_param_groups_given_as_generators_still_train_every_parameter(
        tmp_path: Path, toy_registered: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``{"params": module.parameters()}`` is a generator: checking the groups used it up,
    and the optimizer got groups without parameters, so nothing trained, without a word."""
    from mcgf.training import loop
    from tests.training.tiny_run import tiny_config, write_tree
    from tests.training.toy_model import TOY, ToyNet

    monkeypatch.setattr(ToyNet, "param_groups", lambda self, lr, wd, ld=None:
                        [{"params": self.encoder.parameters(), "lr": lr},
                         {"params": self.classifier.parameters(), "lr": lr}])
    held: list[int] = []
    real_adamw = loop.adamw

    def counting_adamw(*args: object, **kwargs: object) -> torch.optim.Optimizer:
        opt = real_adamw(*args, **kwargs)  # type: ignore[arg-type]
        held.append(sum(len(g["params"]) for g in opt.param_groups))
        return opt

    monkeypatch.setattr(loop, "adamw", counting_adamw)
    cfg = tiny_config(write_tree(tmp_path / "U"), epochs=1)
    cfg["model"] = {"name": TOY}
    train(parse_run_config(cfg, "t"), tmp_path / "run", progress=False)
    model = load_checkpoint(tmp_path / "run" / "last").model
    assert held == [len(list(model.parameters()))] and held[0] > 0
