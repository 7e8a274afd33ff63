"""Speed of ``mcgf synth`` against its budget: the default benchmark in 120 s on 2 cores.

    python benchmarks/synth.py            # stage timings + projected default run (~1 min)
    python benchmarks/synth.py --full     # + the default benchmark, timed end to end
    python benchmarks/synth.py --style town   # the same figures for another style

Prints the ray-casting time of a 128 px drone view, the cost of one location (with 8
drone views, and satellite-only), the default benchmark's wall time projected from
those for the given workers, and with ``--full`` the measured wall time, each as a
ratio of the 120 s budget. Timings are best-of-3 wall times in one process.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from _hardware import cpu_model
from mcgf.errors import UserError
from mcgf.synth import SynthConfig, generate_benchmark
from mcgf.synth.benchmark import default_workers
from mcgf.synth.camera import camera_rays, orbit_poses
from mcgf.synth.location import (
    build_location,
    location_rng,
    render_drone_views,
    render_satellite_tile,
)
from mcgf.synth.raycast import cast_rays
from mcgf.synth.style import DEFAULT_STYLE, SynthStyle, load_style


def _best(fn, repeat: int = 3) -> float:
    """Best of ``repeat`` wall times (the least disturbed by other processes)."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_raycast(size: int, locations: int, style: SynthStyle = DEFAULT_STYLE) -> None:
    per_view = []
    for number in range(1, locations + 1):
        loc = build_location(0, number, size, style=style)
        for pose in orbit_poses(8, location_rng(0, number, "views"), style.orbit()):
            origin, d = camera_rays(pose, size)
            per_view.append(_best(lambda s=loc.scene, o=origin, r=d: cast_rays(s, o, r)))
    ms = 1e3 * float(np.mean(per_view))
    print(f"ray casting, {size} px drone view ({len(per_view)} views): {ms:.1f} ms "
          f"= {size * size / ms / 1e3:.2f} Mrays/s")


def bench_location(size: int, views: int, locations: int, workers: int,
                   style: SynthStyle = DEFAULT_STYLE) -> None:
    numbers = range(1, locations + 1)

    def full() -> None:
        for number in numbers:
            loc = build_location(0, number, size, style=style)
            render_satellite_tile(loc, 0, size)
            render_drone_views(loc, 0, views, size)

    def sat_only() -> None:
        for number in numbers:
            render_satellite_tile(build_location(0, number, size, satellite_only=True, style=style), 0, size)

    t_full, t_sat = _best(full) / locations, _best(sat_only) / locations
    print(f"one location at {size} px: {t_full:.3f} s with {views} drone views, "
          f"{t_sat:.3f} s satellite only (mean of {locations})")
    cfg = SynthConfig()
    n_full = cfg.train + cfg.test + cfg.distractors
    projected = (n_full * t_full + cfg.extra_distractors * t_sat) / workers
    print(f"default benchmark projected with {workers} workers: {projected:.1f} s "
          f"= {projected / 120:.2f} of the 120 s budget (encoding and file writes not included)")


def bench_full(workers: int) -> None:
    cfg = SynthConfig()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        generate_benchmark(Path(tmp) / "out", cfg, workers=workers, progress=False)
        wall = time.perf_counter() - t
    print(f"default benchmark ({cfg.train}/{cfg.test}/{cfg.distractors}/{cfg.extra_distractors} "
          f"locations, {cfg.views} views, {cfg.size} px) with {workers} workers: {wall:.1f} s "
          f"= {wall / 120:.2f} of the 120 s budget")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also time the default benchmark end to end")
    parser.add_argument("--locations", type=int, default=4)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--style", default="default", help="benchmark style: a name or a style .yaml")
    args = parser.parse_args()
    if args.locations < 1 or args.workers < 1:
        parser.error("--locations and --workers must be >= 1")
    try:
        style = load_style(args.style)
    except UserError as err:
        parser.error(str(err))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"hardware: {cpu_model()}, {os.cpu_count()} CPUs, load average {load:.2f} at start; style {style.name}")
    bench_raycast(128, args.locations, style)
    bench_location(128, 8, args.locations, args.workers, style)
    if args.full:
        bench_full(args.workers)


if __name__ == "__main__":
    main()
