"""The training loop: University-1652 train split → a trainable model, single process or DDP.

:func:`train` does the whole run from a :class:`RunConfig`, in three parts:

* :func:`setup_run` — data, model, optimizer, schedule, logs (a :class:`TrainRun`):
  :class:`~mcgf.data.datasets.CrossViewTrainSet` with drone weather on the fly
  (:class:`~mcgf.weather.WeatherTransform`, fresh per epoch) and the clean drone image
  when the model's ``needs_clean_targets`` says so; batches from
  :class:`~mcgf.data.sampler.CrossViewBatchSampler` (``P`` locations × ``M`` drones); the
  model from ``model:`` (any :class:`~mcgf.models.base.TrainableModel`); AdamW over
  ``model.param_groups`` (fused on CUDA, :mod:`mcgf.training.optim`) with warmup + cosine
  LR per optimizer step; autocast on CUDA
  (bf16, or fp16 with loss scaling on cards without bf16; :mod:`mcgf.runtime`);
* :func:`train_one_epoch` — the epoch's optimizer steps, each one
  :func:`~mcgf.training.step.train_step` (gradient accumulation, clipping), logged to
  ``OUT/log.csv``: every loss term the model returns and, on every
  ``train.grad_norms_every``-th logged step and each epoch's last, the gradient norm
  each weighted term sends into the encoder;
* at each epoch end, a checkpoint ``OUT/last`` (weights, resolved config, optimizer,
  scheduler, counters, RNG states), then validation (optional; on every rank under
  ``torchrun``, see :mod:`mcgf.evaluation.validation`).

Randomness: model init draws from ``train.seed`` on every rank; under ``torchrun`` each
rank then reseeds torch's RNG with ``seed + rank`` (distinct dropout masks). The model's
own draws (diffusion t and noise) come from a dedicated generator seeded from
``(seed, rank)`` (:func:`~mcgf.training.step.model_generator`), so switching the
restoration term on or off leaves the global RNG stream (dropout) unchanged. The sampler
plan and the weather depend only on ``(seed, epoch)``, identical on all ranks.

Resuming restarts at the epoch boundary of ``OUT/last``; every RNG (each rank's, under
DDP, when resumed with the same number of processes) is restored, so a resumed
single-process run reproduces the uninterrupted one bit for bit.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mcgf import runtime
from mcgf.data.layout import ClassFolderSet, aligned_classes
from mcgf.data.layouts import find_dataset
from mcgf.errors import UserError
from mcgf.fileio import folder_lock
from mcgf.launch import launcher_rank, launcher_world
from mcgf.models.checkpoint import (
    STATE_FILE,
    LoadedCheckpoint,
    TrainState,
    load_checkpoint,
    read_config,
    read_train_state,
    recover_interrupted_save,
    save_checkpoint,
)
from mcgf.training.config import RunConfig, TrainConfig, stored_sections
from mcgf.training.logging import TrainLog
from mcgf.training.optim import adamw
from mcgf.training.resume import capture_rng_state, restore_rng_state, restore_train_state
from mcgf.training.schedule import saved_layout, warmup_cosine_scheduler
from mcgf.training.step import (
    Objective,
    StepResult,
    encoder_gradient_norms,
    model_generator,
    train_step,
)

_log = logging.getLogger(__name__)

LAST = "last"


@dataclass
class TrainResult:
    """What :func:`train` returns: where the checkpoint is, the steps and epochs it holds,
    and the mean losses of the last epoch this call trained (empty when it trained none)."""

    checkpoint: Path
    steps: int
    epochs: int
    final_losses: dict[str, float]
    seconds: float
    validation: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Dist:
    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_kind: str) -> _Dist:
    """Join the ``torchrun`` process group when ``WORLD_SIZE > 1`` (gloo on CPU, nccl on CUDA)."""
    world = launcher_world()
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return _Dist(world, dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")))


def _device(kind: str, dist_info: _Dist) -> torch.device:
    if runtime.resolve_device(kind, "train.device").type == "cuda":
        torch.cuda.set_device(dist_info.local_rank)
        return torch.device("cuda", dist_info.local_rank)
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy's legacy global RNG and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def read_train_split(root: str | Path, layout: str = "") -> tuple[ClassFolderSet, ClassFolderSet]:
    """The drone and satellite class folders of ``root``'s training split, read through
    its dataset layout (``layout``, else detected; see :mod:`mcgf.data.layouts`).

    Raises:
        UserError: a view folder is missing or no location has both views.
    """
    return find_dataset(root, layout or None, option="data.layout").read_train()


def build_dataset(cfg: RunConfig, drone: ClassFolderSet, satellite: ClassFolderSet,
                  model: Any) -> Any:
    """The :class:`~mcgf.data.datasets.CrossViewTrainSet` over ``drone``/``satellite`` with
    the model's input transforms (``input_size``, ``mean``, ``std``), the configured
    weather and the clean drone twins when ``model.needs_clean_targets``."""
    from mcgf.data.datasets import CrossViewTrainSet
    from mcgf.data.transforms import Preprocess, TrainAugment

    # The evaluation's preprocessing, so that training and test images match, then the
    # configured random augmentation.
    base = Preprocess(tuple(model.input_size), tuple(model.mean), tuple(model.std))  # type: ignore[arg-type]
    d = cfg.data
    drone_tf = TrainAugment(base, flip=d.drone_flip, scale=d.scale_jitter, translate=d.shift_jitter,
                            color=d.color_jitter)
    satellite_tf = TrainAugment(base, flip=d.satellite_flip, rotate=d.satellite_rotate,
                                scale=d.scale_jitter, translate=d.shift_jitter, color=d.color_jitter)
    weather = None
    if cfg.weather.conditions != "none":
        from mcgf.weather import WeatherTransform

        weather = WeatherTransform(cfg.weather.conditions, seed=cfg.weather.seed,
                                   dark_variant=cfg.weather.dark_variant,
                                   clean_fraction=cfg.weather.clean_fraction,
                                   weights=cfg.weather.weights,
                                   render_size=cfg.weather.render_size,
                                   jpeg_quality=cfg.weather.jpeg_quality)
    return CrossViewTrainSet(
        drone, satellite,
        drone_transform=drone_tf, satellite_transform=satellite_tf,
        degrade=weather, return_clean=bool(model.needs_clean_targets),
        on_bad_image=cfg.data.on_bad_image,  # type: ignore[arg-type]
        augment_seed=cfg.train.seed,
    )


def finished_run(out: str | Path, cfg: RunConfig) -> bool:
    """Whether ``out/last`` holds a run of exactly ``cfg`` trained to ``train.epochs``.

    Reads ``config.json`` and ``state.pt`` only (no model is built); model options
    compare by the values the model is built with (an omitted option equals its default),
    and ``model.num_classes``, filled in from the data at training time, is not compared.
    Anything unreadable counts as not finished.
    """
    try:
        saved = read_config(Path(out) / LAST)
        state = read_train_state(Path(out) / LAST)
    except UserError:
        return False
    want = cfg.as_dict()
    return (stored_sections(saved) == stored_sections(want)
            and same_model(saved.get("model", {}), want["model"], ignore=("num_classes",))
            and state.epoch == cfg.train.epochs)


def unpaired_locations(drone: ClassFolderSet, satellite: ClassFolderSet) -> str | None:
    """One line on the training locations left out because one view has no image of them
    (a drone folder without its satellite tile, or the other way round), or ``None``.

    Training reads only the locations both views have; in a complete University-1652,
    SUES-200 or DenseUAV training split every location has both, so one that lacks a view
    usually means a copy of the data set that is incomplete.
    """
    views = {"drone": drone, "satellite": satellite}
    ids = {view: set(fs.labels()) for view, fs in views.items()}
    folders = {view: set(fs.classes) for view, fs in views.items()}
    lacking = []
    left_out = 0
    for view, other in (("satellite", "drone"), ("drone", "satellite")):
        # Locations the other view has images of and this view has none.
        missing = sorted(ids[other] - ids[view])
        if not missing:
            continue
        example = next(n for n in views[other].classes if int(n) == missing[0])
        where = views[view].root / example
        state = "is empty" if example in folders[view] else "does not exist"
        lacking.append(f"{len(missing)} without {view} images (e.g. {where} {state})")
        left_out += len(missing)
    if not lacking:
        return None
    total = len(ids["drone"] | ids["satellite"])
    return (f"{left_out} of {total} training locations left out, {' and '.join(lacking)}; "
            f"training on the {total - left_out} locations with both views")


def same_model(a: Mapping[str, Any], b: Mapping[str, Any], ignore: Iterable[str] = ()) -> bool:
    """Whether two ``model:`` sections (with ``name``) build the same model with the same
    objective: equal after filling in each option's default, ``ignore`` left out."""
    from mcgf.models.model_registry import resolved_options

    name = a.get("name")
    if name != b.get("name") or not isinstance(name, str):
        return False
    try:
        ra, rb = (resolved_options(name, {k: v for k, v in m.items() if k != "name"})
                  for m in (a, b))
    except UserError:
        return False
    skip = set(ignore)
    return {k: v for k, v in ra.items() if k not in skip} == {k: v for k, v in rb.items()
                                                              if k not in skip}


def _resolve_model_config(cfg: RunConfig, num_classes: int, resume: bool = False) -> dict[str, Any]:
    """The ``model:`` section with ``num_classes`` set from the data, for a model that takes
    that option (one without a classifier over locations may not)."""
    from mcgf.models.model_registry import takes_option

    model_cfg = dict(cfg.model)
    if not takes_option(model_cfg["name"], "num_classes"):
        return model_cfg
    given = model_cfg.setdefault("num_classes", num_classes)
    if given != num_classes and resume:
        # The saved config carries the count of the data the run started on.
        raise UserError(f"--resume: the checkpoint's model has {given} locations but "
                        f"{cfg.data.root} has {num_classes} training locations: resume on the "
                        "training data the run started with")
    if given != num_classes:
        raise UserError(f"model.num_classes is {given} but {cfg.data.root} has {num_classes} "
                        "training locations: remove model.num_classes (it is set from the data)")
    return model_cfg


@dataclass
class TrainRun:
    """Everything :func:`setup_run` prepares and the epochs advance.

    Attributes:
        cfg, out: the configuration and the run folder.
        model: the model being trained (a :class:`~mcgf.models.base.TrainableModel`).
        model_cfg: its ``model:`` section with ``num_classes`` filled in (what is saved).
        objective: :class:`~mcgf.training.step.Objective` around ``model`` (DDP-wrapped
            under ``torchrun``).
        generator: the dedicated generator of the model's own random draws.
        optimizer, scheduler: AdamW and its warmup-cosine schedule.
        sampler, loader: the batch plan and the DataLoader over it.
        dist: world size and rank.
        log: ``log.csv``/TensorBoard (rank 0 only).
        autocast: entered around each loss pass.
        steps_per_epoch: optimizer steps per epoch.
        step, start_epoch: optimizer steps taken so far, and the first epoch to train.
        progress: show a progress bar and epoch lines (rank 0 only).
        scaler: the loss scaler of fp16 autocast (``None``: bf16 or fp32).
        weights_report: what loading the initial weights did (saved in the checkpoint's
            ``config.json``; a resumed run keeps the one its checkpoint has).
    """

    cfg: RunConfig
    out: Path
    model: nn.Module
    model_cfg: dict[str, Any]
    objective: nn.Module
    generator: torch.Generator
    optimizer: torch.optim.Optimizer
    scheduler: Any
    sampler: Any
    loader: Any
    dist: _Dist
    log: TrainLog | None
    autocast: contextlib.AbstractContextManager[Any]
    steps_per_epoch: int
    step: int = 0
    start_epoch: int = 0
    progress: bool = True
    scaler: torch.amp.GradScaler | None = None
    weights_report: dict[str, Any] | None = None


def setup_run(cfg: RunConfig, out: str | Path, *, resume: bool = False,
              progress: bool = True) -> TrainRun:
    """Everything a run needs before its first step (see :class:`TrainRun`); with
    ``resume``, weights, optimizer, scheduler, counters and RNG states come from ``out/last``.

    Raises:
        UserError: bad data, a model config that does not fit the checkpoint, a model that
            is not trainable, or nothing to resume.
    """
    out = Path(out)
    tc = cfg.train
    dist_info = _init_distributed(runtime.resolve_device(tc.device, "train.device").type)
    device = _device(tc.device, dist_info)
    say = print if dist_info.main and progress else None
    if say is not None:
        say(runtime.device_line(device, tc.amp, tc.device))
    seed_everything(tc.seed)
    ckpt = _resume_checkpoint(out) if resume else None
    # The transforms need the model's input size and the model needs the class count:
    # count classes from the folder listing, build the model, then the dataset.
    drone, satellite = read_train_split(cfg.data.root, cfg.data.layout)
    num_classes = len(aligned_classes(drone, satellite))
    if num_classes < 2:
        # A batch needs two locations: a BatchNorm in training mode needs two samples of
        # each view, and a contrastive term negatives.
        raise UserError(f"{cfg.data.root} has {num_classes} training location(s) with both a "
                        "drone and a satellite view: training needs at least 2 (add locations "
                        "to data.root)")
    note = unpaired_locations(drone, satellite)
    if note is not None and dist_info.main:
        _log.warning("%s: %s", cfg.data.root, note)
    model_cfg = _resolve_model_config(cfg, num_classes, resume)
    model = _build_model(cfg, model_cfg, ckpt, out, device)
    # A resumed run keeps the report of its first build (its initial weights are not read).
    report = ckpt.config.get("weights_report") if ckpt is not None else \
        getattr(model, "weights_report", None)
    if say is not None and report is not None and ckpt is None:
        from mcgf.models.backbone import summarize_report

        say(summarize_report(report))
    if tc.compile:
        compiled = compile_model(model, tc, cfg.model.get("name", "the model"))
        if say is not None:
            say(compiled)
    # Model init is identical on all ranks; what is drawn afterwards (dropout) is not.
    if dist_info.world > 1:
        torch.manual_seed(tc.seed + dist_info.rank)
    generator = model_generator(tc.seed, dist_info.rank, device)
    sampler, loader = build_loader(cfg, build_dataset(cfg, drone, satellite, model), device,
                                   world=dist_info.world, rank=dist_info.rank)
    steps_per_epoch = math.ceil(len(sampler) / tc.accumulate)
    optimizer = _optimizer(model, cfg, device, warn=dist_info.main)
    total_steps, note = _schedule_length(ckpt, steps_per_epoch, tc.epochs)
    if note is not None and dist_info.main:
        _log.warning("%s", note)
    scheduler = warmup_cosine_scheduler(optimizer, total_steps, tc.warmup_steps, tc.min_lr_ratio,
                                        steps_per_epoch)
    objective: nn.Module = Objective(model, generator)
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        objective = DDP(objective, device_ids=[device.index] if device.type == "cuda" else None,
                        find_unused_parameters=True)
    autocast = runtime.autocast(device, tc.amp)
    run = TrainRun(cfg, out, model, model_cfg, objective, generator, optimizer, scheduler,
                   sampler, loader, dist_info, None, autocast, steps_per_epoch, progress=progress,
                   scaler=runtime.grad_scaler(device, tc.amp), weights_report=report)
    if ckpt is not None and ckpt.train_state is not None:
        _restore(run, ckpt.train_state)
        for note in (kept_on_resume(ckpt.config.get("train"), tc), changed_on_resume(ckpt.config, cfg)):
            if note is not None and dist_info.main:
                _log.warning("%s", note)
    del ckpt
    if dist_info.main:
        run.log = TrainLog(out, keep_until_step=run.step if resume else None, tensorboard=True)
        if run.log.note and progress:
            print(run.log.note)
    return run


def _schedule_length(ckpt: LoadedCheckpoint | None, steps_per_epoch: int,
                     epochs: int) -> tuple[int, str | None]:
    """Optimizer steps the learning-rate schedule spans, and a note when a resume changes
    its layout.

    ``steps_per_epoch × epochs`` for a new run, and for a resume whose checkpoint's schedule
    was laid out so (more epochs stretch the cosine). A checkpoint trained with another
    number of steps per epoch (other ``data.locations_per_batch``,
    ``data.drones_per_location``, ``train.accumulate`` or number of processes) counted its
    steps in other units: that length would put the schedule's progress elsewhere, even
    past its end (training at the floor rate), so the schedule then spans the steps taken
    plus this run's steps for the epochs left.
    """
    total = steps_per_epoch * epochs
    state = ckpt.train_state if ckpt is not None else None
    layout = saved_layout(state.scheduler) if state is not None else None
    saved_epochs = (ckpt.config.get("train") or {}).get("epochs") if ckpt is not None else None
    if state is None or layout is None or not isinstance(saved_epochs, int):
        return total, None
    saved_total, saved_per_epoch = layout
    if saved_per_epoch == steps_per_epoch:
        # As laid out, stretched or shortened by the epochs added or removed.
        return max(saved_total + steps_per_epoch * (epochs - saved_epochs), 1), None
    left = steps_per_epoch * max(epochs - state.epoch, 0)
    return state.step + left, (
        f"--resume: the checkpoint took {saved_per_epoch} optimizer steps per epoch and this "
        f"run takes {steps_per_epoch}: the learning-rate schedule goes on from step "
        f"{state.step} over the epochs left ({left} step{'' if left == 1 else 's'})")


def compile_model(model: nn.Module, tc: TrainConfig, name: str) -> str:
    """Compile ``model``'s encoder blocks as ``train.compile`` / ``train.compile_mode``
    say (:func:`mcgf.models.compile.compile_blocks`); returns the line to print.

    Raises:
        UserError: the model has nothing to compile.
    """
    from mcgf.models.compile import compile_blocks

    backend = "inductor" if tc.compile is True else str(tc.compile)
    if tc.grad_norms_every:
        # The per-term gradient norms run backward with retain_graph, which a compiled
        # backward that reuses ("donates") its saved buffers refuses.
        import torch._functorch.config as functorch_config

        functorch_config.donated_buffer = False
    try:
        n = compile_blocks(model, backend, tc.compile_mode)
    except ValueError as err:
        raise UserError(f"train.compile: {err} ({name}); set train.compile: false") from None
    mode = "" if tc.compile_mode == "default" else f", mode {tc.compile_mode}"
    return (f"compile: {n} modules with torch.compile ({backend}{mode}); the first steps "
            "include compiling")


def check_resumable(out: str | Path) -> None:
    """Stop unless ``out/last`` holds a training state to resume from.

    Raises:
        UserError: no checkpoint there, or one saved without its training state.
    """
    last = Path(out) / LAST
    if not (last / STATE_FILE).is_file():
        raise UserError(f"--resume: {last} holds no resumable checkpoint (train without --resume first)")


def _resume_checkpoint(out: Path) -> LoadedCheckpoint:
    """``out/last`` with its training state (after undoing a killed save)."""
    last = out / LAST
    recover_interrupted_save(last)
    check_resumable(out)
    return load_checkpoint(last, map_location="cpu", load_train_state=True)


def _optimizer(model: nn.Module, cfg: RunConfig, device: torch.device, *,
               warn: bool) -> torch.optim.Optimizer:
    """AdamW over the model's ``param_groups``, checked: a parameter in two groups stops
    the run; trainable parameters in none are named in a warning (they would not train)."""
    from mcgf.models.base import unoptimised_parameters

    tc = cfg.train
    # Listed first: a group's params may be a generator (module.parameters()), which the
    # check would use up, leaving the optimizer nothing to train.
    groups = [{**g, "params": list(g["params"])}
              if isinstance(g, Mapping) and not isinstance(g.get("params"), torch.Tensor | None)
              else g for g in model.param_groups(tc.lr, tc.weight_decay, tc.layer_decay)]
    left = unoptimised_parameters(model, groups, cfg.model.get("name"))
    if left and warn:
        _log.warning("model %r: %d trainable parameters are in none of its param_groups() and "
                     "will not train (%s%s): add them to a group, or set requires_grad=False",
                     cfg.model.get("name"), len(left), ", ".join(left[:5]),
                     ", ..." if len(left) > 5 else "")
    return adamw(groups, tc.lr, tc.weight_decay, device)


def _build_model(cfg: RunConfig, model_cfg: dict[str, Any], ckpt: LoadedCheckpoint | None,
                 out: Path, device: torch.device) -> nn.Module:
    """The configured model, seeded with ``train.seed``, checked against the trainable
    contract, with the checkpoint's weights on resume, on ``device`` in train mode."""
    from mcgf.models.base import check_trainable
    from mcgf.models.model_registry import (
        RUNTIME_OPTIONS,
        create_model,
        without_initial_weights,
    )

    if ckpt is not None and not same_model(ckpt.config["model"], model_cfg,
                                           ignore=RUNTIME_OPTIONS):
        raise UserError(f"--resume: the model section differs from {out / LAST}/config.json: "
                        "resume with the same model options (only "
                        f"{', '.join(RUNTIME_OPTIONS)} may change), or start a new --out")
    seed_everything(cfg.train.seed)
    name = model_cfg["name"]
    options = {k: v for k, v in model_cfg.items() if k != "name"}
    # On resume the checkpoint's weights replace the initial ones: nothing is fetched or read.
    model = create_model(name, **(without_initial_weights(name, options) if ckpt else options))
    check_trainable(model, model_cfg.get("name"), configured=ckpt is None)
    if ckpt is not None:
        model.load_state_dict(ckpt.model.state_dict())
    return model.to(device).train()


def build_loader(cfg: RunConfig, dataset: Any, device: torch.device, *, world: int = 1,
                 rank: int = 0) -> tuple[Any, Any]:
    """The batch sampler over ``dataset`` (rank ``rank``'s share of the plan of ``world``
    processes) and the DataLoader of ``cfg.data.workers`` processes that training reads
    (memory pinned when ``device`` is CUDA). ``benchmarks/pipeline.py`` times this loader."""
    from mcgf.data.datasets import EpochTagged, collate_cross_view
    from mcgf.data.sampler import CrossViewBatchSampler

    sampler = CrossViewBatchSampler(dataset.location_index, cfg.data.locations_per_batch,
                                    cfg.data.drones_per_location, seed=cfg.train.seed,
                                    num_replicas=world, rank=rank)
    loader = torch.utils.data.DataLoader(
        # Indices carry their epoch, so persistent workers follow the weather epoch and
        # seed each item's augmentation from (seed, epoch, index): no worker start-up per
        # epoch, and items do not depend on the worker count.
        dataset, batch_sampler=EpochTagged(sampler), collate_fn=collate_cross_view,
        num_workers=cfg.data.workers, pin_memory=device.type == "cuda",
        persistent_workers=cfg.data.workers > 0,
    )
    return sampler, loader


#: Train options whose values a resumed optimizer state brings back (the groups' base
#: learning rates, layer decay included, and their weight decay).
RESUME_KEEPS: tuple[str, ...] = ("lr", "weight_decay", "layer_decay")


def kept_on_resume(saved: Any, tc: TrainConfig) -> str | None:
    """One line naming the ``RESUME_KEEPS`` options that differ between the checkpoint's
    ``train`` section ``saved`` and this run's ``tc``, or ``None``: the resumed optimizer
    state keeps the checkpoint's values, so a changed one is not applied."""
    if not isinstance(saved, dict):
        return None
    changed = [f"train.{key} {saved[key]} -> {getattr(tc, key)}" for key in RESUME_KEEPS
               if key in saved and saved[key] != getattr(tc, key)]
    if not changed:
        return None
    return (f"{', '.join(changed)} not applied: a resumed run keeps the learning rates "
            "and weight decay of its checkpoint (start a new run to change them)")


#: Options that do not change what a resumed run learns (or, for ``train.epochs`` and a
#: changed batch layout, that have notes of their own): no note when they change. A new
#: ``data.root`` is where the data moved to (the resume checks its locations).
_BOOKKEEPING: tuple[str, ...] = (
    "data.root", "data.workers", "data.val_root", "train.epochs", "train.log_every", "train.grad_norms_every",
    "train.eval_every", "train.val_retrieval", "train.restore_val_images",
    "train.restore_val_steps", "train.compile", "train.compile_mode", "train.device",
    *(f"train.{key}" for key in RESUME_KEEPS))


def changed_on_resume(saved: Mapping[str, Any], cfg: RunConfig) -> str | None:
    """One line naming the ``data``, ``weather`` and ``train`` options of ``cfg`` that
    differ from the checkpoint's config ``saved`` (bookkeeping options left out), or
    ``None``: the epochs left use the new values, so the finished run is not the
    uninterrupted run of either config."""
    before, now = stored_sections(saved), stored_sections(cfg.as_dict())
    changed = [f"{section}.{key} {before[section][key]!r} -> {value!r}"
               for section, options in now.items() if isinstance(before.get(section), dict)
               for key, value in options.items()
               if key in before[section] and before[section][key] != value
               and f"{section}.{key}" not in _BOOKKEEPING]
    if not changed:
        return None
    return (f"--resume with options other than the checkpoint's: {', '.join(changed)} "
            "(the epochs left use the new values)")


def _restore(run: TrainRun, st: TrainState) -> None:
    """Optimizer, scheduler, counters and RNG states of a resumed run."""
    tc = run.cfg.train
    # The schedule keeps this run's shape (e.g. more epochs): see WarmupCosineLR.
    restore_train_state(st, run.optimizer, run.scheduler, run.out / LAST / STATE_FILE)
    run.step, run.start_epoch = st.step, st.epoch
    if run.scaler is not None and st.scaler:
        # The loss scale fp16 training reached (one it cannot read starts afresh).
        with contextlib.suppress(KeyError, RuntimeError, TypeError, ValueError):
            run.scaler.load_state_dict(st.scaler)
    ranks = st.rank_rng
    rng = st.rng
    fresh = model_generator(tc.seed + st.epoch, run.dist.rank, torch.device("cpu")).initial_seed()
    if run.dist.world > 1:
        if isinstance(ranks, list) and len(ranks) == run.dist.world:
            rng = ranks[run.dist.rank]
            restore_rng_state(rng)
        else:
            # Saved by another number of processes: distinct, not identical, streams. The
            # model's generator too: restoring the one saved state on every rank would
            # give all ranks the same diffusion t and noise.
            torch.manual_seed(tc.seed + run.dist.rank + run.dist.world * st.epoch)
            run.generator.manual_seed(fresh)
            return
    saved = ((rng or {}).get("generators") or {}).get(_MODEL_RNG)
    try:
        if saved is not None:
            run.generator.set_state(saved["state"])
    except (RuntimeError, TypeError, KeyError):
        # Saved on another kind of device (a CPU and a CUDA generator's states differ):
        # a fresh stream, distinct from the first epoch's.
        run.generator.manual_seed(fresh)


#: Name of the model's generator among the saved RNG states.
_MODEL_RNG = "model"


def _rng_states(run: TrainRun) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """This rank's RNG states (with the model's generator) and, under DDP, every rank's
    (gathered on all ranks: a collective call)."""
    state = capture_rng_state({_MODEL_RNG: run.generator})
    if run.dist.world == 1:
        return state, None
    import torch.distributed as dist

    states: list[Any] = [None] * run.dist.world
    dist.all_gather_object(states, state)
    return state, states


def _micro_groups(batches: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    """Consecutive micro-batches in groups of ``size`` (the last group may be shorter)."""
    group: list[dict[str, Any]] = []
    for batch in batches:
        group.append(batch)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


class _Window:
    """Loss terms and throughput over the optimizer steps of one ``log.csv`` row.

    A term is averaged over the micro-batches that have it, each weighted by one over its
    step's micro-batch count.
    """

    def __init__(self) -> None:
        self.n = 0  # optimizer steps of the epoch so far
        self.pending = False
        self._reset(time.perf_counter())

    def _reset(self, now: float) -> None:
        self.images = 0
        self.t = now
        self.terms: dict[str, float] = {}
        self.weight: dict[str, float] = {}
        self.pending = False

    def add(self, res: StepResult) -> None:
        n_micro = len(res.terms)
        for values in res.terms:
            for k, val in values.items():
                self.terms[k] = self.terms.get(k, 0.0) + val / n_micro
                self.weight[k] = self.weight.get(k, 0.0) + 1.0 / n_micro
        self.images += res.images
        self.n += 1
        self.pending = True

    def row(self, step: int, epoch: int, res: StepResult) -> dict[str, Any]:
        """The row of the steps since the last one (ending with ``res``), then start anew."""
        now = time.perf_counter()
        row: dict[str, Any] = {"step": step, "epoch": epoch + 1, "lr": res.lr}
        row.update({k: v / self.weight[k] for k, v in self.terms.items()})
        row["images_per_s"] = self.images / max(now - self.t, 1e-9)
        row.update(res.grad_norms)
        self._reset(now)
        return row


def train_one_epoch(run: TrainRun, epoch: int) -> dict[str, float]:
    """Train epoch ``epoch`` (0-based) of ``run``: its optimizer steps, one
    :func:`~mcgf.training.step.train_step` each, with a ``log.csv`` row every
    ``train.log_every`` steps and after the last.

    Returns:
        Each loss term's mean over the epoch's micro-batches.

    Raises:
        FloatingPointError: a loss term is not finite, naming the step and epoch.
    """
    from mcgf.progress import progress_bar

    tc = run.cfg.train
    run.sampler.set_epoch(epoch)  # EpochTagged passes it on to the dataset's weather
    sums: dict[str, float] = {}
    seen: dict[str, int] = {}
    window = _Window()
    bar = progress_bar(total=run.steps_per_epoch, desc=f"epoch {epoch + 1}/{tc.epochs}", unit="step",
               disable=not (run.progress and run.dist.main), leave=False)
    run.optimizer.zero_grad(set_to_none=True)
    res: StepResult | None = None
    rows = _training_rows(run)
    # Under DDP with skipping, whether a batch trains is agreed by all ranks: a rank
    # that skipped one alone would leave the others waiting in its gradient all-reduce.
    agree = (functools.partial(_on_every_rank, device=next(run.model.parameters()).device)
             if run.dist.world > 1 and run.cfg.data.on_bad_image == "skip" else None)
    # Closed on an error too: its one-line message then starts a line of its own.
    with bar:
        for i, micro in enumerate(_micro_groups(_batches(run.loader, keep_rng=epoch > 0,
                                                         agree=agree), tc.accumulate)):
            last = i + 1 == run.steps_per_epoch
            logged = (window.n + 1) % tc.log_every == 0 or last
            rows += logged
            # Per-term gradient norms cost extra backward passes: only on every
            # grad_norms_every-th row of log.csv (counted over the run) and on the epoch's last.
            norms = (logged and run.dist.main and tc.grad_norms_every > 0
                     and (rows % tc.grad_norms_every == 0 or last))
            try:
                res = train_step(run.objective, run.optimizer, run.scheduler, micro,
                                 autocast=run.autocast, grad_clip=tc.grad_clip,
                                 grad_norms=norms, scaler=run.scaler)
            except FloatingPointError as err:
                raise FloatingPointError(f"{err} at step {run.step} (epoch {epoch + 1}); lower "
                                         "train.lr or enable train.grad_clip") from None
            run.step += 1
            window.add(res)
            for values in res.terms:
                for k, val in values.items():
                    sums[k] = sums.get(k, 0.0) + val
                    seen[k] = seen.get(k, 0) + 1
            if logged:
                _log_row(run, bar, window.row(run.step, epoch, res))
            bar.update(1)  # draws the loss just set, as often as the bar redraws
        if window.pending and res is not None:  # batches skipped (on_bad_image=skip) left a tail
            _log_row(run, bar, window.row(run.step, epoch, res))
    return {k: sums[k] / seen[k] for k in sums}


def _training_rows(run: TrainRun) -> int:
    """The training rows ``log.csv`` holds so far (validation rows left out): the count
    that ``train.grad_norms_every`` goes by, the same in a resumed run as in an
    uninterrupted one, since a resume keeps the rows of the epochs it does not redo."""
    if run.log is None:
        return 0
    return run.log.filled.get("total", 0)


def _log_row(run: TrainRun, bar: Any, row: dict[str, Any]) -> None:
    # No redraw of its own: in a log file the bar is redrawn only every LOG_INTERVAL_S.
    bar.set_postfix(loss=f"{row['total']:.4f}", img_s=f"{row['images_per_s']:.1f}", refresh=False)
    if run.log is not None:
        run.log.add(row)


def _share_buffers(run: TrainRun) -> None:
    """Under DDP, give every rank rank 0's buffers (BatchNorm running statistics).

    Each rank's last training step updated its statistics from its own batch (DDP sends
    rank 0's only at the start of the next forward), so without this each rank would
    validate a slightly different model; with it every rank's share of a split
    validation comes from the model that rank 0 saves.
    """
    if run.dist.world == 1:
        return
    import torch.distributed as dist

    for buffer in run.model.buffers():
        dist.broadcast(buffer.data, src=0)


def _end_epoch(run: TrainRun, epoch: int, losses: Mapping[str, float],
               validate: Callable[[nn.Module], Mapping[str, float]] | None,
               started: float) -> dict[str, float] | None:
    """The checkpoint, then validation when due (its values, else ``None``).

    The checkpoint comes first: validation can take minutes at paper scale, and a run
    stopped during it then resumes after this epoch rather than redoing it (without this
    epoch's validation row). It holds the same state either way, since validation puts
    every random stream back and changes no weight.
    """
    tc = run.cfg.train
    _save_epoch(run, epoch)
    validation = None
    due = tc.eval_every > 0 and ((epoch + 1) % tc.eval_every == 0 or epoch + 1 == tc.epochs)
    if validate is not None and due:
        # On every rank: the standard validators split the images across the ranks and
        # gather the features, so no rank waits alone in a collective for a whole
        # validation. Rank 0 logs.
        _share_buffers(run)
        # Validation may draw random numbers (its DataLoader draws a base seed from
        # torch's RNG): put every stream back, so that the training that follows (dropout)
        # is the same whatever train.eval_every.
        streams = capture_rng_state()
        try:
            validation = {k: float(v) for k, v in validate(run.model).items()}
        finally:
            restore_rng_state(streams)
        if run.log is not None:
            run.log.add({"step": run.step, "epoch": epoch + 1, **validation})
        if run.progress and run.dist.main:
            print(f"epoch {epoch + 1}/{tc.epochs}: " +
                  ", ".join(f"{k} {v:.4g}" for k, v in validation.items()))
    if run.progress and run.dist.main:
        loss_txt = ", ".join(f"{k} {v:.4f}" for k, v in losses.items())
        print(f"epoch {epoch + 1}/{tc.epochs}: {loss_txt} (step {run.step}, "
              f"{time.perf_counter() - started:.1f} s)")
    return validation


def _save_epoch(run: TrainRun, epoch: int) -> None:
    """``OUT/last`` after epoch ``epoch`` (0-based): weights, config and training state
    (every rank's RNG streams gathered; rank 0 writes)."""
    rng, ranks = _rng_states(run)
    if not run.dist.main:
        return
    # The log first: a run that dies between the two writes resumes from the previous
    # checkpoint and drops the rows past it; the other way round it would lose the rows
    # of an epoch its checkpoint holds.
    assert run.log is not None
    run.log.flush()
    state = TrainState(step=run.step, epoch=epoch + 1, optimizer=run.optimizer.state_dict(),
                       scheduler=run.scheduler.state_dict(), rng=rng, rank_rng=ranks,
                       scaler=run.scaler.state_dict() if run.scaler is not None else None)
    save_checkpoint(run.out / LAST, run.model, run.model_cfg,
                    extra_config={**stored_sections(run.cfg.as_dict()),
                                  "weights_report": run.weights_report},
                    train_state=state)


def train(cfg: RunConfig, out: str | Path, *, resume: bool = False, progress: bool = True,
          stop_after: int | None = None,
          validate: Callable[[nn.Module], Mapping[str, float]] | None = None) -> TrainResult:
    """Train the configured model on ``data.root``; checkpoints and logs go to ``out``.

    Args:
        cfg: the validated run configuration.
        out: run folder (``log.csv``, ``last/``).
        resume: continue from ``out/last`` (weights, optimizer, scheduler, counters, RNG).
        progress: show a tqdm progress bar (rank 0 only).
        stop_after: end this call after this many epochs (the schedule still spans
            ``train.epochs``; continue later with ``resume=True``), e.g. for time-limited jobs.
        validate: called with the model every ``train.eval_every`` epochs and after the
            last epoch — under ``torchrun`` on every rank at once, so it may split its
            work with collective calls (one without them runs whole on each rank); its values
            (e.g. ``val_R@1``; rank 0's) go to ``log.csv``, to TensorBoard and to
            :attr:`TrainResult.validation`. See
            :func:`mcgf.evaluation.validation.university_validator`.

    Raises:
        UserError: bad data, a model config that does not fit the checkpoint, a model
            that is not trainable, or nothing to resume.
    """
    with run_lock(out):
        return _train(cfg, Path(out), resume, progress, stop_after, validate)


def run_lock(out: str | Path) -> contextlib.AbstractContextManager[None]:
    """The lock of the run folder ``out`` (:func:`mcgf.fileio.folder_lock`), held by the
    process of rank 0 (the one that writes there): a second run or ``--resume`` into the
    same folder stops with one line rather than interleaving the two runs' checkpoints
    and logs, or deleting the other's checkpoint write as a killed one's leftover."""
    if launcher_rank() != 0:
        return contextlib.nullcontext()
    return folder_lock(out, f"{out} is in use by another mcgf train (a run or --resume "
                            "going on there): wait for it to end, or train into another --out")


def _train(cfg: RunConfig, out: Path, resume: bool, progress: bool, stop_after: int | None,
           validate: Callable[[nn.Module], Mapping[str, float]] | None) -> TrainResult:
    """:func:`train`, with the run folder locked."""
    run = setup_run(cfg, out, resume=resume, progress=progress)
    started = time.perf_counter()
    final: dict[str, float] = {}
    validation: dict[str, float] = {}
    tc = cfg.train
    end_epoch = tc.epochs if stop_after is None else min(tc.epochs, run.start_epoch + stop_after)
    try:
        for epoch in range(run.start_epoch, end_epoch):
            final = train_one_epoch(run, epoch)
            validation = _end_epoch(run, epoch, final, validate, started) or validation
    finally:
        # On an error too: each interrupted train() of a notebook otherwise kept its
        # TensorBoard writer's thread and unflushed events.
        if run.log is not None:
            run.log.close()
    if run.dist.world > 1:
        import torch.distributed as dist

        dist.barrier()
    # Epochs the checkpoint holds: a resumed run already past train.epochs trains none.
    return TrainResult(run.out / LAST, run.step, max(end_epoch, run.start_epoch), final,
                       time.perf_counter() - started, validation)


#: Fewest images of each view a batch trains with: a head's BatchNorm needs two samples
#: (every planned batch has ``P >= 2`` locations; only ``on_bad_image=skip`` leaves fewer).
MIN_VIEW_IMAGES = 2


def _on_every_rank(ok: bool, device: torch.device) -> bool:
    """Whether ``ok`` holds on every rank (a collective call)."""
    import torch.distributed as dist

    flag = torch.tensor([int(ok)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def _batches(loader: Any, keep_rng: bool = False,
             agree: Callable[[bool], bool] | None = None) -> Iterator[dict[str, Any]]:
    """The loader's batches, skipping ones that ``on_bad_image=skip`` left with fewer
    than :data:`MIN_VIEW_IMAGES` images of a view.

    ``agree``: under DDP, turns this rank's "trainable" into the verdict of all ranks
    (:func:`_on_every_rank`), so that every rank skips the same batches.

    ``keep_rng``: leave torch's global RNG as it was while the loader starts (the loop:
    after the first epoch). A loader draws its workers' base seed from that RNG when it
    creates its iterator: every epoch without workers, but once per run with persistent
    workers, at its first epoch, and again when a resumed run starts it at a later one.
    Drawing at the first epoch only, as persistent workers do, keeps every later random
    number (dropout) independent of the number of workers and of where the run was
    resumed. Items do not depend on the workers' seeds (their randomness is seeded per
    item).
    """
    from mcgf.data.datasets import raise_unreadable

    if keep_rng:
        state = torch.get_rng_state()
        batches = iter(loader)
        torch.set_rng_state(state)
    else:
        batches = iter(loader)
    for batch in batches:
        raise_unreadable(batch)
        ok = min(len(batch["drone"]), len(batch["satellite"])) >= MIN_VIEW_IMAGES
        if agree is not None:
            ok = agree(ok)
        if ok:
            yield batch


__all__ = ["StepResult", "TrainResult", "TrainRun", "build_dataset", "check_resumable",
           "encoder_gradient_norms", "finished_run", "read_train_split", "run_lock", "same_model",
           "seed_everything", "setup_run", "train", "train_one_epoch", "train_step"]
