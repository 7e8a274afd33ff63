"""Throughput of the training data pipeline: images/s per CPU core at paper scale.

    python benchmarks/pipeline.py                                  # 448 px, workers 0 and 1
    python benchmarks/pipeline.py --data /data/University-Release --workers 0,1,2,4
    python benchmarks/pipeline.py --model-ips 40.5 --json runs/pipeline.json
    python benchmarks/pipeline.py --train-steps 20 --train-workers 8   # on a GPU machine

Times the DataLoader that ``mcgf train`` reads, built by the training loop's own functions
from the config (default ``configs/mcgf-eva02-l-448.yaml``, whose ``data``, ``weather`` and
``model`` sections are used as written; only ``data.root`` is replaced, and
``data.workers`` set per measurement): :func:`~mcgf.training.loop.read_train_split`,
:func:`~mcgf.training.loop.build_dataset` (JPEG decode, the configured weather on drone
views, the model's resize + normalisation + random flips/rotation/scale/shift, and the
clean drone twin when the model trains restoration) and
:func:`~mcgf.training.loop.build_loader` (the cross-view batch sampler, epoch-tagged
indices, ``collate_cross_view``, persistent workers). The model itself is built on torch's
``meta`` device, only for what the dataset reads from it (input size, normalisation,
whether it needs clean twins): no weights, no memory. Batches are drawn on the CPU
(no pinned memory), epoch after epoch, as training draws them.

For each ``--workers`` value it draws ``--warmup`` batches (worker start-up), then times
``--batches`` batches and reports images/s (drone + satellite images in the collated
batches, as ``log.csv`` counts them; the clean twins are made but not counted) and
images/s per loading process: per worker, or the main process with ``--workers 0``. On a
machine with at least one core per worker that is the rate of one CPU core.

Stage breakdown (one process, the images of the first ``--stage-batches`` batches of the
plan): the functions each item goes through are timed directly —
:func:`~mcgf.data.images.read_image_or_none` (decode),
:func:`~mcgf.data.datasets.degrade_image` with the dataset's weather (drone views only),
the dataset's drone/satellite transforms (resize, normalisation, augmentation; twice per
drone view with clean twins) and ``collate_cross_view`` on the dataset's own items. The
shares are of the sum of those four; the time of whole items through the dataset (which
adds per-item seeding and the RNG replay of the clean twin) is printed beside it.

The number of loader workers that keeps a GPU busy is ``ceil(model_ips / rate)``, with the
per-process rate of the largest ``--workers`` measured. ``--model-ips`` defaults to 40.5
training images/s: EVA-02-L at 448 px with the restoration branch on one NVIDIA H100 80GB,
measured by ``benchmarks/gpu_check.py`` (README, "The MCGF model and its training";
docs/benchmarks.md). It leaves out the CPU the training process itself needs.

With ``--train-steps N`` it also trains the config's model (random weights, on ``--device``:
the GPU when there is one) for ``N`` steps of the loop's own ``train_step`` fed by the real
loader with ``--train-workers`` processes (default: the config's ``data.workers``; memory
pinned on CUDA), then ``N`` steps on one batch already on the device (model only), and
reports both rates and their ratio: whether the loader keeps the GPU busy, measured rather
than inferred from ``--model-ips``.

Without ``--data`` a University-1652-shaped training split is rendered with
:func:`mcgf.synth.generate_benchmark` (``--locations`` × ``--views`` drone views + one
satellite tile each at ``--synth-size`` px; the one test location the generator requires
at 64 px) into ``--cache-dir`` and reused when an identical one is there. The defaults
(16 locations: every batch has the config's 16 distinct locations; 8 views) render in
about two minutes on two cores; the timing cycles through epochs, so a small split is
enough (decode, weather and augmentation do not depend on which image they get).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from _hardware import cpu_model
from mcgf.config import apply_overrides, load_config
from mcgf.errors import UserError
from mcgf.fileio import write_json_atomic
from mcgf.training.config import RunConfig, parse_run_config

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "mcgf-eva02-l-448.yaml"
#: Training images/s of EVA-02-L/448 (restoration branch on, bf16, batch 48) on one H100.
MODEL_IPS = 40.5
MODEL_IPS_SOURCE = ("benchmarks/gpu_check.py: EVA-02-L at 448 px with the restoration branch, "
                    "bf16, 48-image steps, on one NVIDIA H100 80GB (README, The MCGF model "
                    "and its training; docs/benchmarks.md)")
STAGES = ("decode", "weather", "augment", "collate")


# -- hardware ---------------------------------------------------------------------




def load_average() -> float | None:
    """The 1-minute load average (``None`` where the OS has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


# -- data -------------------------------------------------------------------------


def synth_config(locations: int, views: int, size: int) -> Any:
    """The :class:`~mcgf.synth.SynthConfig` of the rendered sample: ``locations`` training
    locations of ``views`` drone views + one tile at ``size`` px, and the one test location
    the generator requires at its smallest size."""
    from mcgf.synth import SynthConfig

    return SynthConfig(train=locations, test=1, distractors=0, extra_distractors=0, views=views,
                       size=64, train_size=size, seed=0)


def synthetic_data(cache_dir: str | Path, locations: int, views: int, size: int, *,
                   workers: int | None = None, progress: bool = True) -> tuple[Path, bool]:
    """The training root of the rendered sample under ``cache_dir`` and whether an identical
    one was already there (then nothing is rendered).

    Raises:
        UserError: an out-of-range size or count, or a ``cache_dir`` that holds something
            other than this generator's output.
    """
    from mcgf.cli.demo import same_benchmark
    from mcgf.synth import generate_benchmark
    from mcgf.synth.benchmark import RELEASE

    config = synth_config(locations, views, size)
    config.validate()
    cache = Path(cache_dir)
    reused = same_benchmark(cache, config, "none")
    if not reused:
        generate_benchmark(cache, config, workers=workers, progress=progress, overwrite=True)
    return cache / RELEASE, reused


def run_config(config: str | Path, overrides: Sequence[str], root: str | Path) -> RunConfig:
    """The training config with ``overrides`` applied and ``data.root`` set to ``root``.

    Raises:
        UserError: a bad override or config value, naming it.
    """
    cfg = apply_overrides(load_config(config), list(overrides))
    if not isinstance(cfg.get("data", {}), dict):
        raise UserError(f"{config}: 'data' must be a mapping of options")
    cfg.setdefault("data", {})["root"] = str(root)
    return parse_run_config(cfg, str(config))


def input_model(cfg: RunConfig, num_classes: int) -> torch.nn.Module:
    """The configured model built on the ``meta`` device (no initial weights read): what
    :func:`~mcgf.training.loop.build_dataset` reads from it (``input_size``, ``mean``,
    ``std``, ``needs_clean_targets``) comes from the same code as in training."""
    from mcgf.models.model_registry import create_model, takes_option, without_initial_weights

    name = cfg.model["name"]
    options = {k: v for k, v in cfg.model.items() if k != "name"}
    if takes_option(name, "num_classes"):  # a model without a classifier may not
        options["num_classes"] = num_classes
    with torch.device("meta"):
        return create_model(name, **without_initial_weights(name, options))


def training_dataset(cfg: RunConfig) -> Any:
    """The training set ``mcgf train`` builds from ``cfg`` (its weather, transforms and clean
    twins), over the training split of ``data.root``.

    Raises:
        UserError: the split is missing or no location has both views.
    """
    from mcgf.data.layout import aligned_classes
    from mcgf.training.loop import build_dataset, read_train_split

    drone, satellite = read_train_split(cfg.data.root, cfg.data.layout)
    n_classes = len(aligned_classes(drone, satellite))
    if n_classes == 0:
        raise UserError(f"{cfg.data.root}: no training location has both drone views and a "
                        "satellite tile")
    return build_dataset(cfg, drone, satellite, input_model(cfg, n_classes))


# -- timing -----------------------------------------------------------------------


def _endless(sampler: Any, loader: Any) -> Iterator[dict[str, Any]]:
    """Batches of ``loader`` epoch after epoch, as the training loop draws them."""
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def with_workers(cfg: RunConfig, workers: int) -> RunConfig:
    """``cfg`` with ``data.workers`` set to ``workers``."""
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, workers=workers))


def time_loader(cfg: RunConfig, dataset: Any, workers: int, *, batches: int,
                warmup: int) -> dict[str, Any]:
    """Images/s of the training loader with ``workers`` processes over ``batches`` batches
    after ``warmup`` (worker start-up included in those)."""
    from mcgf.training.loop import build_loader

    sampler, loader = build_loader(with_workers(cfg, workers), dataset, torch.device("cpu"))
    stream = _endless(sampler, loader)
    try:
        start = time.perf_counter()
        for _ in range(warmup):
            next(stream)
        t0, cpu0 = time.perf_counter(), time.process_time()
        images = 0
        for _ in range(batches):
            batch = next(stream)
            images += len(batch["drone"]) + len(batch["satellite"])
            del batch
        seconds = time.perf_counter() - t0
        main_cpu = time.process_time() - cpu0
    finally:
        stream.close()
        del loader  # shuts persistent workers down
    processes = max(workers, 1)
    return {"workers": workers, "processes": processes, "warmup": warmup, "batches": batches,
            "images": images, "images_per_batch": images / batches, "seconds": seconds,
            "images_per_s": images / seconds,
            "images_per_s_per_process": images / seconds / processes,
            "startup_s": t0 - start, "main_cpu_s": main_cpu}


def time_stages(dataset: Any, sampler: Any, batches: int = 1, epoch: int = 0) -> dict[str, Any]:
    """Seconds per stage, in this process, over the images of the plan's first ``batches``
    batches: decode, weather (drone views), transforms, and the collation of the dataset's
    own items; plus whole items through the dataset for comparison."""
    from mcgf.data.datasets import collate_cross_view, degrade_image
    from mcgf.data.images import read_image_or_none

    plan = sampler.plan(epoch)[:batches]
    indices = [i for batch in plan for i in batch]
    # Whole items first: this sets the weather's epoch and warms lazily built tables.
    t = time.perf_counter()
    items = [[dataset[(epoch, i)] for i in batch] for batch in plan]
    item_s = time.perf_counter() - t
    spent = dict.fromkeys(STAGES, 0.0)
    drone = 0
    for i in indices:
        rec = dataset.record(i)
        t = time.perf_counter()
        image = read_image_or_none(rec.path, dataset.on_bad_image)
        spent["decode"] += time.perf_counter() - t
        if image is None:
            continue
        if rec.view == "satellite":
            t = time.perf_counter()
            dataset.satellite_transform(image)
            spent["augment"] += time.perf_counter() - t
            continue
        drone += 1
        t = time.perf_counter()
        degraded, _ = degrade_image(image, rec.key, dataset.degrade)
        spent["weather"] += time.perf_counter() - t
        t = time.perf_counter()
        dataset.drone_transform(degraded)
        if dataset.return_clean:
            dataset.drone_transform(image)
        spent["augment"] += time.perf_counter() - t
    t = time.perf_counter()
    for batch_items in items:
        collate_cross_view(batch_items)
    spent["collate"] = time.perf_counter() - t
    n = len(indices)
    total = sum(spent.values())
    return {
        "images": n, "drone_images": drone, "clean_twins": bool(dataset.return_clean),
        "ms_per_image": {k: 1e3 * v / n for k, v in spent.items()},
        "share": {k: v / total for k, v in spent.items()},
        "stages_ms_per_image": 1e3 * total / n,
        "items_ms_per_image": 1e3 * (item_s + spent["collate"]) / n,
    }


def time_training_with_loader(cfg: RunConfig, dataset: Any, workers: int, *, steps: int,
                              warmup: int, device: torch.device) -> dict[str, Any]:
    """Training images/s of the config's model (random weights) on ``device`` fed by the
    real loader with ``workers`` processes, against the same steps on one batch already on
    the device (model only).

    Each step is the loop's :func:`~mcgf.training.step.train_step` on one micro-batch
    (``model.loss``, backward, clipping, the loop's AdamW); the loader is the loop's
    (:func:`~mcgf.training.loop.build_loader`, memory pinned on CUDA). ``warmup`` untimed
    steps come first in each measurement (worker start-up, cuDNN autotuning).
    """
    from _profiling import (
        batch_step,
        benchmark_config,
        build_model,
        make_optimizer,
        step_options,
        synchronize,
    )
    from mcgf.training.loop import build_loader

    # The model as the benchmarks build it (random weights); the loader keeps the
    # config's weather and augmentation.
    bench = benchmark_config(cfg.as_dict(), [], "pipeline")
    model = build_model(bench, device, dataset.num_classes)
    t = cfg.train
    optimizer = make_optimizer(model, t.lr, t.weight_decay, t.layer_decay)
    step = batch_step(model, optimizer, step_options(cfg), device)
    sampler, loader = build_loader(with_workers(cfg, workers), dataset, device)
    stream = _endless(sampler, loader)
    model.train()
    try:
        for _ in range(warmup):
            step(next(stream))
        first = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                 for k, v in next(stream).items()}
        synchronize(device)
        t0 = time.perf_counter()
        fed = sum(step(next(stream)) for _ in range(steps))
        synchronize(device)
        fed_s = time.perf_counter() - t0
    finally:
        stream.close()
        del loader
    t0 = time.perf_counter()
    alone = sum(step(first) for _ in range(steps))
    synchronize(device)
    alone_s = time.perf_counter() - t0
    fed_ips, alone_ips = fed / fed_s, alone / alone_s
    return {"device": str(device), "workers": workers, "steps": steps, "warmup": warmup,
            "loader_fed_images_per_s": fed_ips, "model_only_images_per_s": alone_ips,
            "fed_over_model_only": fed_ips / alone_ips}


def workers_needed(model_ips: float, per_process: float) -> int:
    """Loader processes that deliver ``model_ips`` images/s at ``per_process`` each."""
    return math.ceil(model_ips / per_process)


def measure(
    config: str | Path = DEFAULT_CONFIG,
    overrides: Sequence[str] = (),
    *,
    data: str | Path | None = None,
    cache_dir: str | Path = "runs/pipeline-data",
    locations: int = 16,
    views: int = 8,
    synth_size: int = 512,
    synth_workers: int | None = None,
    workers: Sequence[int] = (0, 1),
    batches: int = 20,
    warmup: int = 2,
    stage_batches: int = 1,
    model_ips: float = MODEL_IPS,
    train_steps: int = 0,
    train_workers: int | None = None,
    device: str = "auto",
    progress: bool = True,
    say: Any = None,
) -> dict[str, Any]:
    """Everything the benchmark reports, as a JSON-able dict (see the module docstring).

    ``say``: called with a line of progress (e.g. ``print``); ``None`` is silent.

    Raises:
        UserError: a missing ``data`` folder, a bad config value or override, a dataset
            without training locations, or a bad size or count of the rendered sample.
    """
    say = say or (lambda _line: None)
    load_start = load_average()
    if data is not None:
        if not Path(data).is_dir():
            raise UserError(f"--data {data}: no such folder (give a University-1652 root "
                            "holding train/drone and train/satellite, or leave --data out)")
        root, reused = Path(data), None
    else:
        # Check the config before rendering for minutes.
        run_config(config, overrides, cache_dir)
        say(f"data: rendering {locations} locations x {views} drone views at {synth_size} px "
            f"into {cache_dir} (reused when identical)")
        root, reused = synthetic_data(cache_dir, locations, views, synth_size,
                                      workers=synth_workers, progress=progress)
    cfg = run_config(config, overrides, root)
    dataset = training_dataset(cfg)
    runs = []
    for w in workers:
        say(f"timing workers={w}: {warmup} warmup + {batches} batches")
        runs.append(time_loader(cfg, dataset, w, batches=batches, warmup=warmup))
    stages = None
    if stage_batches > 0:
        from mcgf.training.loop import build_loader

        say(f"timing the stages on {stage_batches} batch(es) in this process")
        sampler, _ = build_loader(with_workers(cfg, 0), dataset, torch.device("cpu"))
        stages = time_stages(dataset, sampler, stage_batches)
    training = None
    if train_steps > 0:
        from mcgf.runtime import resolve_device

        dev = resolve_device(device, "--device")
        w = cfg.data.workers if train_workers is None else train_workers
        say(f"training on {dev} with the loader ({w} workers) and without: "
            f"{train_steps} steps each")
        training = time_training_with_loader(cfg, dataset, w, steps=train_steps,
                                             warmup=warmup, device=dev)
    basis = max(runs, key=lambda r: r["workers"])
    d = cfg.data
    return {
        "hardware": {"cpu": cpu_model(), "logical_cpus": os.cpu_count(),
                     "load_average_start": load_start, "load_average_end": load_average()},
        "python": platform.python_version(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "config": str(config), "overrides": list(overrides),
        "data": {"root": str(root), "synthetic": data is None, "reused": reused,
                 "locations": dataset.num_classes, "drone_images": len(dataset.drone_records),
                 "satellite_images": len(dataset.satellite_records),
                 **({"synth": {"locations": locations, "views": views, "size": synth_size}}
                    if data is None else {})},
        "input_size": list(dataset.drone_transform.base.size),
        "weather": cfg.weather.conditions, "clean_twins": bool(dataset.return_clean),
        "locations_per_batch": d.locations_per_batch, "drones_per_location": d.drones_per_location,
        "batch_images": d.locations_per_batch * (d.drones_per_location + 1),
        "runs": runs, "stages": stages, "training": training,
        "model_ips": model_ips,
        "model_ips_source": MODEL_IPS_SOURCE if model_ips == MODEL_IPS else "--model-ips",
        "per_worker_images_per_s": basis["images_per_s_per_process"],
        "per_worker_basis_workers": basis["workers"],
        "workers_needed": workers_needed(model_ips, basis["images_per_s_per_process"]),
    }


# -- report -----------------------------------------------------------------------


def _load(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def report(result: dict[str, Any]) -> str:
    """The figures as printed lines."""
    hw, data = result["hardware"], result["data"]
    shared = (hw["load_average_start"] or 0) > 0.5
    h, w = result["input_size"]
    lines = [
        f"hardware: {hw['cpu']}, {hw['logical_cpus']} logical CPUs; load average "
        f"{_load(hw['load_average_start'])} at start, {_load(hw['load_average_end'])} at end"
        + (" (shared with other jobs)" if shared else ""),
        f"python {result['python']}, torch {result['torch']}, {result['torch_threads']} torch "
        f"thread(s) in this process (1 in each worker)",
        f"config: {result['config']}" + (f" {' '.join(result['overrides'])}" if result["overrides"] else ""),
        f"data: {data['root']}: {data['locations']} locations, {data['drone_images']} drone + "
        f"{data['satellite_images']} satellite images"
        + (f" (synthetic, {data['synth']['size']} px, {'reused' if data['reused'] else 'rendered'})"
           if data["synthetic"] else ""),
        f"pipeline: {h}x{w} input, weather {result['weather']}, clean twins "
        f"{'yes' if result['clean_twins'] else 'no'}; batches of {result['batch_images']} images "
        f"({result['locations_per_batch']} locations x ({result['drones_per_location']} drone + "
        "1 satellite); fewer where the data has fewer locations)",
        "",
        f"{'workers':>7} {'batches':>7} {'images':>6} {'per batch':>9} {'seconds':>8} "
        f"{'images/s':>9} {'per process':>11} {'main CPU':>8}",
    ]
    for r in result["runs"]:
        lines.append(f"{r['workers']:>7} {r['batches']:>7} {r['images']:>6} "
                     f"{r['images_per_batch']:>9.1f} {r['seconds']:>8.2f} "
                     f"{r['images_per_s']:>9.2f} {r['images_per_s_per_process']:>11.2f} "
                     f"{100 * r['main_cpu_s'] / r['seconds']:>7.0f}%")
    st = result["stages"]
    if st is not None:
        parts = ", ".join(f"{k} {st['ms_per_image'][k]:.1f} ms ({100 * st['share'][k]:.0f} %)"
                          for k in STAGES)
        lines += ["", f"stages per image, one process, {st['images']} images "
                  f"({st['drone_images']} drone): {parts}",
                  f"  sum {st['stages_ms_per_image']:.1f} ms/image; whole items through the "
                  f"dataset + collate {st['items_ms_per_image']:.1f} ms/image"]
    source = ("default: " + MODEL_IPS_SOURCE) if result["model_ips_source"] != "--model-ips" \
        else "--model-ips"
    lines += ["", f"model: {result['model_ips']:g} training images/s ({source})",
              f"loader workers to keep it busy: ceil({result['model_ips']:g} / "
              f"{result['per_worker_images_per_s']:.2f}) = {result['workers_needed']} "
              f"(per-process rate of workers={result['per_worker_basis_workers']})"]
    tr = result.get("training")
    if tr is not None:
        lines += ["", f"training on {tr['device']}, {tr['steps']} steps after {tr['warmup']}: "
                  f"{tr['loader_fed_images_per_s']:.1f} images/s fed by the loader "
                  f"({tr['workers']} workers), {tr['model_only_images_per_s']:.1f} on one "
                  f"batch already there (model only): {100 * tr['fed_over_model_only']:.0f} %"]
    return "\n".join(lines)


# -- command line ------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, like :class:`UserError`."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"pipeline: error: {message}\n")


def parse_workers(text: str) -> list[int]:
    """``"0,1,2"`` → ``[0, 1, 2]``.

    Raises:
        UserError: not a comma-separated list of distinct integers >= 0.
    """
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 0 or len(set(values)) != len(values):
        raise UserError(f"--workers {text!r}: give distinct integers >= 0 separated by commas, "
                        "e.g. 0,1,2")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="pipeline", description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="training YAML config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (repeatable; the measurement uses the "
                        "config as written)")
    parser.add_argument("--data", default=None, metavar="ROOT",
                        help="a University-1652-shaped root (default: a rendered sample)")
    parser.add_argument("--cache-dir", default="runs/pipeline-data",
                        help="where the sample is rendered and reused (default runs/pipeline-data)")
    parser.add_argument("--locations", type=int, default=16, help="sample's training locations")
    parser.add_argument("--views", type=int, default=8, help="sample's drone views per location")
    parser.add_argument("--synth-size", type=int, default=512, help="sample's image side in px")
    parser.add_argument("--synth-workers", type=int, default=None,
                        help="processes rendering the sample (default: all CPUs)")
    parser.add_argument("--workers", default="0,1",
                        help="DataLoader workers to time, e.g. 0,1,2 (default 0,1)")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per workers value")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches first")
    parser.add_argument("--stage-batches", type=int, default=1,
                        help="batches of images for the stage breakdown (0: skip it)")
    parser.add_argument("--model-ips", type=float, default=MODEL_IPS,
                        help=f"model-only training images/s (default {MODEL_IPS}: EVA-02-L/448 "
                        "on one H100, benchmarks/gpu_check.py)")
    parser.add_argument("--train-steps", type=int, default=0,
                        help="also train the config's model (random weights) this many steps "
                        "fed by the loader, and as many on one batch (default 0: off)")
    parser.add_argument("--train-workers", type=int, default=None,
                        help="loader workers of that training (default: the config's "
                        "data.workers)")
    parser.add_argument("--device", default="auto",
                        help="where that training runs (default: the GPU if there is one)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and OpenCV threads of this process (default 1: one core)")
    parser.add_argument("--json", default=None, metavar="PATH", help="write the figures here")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    try:
        workers = parse_workers(args.workers)
        if args.batches < 1 or args.warmup < 0 or args.stage_batches < 0 or args.threads < 1 \
                or args.train_steps < 0 or (args.train_workers or 0) < 0:
            raise UserError("--batches and --threads must be >= 1, --warmup, --stage-batches, "
                            "--train-steps and --train-workers >= 0")
        if not args.model_ips > 0:
            raise UserError(f"--model-ips must be > 0 (got {args.model_ips})")
        if args.synth_workers is not None and args.synth_workers < 1:
            raise UserError(f"--synth-workers must be >= 1 (got {args.synth_workers})")
        import cv2

        # DataLoader workers run torch on one thread and inherit OpenCV's setting (fork).
        threads = torch.get_num_threads(), cv2.getNumThreads()
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
        try:
            result = measure(args.config, args.overrides, data=args.data,
                             cache_dir=args.cache_dir, locations=args.locations, views=args.views,
                             synth_size=args.synth_size, synth_workers=args.synth_workers,
                             workers=workers, batches=args.batches, warmup=args.warmup,
                             stage_batches=args.stage_batches, model_ips=args.model_ips,
                             train_steps=args.train_steps, train_workers=args.train_workers,
                             device=args.device, progress=not args.quiet,
                             say=None if args.quiet else print)
        finally:
            torch.set_num_threads(threads[0])
            cv2.setNumThreads(threads[1])
        if args.json:
            write_json_atomic(args.json, result)
    except UserError as err:
        print(f"pipeline: error: {err}", file=sys.stderr)
        return 2
    print(report(result))
    if args.json:
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
