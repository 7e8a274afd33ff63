"""Write a complete synthetic cross-view benchmark in the University-1652 / 160k-WX layouts.

Output (see ``docs/synth.md``)::

    OUT/University-Release/{train,test}/...      class folders, 4-digit ids
    OUT/University-160k-WX/query_drone_160k_wx/  masked test drone views (.jpeg)
    OUT/University-160k-WX/query_drone_name.txt  query names, shuffled submission order
    OUT/University-160k-WX/gallery_satellite_160k/  masked satellite tiles (.webp)
    OUT/ground_truth_160k.txt                    "<query name>\\t<true gallery stem>"
    OUT/metadata.json                            arguments, per-location and per-image facts

Class ids: train ``0001…``, then test, then distractors (in the test galleries), then the
satellite-only extra distractors (160k gallery only). Everything random comes from the
seed: each location from ``(seed, id)`` (see :mod:`mcgf.synth.location`), masked names
and the query order from ``(seed, "names")``. Output is therefore byte-identical for the
same arguments whatever ``workers`` is.

The whole tree is written into a hidden sibling folder and renamed into place at the
end, so an interrupted run leaves no half-written benchmark behind (the rename is the
atomic step; files inside the private folder need no individual atomic writes).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from mcgf import __version__
from mcgf.errors import UserError
from mcgf.fileio import replace_dir
from mcgf.pools import pool_context
from mcgf.synth.layout import HALF_EXTENT_M
from mcgf.synth.location import (
    SATELLITE_SIDE_M,
    build_location,
    raster_cell,
    render_drone_views,
    render_satellite_tile,
)
from mcgf.synth.names import masked_names
from mcgf.synth.style import DEFAULT_STYLE, SynthStyle
from mcgf.weather.conditions import CLEAN

#: Bumped whenever the same arguments would produce different pixels or layout.
FORMAT_VERSION = 1
GENERATOR = "mcgf synth"

#: ``query_transform(image, key) -> (image, condition)``: weather for the 160k-WX queries.
#: ``key`` is the query's University-Release key ``"<id>/image-XX.jpeg"``.
QueryTransform = Callable[[np.ndarray, str], tuple[np.ndarray, str]]

RELEASE = "University-Release"
WX = "University-160k-WX"
QUERY_160K = "query_drone_160k_wx"
GALLERY_160K = "gallery_satellite_160k"
NAMES_FILE = "query_drone_name.txt"
GROUND_TRUTH = "ground_truth_160k.txt"
METADATA = "metadata.json"

JPEG_QUALITY = 90
WEBP_QUALITY = 90

_LIMITS = {
    "train": (1, 9000),
    "test": (1, 9000),
    "distractors": (0, 9000),
    "extra_distractors": (0, 9000),
    "views": (1, 54),
    "size": (64, 512),
    "seed": (0, 2**63 - 1),
}


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. Field names match the CLI options (``extra_distractors`` is
    ``--extra-distractors``); ``train_size`` is the side of the train split's images
    (``None``: ``size``), ``style`` the look of the world (see :mod:`mcgf.synth.style`)."""

    train: int = 100
    test: int = 100
    distractors: int = 50
    extra_distractors: int = 300
    views: int = 8
    size: int = 128
    seed: int = 0
    train_size: int | None = None
    style: SynthStyle = DEFAULT_STYLE

    def validate(self, prefix: str | None = None) -> None:
        """Raise :class:`UserError` naming the first out-of-range option.

        Options are named as command-line flags (``--train-size``), or as ``prefix`` plus the
        field name (``prefix="configs/demo.yaml: synth."`` gives
        ``configs/demo.yaml: synth.train_size``).
        """

        def opt(name: str) -> str:
            return f"--{name.replace('_', '-')}" if prefix is None else f"{prefix}{name}"

        limits = dict(_LIMITS)
        if self.train_size is not None:
            limits["train_size"] = _LIMITS["size"]
        for name, (lo, hi) in limits.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise UserError(f"{opt(name)} must be an integer (got {value!r})")
            if not lo <= value <= hi:
                raise UserError(f"{opt(name)} must be between {lo} and {hi} (got {value})")
        if not isinstance(self.style, SynthStyle):
            raise UserError(f"{opt('style')} must be a style (got {self.style!r})")
        self.style.validate(f"style {self.style.name}")
        total = self.train + self.test + self.distractors + self.extra_distractors
        if total > 9999:
            names = " + ".join(opt(n) for n in ("train", "test", "distractors", "extra_distractors"))
            raise UserError(
                f"{names} = {total}, but class ids have 4 digits: ask for at most 9999 locations "
                "in all"
            )

    @property
    def num_locations(self) -> int:
        return self.train + self.test + self.distractors + self.extra_distractors

    def size_of(self, role: str) -> int:
        """Image side (px) of a location with ``role`` (``train``, ``test``, ...)."""
        return self.train_size if role == "train" and self.train_size is not None else self.size

    def to_dict(self) -> dict[str, object]:
        """Every field as JSON-able values (the style in full), as recorded in the metadata."""
        d = {f: getattr(self, f) for f in ("train", "test", "distractors", "extra_distractors", "views",
                                           "size", "seed", "train_size")}
        d = {k: (None if v is None else int(v)) for k, v in d.items()}
        return {**d, "style": self.style.to_dict()}


@dataclass(frozen=True)
class LocationJob:
    """One location to build: its id, role, and the masked names it writes under."""

    number: int
    role: str  # "train", "test", "distractor" or "extra"
    gallery_name: str | None = None
    query_names: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.number:04d}"


@dataclass
class SynthSummary:
    """What was written: image counts per folder (relative to the output root)."""

    out_dir: Path
    config: SynthConfig
    counts: dict[str, int] = field(default_factory=dict)
    classes: dict[str, int] = field(default_factory=dict)
    conditions: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def plan_jobs(config: SynthConfig) -> tuple[list[LocationJob], list[str]]:
    """Ids, roles and masked names of every location, and the query names in the
    names-file (submission) order. Depends only on ``config``."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0x6E616D6573]))  # "names"
    n_gallery = config.test + config.distractors + config.extra_distractors
    n_queries = config.test * config.views
    names = masked_names(rng, n_gallery + n_queries)
    gallery, queries = names[:n_gallery], names[n_gallery:]
    jobs: list[LocationJob] = []
    number = 1
    for _ in range(config.train):
        jobs.append(LocationJob(number, "train"))
        number += 1
    g = q = 0
    for role, count in (("test", config.test), ("distractor", config.distractors),
                        ("extra", config.extra_distractors)):
        for _ in range(count):
            qn: tuple[str, ...] = ()
            if role == "test":
                qn = tuple(f"{n}.jpeg" for n in queries[q:q + config.views])
                q += config.views
            jobs.append(LocationJob(number, role, gallery[g], qn))
            g += 1
            number += 1
    order = [name for job in jobs for name in job.query_names]
    order = [order[i] for i in rng.permutation(len(order))]
    return jobs, order


# --------------------------------------------------------------------------- workers

_STATE: dict[str, object] = {}


def _init_worker(config: SynthConfig, root: Path, transform: QueryTransform | None) -> None:
    _STATE.update(config=config, root=root, transform=transform)
    with contextlib.suppress(Exception):
        import cv2

        cv2.setNumThreads(1)  # parallelism comes from the processes


def _init_pool_worker(config: SynthConfig, root: Path, transform: QueryTransform | None) -> None:
    # Ctrl-C is handled once, by the parent, which stops the pool and cleans up.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _init_worker(config, root, transform)


def _encode(image: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    pil = Image.fromarray(image)
    if fmt == "JPEG":
        pil.save(buf, "JPEG", quality=JPEG_QUALITY)
    else:
        pil.save(buf, "WEBP", quality=WEBP_QUALITY, method=4)
    return buf.getvalue()


def _write(root: Path, rel: str, data: bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _check_transformed(out: object, key: str) -> tuple[np.ndarray, str]:
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError(f"query_transform must return (image, condition); got {type(out).__name__} for {key}")
    img, cond = out
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise TypeError(f"query_transform must return an (H, W, 3) uint8 image; got {img.dtype} {img.shape} for {key}")
    if not isinstance(cond, str) or not cond:
        raise TypeError(f"query_transform must return a non-empty condition name; got {cond!r} for {key}")
    return np.ascontiguousarray(img), cond


def run_job(job: LocationJob) -> dict[str, object]:
    """Build, render and write one location (in a worker); returns its metadata."""
    config: SynthConfig = _STATE["config"]  # type: ignore[assignment]
    root: Path = _STATE["root"]  # type: ignore[assignment]
    transform: QueryTransform | None = _STATE["transform"]  # type: ignore[assignment]
    size = config.size_of(job.role)
    loc = build_location(config.seed, job.number, size, satellite_only=job.role == "extra", style=config.style)
    sat, sat_light = render_satellite_tile(loc, config.seed, size)
    sat_jpg = _encode(sat, "JPEG")
    rel = f"{RELEASE}/train" if job.role == "train" else f"{RELEASE}/test"
    if job.role == "train":
        _write(root, f"{rel}/satellite/{job.id}/{job.id}.jpg", sat_jpg)
    elif job.role == "test":
        _write(root, f"{rel}/query_satellite/{job.id}/{job.id}.jpg", sat_jpg)
    if job.role in ("test", "distractor"):
        _write(root, f"{rel}/gallery_satellite/{job.id}/{job.id}.jpg", sat_jpg)
    if job.gallery_name is not None:
        _write(root, f"{WX}/{GALLERY_160K}/{job.gallery_name}.webp", _encode(sat, "WEBP"))

    meta: dict[str, object] = {
        "role": job.role,
        "layout": loc.layout.summary(),
        "sun": {"azimuth_deg": round(loc.sun.azimuth_deg, 3), "elevation_deg": round(loc.sun.elevation_deg, 3)},
        "satellite": {"lighting": sat_light.to_dict(),
                      "gallery_160k": None if job.gallery_name is None else f"{job.gallery_name}.webp"},
        "drone": [],
    }
    if job.role == "extra":
        return meta
    shots = render_drone_views(loc, config.seed, config.views, size)
    views: list[dict[str, object]] = []
    queries: dict[str, dict[str, object]] = {}
    for v, shot in enumerate(shots, 1):
        fname = f"image-{v:02d}.jpeg"
        data = _encode(shot.view.image, "JPEG")
        if job.role == "train":
            _write(root, f"{rel}/drone/{job.id}/{fname}", data)
        else:
            _write(root, f"{rel}/gallery_drone/{job.id}/{fname}", data)
        if job.role == "test":
            _write(root, f"{rel}/query_drone/{job.id}/{fname}", data)
            key = f"{job.id}/{fname}"
            qname = job.query_names[v - 1]
            if transform is None:
                qdata, cond = data, CLEAN
            else:
                img, cond = _check_transformed(transform(shot.view.image.copy(), key), key)
                qdata = _encode(img, "JPEG")
            _write(root, f"{WX}/{QUERY_160K}/{qname}", qdata)
            queries[qname] = {"location": job.id, "view": v, "condition": cond, "source": key}
        views.append({"file": fname, "view": v, "pose": shot.pose.to_dict(), "lighting": shot.lighting.to_dict()})
    meta["drone"] = views
    meta["queries_160k"] = queries
    return meta


def _run_numbered(job: LocationJob) -> tuple[int, dict[str, object]]:
    return job.number, run_job(job)


# --------------------------------------------------------------------------- driver


def _looks_like_output(path: Path) -> bool:
    try:
        meta = json.loads((path / METADATA).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("generator") == GENERATOR


def _prepare_out(out: Path, overwrite: bool) -> Path:
    """Check ``out`` can be (re)placed and return the private folder to write into."""
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is not a folder: choose another path")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"output folder {out} is not empty: choose another folder or pass --force to replace it")
        if not _looks_like_output(out):
            raise UserError(
                f"output folder {out} is not empty and was not written by mcgf synth (no {METADATA} of ours): "
                "--force only replaces an earlier synthetic benchmark; remove the folder yourself or choose another"
            )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    except OSError as err:
        raise UserError(f"cannot create output folder next to {out}: {err.strerror or err}") from None
    return tmp


def default_workers() -> int:
    """Number of CPUs this process may use."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return max(os.cpu_count() or 1, 1)


def _run_all(jobs: list[LocationJob], config: SynthConfig, root: Path, workers: int,
             transform: QueryTransform | None, progress: bool) -> dict[int, dict[str, object]]:
    from mcgf.progress import progress_bar

    # Expensive locations first so that the cheap satellite-only ones fill the tail.
    ordered = sorted(jobs, key=lambda j: (j.role == "extra", j.number))
    results: dict[int, dict[str, object]] = {}
    bar = progress_bar(total=len(jobs), desc="synth", unit="loc", disable=not progress, dynamic_ncols=True)
    try:
        if workers == 1:
            _init_worker(config, root, transform)
            for job in ordered:
                results[job.number] = run_job(job)
                bar.update()
        else:
            # fork while torch has not run here, else forkserver (see mcgf.pools).
            with pool_context().Pool(workers, initializer=_init_pool_worker, initargs=(config, root, transform)) as pool:
                for number, meta in pool.imap_unordered(_run_numbered, ordered, chunksize=1):
                    results[number] = meta
                    bar.update()
    finally:
        bar.close()
    return results


def generate_benchmark(
    out_dir: str | Path,
    config: SynthConfig = SynthConfig(),
    *,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
    query_transform: QueryTransform | None = None,
) -> SynthSummary:
    """Generate the benchmark into ``out_dir`` (see the module docstring).

    Args:
        out_dir: output folder; must be absent or empty unless ``overwrite`` (which only
            replaces an earlier output of this generator).
        config: what to generate.
        workers: processes (default: all CPUs); the output does not depend on it.
        progress: show a progress bar.
        overwrite: replace an existing earlier output.
        query_transform: applied to the 160k-WX query images only (weather); receives
            the clean image and the key ``"<id>/image-XX.jpeg"`` and returns the new
            image and the condition name recorded in the metadata. ``None`` keeps the
            queries clean (condition :data:`~mcgf.weather.CLEAN`). With several workers it runs in
            the worker processes: it must be picklable once torch has been imported in this
            process (the workers are then started by ``forkserver``, see :mod:`mcgf.pools`).

    Raises:
        UserError: bad configuration or output folder.
    """
    start = time.perf_counter()
    config.validate()
    if workers is None:
        workers = default_workers()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UserError(f"--workers must be a positive integer (got {workers!r})")
    out = Path(out_dir)
    jobs, order = plan_jobs(config)
    tmp = _prepare_out(out, overwrite)
    try:
        results = _run_all(jobs, config, tmp, min(workers, len(jobs)), query_transform, progress)
        summary = _write_indexes(tmp, config, jobs, order, results)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary.out_dir = out
    summary.seconds = time.perf_counter() - start
    return summary


def _write_indexes(root: Path, config: SynthConfig, jobs: list[LocationJob], order: list[str],
                   results: dict[int, dict[str, object]]) -> SynthSummary:
    """Names file, ground truth and metadata; returns the summary of the tree."""
    by_query: dict[str, dict[str, object]] = {}
    for job in jobs:
        by_query.update(results[job.number].get("queries_160k", {}))  # type: ignore[arg-type]
    gallery_of = {job.id: job.gallery_name for job in jobs}
    truth = [f"{name}\t{gallery_of[str(by_query[name]['location'])]}" for name in order]
    (root / WX).mkdir(parents=True, exist_ok=True)
    (root / WX / NAMES_FILE).write_text("".join(f"{n}\n" for n in order), encoding="utf-8", newline="\n")
    (root / GROUND_TRUTH).write_text("".join(f"{t}\n" for t in truth), encoding="utf-8", newline="\n")

    locations = {}
    for job in jobs:
        meta = dict(results[job.number])
        meta.pop("queries_160k", None)
        locations[job.id] = meta
    metadata = {
        "generator": GENERATOR,
        "format_version": FORMAT_VERSION,
        "mcgf_version": __version__,
        "config": config.to_dict(),
        "seed": config.seed,
        "style": {"name": config.style.name, "palette": config.style.colours().to_dict()},
        "geometry": {
            "satellite_side_m": SATELLITE_SIDE_M,
            "scene_side_m": 2 * HALF_EXTENT_M,
            "raster_cell_m": round(raster_cell(config.size), 6),
            "train_raster_cell_m": round(raster_cell(config.size_of("train")), 6),
            "orbit": asdict(config.style.orbit()),
            "north_up_satellite": True,
            "heading": "compass bearing of the viewing direction, degrees clockwise from north",
        },
        "splits": {role: [j.id for j in jobs if j.role == role]
                   for role in ("train", "test", "distractor", "extra")},
        "locations": locations,
        "queries_160k": by_query,
        "gallery_160k": {f"{j.gallery_name}.webp": {"location": j.id, "role": j.role}
                         for j in jobs if j.gallery_name is not None},
    }
    (root / METADATA).write_text(json.dumps(metadata, indent=1, sort_keys=True) + "\n", encoding="utf-8")

    n = {role: sum(j.role == role for j in jobs) for role in ("train", "test", "distractor", "extra")}
    v = config.views
    counts = {
        f"{RELEASE}/train/drone": n["train"] * v,
        f"{RELEASE}/train/satellite": n["train"],
        f"{RELEASE}/test/query_drone": n["test"] * v,
        f"{RELEASE}/test/gallery_drone": (n["test"] + n["distractor"]) * v,
        f"{RELEASE}/test/query_satellite": n["test"],
        f"{RELEASE}/test/gallery_satellite": n["test"] + n["distractor"],
        f"{WX}/{QUERY_160K}": len(order),
        f"{WX}/{GALLERY_160K}": n["test"] + n["distractor"] + n["extra"],
    }
    classes = {
        f"{RELEASE}/train": n["train"],
        f"{RELEASE}/test/query": n["test"],
        f"{RELEASE}/test/gallery": n["test"] + n["distractor"],
    }
    conditions = dict(sorted(Counter(str(q["condition"]) for q in by_query.values()).items()))
    return SynthSummary(out_dir=root, config=config, counts=counts, classes=classes, conditions=conditions)


def format_summary(summary: SynthSummary) -> str:
    """Human-readable report of a :class:`SynthSummary`."""
    c = summary.config
    sizes = f"{c.size} px" if c.size_of("train") == c.size else f"{c.size} px (train split {c.train_size} px)"
    lines = [
        f"synthetic benchmark written to {summary.out_dir}",
        f"  style {c.style.name}, seed {c.seed}, {sizes}, {c.views} drone views per location"
        + (f", {summary.seconds:.1f} s" if summary.seconds else ""),
        f"  locations: {c.train} train, {c.test} test, {c.distractors} distractors, "
        f"{c.extra_distractors} satellite-only distractors",
    ]
    width = max(len(k) for k in summary.counts)
    lines += [f"  {k:<{width}}  {v:>7} images" for k, v in summary.counts.items()]
    if summary.conditions:
        lines.append("  160k-WX query conditions: " + ", ".join(f"{k} {v}" for k, v in summary.conditions.items()))
    return "\n".join(lines)
