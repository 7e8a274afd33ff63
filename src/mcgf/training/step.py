"""One optimizer step of training: what :func:`mcgf.training.loop.train` runs per step and
what the benchmarks time.

:func:`train_step` takes the micro-batches of one optimizer step and does, for each,
``model.loss`` (through :class:`Objective`, so that DDP sees it as ``forward``) under the
given autocast, the backward of ``total`` divided by the number of micro-batches (DDP
gradient sync on the last one only; through a loss scaler under fp16); then optional
gradient clipping, the optimizer step, the clamp of bounded parameters
(:func:`~mcgf.models.base.clamp_parameters`), the scheduler step and ``zero_grad``. The loss terms of
all micro-batches are read back from the device once, after the last backward
(:func:`mean_over_ranks`): each read waits for the GPU to finish. On request it also
measures, on the last micro-batch, the gradient norm each weighted loss term sends into
the encoder (:func:`encoder_gradient_norms`).
"""

from __future__ import annotations

import contextlib
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from mcgf.models.base import NotTrainableError, clamp_parameters
from mcgf.training.logging import loss_term_name

Batch = dict[str, Any]


class Objective(nn.Module):
    """``forward(batch) -> model.loss(batch, generator=...)``.

    DDP synchronises gradients of what runs as ``forward``: calling ``model.loss`` on a
    DDP-wrapped module would skip the sync, so the loop wraps this module instead.

    Args:
        model: a :class:`~mcgf.models.base.TrainableModel`.
        generator: the dedicated generator for the model's own random draws (see
            :func:`model_generator`); ``None``: torch's global RNG.
    """

    def __init__(self, model: nn.Module, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.model = model
        self.generator = generator

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        terms = self.model.loss(batch, generator=self.generator)
        problem = loss_terms_problem(terms)
        if problem:
            raise NotTrainableError(f"{type(self.model).__name__}.loss {problem} (see "
                                    "mcgf.models.base.TrainableModel)")
        return terms


def loss_terms_problem(terms: Any) -> str | None:
    """What is wrong with what a model's ``loss`` returned (``None``: nothing): the step
    needs a dict of scalar tensors with ``total`` among them, to back-propagate ``total``
    and to read every term back in one stacked copy, named unlike ``log.csv``'s own
    columns (``step``, ``epoch``, ``lr``, ``images_per_s``, ``val_*``, ``grad_*``)."""
    if not isinstance(terms, Mapping):
        return f"returned {type(terms).__name__}, not a dict of loss terms"
    if "total" not in terms:
        return f"returned no 'total' term (it returned {', '.join(map(str, terms)) or 'nothing'})"
    for name, term in terms.items():
        if not loss_term_name(str(name)):
            return (f"returned term {name!r}, a name log.csv keeps for its own column: rename "
                    "the term")
        if not isinstance(term, torch.Tensor):
            return f"returned term {name!r} as {type(term).__name__}, not a tensor"
        if term.ndim != 0:
            return f"returned term {name!r} of shape {tuple(term.shape)}, not a scalar tensor"
    return None


def model_generator(seed: int, rank: int, device: torch.device) -> torch.Generator:
    """The generator of a model's own random draws (the restoration branch's diffusion t
    and noise) on ``device``, seeded from ``(seed, rank)``.

    Kept apart from torch's global RNG so that turning such a part on or off leaves
    dropout masks and everything else drawn from the global RNG unchanged (ablation
    variants of one seed are paired); distinct per rank so that ranks draw different noise.
    """
    words = np.random.SeedSequence([int(seed), int(rank), 0x6D6F64]).generate_state(2, np.uint32)
    gen = torch.Generator(device=device)
    gen.manual_seed(int(words[0]) << 31 | int(words[1]) >> 1)
    return gen


def unwrap(objective: nn.Module) -> nn.Module:
    """The model inside an :class:`Objective`, DDP-wrapped or not."""
    inner = getattr(objective, "module", objective)  # DistributedDataParallel
    return getattr(inner, "model", inner)


def encoder_gradient_norms(
    terms: Mapping[str, torch.Tensor],
    params: list[nn.Parameter],
    weights: Mapping[str, float],
) -> dict[str, float]:
    """L2 norm of ``d(weight · term) / d(params)`` per loss term, as ``grad_encoder_<term>``.

    Args:
        terms: loss terms with their autograd graph (``total`` is skipped).
        params: the encoder parameters.
        weights: each term's weight in ``total`` (a term not listed: 1), the model's
            ``loss_weights``.

    One ``torch.autograd.grad`` pass per term with ``retain_graph=True``, before the real
    backward: the cost is up to one extra backward pass (through the part of the graph
    between the term and the encoder) per term, so call it only on logged steps. Nothing
    is accumulated into ``.grad``. A term that does not reach the encoder gives 0. A model
    whose encoder has no trainable parameter (a frozen encoder) gives no entry at all.
    """
    out: dict[str, float] = {}
    if not params:
        return out
    for name, term in terms.items():
        if name == "total" or not term.requires_grad:
            continue
        weight = float(weights.get(name, 1.0))
        grads = torch.autograd.grad(weight * term, params, retain_graph=True, allow_unused=True)
        present = [g for g in grads if g is not None]
        norm = torch.nn.utils.get_total_norm(present) if present else torch.zeros(())
        out[f"grad_encoder_{name}"] = float(norm)
    return out


def mean_over_ranks(
    terms: Sequence[Mapping[str, torch.Tensor]], world: int, names: Iterable[str] = ()
) -> list[dict[str, float]]:
    """Each micro-batch's loss terms as floats, averaged over ranks under DDP so that the
    log shows the loss of the global batch (what one process with the same batch logs).

    All micro-batches come back with one device-to-host copy (one host sync per optimizer
    step, however many micro-batches it accumulates) and, under DDP, one ``all_reduce``.

    Args:
        terms: per micro-batch, its loss terms (scalar tensors).
        world: the number of ranks (1: no communication).
        names: term names every rank reduces even where its own micro-batch lacks them
            (the model's ``loss_weights``): a rank whose batch had, say, no weathered image
            and so no restoration term still sends a vector of the same length, and a
            term's mean is over the ranks that had it.
    """
    if not terms:
        return []
    if world == 1:
        keys = [sorted(t) for t in terms]
        flat = torch.cat([torch.stack([t[k].detach().float() for k in ks])
                          for t, ks in zip(terms, keys, strict=True)]).tolist()
        out, i = [], 0
        for ks in keys:
            out.append(dict(zip(ks, flat[i:i + len(ks)], strict=True)))
            i += len(ks)
        return out
    import torch.distributed as dist

    keys = sorted(set(names).union(*terms))
    device = next(iter(terms[0].values())).device
    zero = torch.zeros((), device=device)
    # Per micro-batch: the values (0 where absent), then 1/0 for present/absent.
    rows = [torch.stack([t[k].detach().float() if k in t else zero for k in keys]
                        + [zero + (k in t) for k in keys]) for t in terms]
    summed = torch.stack(rows)
    dist.all_reduce(summed)
    out = []
    for row in summed.tolist():
        values, counts = row[:len(keys)], row[len(keys):]
        out.append({k: v / c for k, v, c in zip(keys, values, counts, strict=True) if c > 0})
    return out


@dataclass
class StepResult:
    """What one :func:`train_step` did.

    Attributes:
        terms: per micro-batch, its loss terms as floats (averaged over ranks).
        lr: the learning rate of the last parameter group during the step.
        images: drone plus satellite images of the step, all ranks together.
        grad_norms: ``grad_encoder_<term>`` of the last micro-batch (when asked for).
    """

    terms: list[dict[str, float]]
    lr: float
    images: int
    grad_norms: dict[str, float] = field(default_factory=dict)

    def mean_terms(self) -> dict[str, float]:
        """Each term's mean over the micro-batches that have it."""
        names = dict.fromkeys(k for t in self.terms for k in t)
        return {k: statistics.fmean(t[k] for t in self.terms if k in t) for k in names}


def _world(objective: nn.Module) -> int:
    if hasattr(objective, "no_sync") and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def _to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
            for k, v in batch.items()}


def train_step(
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None,
    batch: Batch | Sequence[Batch],
    *,
    autocast: contextlib.AbstractContextManager[Any] | None = None,
    grad_clip: float | None = None,
    grad_norms: bool = False,
    scaler: torch.amp.GradScaler | None = None,
) -> StepResult:
    """One optimizer step over ``batch`` (one batch, or the micro-batches to accumulate).

    Args:
        objective: an :class:`Objective` (or its DDP wrapper).
        optimizer: steps the model's parameters; zeroed afterwards (``set_to_none``).
        scheduler: stepped after the optimizer (``None``: no schedule).
        batch: a batch dict or a list of micro-batches; each is moved to the model's device.
        autocast: entered around each loss pass (``None``: full precision).
        grad_clip: clip the model's gradient norm to this (``None``: no clipping).
        grad_norms: also measure the encoder gradient norm of each weighted term on the
            last micro-batch (:func:`encoder_gradient_norms`; extra backward passes).
        scaler: the loss scaler of fp16 autocast (:func:`mcgf.runtime.grad_scaler`):
            backward runs on the scaled loss, gradients are unscaled before clipping, and
            the optimizer step is skipped when they overflowed. ``None``: plain steps.

    Returns:
        The :class:`StepResult`.

    Raises:
        FloatingPointError: a loss term is not finite (no optimizer step is taken).
    """
    micro = [batch] if isinstance(batch, Mapping) else list(batch)
    if not micro:
        raise ValueError("train_step needs at least one batch")
    model = unwrap(objective)
    device = next(model.parameters()).device
    world = _world(objective)
    result = StepResult([], optimizer.param_groups[-1]["lr"], 0)
    pending: list[dict[str, torch.Tensor]] = []
    for i, mb in enumerate(micro):
        mb = _to_device(mb, device)
        last = i + 1 == len(micro)
        sync = contextlib.nullcontext() if last or world == 1 else objective.no_sync()
        with sync:
            with autocast if autocast is not None else contextlib.nullcontext():
                terms = objective(mb)
            if last and grad_norms:
                result.grad_norms = encoder_gradient_norms(
                    terms, list(model.encoder_parameters()), model.loss_weights)
            loss = terms["total"] / len(micro)
            (scaler.scale(loss) if scaler is not None else loss).backward()
        pending.append({k: v.detach() for k, v in terms.items()})
        result.images += (len(mb["drone"]) + len(mb["satellite"])) * world
    # The terms are read back once per step, not per micro-batch (each read waits for the
    # GPU); a non-finite one still stops the step before the optimizer moves.
    result.terms = mean_over_ranks(pending, world, getattr(model, "loss_weights", {}))
    for values in result.terms:
        for k, val in values.items():
            if not math.isfinite(val):
                optimizer.zero_grad(set_to_none=True)
                raise FloatingPointError(f"loss term {k} is {val}")
    if grad_clip is not None:
        if scaler is not None:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    clamp_parameters(model)
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return result


__all__ = ["Objective", "StepResult", "encoder_gradient_norms", "loss_terms_problem",
           "mean_over_ranks", "model_generator", "train_step", "unwrap"]
