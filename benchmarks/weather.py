"""Throughput of ``mcgf.weather`` at 512×512 in one process on one core, vs the imgaug recipe.

Prints images/s per condition (wall clock and CPU time), the reference recipe's figures
on one core of a comparable machine, and the ratio; then the time-weighted mean over
the nine weather conditions (the throughput of a set rendered with equal shares of
each, which is how the reference's "about 15 images/s" is computed) and the batched
torch path on CPU and, when available, CUDA.

    .venv/bin/python benchmarks/weather.py [--images 40] [--image drone.jpeg] [--batch 32]

Targets: mean >= 10x the reference (>= ~150 images/s), no condition below 50 images/s.
"""

from __future__ import annotations

import os

# One thread everywhere, set before NumPy/OpenCV/torch create their pools.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

#: Images/s of the imgaug 0.4.0 recipe at 512×512 on one core (the baseline).
REFERENCE = {
    "fog": 39.0, "rain": 7.8, "snow": 8.0, "dark": 126.0, "light": 971.0,
    "fog_rain": 12.0, "fog_snow": 13.0, "rain_snow": 7.3, "wind": 151.0,
}


def pin_one_core() -> str:
    """Restrict this process to one CPU; returns a description."""
    cv2.setNumThreads(1)
    try:
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    except (AttributeError, OSError):
        return "not pinned (no sched_setaffinity)"


def hardware() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        info = Path("/proc/cpuinfo").read_text()
        model = next(ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name"))
        flags = next(ln for ln in info.splitlines() if ln.startswith("flags"))
        ext = [f for f in ("avx2", "avx512f", "avx512_bf16") if f" {f}" in flags]
        model += f" ({', '.join(ext)})" if ext else ""
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} logical CPUs"


def warm_colour_tables() -> None:
    """Build OpenCV's 8-bit Lab/Luv conversion tables (once per process, ~0.1 s) up front."""
    probe = np.zeros((8, 8, 3), np.uint8)
    for space in ("YCrCb", "HSV", "HLS", "Lab", "Luv", "YUV"):
        converted = cv2.cvtColor(probe, getattr(cv2, f"COLOR_RGB2{space}"))
        cv2.cvtColor(converted, getattr(cv2, f"COLOR_{space}2RGB"))


def synthetic_drone_view(size: int = 512, seed: int = 0) -> np.ndarray:
    """An aerial-looking test image: smooth colour fields, sharp-edged blocks, texture."""
    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.uniform(40, 180, (6, 6, 3)).astype(np.float32), (size, size),
                     interpolation=cv2.INTER_CUBIC)
    for _ in range(40):
        y, x = rng.integers(0, size, 2)
        h, w = rng.integers(size // 20, size // 5, 2)
        img[y : y + h, x : x + w] = rng.uniform(60, 220, 3)
    img += rng.normal(0, 10, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def time_condition(image: np.ndarray, condition: str, n: int) -> tuple[float, float, float]:
    """Seconds per image over ``n`` images with distinct keys: (wall, cpu, wall p10).

    The 10th percentile of per-image wall times estimates the cost on an idle core when
    other processes share the machine.
    """
    from mcgf.weather import apply_weather

    for i in range(3):
        apply_weather(image, condition, seed=0, key=f"warm/{i}")
    times = []
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for i in range(n):
        t = time.perf_counter()
        apply_weather(image, condition, seed=0, key=f"{i // 54:04d}/image-{i % 54:02d}.jpeg")
        times.append(time.perf_counter() - t)
    wall, cpu = (time.perf_counter() - wall0) / n, (time.process_time() - cpu0) / n
    return wall, cpu, float(np.percentile(times, 10))


def time_batch(image: np.ndarray, batch: int, device: str) -> float:
    """Images/s of apply_weather_batch on a batch cycling through the nine conditions."""
    import torch

    from mcgf.weather import apply_weather_batch

    torch.set_num_threads(1)
    conditions = [list(REFERENCE)[i % len(REFERENCE)] for i in range(batch)]
    x = torch.from_numpy(np.stack([image] * batch)).permute(0, 3, 1, 2).contiguous().to(device)

    def run(rep: int) -> None:
        keys = [f"{rep}/{i}.jpeg" for i in range(batch)]
        apply_weather_batch(x, conditions, seed=0, keys=keys)
        if device == "cuda":
            torch.cuda.synchronize()

    run(-1)
    reps = 3
    t0 = time.perf_counter()
    for r in range(reps):
        run(r)
    return reps * batch / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40, help="images per condition (default 40)")
    parser.add_argument("--image", type=Path, help="a 512x512 drone image (default: synthetic)")
    parser.add_argument("--batch", type=int, default=32, help="batch size for the torch path (0: skip)")
    args = parser.parse_args()
    if args.images < 1 or args.batch < 0:
        parser.error("--images must be >= 1 and --batch >= 0")
    if args.image:
        from mcgf.data.images import read_image
        from mcgf.errors import ImageReadError

        try:
            loaded = read_image(args.image)
        except ImageReadError as err:
            # Worded without the --on-bad-image hint of the commands that have that option.
            parser.error(f"--image: {ImageReadError(err.path, err.reason, skip='')}")

    pinned = pin_one_core()
    warm_colour_tables()
    if args.image:
        image = cv2.resize(np.asarray(loaded), (512, 512), interpolation=cv2.INTER_AREA)
    else:
        image = synthetic_drone_view()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"hardware: {hardware()}; {pinned}; load average {load[0]:.2f} at start")
    print(f"python {platform.python_version()}, numpy {np.__version__}, opencv {cv2.__version__}")
    print(f"image: {'synthetic 512x512' if not args.image else args.image}, {args.images} images per condition\n")
    print(f"{'condition':10s} {'ms/img':>8s} {'img/s':>8s} {'cpu':>8s} {'p10':>8s} {'recipe':>8s} {'ratio':>7s}")
    walls, cpus, bests = {}, {}, {}
    for condition, ref in REFERENCE.items():
        wall, cpu, best = time_condition(image, condition, args.images)
        walls[condition], cpus[condition], bests[condition] = wall, cpu, best
        print(f"{condition:10s} {wall * 1e3:8.2f} {1 / wall:8.1f} {1 / cpu:8.1f} {1 / best:8.1f} "
              f"{ref:8.1f} {1 / wall / ref:6.1f}x")
    n = len(REFERENCE)
    ref_mean = n / sum(1 / r for r in REFERENCE.values())
    means = {name: n / sum(d.values()) for name, d in (("wall", walls), ("cpu", cpus), ("p10", bests))}
    slowest = max(walls, key=lambda c: walls[c])
    print("\n(img/s: wall clock; cpu: process CPU time; p10: from the 10th-percentile image)")
    print(f"mean over the nine (time-weighted): {means['wall']:.1f} img/s wall, {means['cpu']:.1f} cpu, "
          f"{means['p10']:.1f} p10; recipe {ref_mean:.1f} img/s -> {means['wall'] / ref_mean:.1f}x wall, "
          f"{means['p10'] / ref_mean:.1f}x p10 (target >= 10x)")
    print(f"slowest: {slowest} {1 / walls[slowest]:.1f} img/s wall, {1 / bests[slowest]:.1f} p10 (target >= 50)")
    if args.batch:
        import torch

        print(f"\nbatched torch path, batch {args.batch} cycling the nine conditions, torch {torch.__version__}:")
        print(f"  cpu (1 thread): {time_batch(image, args.batch, 'cpu'):.1f} img/s")
        if torch.cuda.is_available():
            name = torch.cuda.get_device_name(0)
            print(f"  cuda ({name}): {time_batch(image, args.batch, 'cuda'):.1f} img/s")
        else:
            print("  cuda: not available on this machine")
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"\nload average {load[0]:.2f} at end (other processes on these cores slow the wall clock)")


if __name__ == "__main__":
    main()
