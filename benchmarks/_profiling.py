"""Timing of training steps and embedding passes on random tensors (no dataset needed),
and their model FLOPs.

Private helper of ``benchmarks/step_cost.py``, ``benchmarks/gpu_check.py``,
``benchmarks/paper_cost.py`` and others there (imported by those scripts from this
folder). A training step is the training loop's own
:func:`mcgf.training.step.train_step` — ``model.loss`` through the loop's
:class:`~mcgf.training.step.Objective` (with its dedicated generator) under the same
autocast, backward, optional gradient clipping, AdamW over ``model.param_groups`` — minus
data loading, so the figures are the model's cost alone.

Step cost of the restoration branch: the same model is stepped with ``drone_clean`` in the
batch (branch on) and without it (branch off: the encoder runs its plain forward, the
branch's parameters get no gradient and are left out of that optimizer, which is the
work a model built with ``restoration=False`` does). One model instance serves both, so
weights and memory layout are identical and an EVA-02-L is built once. Timed steps
alternate off/on so that load from other processes hits both alike.

Model FLOPs (:func:`model_flops`): one training step and one embedding batch counted by
``torch.utils.flop_counter`` on the ``meta`` device, and the dense tensor-core peaks of
known GPUs (:func:`dense_peak_tflops`) that turn a measured rate into a share of the card.
"""

from __future__ import annotations

import contextlib
import re
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from _hardware import cpu_model
from mcgf.errors import UserError
from mcgf.models.params import count_parameters
from mcgf.runtime import autocast, grad_scaler
from mcgf.training.config import RunConfig
from mcgf.training.step import Objective, model_generator, train_step

# Labels of the random batches of a model without a classifier over locations (no
# ``num_classes`` option): University-1652's training locations.
LABELS_WITHOUT_HEAD = 701


@dataclass(frozen=True)
class BatchShape:
    """A cross-view batch: ``locations`` × (``drones_per_location`` drone views + 1 tile)."""

    locations: int
    drones_per_location: int

    @property
    def drone_images(self) -> int:
        return self.locations * self.drones_per_location

    @property
    def images(self) -> int:
        """Drone plus satellite images per step (what ``images/s`` counts, as in the loop)."""
        return self.drone_images + self.locations


@dataclass(frozen=True)
class StepTiming:
    """Wall seconds of timed steps (after warmup) and the peak accelerator memory."""

    seconds: list[float]
    images_per_step: int
    peak_memory_bytes: int | None = None

    @property
    def steps(self) -> int:
        return len(self.seconds)

    @property
    def median_s(self) -> float:
        """Median seconds per step (robust to the odd slow step on a shared machine)."""
        return statistics.median(self.seconds)

    @property
    def mean_s(self) -> float:
        return statistics.fmean(self.seconds)

    @property
    def images_per_s(self) -> float:
        return self.images_per_step / self.median_s

    def summary(self) -> dict[str, Any]:
        """JSON-able figures (no per-step list)."""
        return {"steps": self.steps, "median_s": self.median_s, "mean_s": self.mean_s,
                "images_per_step": self.images_per_step, "images_per_s": self.images_per_s,
                "peak_memory_gib": _gib(self.peak_memory_bytes)}


@dataclass(frozen=True)
class StepCost:
    """Branch on vs off for one batch: timings, their ratio and the branch's size."""

    on: StepTiming
    off: StepTiming
    encoder_params: int
    branch_params: int
    total_params: int
    restore_size: int | None

    @property
    def ratio(self) -> float:
        """Median step time with the branch over without it (target ≤ 1.25 at paper scale)."""
        return self.on.median_s / self.off.median_s

    @property
    def branch_share(self) -> float:
        """Branch parameters as a fraction of the encoder's (target ≤ 0.10)."""
        return self.branch_params / self.encoder_params

    def summary(self) -> dict[str, Any]:
        return {"restore_size": self.restore_size, "on": self.on.summary(), "off": self.off.summary(),
                "ratio": self.ratio, "encoder_params": self.encoder_params,
                "branch_params": self.branch_params, "total_params": self.total_params,
                "branch_share_of_encoder": self.branch_share}


def _gib(n: int | None) -> float | None:
    return None if n is None else n / 2**30


def device_name(device: torch.device) -> str:
    """Human-readable hardware: the GPU's name, or the CPU model and torch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = cpu_model()
    n = torch.get_num_threads()
    return f"{cpu} (CPU, {n} thread{'s' if n != 1 else ''})"


def random_batch(
    shape: BatchShape,
    image_size: tuple[int, int],
    num_classes: int,
    *,
    clean: bool,
    device: torch.device,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """A training batch of standard-normal images (already "normalised") and labels.

    Each of ``shape.locations`` distinct classes gets ``drones_per_location`` drone images
    and one satellite tile; ``clean`` adds ``drone_clean`` (the restoration target).

    Raises:
        ValueError: more locations than classes, or fewer than two (the head's BatchNorm).
    """
    if not 2 <= shape.locations <= num_classes:
        raise ValueError(f"need 2..{num_classes} locations per batch, got {shape.locations}")
    g = torch.Generator().manual_seed(seed)
    h, w = image_size
    classes = torch.randperm(num_classes, generator=g)[: shape.locations]
    batch = {
        "drone": torch.randn(shape.drone_images, 3, h, w, generator=g),
        "drone_label": classes.repeat_interleave(shape.drones_per_location),
        "satellite": torch.randn(shape.locations, 3, h, w, generator=g),
        "satellite_label": classes,
    }
    if clean:
        batch["drone_clean"] = torch.randn(shape.drone_images, 3, h, w, generator=g)
    return {k: v.to(device) for k, v in batch.items()}


def make_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    layer_decay: float | None = None,
    *,
    exclude: nn.Module | None = None,
    fused: bool | None = None,
) -> torch.optim.Optimizer:
    """AdamW over ``model.param_groups`` as the training loop builds it (fused on CUDA,
    :func:`mcgf.training.optim.adamw`), minus ``exclude``'s parameters (the branch, for the
    branch-off measurement). ``fused`` forces the implementation (``False``: torch's
    default, the loop's choice before it fused)."""
    from mcgf.training.optim import adamw

    skip = {id(p) for p in exclude.parameters()} if exclude is not None else set()
    groups = model.param_groups(lr, weight_decay, layer_decay)
    kept = []
    for g in groups:
        params = [p for p in g["params"] if p.requires_grad and id(p) not in skip]
        if params:
            kept.append({**g, "params": params})
    if fused is None:
        device = next(model.parameters()).device
        return adamw(kept, lr, weight_decay, device)
    return torch.optim.AdamW(kept, lr=lr, weight_decay=weight_decay, fused=fused or None)


@dataclass(frozen=True)
class StepOptions:
    """How a training step runs (the config's ``train:`` values the step uses); the loss
    weights are the model's own."""

    grad_clip: float | None = None
    amp: str = "auto"
    seed: int = 0


def benchmark_config(
    config: Mapping[str, Any],
    overrides: Sequence[str],
    where: str,
    *,
    keep_weights: bool = False,
) -> RunConfig:
    """A training config prepared for timing on random tensors.

    ``overrides`` (``section.key=value``) are applied, then weather is turned off (it is a
    data-side transform, irrelevant here, and keeps OpenCV out of the import) and
    ``model.pretrained`` is forced false so nothing is looked up in a hub cache; a
    ``model.weights`` file is kept only with ``keep_weights`` (timings do not depend on
    weight values).

    Raises:
        UserError: a bad override or config value, naming it.
    """
    from mcgf.config import apply_overrides
    from mcgf.training.config import parse_run_config

    cfg = apply_overrides(config, list(overrides))
    cfg = apply_overrides(cfg, ["weather.conditions=none", "model.pretrained=false"])
    if not keep_weights and isinstance(cfg.get("model"), dict):
        cfg["model"].pop("weights", None)
    return parse_run_config(cfg, where)


def num_classes(cfg: RunConfig, classes: int | None = None) -> int:
    """The head size: ``classes`` when given, else ``model.num_classes`` of the config,
    else the default that the registered model declares for ``num_classes``.

    Raises:
        UserError: none of them gives a size.
    """
    from mcgf.models.model_registry import resolved_options, takes_option

    if classes is not None:
        return int(classes)
    if not takes_option(cfg.model["name"], "num_classes"):
        # No classifier over locations: the count only labels the random batches.
        return int(cfg.model.get("num_classes") or LABELS_WITHOUT_HEAD)
    options = resolved_options(cfg.model["name"], {k: v for k, v in cfg.model.items()
                                                   if k != "name"})
    if not isinstance(options.get("num_classes"), int):
        raise UserError(f"model {cfg.model['name']!r} declares no num_classes default: "
                        "set model.num_classes (the number of training locations)")
    return int(options["num_classes"])


def model_options(model: dict[str, Any], classes: int) -> dict[str, Any]:
    """``model`` (a config's ``model:`` section) with ``num_classes = classes`` for a model
    that takes that option; one without a classifier over locations may not."""
    from mcgf.models.model_registry import takes_option

    if not takes_option(model["name"], "num_classes"):
        return {k: v for k, v in model.items() if k != "num_classes"}
    return {**model, "num_classes": classes}


def build_model(cfg: RunConfig, device: torch.device, classes: int | None = None) -> nn.Module:
    """``create_model`` from ``cfg.model`` with a head of :func:`num_classes` classes,
    seeded with ``train.seed``, moved to ``device``, compiled as the loop compiles it when
    ``train.compile`` is on."""
    from mcgf.models.base import check_trainable
    from mcgf.models.model_registry import create_model
    from mcgf.training.loop import compile_model

    options = model_options(cfg.model, num_classes(cfg, classes))
    torch.manual_seed(cfg.train.seed)
    model = create_model(**options).to(device)
    check_trainable(model, cfg.model["name"])
    if cfg.train.compile:
        print(compile_model(model, cfg.train, cfg.model["name"]), flush=True)
    return model


def batch_shape(cfg: RunConfig, drone_images: int | None = None) -> BatchShape:
    """The config's ``P × M`` batch, or ``drone_images`` drone views at the config's ``M``.

    Raises:
        UserError: ``drone_images`` is not a multiple of ``M`` or gives fewer than two locations.
    """
    m = cfg.data.drones_per_location
    if drone_images is None:
        return BatchShape(cfg.data.locations_per_batch, m)
    if drone_images % m or drone_images // m < 2:
        raise UserError(f"--batch {drone_images}: must be a multiple of data.drones_per_location={m} "
                        f"and at least {2 * m} (two locations, for the head's BatchNorm)")
    return BatchShape(drone_images // m, m)


def step_options(cfg: RunConfig) -> StepOptions:
    """The :class:`StepOptions` of ``cfg.train``."""
    t = cfg.train
    return StepOptions(t.grad_clip, t.amp, t.seed)


def restore_weight(model: nn.Module) -> float:
    """The weight of the model's restoration term (0: none)."""
    return float(getattr(model, "loss_weights", {}).get("restore", 0.0))


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued work (CUDA; a no-op elsewhere), before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def batch_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    options: StepOptions,
    device: torch.device,
    *,
    precision: contextlib.AbstractContextManager[Any] | None = None,
) -> Callable[[dict[str, Any]], int]:
    """``step(batch)``: one full training step on ``batch`` as the loop runs it (its
    :func:`~mcgf.training.step.train_step`: forward, backward, clip, AdamW, under the
    loop's autocast and loss scaler for ``device``); returns the batch's images.

    ``precision`` replaces the loop's autocast (the memory estimate imposes bf16 on the
    CPU); no loss scaler then.
    """
    objective = Objective(model, model_generator(options.seed, 0, device))
    ctx = autocast(device, options.amp) if precision is None else precision
    # fp16 cards scale the loss, as the loop does.
    scaler = grad_scaler(device, options.amp) if precision is None else None

    def step(batch: dict[str, Any]) -> int:
        train_step(objective, optimizer, None, batch, autocast=ctx, grad_clip=options.grad_clip,
                   scaler=scaler)
        return len(batch["drone"]) + len(batch["satellite"])

    return step


def step_fn(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    options: StepOptions,
) -> Callable[[], None]:
    """A closure running one full training step on ``batch`` (:func:`batch_step`)."""
    step = batch_step(model, optimizer, options, batch["drone"].device)

    def run() -> None:
        step(batch)

    return run


def _timed(fn: Callable[[], None], device: torch.device) -> float:
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def _rounds(steps: int, max_seconds: float | None) -> Iterator[int]:
    """Round indices until ``steps`` rounds or ``max_seconds`` (at least one round)."""
    t0 = time.perf_counter()
    for i in range(steps):
        if i and max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            return
        yield i


def time_training(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    options: StepOptions,
    *,
    steps: int,
    warmup: int = 2,
    max_seconds: float | None = None,
) -> StepTiming:
    """Seconds per training step of ``model`` on ``batch`` (``warmup`` untimed steps first).

    Stops after ``steps`` timed steps or once ``max_seconds`` of timing have passed
    (at least one step is timed).
    """
    device = batch["drone"].device
    model.train()
    step = step_fn(model, batch, optimizer, options)
    _reset_peak(device)
    for _ in range(warmup):
        step()
    times = [_timed(step, device) for _ in _rounds(steps, max_seconds)]
    return StepTiming(times, len(batch["drone"]) + len(batch["satellite"]), _peak(device))


def compare_step_cost(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    options: StepOptions,
    *,
    lr: float = 1e-4,
    weight_decay: float = 0.05,
    layer_decay: float | None = None,
    steps: int = 10,
    warmup: int = 2,
    max_seconds: float | None = None,
) -> StepCost:
    """Training-step time of ``model`` with its restoration branch on vs off.

    ``batch`` must hold ``drone_clean``; the model's restoration weight must be > 0.
    Warmup runs off then on (recording each one's peak memory); timed steps then alternate.

    Raises:
        ValueError: the model has no restoration branch, the batch no ``drone_clean``, or
            the model's ``lambda_restore`` is 0.
    """
    branch = getattr(model, "restoration", None)
    if branch is None or "drone_clean" not in batch or restore_weight(model) <= 0:
        raise ValueError("the step cost needs a model with restoration=True, a batch with "
                         "drone_clean and lambda_restore > 0")
    device = batch["drone"].device
    model.train()
    plain = {k: v for k, v in batch.items() if k != "drone_clean"}
    opt_on = make_optimizer(model, lr, weight_decay, layer_decay)
    opt_off = make_optimizer(model, lr, weight_decay, layer_decay, exclude=branch)
    step_on = step_fn(model, batch, opt_on, options)
    step_off = step_fn(model, plain, opt_off, options)
    peaks: dict[str, int | None] = {}
    for name, step in (("off", step_off), ("on", step_on)):
        if device.type == "cuda":
            torch.cuda.empty_cache()
        _reset_peak(device)
        for _ in range(max(warmup, 1)):
            step()
        peaks[name] = _peak(device)
    t_on: list[float] = []
    t_off: list[float] = []
    for _ in _rounds(steps, max_seconds):
        t_off.append(_timed(step_off, device))
        t_on.append(_timed(step_on, device))
    images = len(batch["drone"]) + len(batch["satellite"])
    encoder = getattr(model, "drone_encoder", model)
    return StepCost(
        on=StepTiming(t_on, images, peaks["on"]),
        off=StepTiming(t_off, images, peaks["off"]),
        encoder_params=count_parameters(encoder),
        branch_params=count_parameters(branch),
        total_params=count_parameters(model),
        restore_size=getattr(model, "restore_size", None),
    )


def time_embedding(
    model: nn.Module,
    images: torch.Tensor,
    *,
    view: str = "drone",
    amp: str = "auto",
    batches: int = 20,
    warmup: int = 2,
    max_seconds: float | None = None,
) -> StepTiming:
    """Seconds per ``model.embed`` call on ``images`` (eval mode, inference mode, autocast).

    The model is left in eval mode.
    """
    device = images.device
    model.eval()

    def run() -> None:
        with torch.inference_mode(), autocast(device, amp):
            model.embed(images, view)

    if device.type == "cuda":
        torch.cuda.empty_cache()
    _reset_peak(device)
    for _ in range(warmup):
        run()
    times = [_timed(run, device) for _ in _rounds(batches, max_seconds)]
    return StepTiming(times, len(images), _peak(device))


def timing_dict(timing: StepTiming | StepCost) -> dict[str, Any]:
    """``summary()`` plus the raw per-step seconds, for JSON reports."""
    out = timing.summary()
    if isinstance(timing, StepTiming):
        out["seconds"] = list(timing.seconds)
    else:
        out["on"]["seconds"] = list(timing.on.seconds)
        out["off"]["seconds"] = list(timing.off.seconds)
    return out


def _conv_backward_flops(grad_out_shape: Any, x_shape: Any, w_shape: Any, _bias: Any,
                         _stride: Any, _padding: Any, _dilation: Any, transposed: bool,
                         _output_padding: Any, _groups: Any, output_mask: Any, out_shape: Any = None,
                         **kwargs: Any) -> int:
    # Each requested gradient (input, weight) costs the forward's multiply-adds. PyTorch's
    # own formula ignores groups for the weight gradient, counting a depthwise convolution
    # (ConvNeXt) hundreds of times over.
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of running ``fn`` as ``torch.utils.flop_counter.FlopCounterMode`` counts them:
    matrix multiplications, attention and convolutions, 2 per multiply-add; element-wise
    work is not counted. A convolution's backward is one forward per requested gradient.

    Works on ``meta`` tensors: losses that select pairs with data-dependent ops
    (``nonzero``, boolean masks) take every element as selected there, which changes only
    the loss's negligible FLOPs.
    """
    from torch.fx.experimental import _config as fx_config

    with fx_config.patch(meta_nonzero_assume_all_nonzero=True), \
            FlopCounterMode(display=False, custom_mapping={
                torch.ops.aten.convolution_backward: _conv_backward_flops}) as counter:
        fn()
    return int(counter.get_total_flops())


@dataclass(frozen=True)
class ModelFlops:
    """Model FLOPs of one training step and of one embedding batch (see :func:`model_flops`)."""

    train_step: int
    train_images: int
    embed_batch: int
    embed_images: int
    counted: str
    recompute_counted: bool

    def summary(self) -> dict[str, Any]:
        """JSON-able figures."""
        return {"train_step": self.train_step, "train_images": self.train_images,
                "embed_batch": self.embed_batch, "embed_images": self.embed_images,
                "counted": self.counted, "recompute_counted": self.recompute_counted}


def checkpoint_options(model_name: str) -> list[str]:
    """The registered model's options that switch gradient checkpointing on
    (``grad_checkpointing``, ``restoration_grad_checkpointing``, ...)."""
    from mcgf.models.model_registry import model_options

    return sorted(k for k in model_options(model_name) if k.endswith("grad_checkpointing"))


def _count(cfg: RunConfig, classes: int, device: torch.device, shape: BatchShape,
           embed_images: int, recompute: bool) -> tuple[nn.Module, int, int, int]:
    """(model, images in the counted batch, training-step FLOPs, embedding-batch FLOPs)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from mcgf.models.model_registry import create_model

    options = model_options(cfg.model, classes)
    options.pop("weights", None)  # FLOPs do not depend on weight values: nothing to read
    if not recompute:  # every checkpointing switch: the encoder's, a branch's
        options.update({key: False for key in checkpoint_options(options["name"])})
    size = int(cfg.model.get("img_size") or 224)
    torch.manual_seed(0)
    with device:
        model = create_model(**options)
    h, w = getattr(model, "input_size", (size, size))
    # Random values drawn on the CPU, then moved (to ``meta``: shapes only).
    batch = random_batch(shape, (h, w), classes, clean=restore_weight(model) > 0, device=device)
    model.train()

    def step() -> None:
        model.loss(batch)["total"].backward()

    # The math backend computes attention as two batched matmuls forward and four backward
    # (what the meta device runs anyway); the CPU's fused kernel has no FLOP formula and
    # would count as nothing.
    attention = contextlib.nullcontext() if recompute else sdpa_kernel(SDPBackend.MATH)
    with attention:
        train = count_flops(step)
        model.eval()
        images = torch.zeros(embed_images, 3, h, w, device=device)
        with torch.no_grad():
            embed = count_flops(lambda: model.embed(images, "drone"))
    return model, shape.images, train, embed


def model_flops(
    cfg: RunConfig,
    classes: int,
    *,
    shape: BatchShape | None = None,
    embed_images: int = 1,
    recompute: bool = False,
) -> tuple[nn.Module, ModelFlops]:
    """Count one training step and one embedding batch of ``cfg``'s model.

    The training step is ``model.loss(batch)["total"].backward()`` on a batch of ``shape``
    (the config's ``P × M`` by default), with ``drone_clean`` when the model weights a
    restoration term; the embedding batch is ``model.embed`` of ``embed_images`` drone
    views. Both run on the ``meta`` device: shapes only, no memory, no GPU, seconds even
    for EVA-02-L at 448 px.

    These are model FLOPs, the arithmetic the model needs: the model is built with
    gradient checkpointing off (every option of :func:`checkpoint_options`), because a checkpointed forward is computed again during
    the backward, and counting that recomputation would credit the hardware with work
    that only buys memory; attention counts as its matmuls (two forward, four backward).
    ``recompute`` counts as the model is configured instead: a checkpointed forward
    twice, and attention as the kernel PyTorch picks for the device (on the CPU, a fused
    kernel that ``FlopCounterMode`` does not count).

    A loss whose control flow depends on values (``if mask.any()``) cannot run on the meta
    device: the model is then counted on the CPU with two locations per batch and one
    embedded image, and scaled linearly to ``shape`` and ``embed_images`` (the losses' own
    pairwise terms are negligible), which ``counted`` says.

    Returns:
        the model counted (its parameters, on ``meta`` or the CPU) and the counts.

    Raises:
        UserError: the model cannot be built from ``cfg.model``.
    """
    shape = shape or batch_shape(cfg)
    try:
        model, images, train, embed = _count(cfg, classes, torch.device("meta"), shape,
                                             embed_images, recompute)
        counted = "meta"
    except (NotImplementedError, RuntimeError):
        small = BatchShape(2, shape.drones_per_location)
        with torch.device("cpu"):
            model, images, train, embed = _count(cfg, classes, torch.device("cpu"), small, 1,
                                                 recompute)
        counted = f"CPU, {images} images, scaled"
        train = train * shape.images // images
        embed = embed * embed_images
    return model, ModelFlops(train, shape.images, embed, embed_images, counted, recompute)


@dataclass(frozen=True)
class DensePeak:
    """Dense (no 2:4 sparsity) tensor-core peak of GPUs whose name matches ``pattern``
    (a case-insensitive regular expression); ``None``: that variant's figure is unknown."""

    pattern: str
    bf16: float | None
    fp16: float | None
    source: str


#: Dense bf16/fp16 tensor-core peaks in TFLOP/s (fp32 accumulate), first match wins.
#: Datasheets quote these "with sparsity"; the dense figure is half of it.
DENSE_PEAKS: tuple[DensePeak, ...] = (
    # NVIDIA H100 datasheet, PCIe column: BF16 and FP16 Tensor Core 1,513 TFLOPS with sparsity.
    DensePeak(r"\bH100\b.*\bPCIe\b", 756.5, 756.5, "NVIDIA H100 datasheet (PCIe)"),
    # The NVL boards run other clocks than the SXM parts; their figures are not listed here,
    # and this entry keeps them from matching the SXM lines below.
    DensePeak(r"\bH[12]00\b.*\bNVL\b", None, None, "H100/H200 NVL: not listed"),
    # NVIDIA H100 datasheet, SXM column: 1,979 TFLOPS with sparsity; the Hopper architecture
    # whitepaper gives 989.4 dense (132 SMs × 4096 FLOP/clock × 1.83 GHz). The SXM part
    # reports itself as e.g. "NVIDIA H100 80GB HBM3".
    DensePeak(r"\bH100\b", 989.4, 989.4, "NVIDIA H100 datasheet / Hopper whitepaper (SXM)"),
    # NVIDIA H200 datasheet, SXM column: 1,979 TFLOPS with sparsity (the H100 SXM's GH100
    # compute with more memory).
    DensePeak(r"\bH200\b", 989.4, 989.4, "NVIDIA H200 datasheet (SXM)"),
    # NVIDIA A100 datasheet: BFLOAT16 and FP16 Tensor Core 312 TFLOPS (624 with sparsity),
    # the same for the PCIe and SXM, 40 and 80 GB parts.
    DensePeak(r"\bA100\b", 312.0, 312.0, "NVIDIA A100 datasheet"),
    # NVIDIA L40S and L40 datasheets: BFLOAT16 and FP16 Tensor Core 362.05 (733 with
    # sparsity) and 181.05 (362.1 with sparsity).
    DensePeak(r"\bL40S\b", 362.05, 362.05, "NVIDIA L40S datasheet"),
    DensePeak(r"\bL40\b", 181.05, 181.05, "NVIDIA L40 datasheet"),
)


def dense_peak(gpu_name: str) -> DensePeak | None:
    """The :data:`DENSE_PEAKS` entry of ``gpu_name`` (``torch.cuda.get_device_name``), if any."""
    for entry in DENSE_PEAKS:
        if re.search(entry.pattern, gpu_name, flags=re.IGNORECASE):
            return entry
    return None


def dense_peak_tflops(gpu_name: str, dtype: str = "bf16") -> float | None:
    """Dense tensor-core peak in TFLOP/s of ``gpu_name`` for ``dtype`` (``"bf16"`` or
    ``"fp16"``); ``None`` for a GPU or a precision without a known figure.

    >>> dense_peak_tflops("NVIDIA H100 80GB HBM3")
    989.4
    """
    entry = dense_peak(gpu_name)
    if entry is None or dtype not in ("bf16", "fp16"):
        return None
    return entry.bf16 if dtype == "bf16" else entry.fp16


__all__ = [
    "DENSE_PEAKS",
    "BatchShape",
    "DensePeak",
    "ModelFlops",
    "StepCost",
    "StepOptions",
    "StepTiming",
    "batch_shape",
    "batch_step",
    "benchmark_config",
    "build_model",
    "checkpoint_options",
    "compare_step_cost",
    "count_flops",
    "dense_peak",
    "dense_peak_tflops",
    "device_name",
    "make_optimizer",
    "model_flops",
    "model_options",
    "num_classes",
    "random_batch",
    "restore_weight",
    "step_fn",
    "step_options",
    "synchronize",
    "time_embedding",
    "time_training",
    "timing_dict",
]
