"""Cost of MCGF's restoration branch per training step: branch on vs off, same model and batch.

    python benchmarks/step_cost.py                                   # paper scale (GPU)
    python benchmarks/step_cost.py --set model.backbone_name=vit_small_patch16_224 \\
        --set model.img_size=224 --batch 4 --steps 10 --device cpu   # small, on a CPU

Builds the config's model (random init: ``model.pretrained`` is forced false), makes one
batch of random tensors shaped like the config's (``P`` locations × ``M`` drone views + one
satellite tile each; ``--batch`` sets the drone images), and times full training steps —
forward, backward, gradient clipping, AdamW, under the loop's autocast (bf16 on CUDA) —
with the branch on (``drone_clean`` in the batch, ``model.lambda_restore`` > 0) and off
(no ``drone_clean``: the branch does nothing and its parameters are not stepped). After
warmup, timed steps alternate off/on. Prints the median seconds per step of each, their
ratio (target ≤ 1.25 at paper scale), the branch's parameter share of the encoder
(target ≤ 10 %) and the hardware.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from _profiling import (
    StepCost,
    batch_shape,
    benchmark_config,
    build_model,
    compare_step_cost,
    device_name,
    num_classes,
    random_batch,
    step_options,
)
from mcgf.config import load_config
from mcgf.errors import UserError
from mcgf.models.model_registry import resolved_options
from mcgf.runtime import resolve_device

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "mcgf-eva02-l-448.yaml"
RATIO_TARGET = 1.25
SHARE_TARGET = 0.10


def measure(
    config: str | Path = DEFAULT_CONFIG,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    drone_images: int | None = None,
    steps: int = 10,
    warmup: int = 2,
    device: str = "auto",
    max_seconds: float | None = None,
    classes: int | None = None,
) -> tuple[StepCost, str]:
    """Build the config's model and compare steps with the branch on/off.

    ``classes``: the head size (default: ``model.num_classes``, else the model's default).

    Returns:
        The :class:`~_profiling.StepCost` and the hardware's name.

    Raises:
        UserError: bad config/override, a model without restoration branch or
            ``model.lambda_restore`` = 0, or a bad ``--batch``.
    """
    cfg = benchmark_config(load_config(config), overrides, str(config))
    options = resolved_options(cfg.model["name"], cfg.model)
    if not options.get("restoration") or options.get("lambda_restore", 0) <= 0:
        raise UserError(f"{config}: the step cost compares the restoration branch on and off: "
                        "use a config with model.restoration true and model.lambda_restore > 0")
    dev = resolve_device(device)
    shape = batch_shape(cfg, drone_images)
    n_classes = num_classes(cfg, classes)
    model = build_model(cfg, dev, n_classes)
    batch = random_batch(shape, model.input_size, n_classes, clean=True, device=dev,
                         seed=cfg.train.seed)
    cost = compare_step_cost(model, batch, step_options(cfg), lr=cfg.train.lr,
                             weight_decay=cfg.train.weight_decay, layer_decay=cfg.train.layer_decay,
                             steps=steps, warmup=warmup, max_seconds=max_seconds)
    return cost, device_name(dev)


def report(cost: StepCost, hardware: str, label: str = "") -> str:
    """The figures as printed lines."""
    on, off = cost.on, cost.off
    lines = [
        f"hardware: {hardware}",
        f"model: {label}" if label else None,
        f"batch: {on.images_per_step} images per step; {on.steps} timed steps each (median)",
        f"branch off: {off.median_s * 1e3:9.1f} ms/step  ({off.images_per_s:8.1f} images/s)"
        + (f", peak {off.peak_memory_bytes / 2**30:.2f} GiB" if off.peak_memory_bytes else ""),
        f"branch on:  {on.median_s * 1e3:9.1f} ms/step  ({on.images_per_s:8.1f} images/s)"
        + (f", peak {on.peak_memory_bytes / 2**30:.2f} GiB" if on.peak_memory_bytes else ""),
        f"ratio on/off: {cost.ratio:.3f}x (target <= {RATIO_TARGET}x at paper scale: "
        f"{'met' if cost.ratio <= RATIO_TARGET else 'NOT met'})",
        f"branch parameters: {cost.branch_params / 1e6:.2f} M = {100 * cost.branch_share:.1f} % "
        f"of the encoder's {cost.encoder_params / 1e6:.1f} M (target <= {100 * SHARE_TARGET:.0f} %: "
        f"{'met' if cost.branch_share <= SHARE_TARGET else 'NOT met'})",
    ]
    return "\n".join(line for line in lines if line is not None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="training YAML config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set model.img_size=224 (repeatable)")
    parser.add_argument("--batch", type=int, default=None,
                        help="drone images per step (default: the config's P x M); one "
                        "satellite tile per data.drones_per_location of them")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--classes", type=int, default=None,
                        help="head size (default: model.num_classes, else the model's default)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="stop timing after this long (at least one step each)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or (args.classes is not None and args.classes < 2):
        parser.error("--steps must be >= 1, --warmup >= 0 and --classes >= 2")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        cost, hardware = measure(args.config, args.overrides, drone_images=args.batch,
                                 steps=args.steps, warmup=args.warmup, device=args.device,
                                 max_seconds=args.max_seconds, classes=args.classes)
    except UserError as err:
        print(f"step_cost: error: {err}", file=sys.stderr)
        return 2
    print(report(cost, hardware, label=f"{args.config} {' '.join(args.overrides)}".strip()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
