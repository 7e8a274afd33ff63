"""What each speed lever buys on a GPU: one model, the levers switched on one after another,
training and embedding timed after each, with the share of the card's dense bf16 peak.

    PYTHONPATH=src python3 benchmarks/gpu_levers.py --out runs/gpu-levers
    python benchmarks/gpu_levers.py --tiny --out runs/gpu-levers-tiny     # CPU, seconds

The config's model (``configs/mcgf-eva02-l-448.yaml`` by default, random weights) is built
once. Training rows, each adding to the one before:

1. ``baseline`` — the loop as it was before these levers: torch's default AdamW, drone and
   satellite images in two encoder passes;
2. ``+fused`` — fused AdamW (the loop's choice on CUDA);
3. ``+joint`` — ``model.joint_views``: one encoder pass over both views;
4. ``+denoiser ckpt`` — ``model.restoration_grad_checkpointing``: memory for time;
5. ``24 GB preset`` — the micro-batch of ``configs/mcgf-eva02-l-448-24gb.yaml``
   (its ``data.locations_per_batch``, or ``--preset-locations``) with the levers above;
6. ``+ckpt N blocks`` — back at the config's batch, ``model.grad_checkpointing_blocks``:
   only the first ``--checkpoint-blocks`` encoder blocks checkpointed (8 of EVA-02-L's
   24: 61.6 GiB estimated by ``memory_estimate.py`` with the denoiser checkpointed), the
   others not recomputed;
7. ``+compile`` — ``train.compile`` (inductor): the encoder blocks and the denoiser,
   compiled in place (the first steps compile and are not timed).

Embedding rows: autocast with fp32 weights before compiling, then compiled, then with the
weights cast to bf16 (autocast still on). FLOPs per step and per embedding batch are
counted once on the meta device, as ``gpu_check.py`` counts them (model FLOPs: checkpoint
recomputation excluded), so each row's TFLOP/s and share compare directly.

``--budget`` seconds bound the whole run: rows that would start after it are skipped and
said so, and ``OUT/gpu_levers.json`` is rewritten after every row, so a run stopped from
outside keeps what it measured. Without CUDA, or with ``--tiny``, a tiny ViT runs on the
CPU (``aot_eager`` stands in for inductor) so that the script itself stays tested; its
figures say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from _profiling import (
    BatchShape,
    batch_shape,
    benchmark_config,
    build_model,
    device_name,
    make_optimizer,
    model_flops,
    num_classes,
    random_batch,
    restore_weight,
    step_options,
    time_embedding,
    time_training,
)
from gpu_check import (
    DEFAULT_CONFIG,
    EMBED_PEAK_TARGET,
    TINY,
    TRAIN_PEAK_TARGET,
    resolve_peak,
    throughput,
)
from mcgf.config import load_config
from mcgf.errors import UserError
from mcgf.fileio import write_json_atomic, write_text_atomic
from mcgf.runtime import precision
from mcgf.safeload import one_line

#: The 24 GB preset, whose micro-batch the last training row uses.
PRESET = DEFAULT_CONFIG.with_name("mcgf-eva02-l-448-24gb.yaml")


def preset_locations() -> int:
    """Locations per micro-batch of :data:`PRESET`."""
    return int(load_config(PRESET)["data"]["locations_per_batch"])


def _row(name: str, timing: Any, flops: int | None, peak: float | None,
         target: float) -> dict[str, Any]:
    """One row: the timing, and its TFLOP/s and share of peak as ``gpu_check`` reports them."""
    return {"name": name, "median_ms": 1e3 * timing.median_s, "steps": timing.steps,
            "images_per_s": timing.images_per_s,
            "peak_memory_gib": timing.summary()["peak_memory_gib"],
            **throughput(flops, timing.median_s, peak, target)}


def run_levers(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Every row; returns the JSON-able report (also written after each row)."""
    from mcgf.models.backbone import checkpoint_first_blocks
    from mcgf.models.compile import compile_blocks

    tiny = args.tiny or not torch.cuda.is_available()
    overrides = (list(TINY) if tiny else []) + list(args.overrides)
    # The baseline is the config without the levers; they are switched on in place.
    overrides += ["model.joint_views=false", "model.restoration_grad_checkpointing=false",
                  "train.compile=false"]
    cfg = benchmark_config(load_config(args.config), overrides, str(args.config))
    device = torch.device("cpu" if tiny else "cuda")
    backend = "aot_eager" if tiny else "inductor"
    shape = batch_shape(cfg)
    amp = precision(device, cfg.train.amp).removesuffix("-autocast")
    peak = resolve_peak(torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                        amp, args.peak_tflops)
    report: dict[str, Any] = {"device": device_name(device), "tiny": tiny,
                              "config": str(args.config), "overrides": overrides, "amp": amp,
                              "torch": torch.__version__, "peak": peak, "train": [],
                              "embed": [], "skipped": []}
    start = time.perf_counter()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    classes = num_classes(cfg, args.classes)
    if max(shape.locations, args.preset_locations) > classes:
        raise UserError(f"{max(shape.locations, args.preset_locations)} locations per batch "
                        f"need at least as many classes (head of {classes}): raise --classes")
    preset = BatchShape(args.preset_locations, shape.drones_per_location)
    _, flops = model_flops(cfg, classes, shape=shape, embed_images=args.embed_batch)
    _, preset_flops = model_flops(cfg, classes, shape=preset, embed_images=1)
    model = build_model(cfg, device, classes)
    tc, options = cfg.train, step_options(cfg)
    clean = restore_weight(model) > 0
    images = torch.randn(args.embed_batch, 3, *model.input_size,
                         generator=torch.Generator().manual_seed(0)).to(device)
    pk = peak["tflops"]

    def save() -> None:
        report["seconds"] = time.perf_counter() - start
        write_json_atomic(out / "gpu_levers.json", report)

    def row(kind: str, name: str, fn: Callable[[], dict[str, Any]]) -> None:
        if time.perf_counter() - start > args.budget:
            report["skipped"].append(f"{kind}: {name} (budget of {args.budget:.0f} s spent)")
            print(f"[gpu_levers] skipped {kind} {name}: budget spent", flush=True)
            return
        try:
            result = fn()
        except torch.OutOfMemoryError as err:
            result = {"name": name, "error": f"out of memory: {str(err).splitlines()[0]}"}
        except Exception as err:  # an untried card or lever: record it, measure the rest
            traceback.print_exc()
            result = {"name": name, "error": f"{type(err).__name__}: {one_line(err, 200)}"}
        if device.type == "cuda":
            torch.cuda.empty_cache()
        report[kind].append(result)
        print(f"[gpu_levers] {kind} {name}: {_describe(result)}", flush=True)
        save()

    def train(name: str, fused: bool | None, batch_of: BatchShape = shape,
              step_flops: int = flops.train_step) -> None:
        def fn() -> dict[str, Any]:
            batch = random_batch(batch_of, model.input_size, classes, clean=clean,
                                 device=device, seed=tc.seed)
            opt = make_optimizer(model, tc.lr, tc.weight_decay, tc.layer_decay, fused=fused)
            timing = time_training(model, batch, opt, options, steps=args.steps,
                                   warmup=args.warmup, max_seconds=args.max_seconds)
            return _row(name, timing, step_flops, pk, TRAIN_PEAK_TARGET)
        row("train", name, fn)

    def embed(name: str, dtype: torch.dtype = torch.float32) -> None:
        def fn() -> dict[str, Any]:
            timing = time_embedding(model, images.to(dtype), amp=tc.amp,
                                    batches=args.embed_batches,
                                    warmup=args.warmup, max_seconds=args.max_seconds)
            return _row(name, timing, flops.embed_batch, pk, EMBED_PEAK_TARGET)
        row("embed", name, fn)

    embed("autocast, fp32 weights")
    fused = device.type == "cuda"
    train("baseline", False)
    train("+fused" if fused else "+fused (CPU: unchanged)", None)
    if hasattr(model, "joint_views"):
        model.joint_views = True
        train("+joint", None)
    branch = getattr(model, "restoration", None)
    if branch is not None:
        branch.set_grad_checkpointing(True)
        train("+denoiser ckpt", None)
    train(f"24 GB preset ({args.preset_locations} locations)", None, preset,
          preset_flops.train_step)
    encoder = getattr(model, "drone_encoder", None)
    if encoder is not None and hasattr(encoder, "blocks"):
        n = checkpoint_first_blocks(encoder, args.checkpoint_blocks)
        train(f"+ckpt {n} of {len(encoder.blocks)} blocks", None)
    compile_blocks(model, backend)
    train(f"+compile ({backend})", None)
    embed(f"compiled ({backend})")
    model.to(torch.bfloat16)
    embed(f"compiled, bf16 weights ({backend})", torch.bfloat16)
    save()
    return report


def _describe(result: dict[str, Any]) -> str:
    if "error" in result:
        return result["error"]
    share = result["share_of_peak"]
    return (f"{result['median_ms']:.1f} ms, {result['images_per_s']:.1f} img/s"
            + (f", {100 * share:.1f} % of peak" if share is not None else ""))


def markdown(report: dict[str, Any]) -> str:
    """The rows as Markdown tables, with each row's speed against the first of its kind."""
    lines = [f"device: {report['device']}, {report['amp']}; dense peak: "
             + (f"{report['peak']['tflops']:g} TFLOP/s" if report["peak"]["tflops"]
                else f"– ({report['peak']['source']})"), ""]
    for kind, unit in (("train", "ms/step"), ("embed", "ms/batch")):
        rows = [r for r in report[kind] if "error" not in r]
        lines += [f"| {kind} | {unit} | images/s | × first | TFLOP/s | share of peak | peak GiB |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        first = rows[0]["images_per_s"] if rows else None
        for r in report[kind]:
            if "error" in r:
                lines.append(f"| {r['name']} | {r['error']} | | | | | |")
                continue
            share = "–" if r["share_of_peak"] is None else f"{100 * r['share_of_peak']:.1f} %"
            tflops = "–" if r["tflops"] is None else f"{r['tflops']:.3g}"
            mem = "–" if r["peak_memory_gib"] is None else f"{r['peak_memory_gib']:.1f}"
            lines.append(f"| {r['name']} | {r['median_ms']:.1f} | {r['images_per_s']:.1f} | "
                         f"{r['images_per_s'] / first:.2f} | {tflops} | {share} | {mem} |")
        lines.append("")
    lines += [f"skipped: {s}" for s in report["skipped"]]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for gpu_levers.json and .md")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="training YAML config")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="config override (repeatable)")
    parser.add_argument("--classes", type=int, default=None, help="head size (default: config's)")
    parser.add_argument("--steps", type=int, default=8, help="timed training steps per row")
    parser.add_argument("--embed-batch", type=int, default=64, help="images per embedding batch")
    parser.add_argument("--embed-batches", type=int, default=10, help="timed embedding batches")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed steps before each row (they include any compiling)")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="timing cap per row")
    parser.add_argument("--budget", type=float, default=420.0,
                        help="seconds after which no further row starts")
    parser.add_argument("--preset-locations", type=int, default=None,
                        help="locations per micro-batch of the 24 GB preset row (default: "
                             "configs/mcgf-eva02-l-448-24gb.yaml's)")
    parser.add_argument("--checkpoint-blocks", type=int, default=8,
                        help="encoder blocks checkpointed in the partial-checkpointing row "
                             "(default 8)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="dense peak to take shares of (default: the card's, if known)")
    parser.add_argument("--tiny", action="store_true", help="tiny CPU config (tests)")
    args = parser.parse_args(argv)
    if min(args.steps, args.embed_batch, args.embed_batches, args.checkpoint_blocks) < 1 \
            or args.warmup < 0 or (args.classes is not None and args.classes < 2) \
            or (args.preset_locations is not None and args.preset_locations < 2):
        parser.error("--steps, --embed-batch, --embed-batches, --checkpoint-blocks must be "
                     ">= 1, --warmup >= 0, --classes and --preset-locations >= 2")
    if args.preset_locations is None:
        args.preset_locations = preset_locations()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        report = run_levers(args, out)
    except UserError as err:
        print(f"gpu_levers: error: {err}", file=sys.stderr)
        return 2
    text = markdown(report)
    write_text_atomic(out / "gpu_levers.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
