"""One short GPU check of the paper-scale model: training and embedding throughput, memory,
achieved TFLOP/s and share of the GPU's peak, and the restoration branch's step cost.

    PYTHONPATH=src python3 benchmarks/gpu_check.py --out runs/gpu-check
    python benchmarks/gpu_check.py --tiny --out runs/gpu-check-tiny      # CPU, seconds

Phases, each bounded by ``--max-seconds`` of timing:

1. **build** — the config's model (``configs/mcgf-eva02-l-448.yaml`` by default) with random
   weights (``model.pretrained`` forced false; ``--weights PATH`` loads a local file);
2. **flops** — the model FLOPs of one training step and of one embedding batch, counted on
   PyTorch's ``meta`` device (see below): no GPU time, no GPU memory;
3. **train** — ``--steps`` full training steps on one batch of random tensors shaped like
   the config's (``P`` locations × ``M`` drone views + one satellite tile each), with the
   config's objective and the training loop's AdamW / layer decay / clipping / bf16
   autocast. Each step is the loop's own ``mcgf.training.step.train_step``, fed random
   tensors rather than the loop's loader: the loop's throughput on a real dataset also depends on JPEG decoding and the weather
   rendered by CPU workers, which this check keeps out so the figure is the GPU's;
4. **step cost** — the same model with the branch on vs off (see ``step_cost.py``), at the
   config's ``restore_size`` and at each of ``--restore-sizes``;
5. **embed** — ``model.embed`` under ``torch.inference_mode`` and bf16 autocast, batches of
   ``--embed-batch`` images.

Images/s counts drone plus satellite images, as ``log.csv`` does. Peak memory is
``torch.cuda.max_memory_allocated`` per phase.

Achieved TFLOP/s is model FLOPs over the median time: the FLOPs of one training step over
the median step, of one embedding batch over the median batch. Model FLOPs are what
``torch.utils.flop_counter.FlopCounterMode`` counts (matrix multiplications, attention and
convolutions, 2 per multiply-add) for one ``model.loss(batch)["total"].backward()`` on a
batch of the timed shape (restoration term included when the config weights it) and for
``model.embed`` of one batch, on PyTorch's ``meta`` device, with the model built with
every ``*grad_checkpointing`` option off (``_profiling.model_flops``): checkpointing runs
each block's forward a second time during the backward to save memory, and counting that
recomputation would report hardware work as if it were the model's, inflating the figure
for a config that trades speed for memory. The share of peak divides by the card's dense
(no 2:4 sparsity) bf16 tensor-core peak from the table in ``_profiling.py`` (fp16 under
fp16 autocast), matched on the GPU's name; ``--peak-tflops`` overrides it, and without a
known peak (the CPU, an unlisted card) the share is "–". The goals on an H100: training
≥ 30 % of peak (restoration branch included), embedding ≥ 45 %; each share is printed
beside its target.

Writes ``OUT/gpu_check.json`` and ``OUT/gpu_check.md`` (the printed Markdown table). A
phase that runs out of GPU memory is reported as such and the others still run.

Without a CUDA device, or with ``--tiny``, a tiny ViT config runs on the CPU instead, so
that the script itself stays tested; its figures say nothing about the paper scale.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from _profiling import (
    batch_shape,
    benchmark_config,
    build_model,
    compare_step_cost,
    dense_peak,
    dense_peak_tflops,
    device_name,
    make_optimizer,
    model_flops,
    num_classes,
    random_batch,
    restore_weight,
    step_options,
    time_embedding,
    time_training,
    timing_dict,
)
from mcgf.config import load_config
from mcgf.errors import UserError
from mcgf.fileio import write_json_atomic, write_text_atomic
from mcgf.models.params import count_parameters
from mcgf.runtime import precision

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "mcgf-eva02-l-448.yaml"
#: Overrides that shrink any MCGF config to a model that steps in milliseconds on a CPU.
TINY = (
    "model.backbone_name=vit_tiny_patch16_224", "model.img_size=32", "model.grad_checkpointing=false",
    "model.restoration_width=8", "model.restoration_mults=[1,2]", "model.restoration_blocks=1",
    "model.restore_size=16", "data.locations_per_batch=2", "data.drones_per_location=2",
    "train.device=cpu",
)
RATIO_TARGET = 1.25
SHARE_TARGET = 0.10
#: Goal shares of the dense bf16 peak on an H100: training (branch included), embedding.
TRAIN_PEAK_TARGET = 0.30
EMBED_PEAK_TARGET = 0.45


def _phase(report: dict[str, Any], name: str, fn: Callable[[], dict[str, Any]],
           out: Path) -> None:
    """Run one phase into ``report[name]`` and save the report so far.

    A failing phase (out of memory, or a bug on an untried card) is recorded with its
    error and the next phase still runs: one run on a GPU should give every figure it can.
    """
    t0 = time.perf_counter()
    try:
        report[name] = fn()
    except torch.OutOfMemoryError as err:
        report[name] = {"error": f"out of memory: {str(err).splitlines()[0]}"}
    except Exception as err:
        traceback.print_exc()
        report[name] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    report.setdefault("phase_seconds", {})[name] = time.perf_counter() - t0
    print(f"[gpu_check] {name}: {time.perf_counter() - t0:.1f} s", flush=True)
    write_json_atomic(out / "gpu_check.json", report)


def resolve_peak(gpu_name: str | None, amp: str, override: float | None = None) -> dict[str, Any]:
    """The peak the shares are taken of: ``{"tflops", "dtype", "source"}``.

    Args:
        gpu_name: ``torch.cuda.get_device_name``; ``None`` on the CPU.
        amp: the arithmetic of the timed work, ``"bf16"``, ``"fp16"`` or ``"fp32"``.
        override: ``--peak-tflops``, used as given whatever the device.
    """
    if override is not None:
        return {"tflops": float(override), "dtype": amp, "source": "--peak-tflops"}
    hint = "pass --peak-tflops"
    if gpu_name is None:
        return {"tflops": None, "dtype": amp, "source": f"no peak for a CPU: {hint}"}
    if amp not in ("bf16", "fp16"):
        return {"tflops": None, "dtype": amp,
                "source": f"the table holds bf16/fp16 peaks, not {amp}: {hint}"}
    value = dense_peak_tflops(gpu_name, amp)
    entry = dense_peak(gpu_name)
    if value is None:
        return {"tflops": None, "dtype": amp,
                "source": f"no dense {amp} peak known for {gpu_name}: {hint}"}
    return {"tflops": value, "dtype": amp, "source": entry.source if entry else ""}


def throughput(flops: int | None, median_s: float, peak_tflops: float | None,
               target: float) -> dict[str, Any]:
    """Achieved TFLOP/s (``flops`` per ``median_s``) and its share of ``peak_tflops``;
    ``None`` where the count or the peak is missing."""
    tflops = None if flops is None else flops / median_s / 1e12
    share = None if tflops is None or not peak_tflops else tflops / peak_tflops
    return {"flops": flops, "tflops": tflops, "peak_tflops": peak_tflops,
            "share_of_peak": share, "share_target": target}


def run_check(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """All phases; returns the JSON-able report."""
    tiny = args.tiny or not torch.cuda.is_available()
    overrides = list(TINY) + list(args.overrides) if tiny else list(args.overrides)
    if args.weights:
        overrides.append(f"model.weights={args.weights}")
    cfg = benchmark_config(load_config(args.config), overrides, str(args.config),
                           keep_weights=True)
    out.mkdir(parents=True, exist_ok=True)  # only once the config is known to be good
    device = torch.device("cpu" if tiny else "cuda")
    shape = batch_shape(cfg)
    report: dict[str, Any] = {
        "device": device_name(device), "tiny": tiny, "config": str(args.config),
        "overrides": overrides, "torch": torch.__version__, "cuda": torch.version.cuda,
        "python": platform.python_version(), "model_config": dict(cfg.model),
        "batch": {"locations": shape.locations, "drones_per_location": shape.drones_per_location,
                  "drone_images": shape.drone_images, "images": shape.images},
        "amp": precision(device, cfg.train.amp).removesuffix("-autocast"),
    }
    print(f"[gpu_check] {report['device']}, torch {torch.__version__}, "
          f"{'tiny CPU config' if tiny else args.config}", flush=True)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    t0 = time.perf_counter()
    n_classes = num_classes(cfg, args.classes)
    model = build_model(cfg, device, n_classes)
    report["phase_seconds"] = {"build": time.perf_counter() - t0}
    branch = getattr(model, "restoration", None)
    encoder = getattr(model, "drone_encoder", model)
    report["params"] = {"total": count_parameters(model), "encoder": count_parameters(encoder),
                        "branch": count_parameters(branch),
                        "branch_share_of_encoder": count_parameters(branch) / count_parameters(encoder)}
    print(f"[gpu_check] build: {report['phase_seconds']['build']:.1f} s", flush=True)
    options = step_options(cfg)
    tc = cfg.train
    with_clean = branch is not None and restore_weight(model) > 0
    report["peak"] = resolve_peak(torch.cuda.get_device_name(device) if device.type == "cuda"
                                  else None, report["amp"], args.peak_tflops)

    def flops_phase() -> dict[str, Any]:
        _, counts = model_flops(cfg, n_classes, shape=shape, embed_images=args.embed_batch)
        return counts.summary()

    _phase(report, "flops", flops_phase, out)

    def counted(key: str) -> int | None:
        return report["flops"].get(key) if "error" not in report["flops"] else None

    def train_phase() -> dict[str, Any]:
        batch = random_batch(shape, model.input_size, n_classes, clean=with_clean, device=device,
                             seed=tc.seed)
        opt = make_optimizer(model, tc.lr, tc.weight_decay, tc.layer_decay)
        timing = time_training(model, batch, opt, options, steps=args.steps, warmup=args.warmup,
                               max_seconds=args.max_seconds)
        del opt
        out = timing_dict(timing)
        out["drone_images_per_s"] = shape.drone_images / timing.median_s
        out.update(throughput(counted("train_step"), timing.median_s,
                              report["peak"]["tflops"], TRAIN_PEAK_TARGET))
        return out

    _phase(report, "train", train_phase, out)

    def cost_phase() -> dict[str, Any]:
        if not with_clean:
            return {"skipped": "the config has no restoration branch or model.lambda_restore = 0"}
        batch = random_batch(shape, model.input_size, n_classes, clean=True, device=device,
                             seed=tc.seed)
        sizes: list[int | None] = [getattr(model, "restore_size", None)]
        sizes += [s for s in args.restore_sizes if s not in sizes]
        results = []
        for size in sizes:
            model.restore_size = size
            try:
                cost = compare_step_cost(model, batch, options, lr=tc.lr,
                                         weight_decay=tc.weight_decay, layer_decay=tc.layer_decay,
                                         steps=args.cost_steps, warmup=args.warmup,
                                         max_seconds=args.max_seconds / len(sizes))
                results.append(timing_dict(cost))
                print(f"[gpu_check] restore_size {size}: ratio {cost.ratio:.3f}", flush=True)
            except torch.OutOfMemoryError:
                results.append({"restore_size": size, "error": "out of memory"})
                torch.cuda.empty_cache()
        model.restore_size = sizes[0]
        return {"configured": results[0], "sizes": results}

    _phase(report, "step_cost", cost_phase, out)

    def embed_phase() -> dict[str, Any]:
        g = torch.Generator().manual_seed(tc.seed)
        images = torch.randn(args.embed_batch, 3, *model.input_size, generator=g).to(device)
        timing = time_embedding(model, images, amp=tc.amp, batches=args.embed_batches,
                                warmup=args.warmup, max_seconds=args.max_seconds)
        return {**timing_dict(timing),
                **throughput(counted("embed_batch"), timing.median_s,
                             report["peak"]["tflops"], EMBED_PEAK_TARGET)}

    _phase(report, "embed", embed_phase, out)
    return report


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "—" if value is None else format(value, spec) + unit


def _flop(n: int) -> str:
    """``n`` FLOPs with an SI prefix, four significant digits."""
    for power, prefix in ((15, "P"), (12, "T"), (9, "G"), (6, "M"), (3, "k")):
        if n >= 10**power:
            return f"{n / 10**power:.4g} {prefix}FLOP"
    return f"{n} FLOP"


def _tflops(value: float) -> str:
    """TFLOP/s with three significant digits below 100 (a CPU's are tiny)."""
    return f"{value:.1f}" if value >= 100 else f"{value:.3g}"


def _rate_row(phase: dict[str, Any]) -> str:
    """``x TFLOP/s (y % of peak, target ≥ z %)`` of a train or embed phase."""
    share = phase["share_of_peak"]
    share_text = "– of peak" if share is None else f"{100 * share:.1f} % of peak"
    return (f"{_tflops(phase['tflops'])} ({share_text}, target ≥ "
            f"{100 * phase['share_target']:.0f} %)")


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table (what is printed and written to ``gpu_check.md``)."""
    p = report["params"]
    b = report["batch"]
    rows = [
        ("device", report["device"]),
        ("backbone", f"{report['model_config'].get('backbone_name')} @ "
                     f"{report['model_config'].get('img_size')} px"),
        ("parameters: encoder / branch", f"{p['encoder'] / 1e6:.1f} M / {p['branch'] / 1e6:.2f} M "
                                         f"({100 * p['branch_share_of_encoder']:.1f} %, target ≤ "
                                         f"{100 * SHARE_TARGET:.0f} %)"),
        ("batch", f"{b['locations']} locations × ({b['drones_per_location']} drone + 1 satellite) "
                  f"= {b['images']} images, {report['amp']}"),
        ("build", f"{report['phase_seconds']['build']:.1f} s"),
    ]
    peak = report.get("peak")
    if peak is not None:
        rows.append(("dense peak", f"{peak['tflops']:g} TFLOP/s {peak['dtype']} ({peak['source']})"
                     if peak["tflops"] else f"– ({peak['source']})"))
    flops = report.get("flops")
    if flops is not None:
        rows.append(("model FLOPs", flops["error"] if "error" in flops else
                     f"{_flop(flops['train_step'])} per training step, "
                     f"{_flop(flops['embed_batch'])} per embedding batch of "
                     f"{flops['embed_images']} (counted on {flops['counted']}, "
                     "checkpoint recomputation excluded)"))
    train = report.get("train", {})
    if "error" in train:
        rows.append(("training", train["error"]))
    else:
        rows += [
            ("training step", f"{1e3 * train['median_s']:.1f} ms (median of {train['steps']})"),
            ("training images/s", f"{train['images_per_s']:.1f} "
                                  f"({train['drone_images_per_s']:.1f} drone)"),
            ("training peak memory", _fmt(train["peak_memory_gib"], ".2f", " GiB")),
        ]
        if train.get("tflops") is not None:
            rows.append(("training TFLOP/s", _rate_row(train)))
    cost = report.get("step_cost", {})
    if "skipped" in cost or "error" in cost:
        rows.append(("step cost", cost.get("skipped") or cost.get("error")))
    else:
        for c in cost["sizes"]:
            name = f"step cost on/off, restore_size {c['restore_size']}"
            if "error" in c:
                rows.append((name, c["error"]))
                continue
            rows.append((name, f"{c['ratio']:.3f}× ({1e3 * c['on']['median_s']:.1f} / "
                               f"{1e3 * c['off']['median_s']:.1f} ms, peak "
                               f"{_fmt(c['on']['peak_memory_gib'], '.1f')} / "
                               f"{_fmt(c['off']['peak_memory_gib'], '.1f', ' GiB')}; target ≤ "
                               f"{RATIO_TARGET}×)"))
    emb = report.get("embed", {})
    if "error" in emb:
        rows.append(("embedding", emb["error"]))
    else:
        rows += [
            ("embedding images/s", f"{emb['images_per_s']:.1f} (batch {emb['images_per_step']}, "
                                   f"median of {emb['steps']})"),
            ("embedding peak memory", _fmt(emb["peak_memory_gib"], ".2f", " GiB")),
        ]
        if emb.get("tflops") is not None:
            rows.append(("embedding TFLOP/s", _rate_row(emb)))
    lines = ["| measure | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines) + "\n"


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(s < 8 for s in sizes):
        raise argparse.ArgumentTypeError("restore sizes must be >= 8")
    return sizes


def _positive(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="training YAML config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (repeatable)")
    parser.add_argument("--weights", default=None, help="local backbone weights file (optional)")
    parser.add_argument("--classes", type=int, default=None,
                        help="head size (default: model.num_classes, else the model's default)")
    parser.add_argument("--steps", type=int, default=200, help="timed training steps")
    parser.add_argument("--cost-steps", type=int, default=20,
                        help="timed steps per variant of the step-cost comparison")
    parser.add_argument("--restore-sizes", type=_sizes, default=[],
                        help="extra restore_size values for the step cost, e.g. 160,128")
    parser.add_argument("--embed-batch", type=int, default=64, help="images per embedding batch")
    parser.add_argument("--embed-batches", type=int, default=30, help="timed embedding batches")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before each timing")
    parser.add_argument("--max-seconds", type=float, default=90.0,
                        help="time limit of each phase's timing (at least one step runs)")
    parser.add_argument("--peak-tflops", type=_positive, default=None,
                        help="the device's dense peak in TFLOP/s for the shares (default: the "
                        "table's bf16/fp16 figure for known GPUs, none on the CPU)")
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny ViT config on the CPU (the default without a GPU)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: 1 for the tiny CPU run, whose small "
                        "operators gain nothing from more and lose much on a busy machine)")
    args = parser.parse_args(argv)
    if min(args.steps, args.cost_steps, args.embed_batch, args.embed_batches) < 1 or args.warmup < 0 \
            or (args.classes is not None and args.classes < 2):
        parser.error("--steps, --cost-steps, --embed-batch, --embed-batches must be >= 1, "
                     "--warmup >= 0, --classes >= 2")
    if args.threads:
        torch.set_num_threads(args.threads)
    elif args.tiny or not torch.cuda.is_available():
        torch.set_num_threads(1)
    out = Path(args.out)
    try:
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} is a file: give a folder")
        report = run_check(args, out)
    except UserError as err:
        print(f"gpu_check: error: {err}", file=sys.stderr)
        return 2
    table = markdown(report)
    write_json_atomic(out / "gpu_check.json", report)
    write_text_atomic(out / "gpu_check.md", table)
    print(table, end="")
    print(f"[gpu_check] wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    failed = [k for k in ("flops", "train", "step_cost", "embed") if "error" in report.get(k, {})]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
