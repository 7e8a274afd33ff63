"""What a trainable model provides: the contract between :mod:`mcgf.training` and a model.

Every model registered with :func:`mcgf.models.model_registry.register_model` for
training meets :class:`TrainableModel`. The training loop, the benchmarks and the
checkpoint embedder use nothing else, so a new method (one module and one config) trains,
logs, checkpoints and evaluates without edits elsewhere:

``input_size``, ``mean``, ``std``
    ``(height, width)`` the images are resized to and the per-channel normalisation of
    ``[0, 1]`` pixels the model expects (the loader's transforms and the evaluation's).
``embed(images, view)``
    Retrieval embedding ``(B, D)``, L2-normalised, for ``view`` ``"drone"`` or
    ``"satellite"``; called in ``eval()`` mode.
``loss(batch, *, generator=None)``
    The training objective of one batch (see :mod:`mcgf.models.mcgf_model` for the batch
    keys) as a dict of scalar tensors: ``total``, the sum that is optimised, plus any named
    terms (``ce``, ``restore``, ...). The model applies its own term weights (its options:
    the config's ``model:`` section) inside ``total``; each term is returned unweighted
    and ``loss_weights`` says its weight. ``generator``: a dedicated
    :class:`torch.Generator` on the model's device for the model's own random draws that
    must not consume torch's global RNG (e.g. diffusion noise), so that turning such a
    part on or off leaves dropout and everything else unchanged; ``None`` draws from the
    global RNG. The loop logs every returned key (``log.csv`` columns, TensorBoard).
``loss_weights``
    ``{term: weight}``: the weight of each returned term in ``total`` (a term not listed
    has weight 1). The per-term encoder gradient norms are ``d(weight · term)/d(encoder)``.
``param_groups(lr, weight_decay, layer_decay)``
    AdamW parameter groups (``layer_decay`` ``None``: no layer-wise decay).
``encoder_parameters()``
    The trainable encoder parameters, each once: what the per-term gradient norms measure.
``needs_clean_targets``
    Whether the training batches must hold ``drone_clean``, the clean twin of each
    weathered drone image (restoration targets, consistency pairs); loading it costs an
    extra transform per drone image, so a model that does not use it says ``False``.

:class:`TrainableMixin` provides the defaults a simple model can inherit
(``needs_clean_targets = False``, unit ``loss_weights``, two decay groups over every
parameter: none on vectors, scalars and what a submodule's ``no_weight_decay()`` lists).
:func:`check_trainable` is the run-time check: it names what a model lacks, and an
``input_size``, ``mean`` or ``std`` the loader cannot use (:func:`input_spec_problems`).
A model may also define ``training_problem()``, returning ``None`` or one line saying why training it
as configured is pointless (e.g. a frozen encoder without weights); the check then
refuses it with that line. Any submodule may define ``clamp_parameters_()``, which the
training step calls after each optimizer step to put bounded parameters back in range
(:func:`clamp_parameters`).
"""

from __future__ import annotations

import fnmatch
import inspect
import numbers
from collections.abc import Collection, Iterable, Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from mcgf.errors import UserError


@runtime_checkable
class TrainableModel(Protocol):
    """What :func:`mcgf.training.loop.train` needs from a model (see the module docstring)."""

    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    needs_clean_targets: bool

    @property
    def loss_weights(self) -> Mapping[str, float]:
        """Weight of each loss term in ``total`` (unlisted terms: 1)."""
        ...

    def embed(self, images: torch.Tensor, view: str) -> torch.Tensor:
        """``(B, 3, H, W)`` normalised images of ``view`` → ``(B, D)`` L2-normalised."""
        ...

    def loss(self, batch: dict[str, Any], *,
             generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Scalar loss terms of ``batch``, ``total`` (the weighted sum) among them."""
        ...

    def param_groups(self, lr: float, weight_decay: float,
                     layer_decay: float | None = None) -> list[dict[str, Any]]:
        """AdamW parameter groups."""
        ...

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The trainable encoder parameters, each once."""
        ...


#: Attributes of :class:`TrainableModel` (values) and its methods (called).
_ATTRIBUTES = ("input_size", "mean", "std", "needs_clean_targets", "loss_weights")
_METHODS = ("embed", "loss", "param_groups", "encoder_parameters")


def missing_members(model: Any) -> list[str]:
    """What ``model`` lacks of :class:`TrainableModel`, as ``name`` or ``name(...)``
    entries in contract order (empty: it meets the contract). ``loss`` must also take a
    ``generator`` keyword."""
    missing = [name for name in _ATTRIBUTES if not hasattr(model, name)]
    for name in _METHODS:
        method = getattr(model, name, None)
        if not callable(method):
            missing.append(f"{name}()")
        elif name == "loss" and not takes_keyword(method, "generator"):
            missing.append("loss(batch, *, generator=None)")
    return missing


def input_spec_problems(model: Any) -> list[str]:
    """What is wrong with ``model``'s ``input_size``, ``mean`` and ``std`` (empty: nothing):
    the loader resizes to a ``(height, width)`` pair of positive integers and normalises
    the three colour channels of ``[0, 1]`` pixels with three means and three positive
    standard deviations."""

    def reals(value: Any, count: int) -> list[Any] | None:
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            return None
        items = list(value)
        ok = len(items) == count and all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                                         for v in items)
        return items if ok else None

    problems = []
    size = reals(model.input_size, 2)
    if size is None or not all(isinstance(v, numbers.Integral) and v >= 1 for v in size):
        problems.append(f"input_size must be (height, width), two positive integers "
                        f"(got {model.input_size!r})")
    if reals(model.mean, 3) is None:
        problems.append(f"mean must be three numbers, one per colour channel (got {model.mean!r})")
    std = reals(model.std, 3)
    if std is None or not all(v > 0 for v in std):
        problems.append(f"std must be three positive numbers, one per colour channel "
                        f"(got {model.std!r})")
    return problems


def unoptimised_parameters(model: nn.Module, groups: Iterable[Any], name: str | None = None) -> list[str]:
    """Names of ``model``'s trainable parameters that none of ``groups`` (its
    ``param_groups``: dicts with ``params``, or bare parameters) holds: they get gradients
    but the optimizer never moves them.

    Raises:
        NotTrainableError: a parameter held by two groups, or one that is not
            ``model``'s, named in one line.
    """
    names = {id(p): n for n, p in model.named_parameters()}
    what = f"model {name!r} ({type(model).__name__})" if name else type(model).__name__
    seen: set[int] = set()
    for group in groups:
        params = group["params"] if isinstance(group, Mapping) else group
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        for p in params:
            if id(p) not in names:
                raise NotTrainableError(f"{what} cannot be trained: its param_groups() hold a "
                                        f"parameter of shape {tuple(p.shape)} that is not the model's")
            if id(p) in seen:
                raise NotTrainableError(f"{what} cannot be trained: its param_groups() hold "
                                        f"{names[id(p)]} twice: put each parameter in one group")
            seen.add(id(p))
    return [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in seen]


def takes_keyword(fn: Any, name: str) -> bool:
    """Whether ``fn`` accepts the keyword argument ``name`` (by name, or through
    ``**kwargs``); a callable without a signature (a builtin) is trusted."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: trust it
        return True
    return any((p.name == name and p.kind is not inspect.Parameter.POSITIONAL_ONLY)
               or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


class NotTrainableError(UserError, TypeError):
    """A model that does not meet :class:`TrainableModel` was given to training."""


def check_trainable(model: Any, name: str | None = None, *, configured: bool = True) -> None:
    """Raise unless ``model`` meets :class:`TrainableModel`.

    Args:
        model: the built model.
        name: its registered name, for the message.
        configured: ``model`` was built with its configured initial weights, so its
            ``training_problem()`` applies; ``False`` for a model rebuilt without them to
            take a checkpoint's weights (a resumed run passed that check when it began).

    Raises:
        NotTrainableError: one line naming every missing attribute or method, or the
            model's own ``training_problem()``.
    """
    missing = missing_members(model)
    what = f"model {name!r} ({type(model).__name__})" if name else type(model).__name__
    if missing:
        raise NotTrainableError(
            f"{what} cannot be trained: it lacks {', '.join(missing)} (see "
            "mcgf.models.base.TrainableModel for what a trainable model provides)")
    wrong = input_spec_problems(model)
    if wrong:
        raise NotTrainableError(f"{what} cannot be trained: {'; '.join(wrong)}")
    problem = getattr(model, "training_problem", None) if configured else None
    message = problem() if callable(problem) else None
    if message:
        raise NotTrainableError(f"{what} cannot be trained: {message}")


class TrainableMixin:
    """Defaults for a :class:`TrainableModel` built on :class:`torch.nn.Module`.

    A subclass still provides ``input_size``, ``mean``, ``std``, ``embed``, ``loss`` and
    ``encoder_parameters``; it overrides these defaults where it differs.
    """

    #: No clean drone twins are loaded unless a model asks for them.
    needs_clean_targets: ClassVar[bool] = False

    @property
    def loss_weights(self) -> Mapping[str, float]:
        """No weighted terms: every term counts once in ``total``."""
        return {}

    def param_groups(self, lr: float, weight_decay: float,
                     layer_decay: float | None = None) -> list[dict[str, Any]]:
        """Every trainable parameter at ``lr``; ``layer_decay`` is ignored."""
        assert isinstance(self, nn.Module)
        return [g for g in decay_split(self.parameters(), lr, weight_decay,
                                       no_decay=no_weight_decay_ids(self)) if g["params"]]


def no_weight_decay_ids(module: nn.Module) -> set[int]:
    """``id`` of each parameter of ``module`` (at any depth) that its submodule lists in
    ``no_weight_decay()`` — timm's convention for parameters that must not shrink towards
    zero although they are not vectors: position embeddings, class, register and
    distillation tokens (names or ``fnmatch`` patterns relative to that submodule)."""
    ids: set[int] = set()
    for sub in module.modules():
        listed = getattr(sub, "no_weight_decay", None)
        if not callable(listed):
            continue
        patterns = [str(p) for p in listed()]
        ids.update(id(p) for name, p in sub.named_parameters()
                   if any(fnmatch.fnmatchcase(name, pat) for pat in patterns))
    return ids


def decay_split(params: Iterable[nn.Parameter], lr: float, weight_decay: float, *,
                no_decay: Collection[int] = frozenset()) -> list[dict[str, Any]]:
    """Two AdamW groups of the trainable ``params``: weight decay on matrices and kernels,
    none on vectors and scalars (biases, norms, temperatures) nor on the parameters whose
    ``id`` is in ``no_decay`` (e.g. :func:`no_weight_decay_ids`)."""
    params = [p for p in params if p.requires_grad]
    keep = [p.ndim <= 1 or id(p) in no_decay for p in params]
    return [
        {"params": [p for p, k in zip(params, keep, strict=True) if not k], "lr": lr,
         "weight_decay": weight_decay},
        {"params": [p for p, k in zip(params, keep, strict=True) if k], "lr": lr,
         "weight_decay": 0.0},
    ]


@torch.no_grad()
def clamp_parameters(model: nn.Module) -> None:
    """Call every submodule's ``clamp_parameters_()`` (after an optimizer step).

    A bound kept in the forward pass alone (e.g. a logit scale clamped there) stops the
    gradient once the parameter crosses it, so the parameter can never come back; CLIP
    clamps the parameter itself after each step, and so does this.
    """
    for module in model.modules():
        clamp = getattr(module, "clamp_parameters_", None)
        if callable(clamp):
            clamp()


__all__ = ["NotTrainableError", "TrainableMixin", "TrainableModel", "check_trainable",
           "clamp_parameters", "decay_split", "input_spec_problems", "missing_members",
           "no_weight_decay_ids", "takes_keyword", "unoptimised_parameters"]
