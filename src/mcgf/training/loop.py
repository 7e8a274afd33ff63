"""The training loop: University-1652 train split → MCGF model, single process or DDP.

One function, :func:`train`, does the whole run from a :class:`RunConfig`:

* data: :class:`~mcgf.data.datasets.CrossViewTrainSet` with drone weather on the fly
  (:class:`~mcgf.weather.WeatherTransform`, fresh per epoch) and the clean drone image as
  restoration target when ``train.lambda_restore > 0``; batches from
  :class:`~mcgf.data.sampler.CrossViewBatchSampler` (``P`` locations × ``M`` drones);
* AdamW over ``model.param_groups`` with warmup + cosine LR per optimizer step, gradient
  accumulation, bf16 autocast on CUDA only;
* ``OUT/log.csv`` and a checkpoint ``OUT/last`` (weights, resolved config, optimizer,
  scheduler, counters, RNG states) at each epoch end. Rows hold every loss term the
  model returns and, on each logged step, the gradient norm each weighted term sends
  into the encoder (:func:`encoder_gradient_norms`).

Resuming restarts at the epoch boundary of ``OUT/last``. The sampler plan and the weather
depend only on ``(seed, epoch)``, and every RNG is restored, so a resumed single-process
run reproduces the uninterrupted one. With several processes (``torchrun``, detected by
``WORLD_SIZE > 1``) only rank 0's RNG state is saved: resumes there are correct but not
bit-identical.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mcgf.data.layout import ClassFolderSet, aligned_classes
from mcgf.errors import UserError
from mcgf.training.checkpoint import (
    TrainState,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from mcgf.training.config import RunConfig
from mcgf.training.logging import TrainLog
from mcgf.training.schedule import warmup_cosine_scheduler

LAST = "last"


@dataclass
class TrainResult:
    """What :func:`train` returns: where the checkpoint is and the last epoch's mean losses."""

    checkpoint: Path
    steps: int
    epochs: int
    final_losses: dict[str, float]
    seconds: float
    validation: dict[str, float] = field(default_factory=dict)


def encoder_gradient_norms(
    terms: Mapping[str, torch.Tensor],
    params: list[nn.Parameter],
    weights: Mapping[str, float],
) -> dict[str, float]:
    """L2 norm of ``d(weight · term) / d(params)`` per loss term, as ``grad_encoder_<term>``.

    Args:
        terms: loss terms with their autograd graph (``total`` is skipped).
        params: the encoder parameters.
        weights: each term's weight in ``total`` (a term not listed: 1).

    One ``torch.autograd.grad`` pass per term with ``retain_graph=True``, before the real
    backward: the cost is up to one extra backward pass (through the part of the graph
    between the term and the encoder) per term, so call it only on logged steps. Nothing
    is accumulated into ``.grad``. A term that does not reach the encoder gives 0.
    """
    out: dict[str, float] = {}
    for name, term in terms.items():
        if name == "total" or not term.requires_grad:
            continue
        weight = float(weights.get(name, 1.0))
        grads = torch.autograd.grad(weight * term, params, retain_graph=True, allow_unused=True)
        present = [g for g in grads if g is not None]
        norm = torch.nn.utils.get_total_norm(present) if present else torch.zeros(())
        out[f"grad_encoder_{name}"] = float(norm)
    return out


class _Objective(nn.Module):
    """``forward(batch) -> loss terms`` so that DDP sees the loss pass as ``forward``
    (calling ``model.loss`` on a DDP-wrapped module would skip gradient sync)."""

    def __init__(self, model: nn.Module, lambda_restore: float, infonce: float,
                 label_smoothing: float, consistency: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.kw = {"lambda_restore": lambda_restore, "infonce": infonce,
                   "label_smoothing": label_smoothing}
        if consistency > 0:
            self.kw["consistency"] = consistency

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        kw = dict(self.kw)
        return self.model.loss(batch, kw.pop("lambda_restore"), **kw)


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
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return _Dist(world, dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")))


def _device(kind: str, dist_info: _Dist) -> torch.device:
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise UserError("train.device is 'cuda' but no CUDA device is visible: use 'auto' or 'cpu'")
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
    from mcgf.data.layouts import find_dataset

    return find_dataset(root, layout or None, option="data.layout").read_train()


def build_dataset(cfg: RunConfig, drone: ClassFolderSet, satellite: ClassFolderSet,
                  input_size: tuple[int, int], mean: tuple[float, ...], std: tuple[float, ...]) -> Any:
    """The :class:`~mcgf.data.datasets.CrossViewTrainSet` over ``drone``/``satellite`` with
    the model's input transforms and the configured weather."""
    from mcgf.data.datasets import CrossViewTrainSet
    from mcgf.data.transforms import Preprocess, TrainAugment

    # The evaluation's preprocessing, so that training and test images match, then the
    # configured random augmentation.
    base = Preprocess(tuple(input_size), tuple(mean), tuple(std))  # type: ignore[arg-type]
    d = cfg.data
    drone_tf = TrainAugment(base, flip=d.drone_flip, scale=d.scale_jitter, translate=d.shift_jitter)
    satellite_tf = TrainAugment(base, flip=d.satellite_flip, rotate=d.satellite_rotate,
                                scale=d.scale_jitter, translate=d.shift_jitter)
    weather = None
    if cfg.weather.conditions != "none":
        from mcgf.weather import WeatherTransform

        weather = WeatherTransform(cfg.weather.conditions, seed=cfg.weather.seed,
                                   dark_variant=cfg.weather.dark_variant,
                                   clean_fraction=cfg.weather.clean_fraction)
    return CrossViewTrainSet(
        drone, satellite,
        drone_transform=drone_tf, satellite_transform=satellite_tf,
        degrade=weather, return_clean=cfg.train.lambda_restore > 0 or cfg.train.consistency > 0,
        on_bad_image=cfg.data.on_bad_image,  # type: ignore[arg-type]
        augment_seed=cfg.train.seed,
    )


def finished_run(out: str | Path, cfg: RunConfig) -> bool:
    """Whether ``out/last`` holds a run of exactly ``cfg`` trained to ``train.epochs``.

    Reads ``config.json`` and ``state.pt`` only (no model is built); ``model.num_classes``,
    filled in from the data at training time, is not compared. Anything unreadable
    counts as not finished.
    """
    from mcgf.training.checkpoint import read_config, read_train_state

    try:
        saved = read_config(Path(out) / LAST)
        state = read_train_state(Path(out) / LAST)
    except UserError:
        return False
    want = cfg.as_dict()
    model = {k: v for k, v in saved.get("model", {}).items() if k != "num_classes"}
    return (all(saved.get(k) == v for k, v in want.items() if k != "model")
            and model == {k: v for k, v in want["model"].items() if k != "num_classes"}
            and state.epoch == cfg.train.epochs)


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
            for k, v in batch.items()}


def _resolve_model_config(cfg: RunConfig, num_classes: int) -> dict[str, Any]:
    model_cfg = dict(cfg.model)
    given = model_cfg.setdefault("num_classes", num_classes)
    if given != num_classes:
        raise UserError(f"model.num_classes is {given} but {cfg.data.root} has {num_classes} "
                        "training locations: remove model.num_classes (it is set from the data)")
    return model_cfg


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
        validate: called on rank 0 with the model every ``train.eval_every`` epochs and
            after the last epoch; its values (e.g. ``val_R@1``) go to ``log.csv``, to
            TensorBoard and to :attr:`TrainResult.validation`. See
            :func:`mcgf.evaluation.validation.university_validator`.

    Raises:
        UserError: bad data, a model config that does not fit the checkpoint, or nothing
            to resume.
    """
    from tqdm import tqdm

    from mcgf.data.datasets import EpochTagged, collate_cross_view
    from mcgf.data.sampler import CrossViewBatchSampler
    from mcgf.models.model_registry import create_model

    out = Path(out)
    tc = cfg.train
    device_kind = "cuda" if tc.device == "cuda" or (tc.device == "auto" and torch.cuda.is_available()) else "cpu"
    dist_info = _init_distributed(device_kind)
    device = _device(tc.device, dist_info)
    seed_everything(tc.seed)

    ckpt = None
    if resume:
        last = out / LAST
        if not (last / "state.pt").is_file():
            raise UserError(f"--resume: {last} holds no resumable checkpoint (train without --resume first)")
        ckpt = load_checkpoint(last, map_location="cpu", load_train_state=True)

    # The transforms need the model's input size and the model needs the class count:
    # count classes from the folder listing, build the model, then the dataset.
    drone, satellite = read_train_split(cfg.data.root, cfg.data.layout)
    model_cfg = _resolve_model_config(cfg, len(aligned_classes(drone, satellite)))
    if ckpt is not None:
        saved = dict(ckpt.config["model"])
        if saved != model_cfg:
            raise UserError(f"--resume: the model section differs from {out / LAST}/config.json: "
                            "resume with the same model options (or start a new --out)")
    seed_everything(tc.seed)
    model = create_model(**model_cfg)
    if ckpt is not None:
        model.load_state_dict(ckpt.model.state_dict())
    model.to(device).train()
    dataset = build_dataset(cfg, drone, satellite, model.input_size, model.mean, model.std)

    sampler = CrossViewBatchSampler(dataset.location_index, cfg.data.locations_per_batch,
                                    cfg.data.drones_per_location, seed=tc.seed,
                                    num_replicas=dist_info.world, rank=dist_info.rank)
    loader = torch.utils.data.DataLoader(
        # Indices carry their epoch, so persistent workers follow the weather epoch and
        # seed each item's augmentation from (seed, epoch, index): no worker start-up per
        # epoch, and items do not depend on the worker count.
        dataset, batch_sampler=EpochTagged(sampler), collate_fn=collate_cross_view,
        num_workers=cfg.data.workers, pin_memory=device.type == "cuda",
        persistent_workers=cfg.data.workers > 0,
    )
    micro_per_epoch = len(sampler)
    steps_per_epoch = math.ceil(micro_per_epoch / tc.accumulate)
    total_steps = steps_per_epoch * tc.epochs

    groups = (model.param_groups(tc.lr, tc.weight_decay, tc.layer_decay)
              if hasattr(model, "param_groups") else
              [{"params": [p for p in model.parameters() if p.requires_grad], "lr": tc.lr,
                "weight_decay": tc.weight_decay}])
    optimizer = torch.optim.AdamW(groups, lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = warmup_cosine_scheduler(optimizer, total_steps, tc.warmup_steps, tc.min_lr_ratio)

    objective: nn.Module = _Objective(model, tc.lambda_restore, tc.infonce, tc.label_smoothing,
                                      tc.consistency)
    encoder_params = (list(model.encoder_parameters()) if hasattr(model, "encoder_parameters")
                      else [])
    term_weights = {"ce": 1.0, "infonce": tc.infonce, "restore": tc.lambda_restore,
                    "consistency": tc.consistency}
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        objective = DDP(objective, device_ids=[device.index] if device.type == "cuda" else None,
                        find_unused_parameters=True)

    step, start_epoch = 0, 0
    if ckpt is not None and ckpt.train_state is not None:
        st = ckpt.train_state
        optimizer.load_state_dict(st.optimizer or {})
        scheduler.load_state_dict(st.scheduler or {})
        # The schedule follows this run's config (e.g. more epochs), not the saved one.
        scheduler.lr_lambdas[0].__dict__.update(total_steps=total_steps,
                                                warmup_steps=tc.warmup_steps, min_ratio=tc.min_lr_ratio)
        step, start_epoch = st.step, st.epoch
        if st.rng is not None:
            restore_rng_state(st.rng)
        del ckpt

    log = TrainLog(out, keep_until_step=step if resume else None, tensorboard=dist_info.main) \
        if dist_info.main else None
    if log is not None and log.note and progress:
        print(log.note)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                if device.type == "cuda" and tc.amp == "auto" else contextlib.nullcontext())
    t_run = time.perf_counter()
    final: dict[str, float] = {}
    validation: dict[str, float] = {}
    end_epoch = tc.epochs if stop_after is None else min(tc.epochs, start_epoch + stop_after)
    for epoch in range(start_epoch, end_epoch):
        sampler.set_epoch(epoch)  # EpochTagged passes it on to the dataset's weather
        # Per term: sum and count over the epoch, and over the log window in optimizer
        # steps (a term absent from some micro-batches is averaged over the others).
        sums: dict[str, float] = {}
        seen: dict[str, int] = {}
        window: dict[str, Any] = {"images": 0, "t": time.perf_counter(), "terms": {}, "weight": {},
                                  "n": 0}
        grad_norms: dict[str, float] = {}
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{tc.epochs}", unit="step",
                   disable=not (progress and dist_info.main), leave=False)
        optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(_batches(loader)):
            batch = _to_device(batch, device)
            last_micro = (i + 1) % tc.accumulate == 0 or i + 1 == micro_per_epoch
            n_micro = (tc.accumulate if (i // tc.accumulate + 1) * tc.accumulate <= micro_per_epoch
                       else micro_per_epoch % tc.accumulate)
            logged = last_micro and ((window["n"] + 1) % tc.log_every == 0 or i + 1 == micro_per_epoch)
            sync = contextlib.nullcontext() if last_micro or dist_info.world == 1 else objective.no_sync()
            with sync:
                with autocast:
                    terms = objective(batch)
                if logged and dist_info.main and encoder_params:
                    grad_norms = encoder_gradient_norms(terms, encoder_params, term_weights)
                (terms["total"] / n_micro).backward()
            for k, val in _mean_over_ranks(terms, dist_info.world).items():
                if not math.isfinite(val):
                    raise FloatingPointError(f"loss term {k} is {val} at step {step} (epoch {epoch + 1}); "
                                             "lower train.lr or enable train.grad_clip")
                sums[k] = sums.get(k, 0.0) + val
                seen[k] = seen.get(k, 0) + 1
                window["terms"][k] = window["terms"].get(k, 0.0) + val / n_micro
                window["weight"][k] = window["weight"].get(k, 0.0) + 1.0 / n_micro
            window["images"] += (len(batch["drone"]) + len(batch["satellite"])) * dist_info.world
            if not last_micro:
                continue
            if tc.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            lr = optimizer.param_groups[-1]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            window["n"] += 1
            bar.update(1)
            if window["n"] % tc.log_every == 0 or i + 1 == micro_per_epoch:
                now = time.perf_counter()
                ips = window["images"] / max(now - window["t"], 1e-9)
                row: dict[str, Any] = {"step": step, "epoch": epoch + 1, "lr": lr}
                row.update({k: v / window["weight"][k] for k, v in window["terms"].items()})
                row["images_per_s"] = ips
                row.update(grad_norms)
                bar.set_postfix(loss=f"{row['total']:.4f}", img_s=f"{ips:.1f}")
                if log is not None:
                    log.add(row)
                window.update(images=0, t=now, terms={}, weight={})
                grad_norms = {}
        bar.close()
        final = {k: sums[k] / seen[k] for k in sums}
        due = tc.eval_every > 0 and ((epoch + 1) % tc.eval_every == 0 or epoch + 1 == tc.epochs)
        if validate is not None and dist_info.main and due:
            validation = {k: float(v) for k, v in validate(model).items()}
            if log is not None:
                log.add({"step": step, "epoch": epoch + 1, **validation})
            if progress:
                print(f"epoch {epoch + 1}/{tc.epochs}: " +
                      ", ".join(f"{k} {v:.4g}" for k, v in validation.items()))
        if dist_info.main:
            save_checkpoint(out / LAST, model, model_cfg,
                            extra_config={k: v for k, v in cfg.as_dict().items() if k != "model"},
                            train_state=TrainState(step=step, epoch=epoch + 1,
                                                   optimizer=optimizer.state_dict(),
                                                   scheduler=scheduler.state_dict(),
                                                   rng=capture_rng_state()))
            assert log is not None
            log.flush()
            if progress:
                loss_txt = ", ".join(f"{k} {v:.4f}" for k, v in final.items())
                print(f"epoch {epoch + 1}/{tc.epochs}: {loss_txt} (step {step}, "
                      f"{time.perf_counter() - t_run:.1f} s)")
    if log is not None:
        log.close()
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()
    return TrainResult(out / LAST, step, end_epoch, final, time.perf_counter() - t_run, validation)


def _mean_over_ranks(terms: Mapping[str, torch.Tensor], world: int) -> dict[str, float]:
    """Loss terms as floats, averaged over ranks under DDP so that the log shows the loss
    of the global batch (what one process with the same batch would log)."""
    names = sorted(terms)
    values = torch.stack([terms[k].detach().float() for k in names])
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(values)
        values /= world
    return dict(zip(names, values.tolist(), strict=True))


def _batches(loader: Any) -> Iterator[dict[str, Any]]:
    """The loader's batches, skipping ones left without a view by ``on_bad_image=skip``."""
    for batch in loader:
        if len(batch["drone"]) and len(batch["satellite"]):
            yield batch


__all__ = ["TrainResult", "build_dataset", "encoder_gradient_norms", "finished_run",
           "read_train_split", "seed_everything", "train"]
