"""Step cost and size of every compared method at paper scale, counted without a GPU.

    python benchmarks/paper_cost.py                       # all methods, their paper configs
    python benchmarks/paper_cost.py --methods mcgf,lpn --json runs/paper_cost.json

Each method's paper config (the ``paper`` column of ``seed_table.METHODS``) builds its
model on PyTorch's ``meta`` device: shapes only, no memory and no arithmetic, so even
EVA-02-L at 448 px is counted in seconds on a laptop. For each method it prints the
parameters (all, and those the optimizer steps), the FLOPs of one training step at the
config's batch (``model.loss`` forward and its backward, restoration branch included
where the config has one) and per training image, and the FLOPs of embedding one image
(the test-time ``embed`` of a drone view). FLOPs are what ``torch.utils.flop_counter``
counts (matrix multiplications and convolutions, 2 per multiply-add; element-wise work is
not counted); a convolution's backward is counted as one forward per requested gradient
(PyTorch's formula ignores groups there and overcounts depthwise convolutions by their
channel count). The counter is ``_profiling.model_flops``, which ``benchmarks/gpu_check.py``
also uses to turn measured step times into TFLOP/s and a share of the card's peak. Here
each model is built as its config says, so a gradient-checkpointed one (``mcgf``,
``sample4geo``) has its recomputed forward counted too; ``gpu_check.py`` counts model
FLOPs without it. Seconds per step need a GPU: ``benchmarks/gpu_check.py``.

Our own code, because no library counts a whole training step of an arbitrary
``model.loss`` on the meta device; the counting itself is PyTorch's.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from _profiling import batch_shape, benchmark_config, count_flops, model_flops
from mcgf.config import load_config
from mcgf.errors import UserError
from mcgf.fileio import write_json_atomic
from seed_table import CONFIGS, METHODS, parse_methods

#: Training locations of University-1652 (the head size of every paper config).
U1652_CLASSES = 701
#: The FLOP counter (``_profiling.count_flops``), also reachable under this name.
_flops = count_flops


@dataclass(frozen=True)
class PaperCost:
    """Size and FLOPs of one method at paper scale."""

    method: str
    config: str
    image_size: int
    batch_images: int
    params_m: float
    trainable_m: float
    train_step_gflops: float
    train_gflops_per_image: float
    embed_gflops_per_image: float
    counted: str


def method_cost(name: str, classes: int = U1652_CLASSES) -> PaperCost:
    """Count ``name``'s paper config (see the module docstring).

    A loss whose control flow depends on values (``if mask.any()``) cannot run on the
    meta device; that method is counted on the CPU with two locations per batch instead
    and its step scaled to the config's batch (FLOPs grow linearly with the images; the
    losses' own pairwise terms are negligible), which ``counted`` says.

    Raises:
        UserError: the config cannot be read or its model cannot be built.
    """
    path = CONFIGS / METHODS[name].paper
    cfg = benchmark_config(load_config(path), [], str(path))
    images = batch_shape(cfg).images
    # As configured: a gradient-checkpointed model's recomputed forward is counted too.
    model, flops = model_flops(cfg, classes, recompute=True)
    params = list(model.parameters())
    train = flops.train_step
    return PaperCost(
        method=METHODS[name].label, config=f"configs/{METHODS[name].paper}",
        image_size=int(cfg.model.get("img_size") or 224), batch_images=images,
        params_m=sum(p.numel() for p in params) / 1e6,
        trainable_m=sum(p.numel() for p in params if p.requires_grad) / 1e6,
        train_step_gflops=train / 1e9, train_gflops_per_image=train / 1e9 / images,
        embed_gflops_per_image=flops.embed_batch / 1e9, counted=flops.counted,
    )


def format_table(rows: list[PaperCost]) -> str:
    """The costs as a Markdown table."""
    lines = ["| method | config | px | images/step | params (M) | trained (M) | "
             "GFLOPs/step | GFLOPs/train image | GFLOPs/embedded image | counted |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r.method} | `{r.config}` | {r.image_size} | {r.batch_images} | "
                     f"{r.params_m:.1f} | {r.trainable_m:.1f} | {r.train_step_gflops:,.0f} | "
                     f"{r.train_gflops_per_image:.1f} | {r.embed_gflops_per_image:.1f} | {r.counted} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=None, help=f"comma-separated subset of {','.join(METHODS)}")
    p.add_argument("--classes", type=int, default=U1652_CLASSES,
                   help=f"head size (default {U1652_CLASSES}, University-1652 train)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    try:
        rows = [method_cost(name, args.classes) for name in parse_methods(args.methods)]
        print(format_table(rows))
        print("\nFLOPs from torch.utils.flop_counter, on the meta device (no hardware involved) "
              "or, where a loss needs values, on the CPU (column counted); "
              "seconds per step: benchmarks/gpu_check.py on a GPU.")
        if args.json:
            write_json_atomic(Path(args.json), [asdict(r) for r in rows])
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
