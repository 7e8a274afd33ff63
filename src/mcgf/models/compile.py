"""``torch.compile`` for training: the repeated blocks of a model's encoders, compiled in
place.

Why blocks and not the whole model: a training step calls ``model.loss``, whose batch
carries host-side values (condition names, which rows are weathered) that change from
batch to batch; compiled whole, every new pattern would be a new graph. An encoder block
(an EVA-02 transformer block, a ResNet stage) has fixed shapes and no such inputs, holds
almost all the FLOPs, and all blocks of one encoder share one compiled graph. Blocks are
compiled with ``nn.Module.compile``, which keeps parameter names: checkpoints of a compiled
run load into an uncompiled model and the other way round. Gradient checkpointing keeps
working: it re-runs the compiled block in the backward pass.

The compiler is torch's (``torch.compile``); this module only chooses what to compile.
"""

from __future__ import annotations

from typing import Any

from torch import nn

#: ``torch.compile`` backends accepted by the ``train.compile`` option (``true`` means
#: ``inductor``, torch's default; ``aot_eager`` and ``eager`` compile without generating
#: code, for checking a model traces).
BACKENDS: tuple[str, ...] = ("inductor", "aot_eager", "eager", "cudagraphs")
#: ``torch.compile`` modes of the inductor backend.
MODES: tuple[str, ...] = ("default", "reduce-overhead", "max-autotune",
                          "max-autotune-no-cudagraphs")
#: Names of the containers whose children are an encoder's repeated blocks (timm: ViT and
#: EVA ``blocks``, ConvNeXt / Swin / RegNet ``stages``, ResNet ``layer1``-``layer4``).
_BLOCK_LISTS = ("blocks", "stages")
_RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")


def compile_targets(model: nn.Module) -> list[nn.Module]:
    """The modules :func:`compile_blocks` compiles in ``model``: each child of a
    ``blocks`` / ``stages`` container and each ResNet stage, outermost first and each
    module once (a container nested in a compiled block is not visited again), plus the
    restoration branch's denoiser where the model has one."""
    targets: list[nn.Module] = []
    seen: set[int] = set()

    def add(module: nn.Module) -> None:
        if id(module) not in seen:
            seen.add(id(module))
            targets.append(module)

    def inside_target(name: str, covered: list[str]) -> bool:
        return any(name == c or name.startswith(c + ".") for c in covered)

    covered: list[str] = []
    for name, module in model.named_modules():
        if inside_target(name, covered):
            continue
        leaf = name.rsplit(".", 1)[-1]
        if leaf in _BLOCK_LISTS and isinstance(module, (nn.ModuleList, nn.Sequential)):
            for child_name, child in module.named_children():
                add(child)
                covered.append(f"{name}.{child_name}" if name else child_name)
        elif leaf in _RESNET_STAGES and isinstance(module, nn.Sequential):
            add(module)
            covered.append(name)
    denoiser = getattr(getattr(model, "restoration", None), "denoiser", None)
    if isinstance(denoiser, nn.Module):
        add(denoiser)
    return targets


def compile_blocks(model: nn.Module, backend: str = "inductor", mode: str | None = None,
                   **options: Any) -> int:
    """Compile :func:`compile_targets` of ``model`` in place; returns how many.

    Args:
        model: any model (the encoders are found by their timm container names).
        backend: a ``torch.compile`` backend (:data:`BACKENDS`).
        mode: a ``torch.compile`` mode (:data:`MODES`; ``None`` or ``"default"``: torch's).
        options: more ``torch.compile`` keyword arguments (``dynamic``, ``fullgraph``).

    Raises:
        ValueError: an unknown backend or mode, or nothing to compile in ``model``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if mode is not None and mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    targets = compile_targets(model)
    if not targets:
        raise ValueError(f"{type(model).__name__} has no encoder blocks to compile")
    kwargs = dict(options, backend=backend)
    if mode not in (None, "default"):
        kwargs["mode"] = mode
    for module in targets:
        module.compile(**kwargs)
    return len(targets)


__all__ = ["BACKENDS", "MODES", "compile_blocks", "compile_targets"]
