"""Apply the community's imgaug 0.4.0 multi-weather recipe to a list of images.

This script is the *reference* side of ``benchmarks/weather_fidelity.py``. It runs in a
separate, legacy environment (imgaug 0.4.0 needs NumPy < 1.24) and imports only
NumPy, imgaug, OpenCV and Pillow, never ``mcgf``. Create that environment once, from the
repository root:

    python3.11 -m venv .venv-imgaug
    .venv-imgaug/bin/pip install "numpy<1.24" imgaug==0.4.0 "opencv-python-headless<4.9" \\
        "scikit-image<0.22" "scipy<1.12" "imageio<2.32"

then run the comparison from the project's environment (it calls this script):

    .venv/bin/python benchmarks/weather_fidelity.py --out runs/fidelity

Direct use: a JSON list of jobs on stdin or in ``--jobs FILE``, one object per image:

    {"image": "in.jpeg", "condition": "fog", "seed": 0, "key": "0001/image-01.jpeg",
     "output": "out/fog/0001/image-01.png",
     "dark_variant": "train", "work_size": 512, "out_size": [128, 128]}

``key`` (default: the job's index), ``dark_variant`` (``train`` or ``test``, for
``dark`` only), ``work_size`` (resize the image bicubically to this square side before
the recipe; default: as read) and ``out_size`` ([height, width]; area-resize the result;
default: as rendered) are optional. Outputs are PNG, or JPEG (quality 95) when the name
ends in .jpg/.jpeg; they are written atomically and existing outputs are kept.

Randomness: the recipe's augmenters carry fixed seeds, so in the original scripts an
image's weather depends on how many images went before it. Here every job reseeds the
whole augmenter tree from BLAKE2b(seed, key, condition, dark variant), so the same job
gives the same pixels in any order, with any number of ``--workers``. imgaug's own
``seed_`` misses an augmenter that serves as another's list of children (the
``Sequential`` inside ``MultiplyAndAddToBrightness``, which draws the order of multiply
and add): :func:`seed_tree` seeds those too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from multiprocessing import Pool

import cv2
import numpy as np
from PIL import Image

try:
    import imgaug.augmenters as iaa
    import imgaug.random as iarandom
except ImportError:  # reported as one line by main()
    iaa = iarandom = None

CONDITIONS = ("normal", "fog", "rain", "snow", "dark", "light", "fog_rain", "fog_snow",
              "rain_snow", "wind")


def _cloud():
    return iaa.CloudLayer(
        intensity_mean=225, intensity_freq_exponent=-2, intensity_coarse_scale=2, alpha_min=1.0,
        alpha_multiplier=0.9, alpha_size_px_max=10, alpha_freq_exponent=-2, sparsity=0.9,
        density_multiplier=0.5,
    )


def _rain(drop_size):
    return iaa.Rain(drop_size=drop_size, speed=(0.04, 0.06))


def _snow(flake_size):
    return iaa.Snowflakes(flake_size=flake_size, speed=(0.007, 0.03))


def build(condition: str, dark_variant: str = "train"):
    """The recipe of ``condition`` as an ``iaa.Sequential`` (PROTOCOLS §5 parameters)."""
    if condition == "normal":
        return iaa.Sequential([])
    if condition == "fog":
        return iaa.Sequential([_cloud()])
    if condition == "rain":
        return iaa.Sequential([_rain((0.05, 0.1)), _rain((0.05, 0.1)), _rain((0.1, 0.2)),
                               _rain((0.1, 0.2)), _rain((0.05, 0.2))])
    if condition == "snow":
        return iaa.Sequential([_snow((0.5, 0.8)), _snow((0.5, 0.8)), _snow((0.6, 0.9)),
                               _snow((0.6, 0.9)), _snow((0.5, 0.9))])
    if condition == "dark":
        if dark_variant == "test":
            # The test-set generator kept only the brightness change (its blend is
            # commented out there).
            return iaa.Sequential([iaa.MultiplyAndAddToBrightness(mul=0.4, add=-15)])
        return iaa.Sequential([
            iaa.BlendAlpha(0.5, foreground=iaa.Add(100), background=iaa.Multiply(0.2)),
            iaa.MultiplyAndAddToBrightness(mul=0.2, add=(-30, -15)),
        ])
    if condition == "light":
        return iaa.Sequential([iaa.MultiplyAndAddToBrightness(mul=1.6, add=(0, 30))])
    if condition == "fog_rain":
        return iaa.Sequential([_cloud(), _rain((0.05, 0.2)), _rain((0.05, 0.2))])
    if condition == "fog_snow":
        return iaa.Sequential([_cloud(), _snow((0.5, 0.9)), _snow((0.5, 0.9))])
    if condition == "rain_snow":
        return iaa.Sequential([_snow((0.5, 0.8)), _rain((0.05, 0.1)), _rain((0.1, 0.2)),
                               _rain((0.05, 0.2)), _snow((0.6, 0.9))])
    if condition == "wind":
        return iaa.Sequential([iaa.MotionBlur(15)])
    raise ValueError(f"unknown condition {condition!r}: use one of {', '.join(CONDITIONS)}")


def job_entropy(seed: int, key: str, condition: str, dark_variant: str) -> int:
    """The 63-bit seed of one job, a pure function of its identity."""
    text = f"imgaug-recipe\0{seed}\0{key}\0{condition}\0{dark_variant}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def seed_tree(aug, rng) -> None:
    """Seed ``aug`` and everything under it from ``rng`` (an imgaug ``RNG``), in tree order.

    As imgaug's ``Augmenter.seed_`` (a copy of ``rng`` for the augmenter, a derived RNG
    per child), except that a children list which is itself an augmenter (a ``Sequential``
    holding another augmenter's children) is seeded as well, not just its members.
    """
    aug.random_state = rng.copy()
    for children in aug.get_children_lists():
        if children is not aug and hasattr(children, "get_children_lists"):
            seed_tree(children, rng.derive_rng_())
            continue
        for child in children:
            seed_tree(child, rng.derive_rng_())


def _check(job: object, index: int) -> dict:
    if not isinstance(job, dict):
        raise ValueError(f"job {index} is not an object")
    for name in ("image", "condition", "output"):
        if not isinstance(job.get(name), str):
            raise ValueError(f"job {index} lacks the string field {name!r}")
    if job["condition"] not in CONDITIONS:
        raise ValueError(f"job {index}: unknown condition {job['condition']!r}")
    if job.get("dark_variant", "train") not in ("train", "test"):
        raise ValueError(f"job {index}: dark_variant must be 'train' or 'test'")
    if not isinstance(job.get("seed", 0), int):
        raise ValueError(f"job {index}: seed must be an integer")
    return job


def _write(path: str, image: np.ndarray) -> None:
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    ext = os.path.splitext(path)[1].lower()
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=ext + ".tmp")
    os.close(fd)
    try:
        if ext in (".jpg", ".jpeg"):
            Image.fromarray(image).save(tmp, format="JPEG", quality=95)
        else:
            Image.fromarray(image).save(tmp, format="PNG", compress_level=1)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


_SEQUENCES: dict = {}


def run_job(args: tuple[int, dict]) -> str:
    """Render one job; returns its output path."""
    index, job = args
    out = job["output"]
    if os.path.exists(out):
        return out
    condition = job["condition"]
    variant = job.get("dark_variant", "train") if condition == "dark" else "train"
    image = np.asarray(Image.open(job["image"]).convert("RGB"))
    size = job.get("work_size")
    if size:
        image = cv2.resize(image, (int(size), int(size)), interpolation=cv2.INTER_CUBIC)
    seq = _SEQUENCES.get((condition, variant))
    if seq is None:
        seq = _SEQUENCES[(condition, variant)] = build(condition, variant)
    key = str(job.get("key", index))
    seed_tree(seq, iarandom.RNG(job_entropy(int(job.get("seed", 0)), key, condition, variant)))
    result = seq(image=image)
    target = job.get("out_size")
    if target:
        result = cv2.resize(result, (int(target[1]), int(target[0])), interpolation=cv2.INTER_AREA)
    _write(out, np.ascontiguousarray(result, dtype=np.uint8))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", default="-", help="JSON job list file ('-' = stdin, the default)")
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    if iaa is None:
        print("error: imgaug is not installed in this Python; see the commands in this "
              "script's docstring", file=sys.stderr)
        return 2
    try:
        if args.jobs == "-":
            text = sys.stdin.read()
        else:
            with open(args.jobs) as fh:
                text = fh.read()
        jobs = [_check(job, i) for i, job in enumerate(json.loads(text))]
    except (OSError, ValueError, TypeError) as exc:
        print(f"error: bad job list: {exc}", file=sys.stderr)
        return 2
    work = list(enumerate(jobs))
    try:
        if args.workers > 1:
            with Pool(args.workers) as pool:
                results = pool.imap_unordered(run_job, work, chunksize=4)
                for n, _ in enumerate(results, 1):
                    if not args.quiet and n % 200 == 0:
                        print(f"{n}/{len(work)}", file=sys.stderr)
        else:
            for n, item in enumerate(work, 1):
                run_job(item)
                if not args.quiet and n % 200 == 0:
                    print(f"{n}/{len(work)}", file=sys.stderr)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
