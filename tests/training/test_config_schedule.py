"""Training config validation and the warmup + cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch

from mcgf.errors import UserError
from mcgf.training.config import parse_run_config
from mcgf.training.schedule import warmup_cosine, warmup_cosine_scheduler

BASE = {"data": {"root": "somewhere"}}


def test_defaults_and_coercion() -> None:
    cfg = parse_run_config({**BASE, "train": {"lr": "1e-3", "epochs": 2.0}}, "c.yaml")
    assert cfg.train.lr == 1e-3 and cfg.train.epochs == 2 and isinstance(cfg.train.epochs, int)
    # Written out so that a saved config never reads as the legacy image-conditioned branch.
    assert cfg.model == {"name": "mcgf", "restoration_condition": "features"}
    assert cfg.weather.conditions == "random"
    assert (cfg.train.restore_val_images, cfg.train.restore_val_steps, cfg.train.val_retrieval) == (16, 10, True)
    image = parse_run_config({**BASE, "model": {"restoration_condition": "features+image"}}, "c")
    assert image.model["restoration_condition"] == "features+image"
    assert cfg.as_dict()["data"]["root"] == "somewhere"


def test_amp_off_as_yaml_reads_it() -> None:
    from mcgf.config import apply_overrides

    # YAML 1.1 reads a bare off as false, in a config file and in --set alike.
    assert parse_run_config({**BASE, "train": {"amp": False}}, "c.yaml").train.amp == "off"
    cfg = parse_run_config(apply_overrides(BASE, ["train.amp=off"]), "c.yaml")
    assert cfg.train.amp == "off" and cfg.as_dict()["train"]["amp"] == "off"
    with pytest.raises(UserError, match=r"train\.amp must be a string"):
        parse_run_config({**BASE, "train": {"amp": True}}, "c.yaml")


@pytest.mark.parametrize(("cfg", "message"), [
    ({**BASE, "train": {"epoch": 3}}, "c.yaml: unknown option train.epoch"),
    ({**BASE, "trian": {}}, "c.yaml: unknown section 'trian'"),
    ({**BASE, "train": {"epochs": 0}}, "train.epochs must be >= 1"),
    ({**BASE, "train": {"epochs": 1.5}}, "train.epochs must be an integer \\(got 1.5\\)"),
    ({**BASE, "train": {"lr": "fast"}}, "train.lr must be a number \\(got 'fast'\\)"),
    ({**BASE, "train": {"amp": "fp8"}}, "train.amp must be"),
    ({"data": {"root": "x", "locations_per_batch": 1}}, "data.locations_per_batch must be >= 2"),
    ({**BASE, "data": {"root": "x", "satellite_flip": "yes"}}, "data.satellite_flip must be true or false"),
    ({"data": {}}, "data.root must be"),
    ({**BASE, "weather": {"conditions": "hail"}}, "weather.conditions must be 'random', 'none', a condition"),
    ({**BASE, "model": [1]}, "'model' must be a mapping"),
    ({**BASE, "model": {"restoration_condition": "pixels"}},
     "c.yaml: model.restoration_condition must be 'features' or 'features\\+image' \\(got 'pixels'\\)"),
    ({**BASE, "train": {"restore_val_steps": 0}}, "train.restore_val_steps must be in \\[1, 1000\\]"),
    ({**BASE, "train": {"restore_val_images": -1}}, "train.restore_val_images must be >= 0"),
])
def test_bad_configs_are_one_line_user_errors(cfg: dict, message: str) -> None:
    with pytest.raises(UserError, match=message) as info:
        parse_run_config(cfg, "c.yaml")
    assert "\n" not in str(info.value)


def test_warmup_cosine_known_values() -> None:
    assert warmup_cosine(0, 10, warmup_steps=3) == pytest.approx(0.25)
    assert warmup_cosine(2, 10, warmup_steps=3) == pytest.approx(0.75)
    assert warmup_cosine(3, 10, warmup_steps=3) == pytest.approx(1.0)
    # Halfway through the 7 decay steps the cosine is at the midpoint of [min, 1].
    assert warmup_cosine(3 + 3.5, 10, 3, min_ratio=0.2) == pytest.approx(0.6)  # type: ignore[arg-type]
    assert warmup_cosine(10, 10, 3, min_ratio=0.2) == pytest.approx(0.2)
    assert warmup_cosine(50, 10, 3, min_ratio=0.2) == pytest.approx(0.2)
    assert warmup_cosine(1, 4) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_scheduler_applies_per_group_and_round_trips() -> None:
    p, q = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p], "lr": 1.0}, {"params": [q], "lr": 0.1}])
    sched = warmup_cosine_scheduler(opt, total_steps=4, warmup_steps=1)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.5, 0.05])
    opt.step()
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1.0, 0.1])
    opt2 = torch.optim.SGD([{"params": [p], "lr": 1.0}, {"params": [q], "lr": 0.1}])
    sched2 = warmup_cosine_scheduler(opt2, total_steps=4, warmup_steps=1)
    sched2.load_state_dict(sched.state_dict())
    opt.step()
    sched.step()
    opt2.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])


def test_loading_a_state_keeps_this_schedules_shape() -> None:
    """A resumed run with more epochs continues the saved progress on its own schedule."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    short = warmup_cosine_scheduler(opt, total_steps=10, warmup_steps=2, min_ratio=0.1)
    for _ in range(3):
        opt.step()
        short.step()
    opt2 = torch.optim.SGD([p], lr=1.0)
    longer = warmup_cosine_scheduler(opt2, total_steps=40, warmup_steps=4, min_ratio=0.0)
    longer.load_state_dict(short.state_dict())
    assert longer.last_epoch == 3
    opt2.step()
    longer.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(warmup_cosine(4, 40, 4, 0.0))
    two_groups = torch.optim.SGD([{"params": [p]}, {"params": [torch.nn.Parameter(torch.zeros(1))]}], lr=1.0)
    with pytest.raises(ValueError, match="the state has 1 learning-rate multipliers, this scheduler 2"):
        warmup_cosine_scheduler(two_groups, 10).load_state_dict(
            {**short.state_dict(), "lr_lambdas": [None]})


def test_the_first_step_after_loading_a_state_uses_this_schedules_rate() -> None:
    """A run resumed with more epochs takes its next step at the rate of its own schedule,
    not the one the shorter schedule ended on (0 at the end of its cosine)."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1.0)
    short = warmup_cosine_scheduler(opt, total_steps=2, warmup_steps=1)
    for _ in range(2):
        opt.step()
        short.step()
    assert opt.param_groups[0]["lr"] == 0.0
    opt2 = torch.optim.AdamW([p], lr=1.0)
    longer = warmup_cosine_scheduler(opt2, total_steps=4, warmup_steps=1)
    # As a resume does: the optimizer's state (its groups' rates included), then the schedule.
    opt2.load_state_dict(opt.state_dict())
    longer.load_state_dict(short.state_dict())
    assert opt2.param_groups[0]["lr"] == warmup_cosine(2, 4, 1)
    assert longer.get_last_lr() == [warmup_cosine(2, 4, 1)]


def test_loading_a_state_of_the_same_schedule_changes_no_rate() -> None:
    """Resuming with the config a state was saved with keeps the rates bit for bit."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=3e-4)
    sched = warmup_cosine_scheduler(opt, total_steps=7, warmup_steps=2, min_ratio=0.1)
    for _ in range(3):
        opt.step()
        sched.step()
    opt2 = torch.optim.AdamW([p], lr=3e-4)
    sched2 = warmup_cosine_scheduler(opt2, total_steps=7, warmup_steps=2, min_ratio=0.1)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert sched2.get_last_lr() == sched.get_last_lr()
