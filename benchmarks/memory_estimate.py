"""Peak CUDA memory of a training step and of an embedding pass, estimated without a GPU.

    python benchmarks/memory_estimate.py [--config configs/mcgf-eva02-l-448.yaml]
        [--set KEY=VALUE ...] [--batch-locations P] [--embed-batch N]
        [--restoration-checkpointing] [--no-restoration] [--as-step-cost]
        [--optimizer fused|foreach] [--classes N]

e.g. ``--set data.locations_per_batch=8`` for a 24 GB card: 21.1 GiB estimated, 11.4 GiB
with ``--set model.restoration_grad_checkpointing=true``.

Runs one real training step of the config's model — the loop's
:func:`mcgf.training.step.train_step` on a random batch from ``_profiling`` (``model.loss``
through its ``Objective``, backward, gradient clipping, AdamW over ``model.param_groups``)
— under :class:`~torch._subclasses.fake_tensor.FakeTensorMode`: tensors carry shapes and
dtypes but no data, so nothing is computed and no memory is allocated. A dispatch mode
above the fake mode counts the bytes of every live tensor storage (one count per storage,
dropped by a weakref finalizer when the storage dies, each rounded up to the 512-byte
granule of PyTorch's CUDA allocator) and records the maximum. A first step allocates the
AdamW state, as the warmup steps of a GPU benchmark do; the peak is that of the second
step, so it is comparable with ``torch.cuda.max_memory_allocated``. EVA-02-L
at 448 px takes under half a minute on one CPU core, most of it in Python dispatch; the
model is built for real on the CPU first (4 s, 2 GB of RAM), then its tensors are swapped
for fake ones.

Why the fake tensors live on the CPU and not on a fake ``cuda`` device: ``FakeTensorMode``
does create ``cuda`` tensors on a machine without a GPU, but the autograd engine stashes
the current CUDA streams before a backward pass that touches a CUDA tensor and fails
(``hasPrimaryContext expects a valid device index``) when no device exists. On the CPU,
two differences from the GPU step matter for memory and are undone here:

* autocast: CUDA's and the CPU's autocast cast different operator lists. Under
  :func:`cuda_autocast_rules` the CPU's bf16 autocast follows the CUDA lists
  (``ATen/autocast_mode.h``): matrix products and convolutions in bf16 (the CPU's own
  kernels, with their cache of bf16 weight copies, where both lists lower an operator),
  ``layer_norm``, ``group_norm``, ``exp``, ``pow``, the losses and the upsampling in fp32,
  ``softmax``/``sum``/``cumsum`` accumulating to fp32, a few ops promoted to the widest
  input; what only the CPU list casts runs uncast. Weights stay fp32, gradients fp32.
  With the CPU's own lists the estimates below would be 25.5 GiB for the loop's step
  (-32 %: the denoiser's GroupNorm outputs stay bf16) and 11.2 GiB branch off (+15 %).
* the optimizer: the CPU's default AdamW loops over single tensors, with far smaller
  temporaries than CUDA's implementations, so the CUDA one is imposed: ``fused`` (the
  training loop's on CUDA, the default here) or ``foreach`` (``--optimizer foreach``:
  torch's default, the loop's when the figures below were measured). For these configs
  both give the same peak, which falls in the backward pass, not in the optimizer step.

Scaled-dot-product attention runs the CPU's flash kernel under fake tensors, which keeps
what CUDA's flash attention keeps (output and log-sum-exp, no attention matrix). Dropout
does not match: the CPU keeps an fp32 mask where CUDA keeps a bool one (an overestimate;
these models only drop out on the head's 512-wide features).

Validation (``configs/mcgf-eva02-l-448.yaml``: EVA-02-L, 448 px, gradient checkpointing,
16 locations × (2 drone + 1 satellite) = 48 images, drone and satellite views in separate
encoder passes as when measured (``--set model.joint_views=false``); measured on an NVIDIA
H100 80GB with torch 2.11, bf16 autocast, random init, ``docs/benchmarks.md``; estimated
with torch 2.14 on one core of a 2-core CPU, seconds per estimate including the model
build). With ``joint_views: true`` the estimates are 38.04 GiB (loop) and 11.95 GiB
(branch off): one 48-image pass recomputes a larger checkpointed block.

==========================================  ========  ========  ======  ====
case                                        measured  estimate  error   time
==========================================  ========  ========  ======  ====
training step, restore_size 224 (the loop)  37.6 GiB  37.99     +1.0 %  23 s
step cost, branch off                       9.76 GiB  9.73      -0.3 %  14 s
step cost, branch on, restore_size 224      39.91     40.31     +1.0 %  24 s
step cost, branch on, restore_size 160      26.4      26.49     +0.3 %  26 s
step cost, branch on, restore_size 128      21.3      21.44     +0.6 %  26 s
embedding, ``model.embed``, batch 64        4.2       4.21      +0.3 %  6 s
==========================================  ========  ========  ======  ====

The step-cost "on" figures exceed the loop's because :func:`_profiling.compare_step_cost`
keeps the branch-off optimizer (AdamW state of the encoder and head, 2.3 GiB) alive while
it steps the branch-on one; ``--as-step-cost`` reproduces that (those three rows use it;
"branch off" is ``--no-restoration``). The training loop's step is the default.

What the estimate leaves out: the CUDA context and kernels (about 0.5 GiB, not counted by
``max_memory_allocated`` either), the caching allocator's reserved-but-free memory and
fragmentation (``memory_reserved`` exceeds ``max_memory_allocated``, typically by a few
percent to 10 %+ after many steps), cuBLAS/cuDNN workspaces and kernels' scratch buffers
(e.g. flash attention's backward accumulators; tens to hundreds of MiB), and a CUDA-only
lowered operator's cache of bf16 weight copies (only where the CPU autocast list lacks the
operator; none in these models). Leave a margin of 15–20 % below the card's memory.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from _profiling import (
    BatchShape,
    StepOptions,
    batch_shape,
    batch_step,
    benchmark_config,
    build_model,
    make_optimizer,
    num_classes,
    random_batch,
    restore_weight,
    step_options,
)
from mcgf.config import load_config
from mcgf.errors import UserError
from mcgf.training.config import RunConfig

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "mcgf-eva02-l-448.yaml"
GIB = 2**30
#: The CUDA caching allocator hands out blocks in multiples of 512 bytes.
GRANULE = 512

# CUDA autocast policy per operator (ATen/autocast_mode.h, AT_FORALL_* lists): name without
# the "aten::" prefix, overload ignored.
_LOWER = frozenset({
    "_convolution", "conv1d", "conv2d", "conv3d", "conv_tbc", "conv_transpose1d",
    "conv_transpose2d", "conv_transpose3d", "convolution", "cudnn_convolution",
    "cudnn_convolution_transpose", "prelu", "addmm", "addmv", "addr", "matmul", "einsum", "mm",
    "mv", "linalg_vecdot", "linear", "addbmm", "baddbmm", "bmm", "chain_matmul",
    "linalg_multi_dot", "_thnn_fused_lstm_cell", "_thnn_fused_gru_cell", "lstm_cell",
    "gru_cell", "rnn_tanh_cell", "rnn_relu_cell", "_cudnn_rnn",
    "_scaled_dot_product_flash_attention", "scaled_dot_product_attention",
})
_FP32 = frozenset({
    "acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p",
    "reciprocal", "rsqrt", "sinh", "tan", "pow", "softplus", "layer_norm", "native_layer_norm",
    "rms_norm", "group_norm", "frobenius_norm", "nuclear_norm", "cosine_similarity",
    "poisson_nll_loss", "cosine_embedding_loss", "nll_loss", "nll_loss2d",
    "hinge_embedding_loss", "kl_div", "l1_loss", "smooth_l1_loss", "huber_loss", "mse_loss",
    "margin_ranking_loss", "multilabel_margin_loss", "soft_margin_loss", "triplet_margin_loss",
    "multi_margin_loss", "binary_cross_entropy_with_logits", "binary_cross_entropy", "dist",
    "pdist", "cdist", "renorm", "logsumexp", "upsample_nearest1d", "_upsample_nearest_exact1d",
    "upsample_nearest2d", "_upsample_nearest_exact2d", "upsample_nearest3d",
    "_upsample_nearest_exact3d", "upsample_linear1d", "upsample_bilinear2d",
    "_upsample_bilinear2d_aa", "upsample_trilinear3d", "upsample_bicubic2d",
    "_upsample_bicubic2d_aa", "norm", "linalg_matrix_sqrth",
})
_FP32_OPT_DTYPE = frozenset({
    "prod", "softmax", "log_softmax", "cumprod", "cumsum", "linalg_vector_norm",
    "linalg_matrix_norm", "sum",
})
_PROMOTE = frozenset({
    "addcdiv", "addcmul", "atan2", "bilinear", "cross", "dot", "vdot", "grid_sampler",
    "index_put", "tensordot", "scatter_add",
})
_NO_AUTOCAST_CPU = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)


def _eligible(x: object) -> bool:
    return isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != torch.float64


def _cast(x: Any, dtype: torch.dtype) -> Any:
    if _eligible(x):
        return x.to(dtype)
    if isinstance(x, (list, tuple)):
        return type(x)(_cast(v, dtype) for v in x)
    return x


def _kernel(op: torch._ops.OpOverload, policy: str) -> Callable[..., Any]:
    """A Python autocast kernel applying CUDA's ``policy`` to ``op``, then running it with
    autocast off (as the C++ kernels do, so nested operators are not cast again)."""
    dtype_index = next((i for i, a in enumerate(op._schema.arguments) if a.name == "dtype"), None)

    def kernel(*args: Any, **kwargs: Any) -> Any:
        if policy == "lower":
            target = torch.get_autocast_dtype("cpu")
            args, kwargs = _cast(args, target), _cast(kwargs, target)
        elif policy == "fp32":
            args, kwargs = _cast(args, torch.float32), _cast(kwargs, torch.float32)
        elif policy == "promote":
            dtypes = [t.dtype for t in tree_leaves((args, kwargs)) if _eligible(t)]
            target = torch.get_autocast_dtype("cpu")
            if any(d == torch.float32 for d in dtypes):
                target = torch.float32
            args, kwargs = _cast(args, target), _cast(kwargs, target)
        elif policy == "fp32_opt_dtype" and dtype_index is not None and args and _eligible(args[0]):
            if len(args) > dtype_index:
                if args[dtype_index] is None:
                    args = (*args[:dtype_index], torch.float32, *args[dtype_index + 1:])
            elif kwargs.get("dtype") is None:
                kwargs = {**kwargs, "dtype": torch.float32}
        with torch._C._ExcludeDispatchKeyGuard(_NO_AUTOCAST_CPU):
            return op(*args, **kwargs)

    return kernel


def _policy(base: str) -> str:
    for name, ops in (("lower", _LOWER), ("fp32", _FP32), ("fp32_opt_dtype", _FP32_OPT_DTYPE),
                      ("promote", _PROMOTE)):
        if base in ops:
            return name
    return "none"


@contextlib.contextmanager
def cuda_autocast_rules() -> Iterator[None]:
    """Make the CPU's autocast cast operators as CUDA's autocast does, while inside.

    Every ATen operator with a CPU or CUDA autocast kernel gets a Python kernel on the
    ``AutocastCPU`` key applying the CUDA policy, except the operators that both lists run
    in lower precision: the CPU's own kernel does the same and keeps autocast's cache of
    bf16 weight copies (alive until the autocast region ends, as on CUDA).
    """
    lib = torch.library.Library("aten", "IMPL")
    try:
        for name in torch._C._dispatch_get_all_op_names():
            if not name.startswith("aten::"):
                continue
            on_cpu = torch._C._dispatch_has_kernel_for_dispatch_key(name, "AutocastCPU")
            on_cuda = torch._C._dispatch_has_kernel_for_dispatch_key(name, "AutocastCUDA")
            if not (on_cpu or on_cuda):
                continue
            qualified = name.removeprefix("aten::")
            base, _, overload = qualified.partition(".")
            policy = _policy(base) if on_cuda else "none"
            if on_cpu and policy == "lower":
                continue
            op = getattr(getattr(torch.ops.aten, base), overload or "default")
            with _warnings_off():
                lib.impl(qualified, _kernel(op, policy), "AutocastCPU")
        yield
    finally:
        lib._destroy()


@contextlib.contextmanager
def _warnings_off() -> Iterator[None]:
    """Silence "overriding a previously registered kernel" (expected here)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


class LiveBytes(TorchDispatchMode):
    """Bytes of live tensor storages, and their peak, as a CUDA caching allocator counts
    them (each storage rounded up to :data:`GRANULE`).

    A storage is counted from the first time a tensor on it is seen — as an operator's
    output inside the mode, or passed to :meth:`track` — until it is garbage-collected.
    Under ``FakeTensorMode`` (entered before this mode), storages take no memory at all.
    """

    def __init__(self) -> None:
        super().__init__()
        # Per storage its counted size, in a cell the finalizer reads (a resize updates it).
        self._seen: weakref.WeakKeyDictionary[torch.UntypedStorage, list[int]] = \
            weakref.WeakKeyDictionary()
        self.current = 0
        self.peak = 0

    def reset_peak(self) -> None:
        self.peak = self.current

    def track(self, *objects: Any) -> None:
        """Count the tensors in ``objects`` (nested containers, modules, optimizers)."""
        for obj in objects:
            if isinstance(obj, nn.Module):
                self.track(list(obj.parameters()), list(obj.buffers()),
                           [p.grad for p in obj.parameters() if p.grad is not None])
            elif isinstance(obj, torch.optim.Optimizer):
                self.track([list(s.values()) for s in obj.state.values()])
            else:
                for t in tree_leaves(obj):
                    if isinstance(t, torch.Tensor):
                        self._add(t)
        self.peak = max(self.peak, self.current)

    def _add(self, t: torch.Tensor) -> None:
        st = t.untyped_storage()
        size = math.ceil(st.nbytes() / GRANULE) * GRANULE
        cell = self._seen.get(st)
        if cell is None:
            cell = self._seen[st] = [0]
            weakref.finalize(st, self._drop, cell)
        self.current += size - cell[0]
        cell[0] = size

    def _drop(self, cell: list[int]) -> None:
        self.current -= cell[0]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._add(t)
        self.peak = max(self.peak, self.current)
        return out


@dataclass(frozen=True)
class Estimate:
    """Estimated peak bytes of one pass, what was live before it, and the wall time."""

    peak_bytes: int
    resident_bytes: int
    seconds: float

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / GIB


@contextlib.contextmanager
def fake_cpu(tracker: LiveBytes) -> Iterator[FakeTensorMode]:
    """Fake tensors on the CPU, counted by ``tracker``, under CUDA's autocast lists; a
    host read of a value that fake tensors do not have (the step's loss terms) gives 0."""
    with (cuda_autocast_rules(), FakeTensorMode(allow_non_fake_inputs=True) as mode, tracker,
          _ZeroReads()):
        yield mode


class _ZeroReads(TorchDispatchMode):
    """``.item()``/``.tolist()`` of a fake tensor without a known value returns 0 (known
    values, e.g. AdamW's step counts, come back as they are)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        try:
            return func(*args, **(kwargs or {}))
        except DataDependentOutputException:
            if func is not torch.ops.aten._local_scalar_dense.default:
                raise
            dtype = args[0].dtype
            return False if dtype == torch.bool else 0.0 if dtype.is_floating_point else 0


def fake_model(cfg: RunConfig, classes: int, mode: FakeTensorMode) -> nn.Module:
    """``_profiling.build_model`` on the CPU, its parameters and buffers then swapped for
    fake ones (a few seconds for EVA-02-L: construction reads values, e.g. timm's
    drop-path rates, so it cannot run on fake tensors itself)."""
    with torch._C._DisableTorchDispatch():  # build outside the fake and counting modes
        model = build_model(cfg, torch.device("cpu"), classes)
    fakes: dict[int, torch.Tensor] = {}

    def fake(t: torch.Tensor, param: bool) -> torch.Tensor:
        if id(t) not in fakes:
            f = mode.from_tensor(t.detach())
            fakes[id(t)] = nn.Parameter(f, requires_grad=t.requires_grad) if param else f
        return fakes[id(t)]

    for module in model.modules():
        for name, p in module._parameters.items():
            if p is not None:
                module._parameters[name] = fake(p, True)  # type: ignore[assignment]
        for name, b in module._buffers.items():
            if b is not None:
                module._buffers[name] = fake(b, False)
    return model


#: AdamW implementations on CUDA: ``fused`` (the training loop's since it fuses; one kernel,
#: no temporaries spanning the parameters) and ``foreach`` (torch's default, the loop's before;
#: what the H100 figures were measured with).
OPTIMIZERS = ("fused", "foreach")


def _on_cuda_as(optimizer: torch.optim.Optimizer, implementation: str) -> torch.optim.Optimizer:
    # The CPU default is the per-tensor loop, whose temporaries are much smaller than
    # foreach's: impose the CUDA implementation being estimated.
    for group in optimizer.param_groups:
        group["fused"] = implementation == "fused" or None
        group["foreach"] = implementation == "foreach"
    return optimizer


def estimate_training(
    cfg: RunConfig,
    shape: BatchShape,
    *,
    classes: int | None = None,
    restoration: bool = True,
    restoration_checkpointing: bool = False,
    as_step_cost: bool = False,
    optimizer: str = "fused",
) -> Estimate:
    """Peak bytes of the second of two training steps of ``cfg``'s model on a ``shape``
    batch, as ``torch.cuda.max_memory_allocated`` would report them under bf16 autocast.

    Args:
        cfg: a :func:`~_profiling.benchmark_config` run config.
        shape: the batch.
        classes: head size (default: :func:`~_profiling.num_classes`).
        restoration: step with the branch (``drone_clean`` in the batch) when the model has
            one and ``lambda_restore > 0``; ``False``: without, the branch's parameters
            outside the optimizer (the step-cost "off" step).
        restoration_checkpointing: recompute the branch's activations in the backward pass
            (``set_grad_checkpointing`` of the branch).
        optimizer: the CUDA AdamW implementation (:data:`OPTIMIZERS`).
        as_step_cost: as :func:`_profiling.compare_step_cost` measures the branch-on step:
            with the branch-off optimizer, stepped twice first, still alive.
    """
    t0 = time.perf_counter()
    tracker = LiveBytes()
    cpu = torch.device("cpu")
    n_classes = num_classes(cfg, classes)
    with fake_cpu(tracker) as mode:
        model = fake_model(cfg, n_classes, mode)
        tracker.track(model)
        model.train()
        branch = getattr(model, "restoration", None)
        if restoration_checkpointing:
            if branch is None or not hasattr(branch, "set_grad_checkpointing"):
                raise UserError("--restoration-checkpointing: this model's restoration branch "
                                "has no set_grad_checkpointing")
            branch.set_grad_checkpointing(True)
        on = restoration and branch is not None and restore_weight(model) > 0
        batch = random_batch(shape, model.input_size, n_classes, clean=on, device=cpu,
                             seed=cfg.train.seed)
        t = cfg.train
        options = step_options(cfg)
        keep: list[torch.optim.Optimizer] = []
        if as_step_cost and on:
            plain = {k: v for k, v in batch.items() if k != "drone_clean"}
            off_opt = _on_cuda_as(make_optimizer(model, t.lr, t.weight_decay, t.layer_decay,
                                                 exclude=branch), optimizer)
            for _ in range(2):
                _step(model, plain, off_opt, options)
            keep.append(off_opt)
        opt = _on_cuda_as(make_optimizer(model, t.lr, t.weight_decay, t.layer_decay,
                                         exclude=None if on else branch), optimizer)
        _step(model, batch, opt, options)  # allocates the AdamW state
        resident = tracker.current
        tracker.reset_peak()
        _step(model, batch, opt, options)
    return Estimate(tracker.peak, resident, time.perf_counter() - t0)


def _step(model: nn.Module, batch: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
          options: StepOptions) -> None:
    """The loop's ``train_step`` (``_profiling.batch_step``) under bf16 autocast."""
    batch_step(model, optimizer, options, torch.device("cpu"),
               precision=torch.autocast("cpu", dtype=torch.bfloat16))(batch)


def estimate_embedding(cfg: RunConfig, images: int, *, classes: int | None = None,
                       view: str = "drone") -> Estimate:
    """Peak bytes of ``model.embed`` on ``images`` images (eval mode, inference mode,
    bf16 autocast) with only the model's parameters and buffers resident."""
    t0 = time.perf_counter()
    tracker = LiveBytes()
    with fake_cpu(tracker) as mode:
        model = fake_model(cfg, num_classes(cfg, classes), mode).eval()
        tracker.track(model)
        x = torch.randn(images, 3, *model.input_size)
        resident = tracker.current
        tracker.reset_peak()
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            model.embed(x, view)
    return Estimate(tracker.peak, resident, time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="training YAML config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (repeatable)")
    parser.add_argument("--batch-locations", type=int, default=None, metavar="P",
                        help="locations per batch (default: data.locations_per_batch)")
    parser.add_argument("--embed-batch", type=int, default=64, metavar="N",
                        help="images per embedding pass (0: no embedding estimate)")
    parser.add_argument("--restoration-checkpointing", action="store_true",
                        help="recompute the restoration branch's activations in the backward pass")
    parser.add_argument("--no-restoration", action="store_true",
                        help="step without drone_clean: the branch idle and outside the optimizer")
    parser.add_argument("--as-step-cost", action="store_true",
                        help="as benchmarks/step_cost.py measures the branch-on step (the "
                             "branch-off optimizer's state still alive)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="fused",
                        help="the CUDA AdamW implementation: fused (the training loop's, "
                             "default) or foreach (torch's default)")
    parser.add_argument("--classes", type=int, default=None, help="head size (default: the config's)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # fake tensors compute nothing: threads would only contend
    try:
        cfg = benchmark_config(load_config(args.config), args.overrides, str(args.config))
        shape = batch_shape(cfg)
        if args.batch_locations is not None:
            shape = BatchShape(args.batch_locations, shape.drones_per_location)
        train = estimate_training(cfg, shape, classes=args.classes,
                                  restoration=not args.no_restoration,
                                  restoration_checkpointing=args.restoration_checkpointing,
                                  as_step_cost=args.as_step_cost, optimizer=args.optimizer)
        embed = (estimate_embedding(cfg, args.embed_batch, classes=args.classes)
                 if args.embed_batch > 0 else None)
    except (UserError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    m = cfg.model
    print(f"model: {m.get('backbone_name')} @ {m.get('img_size')} px, restore_size "
          f"{m.get('restore_size')}, config {args.config}"
          + (f" ({', '.join(args.overrides)})" if args.overrides else ""))
    print(f"batch: {shape.locations} locations x ({shape.drones_per_location} drone + 1 satellite) "
          f"= {shape.images} images, bf16 autocast, {args.optimizer} AdamW")
    print(f"training step: peak {train.peak_gib:.2f} GiB (resident before the step "
          f"{train.resident_bytes / GIB:.2f} GiB; estimated in {train.seconds:.0f} s)")
    if embed is not None:
        print(f"embedding, batch {args.embed_batch}: peak {embed.peak_gib:.2f} GiB "
              f"(estimated in {embed.seconds:.0f} s)")
    print("plus the CUDA context (~0.5 GiB) and the allocator's cache/fragmentation: "
          "leave 15-20 % of the card free")
    return 0


if __name__ == "__main__":
    sys.exit(main())
