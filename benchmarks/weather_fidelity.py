"""Fidelity of ``mcgf.weather`` to the imgaug 0.4.0 recipe, measured against the recipe itself.

The recipe runs in a separate legacy environment (``benchmarks/imgaug_recipe.py``); this
script renders the same images with both, per condition, and compares them.

One-time setup of the legacy environment (from the repository root):

    python3.11 -m venv .venv-imgaug
    .venv-imgaug/bin/pip install "numpy<1.24" imgaug==0.4.0 "opencv-python-headless<4.9" \\
        "scikit-image<0.22" "scipy<1.12" "imageio<2.32"

Image statistics (≥ 100 drone views at 512 px; by default rendered with
``mcgf synth --size 512`` into ``--cache``, or your own with ``--images DIR``):

    .venv/bin/python benchmarks/weather_fidelity.py --out runs/fidelity

Retrieval check (a trained model; University-1652 layout with ``test/query_drone``):

    .venv/bin/python benchmarks/weather_fidelity.py --out runs/fidelity \\
        --checkpoint runs/train/checkpoint --data runs/demo/data/University-Release

**Statistics**, per image then averaged over images (luma Y = BT.601 of 8-bit RGB):
luma mean and std; local RMS contrast (mean over 16×16 px blocks of the blocks' std of
Y); saturation (mean HSV S, 0–1); high-frequency energy (mean squared 3×3 Laplacian of
Y); clipped share (% of pixels with Y ≤ 2 or Y ≥ 253). Each condition's recipe and mcgf
means are printed with their difference and the *noise floor*, the same difference
between two recipe runs with different seeds.

**Distribution distance**: the Fréchet distance between the two renderings' per-image
feature vectors (:func:`feature_vector`, 23 weight-free colour/gradient statistics at
four scales), each feature divided by its spread over the three runs pooled (recipe,
recipe with another seed, mcgf), next to the same distance between the two recipe runs.

**Retrieval**: the test queries are weathered (a) by the recipe, (a') by the recipe with
the next seed, and (b) by mcgf, all at 512 px (upsampled bicubically first, as the published sets were weathered at 512 px)
and area-resized back to the source size, written as JPEG (quality 95) in the
pre-rendered layout ``DIR/<condition>/<class>/<image>`` that
``mcgf evaluate --wx-dir DIR`` reads; (c) is mcgf on the fly at the images' own size
(``mcgf evaluate --weather all``, which stores each weathered query as a JPEG of quality 95
as the other three are). ``dark`` is the test-set variant throughout, as in
the published weathered test sets. Drone → satellite R@1 per condition. The noise floor
of a condition is |R@1(a) − R@1(a')|, what two recipe renderings of the same queries
differ by (shown with two standard errors of that difference from the per-query
outcomes); the check passes when |R@1(a) − R@1(b)| ≤ max(2 points, floor) everywhere.

Renders are cached under ``--out`` (a rerun only computes what is missing); delete the
folder after changing the recipe script or the mcgf engine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
RECIPE_SCRIPT = Path(__file__).resolve().with_name("imgaug_recipe.py")
#: The legacy interpreter, relative to the repository root.
DEFAULT_LEGACY = ".venv-imgaug/bin/python"
SETUP_COMMANDS = (
    'python3.11 -m venv .venv-imgaug && .venv-imgaug/bin/pip install "numpy<1.24" imgaug==0.4.0 '
    '"opencv-python-headless<4.9" "scikit-image<0.22" "scipy<1.12" "imageio<2.32"'
)
#: Side at which the recipe's parameters are defined (University-1652 drone views).
WORK_SIZE = 512
WEATHER = ("fog", "rain", "snow", "dark", "light", "fog_rain", "fog_snow", "rain_snow", "wind")
#: Rows of the statistics comparison: (label, condition, dark variant).
STAT_ROWS: tuple[tuple[str, str, str], ...] = (
    *((c, c, "train") for c in WEATHER), ("dark_test", "dark", "test"),
)
STATS: tuple[str, ...] = ("luma_mean", "luma_std", "rms_contrast", "saturation", "hf_energy", "clipped")
STAT_TITLES = {
    "luma_mean": "luma mean", "luma_std": "luma std", "rms_contrast": "local RMS contrast",
    "saturation": "saturation", "hf_energy": "HF energy", "clipped": "clipped %",
}
#: R@1 tolerance of the retrieval check (points).
R1_TOLERANCE = 2.0


class FidelityError(Exception):
    """A problem reported as one line (bad input, missing legacy environment)."""


# --------------------------------------------------------------------------- statistics


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of an (H, W, 3) RGB image, float32 grey levels."""
    x = rgb.astype(np.float32)
    return x[..., 0] * np.float32(0.299) + x[..., 1] * np.float32(0.587) + x[..., 2] * np.float32(0.114)


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation ``(max − min) / max`` per pixel (0 where max = 0), in [0, 1]."""
    x = rgb.astype(np.float32)
    hi, lo = x.max(axis=2), x.min(axis=2)
    return np.where(hi > 0, (hi - lo) / np.maximum(hi, 1e-6), 0.0).astype(np.float32)


def local_rms_contrast(y: np.ndarray, block: int = 16) -> float:
    """Mean over non-overlapping ``block``×``block`` tiles of the tiles' std of ``y``."""
    h, w = (y.shape[0] // block) * block, (y.shape[1] // block) * block
    if h == 0 or w == 0:
        return float(y.std())
    tiles = y[:h, :w].reshape(h // block, block, w // block, block).astype(np.float64)
    return float(tiles.std(axis=(1, 3)).mean())


def laplacian_energy(y: np.ndarray) -> float:
    """Mean squared response of the 3×3 Laplacian (4-neighbour) of ``y``, interior pixels."""
    y = y.astype(np.float64)
    if min(y.shape) < 3:
        return 0.0
    lap = (y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:]) - 4.0 * y[1:-1, 1:-1]
    return float(np.mean(lap * lap))


def clipped_share(y: np.ndarray, low: float = 2.0, high: float = 253.0) -> float:
    """Percentage of pixels with luma ≤ ``low`` or ≥ ``high``."""
    return float(100.0 * np.mean((y <= low) | (y >= high)))


def image_stats(rgb: np.ndarray) -> dict[str, float]:
    """The statistics of :data:`STATS` for one (H, W, 3) uint8 RGB image."""
    y = luma(rgb)
    return {
        "luma_mean": float(y.mean()),
        "luma_std": float(y.std()),
        "rms_contrast": local_rms_contrast(y),
        "saturation": float(saturation(rgb).mean()),
        "hf_energy": laplacian_energy(y),
        "clipped": clipped_share(y),
    }


#: Scales (downsampling factors) of the gradient/Laplacian features.
FEATURE_SCALES = (1, 2, 4, 8)
FEATURE_NAMES: tuple[str, ...] = (
    "mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b", "sat_mean", "sat_std",
    "y_p1", "y_p5", "y_p50", "y_p95", "y_p99",
    *(f"grad_{s}" for s in FEATURE_SCALES), *(f"log_lap_{s}" for s in FEATURE_SCALES),
    "clip_low", "clip_high",
)


def feature_vector(rgb: np.ndarray) -> np.ndarray:
    """Fixed, weight-free per-image features for the Fréchet distance (:data:`FEATURE_NAMES`).

    Colour: per-channel mean and std, HSV saturation mean and std, luma percentiles
    1/5/50/95/99. Structure, at 1, 1/2, 1/4 and 1/8 size (area downsampling): mean
    gradient magnitude of luma (3×3 Sobel) and log(1 + Laplacian energy). Clipping: %
    of pixels with luma ≤ 2 and ≥ 253.
    """
    x = rgb.astype(np.float32)
    y = luma(rgb)
    sat = saturation(rgb)
    colour = [*x.mean(axis=(0, 1)), *x.std(axis=(0, 1)), sat.mean(), sat.std(),
              *np.percentile(y, (1, 5, 50, 95, 99))]
    grads, laps = [], []
    for s in FEATURE_SCALES:
        ys = y if s == 1 else cv2.resize(y, (max(1, y.shape[1] // s), max(1, y.shape[0] // s)),
                                         interpolation=cv2.INTER_AREA)
        gx = cv2.Sobel(ys, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(ys, cv2.CV_32F, 0, 1, ksize=3)
        grads.append(float(np.sqrt(gx * gx + gy * gy).mean()))
        laps.append(float(np.log1p(laplacian_energy(ys))))
    clip = [100.0 * float(np.mean(y <= 2.0)), 100.0 * float(np.mean(y >= 253.0))]
    return np.array([*colour, *grads, *laps, *clip], dtype=np.float64)


def _sqrtm_psd(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of row vectors.

    ``‖μa − μb‖² + tr(Σa + Σb − 2 (Σa^½ Σb Σa^½)^½)``, computed with symmetric
    eigendecompositions (no SciPy); ≥ 0, and 0 for identical sets.
    """
    a = np.atleast_2d(np.asarray(a, np.float64))
    b = np.atleast_2d(np.asarray(b, np.float64))
    if a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError(f"need two sets of ≥ 2 vectors of one length, got {a.shape} and {b.shape}")
    diff = a.mean(axis=0) - b.mean(axis=0)
    ca, cb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root = _sqrtm_psd(ca)
    cross = np.linalg.eigvalsh((root @ cb @ root + (root @ cb @ root).T) / 2)
    value = diff @ diff + np.trace(ca) + np.trace(cb) - 2.0 * np.sqrt(np.clip(cross, 0.0, None)).sum()
    return max(0.0, float(value))


def feature_scale(*sets: np.ndarray) -> np.ndarray:
    """Per-feature divisor: the std of the pooled sets (a feature constant in all gets 1e-6
    and, being equal everywhere, contributes nothing)."""
    return np.maximum(np.concatenate(sets).std(axis=0), 1e-6)


# --------------------------------------------------------------------------- image IO


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def write_image(path: str | Path, rgb: np.ndarray) -> None:
    """Write PNG, or JPEG quality 95 for .jpg/.jpeg, atomically."""
    from mcgf.fileio import atomic_write

    ext = Path(path).suffix.lower()
    fmt = "JPEG" if ext in (".jpg", ".jpeg") else "PNG"
    opts: dict[str, Any] = {"quality": 95} if fmt == "JPEG" else {"compress_level": 1}
    with atomic_write(path, "wb") as fh:
        Image.fromarray(rgb).save(fh, format=fmt, **opts)


def to_work_size(rgb: np.ndarray, size: int = WORK_SIZE) -> np.ndarray:
    """Bicubic resize to ``size``×``size`` (a no-op when already that size)."""
    if rgb.shape[:2] == (size, size):
        return rgb
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_CUBIC)


def list_drone_images(folder: Path) -> list[tuple[str, Path]]:
    """(key, path) of the images under ``folder``; key = path relative to it (POSIX)."""
    exts = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in exts and p.is_file())
    return [(p.relative_to(folder).as_posix(), p) for p in found]


# --------------------------------------------------------------------------- legacy recipe


def legacy_python(path: str) -> Path:
    """The legacy interpreter, checked; a one-line :class:`FidelityError` when missing."""
    exe = Path(path)
    if not exe.is_absolute():
        exe = REPO / exe
    if not exe.is_file() or not os.access(exe, os.X_OK):
        raise FidelityError(
            f"legacy imgaug environment not found ({exe}); create it from the repository root with: "
            f"{SETUP_COMMANDS} -- then rerun this script (or pass --legacy-python PATH)"
        )
    return exe


def run_recipe(exe: Path, jobs: list[dict[str, Any]], workers: int) -> None:
    """Render ``jobs`` with the imgaug recipe in the legacy interpreter (missing outputs only)."""
    todo = [j for j in jobs if not os.path.exists(j["output"])]
    if not todo:
        return
    proc = subprocess.run(
        [str(exe), str(RECIPE_SCRIPT), "--workers", str(workers), "--quiet"],
        input=json.dumps(todo), text=True, capture_output=True, check=False,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise FidelityError(f"the imgaug recipe failed (exit {proc.returncode}): {last}")


# --------------------------------------------------------------------------- mcgf side


def mcgf_render(rgb: np.ndarray, condition: str, seed: int, key: str, dark_variant: str,
                out_size: tuple[int, int] | None = None) -> np.ndarray:
    """mcgf weather at 512 px (bicubic upsampling first), area-resized to ``out_size``."""
    from mcgf.weather import apply_weather

    out = apply_weather(to_work_size(rgb), condition, seed=seed, key=key, dark_variant=dark_variant)
    if out_size is not None and out.shape[:2] != out_size:
        out = cv2.resize(out, (out_size[1], out_size[0]), interpolation=cv2.INTER_AREA)
    return out


def _mcgf_job(job: dict[str, Any]) -> str:
    cv2.setNumThreads(1)
    if not os.path.exists(job["output"]):
        rgb = read_rgb(job["image"])
        out = mcgf_render(rgb, job["condition"], job["seed"], job["key"], job["dark_variant"],
                          tuple(job["out_size"]) if job.get("out_size") else None)
        write_image(job["output"], out)
    return job["output"]


def run_mcgf(jobs: list[dict[str, Any]], workers: int) -> None:
    """Render the jobs (same format as the recipe's) with mcgf, in ``workers`` processes."""
    todo = [j for j in jobs if not os.path.exists(j["output"])]
    if workers <= 1:
        for job in todo:
            _mcgf_job(job)
        return
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_mcgf_job, todo, chunksize=8))


# --------------------------------------------------------------------------- comparison


def synth_images(cache: Path, count: int, seed: int) -> Path:
    """Render ≥ ``count`` drone views at 512 px with ``mcgf synth`` (kept in ``cache``)."""
    folder = cache / "University-Release" / "test" / "query_drone"
    if folder.is_dir() and len(list_drone_images(folder)) >= count:
        return folder
    locations = max(1, -(-count // 8))
    cmd = [sys.executable, "-m", "mcgf", "synth", str(cache), "--size", str(WORK_SIZE),
           "--train", "1", "--test", str(locations), "--distractors", "0",
           "--extra-distractors", "0", "--views", "8", "--query-weather", "none",
           "--seed", str(seed), "--quiet", "--force"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise FidelityError(f"mcgf synth failed: {last}")
    return folder


def _summary(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in STATS}


def stat_band(a: list[dict[str, float]], b: list[dict[str, float]]) -> dict[str, float]:
    """Per statistic, two standard errors of the difference of the means of two runs on
    the same images (from the per-image differences): the noise band of one run against
    another. Two recipe seeds give the floor a difference to mcgf is compared with."""
    out = {}
    for k in STATS:
        d = np.array([x[k] - y[k] for x, y in zip(a, b, strict=True)])
        out[k] = float(2.0 * d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return out


def compare_statistics(images: list[tuple[str, Path]], exe: Path, out: Path, seed: int, workers: int,
                       rows: Sequence[tuple[str, str, str]] = STAT_ROWS,
                       log: Callable[[str], None] = print) -> dict[str, Any]:
    """Recipe (two seeds) vs mcgf on ``images``: statistics and Fréchet distances per condition.

    ``rows`` are (label, condition, dark variant) triples, by default :data:`STAT_ROWS`.
    """
    clean = [to_work_size(read_rgb(p)) for _, p in images]
    seeds = (seed, seed + 1)
    jobs = []
    for s in seeds:
        for label, cond, variant in rows:
            for key, path in images:
                job = {"image": str(path), "condition": cond, "seed": s, "key": key,
                       "dark_variant": variant,
                       "output": str(out / "stats" / f"recipe-seed{s}" / label / f"{key}.png")}
                if read_size(path) != (WORK_SIZE, WORK_SIZE):
                    job["work_size"] = WORK_SIZE
                jobs.append(job)
    t0 = time.perf_counter()
    run_recipe(exe, jobs, workers)
    log(f"recipe renders ready ({time.perf_counter() - t0:.0f} s)")
    result: dict[str, Any] = {"images": len(images), "seeds": list(seeds),
                              "clean": _summary([image_stats(x) for x in clean]), "conditions": {}}
    for label, cond, variant in rows:
        runs: dict[str, list[np.ndarray]] = {"recipe": [], "recipe2": [], "mcgf": []}
        for (key, _), rgb in zip(images, clean, strict=True):
            for name, s in (("recipe", seeds[0]), ("recipe2", seeds[1])):
                runs[name].append(read_rgb(out / "stats" / f"recipe-seed{s}" / label / f"{key}.png"))
            runs["mcgf"].append(mcgf_render(rgb, cond, seeds[0], key, variant))
        per_image = {name: [image_stats(x) for x in imgs] for name, imgs in runs.items()}
        stats = {name: _summary(rows) for name, rows in per_image.items()}
        feats = {name: np.stack([feature_vector(x) for x in imgs]) for name, imgs in runs.items()}
        scale = feature_scale(*feats.values())
        fd = frechet_distance(feats["recipe"] / scale, feats["mcgf"] / scale)
        fd2 = frechet_distance(feats["recipe2"] / scale, feats["mcgf"] / scale)
        floor = frechet_distance(feats["recipe"] / scale, feats["recipe2"] / scale)
        gap = (feats["mcgf"].mean(axis=0) - feats["recipe"].mean(axis=0)) / scale
        worst = [FEATURE_NAMES[i] for i in np.argsort(-np.abs(gap))[:3]]
        result["conditions"][label] = {
            "condition": cond, "dark_variant": variant if cond == "dark" else None,
            "recipe": stats["recipe"], "mcgf": stats["mcgf"], "recipe_other_seed": stats["recipe2"],
            "floor_band": stat_band(per_image["recipe"], per_image["recipe2"]),
            "frechet": fd, "frechet_other_seed": fd2, "frechet_floor": floor,
            "largest_feature_gaps": worst,
        }
        log(f"{label:>10}: Fréchet {fd:.2f} / {fd2:.2f} (floor {floor:.2f}); largest gaps {', '.join(worst)}")
    return result


def read_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file without decoding it."""
    with Image.open(path) as im:
        return im.size[1], im.size[0]


def _fmt(value: float, stat: str) -> str:
    if stat == "saturation":
        return f"{value:.3f}"
    if stat == "hf_energy":
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"
    if stat == "clipped":
        return f"{value:.2f}"
    return f"{value:.1f}"


def statistics_markdown(result: dict[str, Any]) -> str:
    """Markdown tables: per condition and statistic recipe / mcgf (Δ, floor); Fréchet distances."""
    head = "| condition | " + " | ".join(STAT_TITLES[s] for s in STATS) + " |"
    lines = ["Cells: recipe / mcgf (difference; noise floor: |recipe seed A − seed B|, and two "
             "standard errors of that difference from the per-image differences); ✗ marks a "
             "difference larger than both.", "", head, "|---" * (len(STATS) + 1) + "|"]
    clean = result["clean"]
    lines.append("| original | " + " | ".join(_fmt(clean[s], s) for s in STATS) + " |")
    for label, row in result["conditions"].items():
        cells = []
        band = row.get("floor_band", {})
        for s in STATS:
            r, m, r2 = row["recipe"][s], row["mcgf"][s], row["recipe_other_seed"][s]
            b = band.get(s, float("nan"))
            mark = " ✗" if abs(m - r) > max(abs(r2 - r), b if b == b else 0.0) else ""
            cells.append(f"{_fmt(r, s)} / {_fmt(m, s)} ({m - r:+.3g}; {abs(r2 - r):.2g}, {b:.2g}){mark}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Fréchet distances between feature sets: mcgf against the recipe (seed A, seed B), "
              "and the noise floor, recipe seed A against seed B; ratio = mean of the first two / floor.",
              "", "| condition | recipe A ↔ mcgf | recipe B ↔ mcgf | floor: recipe A ↔ B | ratio |"
              " largest mean gaps (mcgf vs A) |", "|---|---|---|---|---|---|"]
    for label, row in result["conditions"].items():
        both = (row["frechet"] + row["frechet_other_seed"]) / 2
        ratio = both / max(row["frechet_floor"], 1e-9)
        lines.append(f"| {label} | {row['frechet']:.2f} | {row['frechet_other_seed']:.2f} | "
                     f"{row['frechet_floor']:.2f} | {ratio:.1f} | {', '.join(row['largest_feature_gaps'])} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- retrieval


def _r1(rows: Sequence[Any]) -> dict[str, float]:
    return {r.condition: float(r.metrics["R@1"]) for r in rows}


def query_subset(data: Path, out: Path, per_class: int) -> Path:
    """A University-1652 root of symbolic links: the first ``per_class`` drone queries of
    each class and the whole satellite gallery (so all three renderings see one query set)."""
    from mcgf.data.layout import list_images

    root = out / "retrieval" / f"{per_class}-per-class" / "data"
    gallery = root / "test" / "gallery_satellite"
    if not gallery.exists():
        gallery.parent.mkdir(parents=True, exist_ok=True)
        gallery.symlink_to((data / "test" / "gallery_satellite").resolve(), target_is_directory=True)
    for cls in sorted(p for p in (data / "test" / "query_drone").iterdir() if p.is_dir()):
        for path in list_images(cls)[:per_class]:
            link = root / "test" / "query_drone" / cls.name / path.name
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(path.resolve())
    return root


def retrieval_seeds(seed: int, count: int) -> dict[str, list[tuple[str, int]]]:
    """The renderings of the retrieval check and their (folder, weather seed) pairs.

    The recipe is rendered twice, as A (seeds ``seed, seed + 2, …``) and B (``seed + 1,
    seed + 3, …``), ``count`` seeds each, so that A − B is the noise of the comparison;
    mcgf at 512 px uses A's seeds. Each pair is a folder ``<kind>-seed<s>``.
    """
    a = [seed + 2 * i for i in range(count)]
    b = [seed + 2 * i + 1 for i in range(count)]
    return {"recipe": [(f"recipe-seed{s}", s) for s in a],
            "recipe_other_seed": [(f"recipe-seed{s}", s) for s in b],
            "mcgf512": [(f"mcgf512-seed{s}", s) for s in a]}


def retrieval_jobs(records: Sequence[Any], base: Path, folders: Sequence[tuple[str, int]],
                   conditions: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Render jobs of the retrieval check, by folder (see :func:`retrieval_seeds`): every
    query of every condition, weathered at 512 px and resized back, as
    ``<base>/<folder>/<condition>/<class>/<image>.jpg``."""
    jobs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in folders}
    for cond in conditions:
        for rec in records:
            size = list(read_size(rec.path))
            for name, s in folders:
                jobs[name].append({
                    "image": str(rec.path), "condition": cond, "seed": s, "key": rec.key,
                    "dark_variant": "test", "work_size": WORK_SIZE, "out_size": size,
                    "output": str(base / name / cond / Path(rec.key).with_suffix(".jpg")),
                })
    return jobs


def _mean_hits(hits: Sequence[dict[Any, bool]]) -> dict[Any, float]:
    """Per query, the share of renderings whose first match is a true one."""
    keys = set.intersection(*(set(h) for h in hits)) if hits else set()
    return {k: float(np.mean([h[k] for h in hits])) for k in keys}


def _query_id(record: Any) -> tuple[int, str]:
    """A query's identity across renderings: its label and file stem (a pre-rendered copy
    is a .jpg whatever the source's extension)."""
    return record.label, Path(record.path).stem


class _HitTap:
    """Collects, through ``evaluate_university``'s tap, whether each query's first
    gallery match is a true one (R@1 per query), per condition."""

    def __init__(self) -> None:
        self.gallery: tuple[np.ndarray, np.ndarray] | None = None
        self.queries: dict[str, tuple[list[tuple[int, str]], np.ndarray, np.ndarray]] = {}

    def __call__(self, condition: str, folder: str, records: Sequence[Any], features: Any) -> None:
        labels = np.array([r.label for r in records], np.int64)
        if folder == "gallery_satellite":
            if self.gallery is None:
                self.gallery = (features.features[features.valid], labels[features.valid])
        elif folder == "query_drone":
            self.queries[condition] = ([_query_id(r) for r in records], features.features, labels)

    def hits(self, condition: str) -> dict[tuple[int, str], bool]:
        """Per query id: True when its top-ranked gallery image is a true match."""
        from mcgf.retrieval.ranking import rank_and_score

        if self.gallery is None or condition not in self.queries:
            raise FidelityError(f"no features were collected for {condition!r}")
        ids, feats, labels = self.queries[condition]
        ranked = rank_and_score(feats, labels, *self.gallery)
        return dict(zip(ids, (ranked.first_good == 0).tolist(), strict=True))


def paired_band(a: dict[Any, bool], b: dict[Any, bool]) -> float:
    """Two standard errors (R@1 points) of the difference of two renderings' R@1 on the
    same queries, from the per-query differences (a query hit by one and missed by the
    other counts ±1)."""
    common = sorted(set(a) & set(b))
    if len(common) < 2:
        return float("nan")
    d = np.array([float(a[k]) - float(b[k]) for k in common])
    return float(200.0 * d.std(ddof=1) / np.sqrt(len(d)))


def retrieval_row(recipe: float, recipe_other_seed: float, mcgf512: float, on_the_fly: float, *,
                  floor_band: float = float("nan"), mcgf_band: float = float("nan")) -> dict[str, Any]:
    """One condition of the retrieval check (R@1 in points): the floor ``|A − B|`` of the
    two recipe seeds, and whether ``|mcgf@512 − A| ≤ max(2, floor)``."""
    floor = abs(recipe - recipe_other_seed)
    tolerance = max(R1_TOLERANCE, floor)
    return {
        "recipe": recipe, "recipe_other_seed": recipe_other_seed, "floor": floor,
        "floor_band": floor_band, "mcgf512": mcgf512, "on_the_fly": on_the_fly,
        "mcgf512_minus_recipe": mcgf512 - recipe,
        "mcgf512_minus_recipe_other_seed": mcgf512 - recipe_other_seed,
        "on_the_fly_minus_recipe": on_the_fly - recipe, "mcgf512_band": mcgf_band,
        "tolerance": tolerance, "passed": abs(mcgf512 - recipe) <= tolerance,
    }


def retrieval_check(checkpoint: str, data: str, exe: Path, out: Path, seed: int, workers: int,
                    conditions: Sequence[str] = WEATHER, batch_size: int = 64,
                    per_class: int | None = None, seeds: int = 1,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """R@1 (drone → satellite) under recipe A and B / mcgf@512 / mcgf on the fly.

    Each rendering is averaged over ``seeds`` weather seeds (:func:`retrieval_seeds`).
    Recipe B gives the noise floor of each condition: the R@1 two recipe renderings of
    the same queries differ by, ``|A − B|``, and two standard errors of that difference
    from the per-query outcomes (``floor_band``). A condition passes when
    ``|mcgf@512 − A| ≤ max(2, |A − B|)``. ``per_class`` limits the queries to the first N
    views of each location (all by default).
    """
    from mcgf.data.layout import load_university1652
    from mcgf.errors import UserError
    from mcgf.evaluation.university import (
        WX_JPEG_QUALITY,
        ExtractOptions,
        evaluate_university,
        on_the_fly_conditions,
        prerendered_conditions,
    )
    from mcgf.models import CHECKPOINT_EMBEDDER, build_embedder

    if not os.path.exists(checkpoint):
        raise FidelityError(f"--checkpoint {checkpoint} does not exist")
    try:
        dataset = load_university1652(data, splits=("test",))
    except UserError as exc:
        raise FidelityError(str(exc)) from None
    if "query_drone" not in dataset.test or "gallery_satellite" not in dataset.test:
        raise FidelityError(f"{data} lacks test/query_drone or test/gallery_satellite")
    if per_class is not None:
        data = str(query_subset(dataset.root, out, per_class))
        dataset = load_university1652(data, splits=("test",))
    base = out / "retrieval" / ("all" if per_class is None else f"{per_class}-per-class")
    records = dataset.test["query_drone"].records()
    if not records:
        raise FidelityError(f"{data}: test/query_drone holds no image")
    plan = retrieval_seeds(seed, seeds)
    folders = list(dict.fromkeys(pair for pairs in plan.values() for pair in pairs))
    jobs = retrieval_jobs(records, base, folders, conditions)
    recipe = [j for name, _ in folders if name.startswith("recipe") for j in jobs[name]]
    t0 = time.perf_counter()
    run_recipe(exe, recipe, workers)
    log(f"recipe query sets ({2 * seeds} seeds) ready ({time.perf_counter() - t0:.0f} s)")
    t0 = time.perf_counter()
    run_mcgf([j for name, _ in folders if name.startswith("mcgf") for j in jobs[name]], workers)
    log(f"mcgf@512 query sets ({seeds} seeds) ready ({time.perf_counter() - t0:.0f} s)")

    embedder = build_embedder(CHECKPOINT_EMBEDDER, checkpoint=checkpoint)
    opts = ExtractOptions(batch_size=batch_size, cache_dir=out / "feature-cache", progress=False)
    direction = ("drone->satellite",)
    r1, hits = {}, {}
    for name, _ in folders:
        conds = [c for c in prerendered_conditions(base / name) if c.name in conditions]
        tap = _HitTap()
        r1[name] = _r1(evaluate_university(data, embedder, directions=direction, conditions=conds,
                                           options=opts, tap=tap,
                                           tap_folders=("query_drone", "gallery_satellite")))
        hits[name] = {c: tap.hits(c) for c in conditions}
    fly = [_r1(evaluate_university(data, embedder, directions=direction, options=opts,
                                   conditions=on_the_fly_conditions(list(conditions), s, "test",
                                                                    WX_JPEG_QUALITY)))
           for _, s in plan["mcgf512"]]
    clean = _r1(evaluate_university(data, embedder, directions=direction, options=opts))
    rows = {}
    for cond in conditions:
        mean = {k: float(np.mean([r1[name][cond] for name, _ in pairs])) for k, pairs in plan.items()}
        per_query = {k: _mean_hits([hits[name][cond] for name, _ in pairs]) for k, pairs in plan.items()}
        rows[cond] = retrieval_row(
            mean["recipe"], mean["recipe_other_seed"], mean["mcgf512"],
            float(np.mean([f[cond] for f in fly])),
            floor_band=paired_band(per_query["recipe"], per_query["recipe_other_seed"]),
            mcgf_band=paired_band(per_query["mcgf512"], per_query["recipe"]),
        )
    worst = max(abs(r["mcgf512_minus_recipe"]) for r in rows.values())
    return {"checkpoint": os.path.abspath(checkpoint), "data": os.path.abspath(data),
            "queries": len(records), "seed": seed, "seeds": seeds,
            "clean_R@1": next(iter(clean.values())),
            "conditions": rows, "tolerance": R1_TOLERANCE, "max_abs_difference": worst,
            "passed": all(r["passed"] for r in rows.values())}


def retrieval_markdown(result: dict[str, Any]) -> str:
    """Markdown table of :func:`retrieval_check`."""
    rows = result["conditions"]
    failed = [c for c, r in rows.items() if not r["passed"]]
    verdict = "passed" if not failed else "FAILED on " + ", ".join(failed)
    n = result.get("seeds", 1)
    seeds = "one weather seed each" if n == 1 else f"means over {n} weather seeds each"
    lines = [f"Drone → satellite R@1 (%), {result['queries']} queries, clean R@1 "
             f"{result['clean_R@1']:.2f}, {seeds}. Floor: |recipe A − recipe B| (other seeds, "
             f"same queries) and, in brackets, two standard errors of that difference from the "
             f"per-query outcomes; check |mcgf@512 − recipe A| ≤ max({result['tolerance']:g}, "
             f"floor): {verdict}.", "",
             "| condition | recipe A | recipe B | floor (2σ) | mcgf@512 | mcgf on the fly "
             "| mcgf@512 − A | mcgf@512 − B | on the fly − A |",
             "|---|---|---|---|---|---|---|---|---|"]
    for cond, r in rows.items():
        lines.append(
            f"| {cond} | {r['recipe']:.2f} | {r['recipe_other_seed']:.2f} | {r['floor']:.2f} "
            f"({r['floor_band']:.2f}) | {r['mcgf512']:.2f} | {r['on_the_fly']:.2f} | "
            f"{r['mcgf512_minus_recipe']:+.2f}{'' if r['passed'] else ' ✗'} | "
            f"{r['mcgf512_minus_recipe_other_seed']:+.2f} | {r['on_the_fly_minus_recipe']:+.2f} |")
    keys = ("recipe", "recipe_other_seed", "mcgf512", "on_the_fly")
    means = {k: float(np.mean([r[k] for r in rows.values()])) for k in keys}
    lines.append(
        f"| mean | {means['recipe']:.2f} | {means['recipe_other_seed']:.2f} | "
        f"{abs(means['recipe'] - means['recipe_other_seed']):.2f} | {means['mcgf512']:.2f} | "
        f"{means['on_the_fly']:.2f} | {means['mcgf512'] - means['recipe']:+.2f} | "
        f"{means['mcgf512'] - means['recipe_other_seed']:+.2f} | "
        f"{means['on_the_fly'] - means['recipe']:+.2f} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def _positive(text: str, name: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise FidelityError(f"{name} must be an integer, got {text!r}") from None
    if value < 1:
        raise FidelityError(f"{name} must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/fidelity", help="output folder (default runs/fidelity)")
    parser.add_argument("--images", default=None, metavar="DIR",
                        help="drone images (searched recursively); default: render with mcgf synth")
    parser.add_argument("--count", default="104", help="images to compare (default 104)")
    parser.add_argument("--cache", default="runs/fidelity-images",
                        help="where mcgf synth renders the default images (default runs/fidelity-images)")
    parser.add_argument("--legacy-python", default=DEFAULT_LEGACY,
                        help=f"interpreter of the imgaug environment (default {DEFAULT_LEGACY})")
    parser.add_argument("--seed", default="0", help="weather seed (the noise floor uses seed + 1)")
    parser.add_argument("--workers", default="2", help="processes for rendering (default 2)")
    parser.add_argument("--checkpoint", default=None, help="trained model: also run the retrieval check")
    parser.add_argument("--data", default=None, metavar="ROOT",
                        help="University-1652 layout with test/query_drone (for --checkpoint)")
    parser.add_argument("--queries-per-class", default=None, metavar="N",
                        help="retrieval check on the first N drone views of each location (default all)")
    parser.add_argument("--retrieval-seeds", default="1", metavar="N",
                        help="weather seeds each retrieval rendering is averaged over (default 1; "
                             "the recipe is rendered with 2N)")
    parser.add_argument("--conditions", default=None, metavar="LIST",
                        help="comma-separated subset of " + ", ".join(r[0] for r in STAT_ROWS)
                             + " (default all; dark_test is the statistics' test-set dark)")
    parser.add_argument("--skip-statistics", action="store_true", help="only the retrieval check")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except FidelityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from mcgf.fileio import write_json_atomic, write_text_atomic
    from mcgf.weather import ENGINE_VERSION

    exe = legacy_python(args.legacy_python)
    if args.checkpoint and not args.data:
        raise FidelityError("--checkpoint needs --data ROOT (University-1652 layout with test/query_drone)")
    count, workers = _positive(args.count, "--count"), _positive(args.workers, "--workers")
    try:
        seed = int(args.seed)
    except ValueError:
        raise FidelityError(f"--seed must be an integer, got {args.seed!r}") from None
    rows = STAT_ROWS
    if args.conditions:
        wanted = [c.strip() for c in args.conditions.split(",") if c.strip()]
        known = {r[0] for r in STAT_ROWS}
        bad = [c for c in wanted if c not in known]
        if bad or not wanted:
            raise FidelityError(f"--conditions: unknown {bad[0] if bad else 'empty list'!r}; "
                                f"use {', '.join(r[0] for r in STAT_ROWS)}")
        rows = tuple(r for r in STAT_ROWS if r[0] in wanted)
    out = Path(args.out)
    report: dict[str, Any] = {"engine_version": ENGINE_VERSION, "seed": seed}
    markdown = []
    if not args.skip_statistics:
        if args.images:
            folder = Path(args.images)
            if not folder.is_dir():
                raise FidelityError(f"--images {folder} is not a folder")
        else:
            folder = synth_images(Path(args.cache), count, seed)
        images = list_drone_images(folder)[:count]
        if len(images) < 2:
            raise FidelityError(f"{folder} holds {len(images)} image(s); need at least 2 (100+ advised)")
        if len(images) < 100:
            print(f"warning: {len(images)} images; statistics of fewer than 100 are noisy", file=sys.stderr)
        stats = compare_statistics(images, exe, out, seed, workers, rows)
        stats["images_folder"] = str(folder)
        report["statistics"] = stats
        markdown += ["## Image statistics", "", statistics_markdown(stats)]
    if args.checkpoint:
        per_class = (None if args.queries_per_class is None
                     else _positive(args.queries_per_class, "--queries-per-class"))
        weather = [c for c in WEATHER if any(r[1] == c for r in rows)]
        retrieval = retrieval_check(args.checkpoint, args.data, exe, out, seed, workers,
                                    conditions=weather, per_class=per_class,
                                    seeds=_positive(args.retrieval_seeds, "--retrieval-seeds"))
        report["retrieval"] = retrieval
        markdown += ["## Retrieval", "", retrieval_markdown(retrieval)]
    text = "\n".join(markdown)
    print(text, end="")
    write_json_atomic(out / "fidelity.json", report)
    write_text_atomic(out / "fidelity.md", text)
    print(f"wrote {out / 'fidelity.json'} and {out / 'fidelity.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
