"""The synthetic benchmark written in the SUES-200 and DenseUAV layouts.

Same locations, renderer and seed rules as :mod:`mcgf.synth.benchmark` (every location
from ``(seed, number)``; byte-identical output for the same arguments whatever the
worker count; written into a hidden sibling folder and renamed into place), laid out
as those benchmarks ship (see :mod:`mcgf.data.layouts.sues200` and
:mod:`mcgf.data.layouts.denseuav`):

``sues200`` — ``OUT/SUES-200/``::

    Training/<h>/drone/<id>/<h>-NN.jpeg     train locations, --views per height
    Training/<h>/satellite/<id>/<id>.jpg
    Testing/<h>/query_drone/<id>/...        test locations
    Testing/<h>/query_satellite/<id>/...
    Testing/<h>/gallery_drone/<id>/...      train + test + distractor locations
    Testing/<h>/gallery_satellite/<id>/...

for h in 150, 200, 250, 300: each height flies its own orbit, higher and more steeply
looking down as h grows (:data:`SUES_ORBITS`), so a higher view shows more ground at a
smaller scale.

``denseuav`` — ``OUT/DenseUAV/``::

    Dense_GPS_train.txt, Dense_GPS_test.txt, Dense_GPS_ALL.txt   "path E<lon> N<lat> height"
    train/drone/<id>/H80.JPG H90.JPG H100.JPG    one view per height, looking nearly straight down
    train/satellite/<id>/H80.tif H90.tif H100.tif  tiles covering 80/90/100 % of the side
    test/query_drone/<id>/..., test/query_satellite/<id>/...     test locations
    test/gallery_drone/<id>/..., test/gallery_satellite/<id>/... train + test + distractors

with 6-digit ids and locations placed densely on a grid (:data:`DENSE_SPACING_DEG` apart,
about 20 m), so SDM@K has neighbours to reward.

``OUT/metadata.json`` records the arguments and each drone view's pose (file, height).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import signal
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from mcgf import __version__
from mcgf.errors import UserError
from mcgf.fileio import replace_dir
from mcgf.pools import pool_context
from mcgf.synth.benchmark import (
    FORMAT_VERSION,
    GENERATOR,
    METADATA,
    SynthConfig,
    SynthSummary,
    _encode,
    _prepare_out,
    default_workers,
)
from mcgf.synth.location import build_location, render_drone_views, render_satellite_tile

#: Layouts :func:`generate_variant` writes, and the folder each goes into.
VARIANTS: dict[str, str] = {"sues200": "SUES-200", "denseuav": "DenseUAV"}
#: SUES-200 flight height (m) -> (synthetic orbit altitude m, pitch below the horizon deg).
#: Altitude and pitch both grow with the height; the orbit radius stays 67-75 m.
SUES_ORBITS: dict[str, tuple[float, float]] = {
    "150": (80.0, 50.0), "200": (100.0, 54.0), "250": (120.0, 58.0), "300": (140.0, 62.0),
}
#: DenseUAV flight height (m) -> synthetic altitude (m), above the synthetic scenes'
#: tallest roofs (50 m); the camera looks down at :data:`DENSE_PITCH_DEG` (straight down
#: has no defined "up" for the renderer).
DENSE_HEIGHTS: dict[str, float] = {"80": 110.0, "90": 125.0, "100": 140.0}
DENSE_PITCH_DEG = 84.0
#: Grid of the synthetic DenseUAV coordinates: origin (lon, lat), spacing, columns.
DENSE_ORIGIN: tuple[float, float] = (120.35, 30.32)
DENSE_SPACING_DEG = 0.0002
DENSE_COLUMNS = 10

_ROLES = ("train", "test", "distractor")


def _ids(layout: str, number: int) -> str:
    return f"{number:06d}" if layout == "denseuav" else f"{number:04d}"


def plan_locations(config: SynthConfig) -> list[tuple[int, str]]:
    """``(number, role)`` of every location: train ``1…``, then test, then distractors."""
    roles = ["train"] * config.train + ["test"] * config.test + ["distractor"] * config.distractors
    return [(i + 1, role) for i, role in enumerate(roles)]


def dense_coordinates(number: int) -> tuple[float, float]:
    """(longitude, latitude) of synthetic DenseUAV location ``number`` on the dense grid."""
    row, col = divmod(number - 1, DENSE_COLUMNS)
    return (round(DENSE_ORIGIN[0] + col * DENSE_SPACING_DEG, 8),
            round(DENSE_ORIGIN[1] + row * DENSE_SPACING_DEG, 8))


def _write(root: Path, rel: str, data: bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _tiff(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "TIFF")
    return buf.getvalue()


def _zoomed(tile: np.ndarray, fraction: float) -> np.ndarray:
    """The central ``fraction`` of ``tile`` scaled back to its size (a closer satellite view)."""
    size = tile.shape[0]
    side = max(8, round(size * fraction))
    lo = (size - side) // 2
    crop = Image.fromarray(tile[lo:lo + side, lo:lo + side])
    return np.asarray(crop.resize((size, size), Image.Resampling.LANCZOS))


def _pose(shot: object, extra: dict[str, object]) -> dict[str, object]:
    return {**extra, "pose": shot.pose.to_dict(), "lighting": shot.lighting.to_dict()}  # type: ignore[attr-defined]


def _targets(config: SynthConfig, role: str, own: list[str], gallery: str) -> list[tuple[int, list[str]]]:
    """``(image side, folders)`` to write a location's images to: its own split's
    folders at its split's size and the test gallery at the test size (one render when
    both sizes agree)."""
    size = config.size_of(role)
    if size == config.size:
        return [(size, [*own, gallery])]
    return [(size, own), (config.size, [gallery])]


def _sues_location(config: SynthConfig, root: Path, number: int, role: str) -> dict[str, object]:
    loc_id = _ids("sues200", number)
    base = VARIANTS["sues200"]
    drone_own = {"train": ["Training/{h}/drone"], "test": ["Testing/{h}/query_drone"]}.get(role, [])
    sat_own = {"train": ["Training/{h}/satellite"], "test": ["Testing/{h}/query_satellite"]}.get(role, [])
    views: list[dict[str, object]] = []
    for (size, drone_to), (_, sat_to) in zip(_targets(config, role, drone_own, "Testing/{h}/gallery_drone"),
                                             _targets(config, role, sat_own, "Testing/{h}/gallery_satellite"),
                                             strict=True):
        loc = build_location(config.seed, number, size, style=config.style)
        sat = _encode(render_satellite_tile(loc, config.seed, size)[0], "JPEG")
        for height, (altitude, pitch) in SUES_ORBITS.items():
            orbit = replace(config.style.orbit(), altitude_first_m=altitude, altitude_last_m=altitude,
                            pitch_first_deg=pitch, pitch_last_deg=pitch)
            for v, shot in enumerate(render_drone_views(loc, config.seed, config.views, size, orbit=orbit), 1):
                name = f"{height}-{v:02d}.jpeg"
                data = _encode(shot.view.image, "JPEG")
                for f in drone_to:
                    _write(root, f"{base}/{f.format(h=height)}/{loc_id}/{name}", data)
                if size == config.size_of(role):
                    views.append(_pose(shot, {"file": name, "height": height, "view": v}))
            for f in sat_to:
                _write(root, f"{base}/{f.format(h=height)}/{loc_id}/{loc_id}.jpg", sat)
    return {"role": role, "drone": views}


def _dense_location(config: SynthConfig, root: Path, number: int, role: str) -> dict[str, object]:
    loc_id = _ids("denseuav", number)
    base = VARIANTS["denseuav"]
    drone_own = {"train": ["train/drone"], "test": ["test/query_drone"]}.get(role, [])
    sat_own = {"train": ["train/satellite"], "test": ["test/query_satellite"]}.get(role, [])
    views: list[dict[str, object]] = []
    for (size, drone_to), (_, sat_to) in zip(_targets(config, role, drone_own, "test/gallery_drone"),
                                             _targets(config, role, sat_own, "test/gallery_satellite"),
                                             strict=True):
        loc = build_location(config.seed, number, size, style=config.style)
        tile = render_satellite_tile(loc, config.seed, size)[0]
        for height, altitude in DENSE_HEIGHTS.items():
            orbit = replace(config.style.orbit(), altitude_first_m=altitude, altitude_last_m=altitude,
                            pitch_first_deg=DENSE_PITCH_DEG, pitch_last_deg=DENSE_PITCH_DEG)
            shot = render_drone_views(loc, config.seed, 1, size, orbit=orbit)[0]
            data = _encode(shot.view.image, "JPEG")
            sat = _tiff(_zoomed(tile, int(height) / 100))
            for f in drone_to:
                _write(root, f"{base}/{f}/{loc_id}/H{height}.JPG", data)
            for f in sat_to:
                _write(root, f"{base}/{f}/{loc_id}/H{height}.tif", sat)
            if size == config.size_of(role):
                views.append(_pose(shot, {"file": f"H{height}.JPG", "height": height}))
    lon, lat = dense_coordinates(number)
    return {"role": role, "drone": views, "lonlat": [lon, lat]}


_STATE: dict[str, object] = {}


def _init_worker(layout: str, config: SynthConfig, root: Path, pool: bool) -> None:
    if pool:  # Ctrl-C is handled once, by the parent
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    _STATE.update(layout=layout, config=config, root=root)
    with contextlib.suppress(Exception):
        import cv2

        cv2.setNumThreads(1)


def _run_location(job: tuple[int, str]) -> tuple[int, dict[str, object]]:
    number, role = job
    write = _sues_location if _STATE["layout"] == "sues200" else _dense_location
    return number, write(_STATE["config"], _STATE["root"], number, role)  # type: ignore[arg-type]


def _run_all(layout: str, jobs: list[tuple[int, str]], config: SynthConfig, root: Path, workers: int,
             progress: bool) -> dict[int, dict[str, object]]:
    from mcgf.progress import progress_bar

    results: dict[int, dict[str, object]] = {}
    bar = progress_bar(total=len(jobs), desc="synth", unit="loc", disable=not progress, dynamic_ncols=True)
    try:
        if workers == 1:
            _init_worker(layout, config, root, False)
            stream: Iterable[tuple[int, dict[str, object]]] = map(_run_location, jobs)
            for number, meta in stream:
                results[number] = meta
                bar.update()
        else:
            with pool_context().Pool(
                    workers, initializer=_init_worker, initargs=(layout, config, root, True)) as pool:
                for number, meta in pool.imap_unordered(_run_location, jobs, chunksize=1):
                    results[number] = meta
                    bar.update()
    finally:
        bar.close()
    return results


def _gps_lines(results: dict[int, dict[str, object]], role_set: tuple[str, ...]) -> str:
    lines = []
    for number in sorted(results):
        meta = results[number]
        if meta["role"] not in role_set:
            continue
        lon, lat = meta["lonlat"]  # type: ignore[misc]
        folder = "train/satellite" if meta["role"] == "train" else "test/gallery_satellite"
        lines.append(f"{folder}/{_ids('denseuav', number)}/H80.tif E{lon:.8f} N{lat:.8f} 80\n")
    return "".join(lines)


def _count(root: Path) -> dict[str, int]:
    """Images per view folder (class folders' parents), relative to ``root``."""
    counts: Counter[str] = Counter()
    for path in root.rglob("*"):
        if path.is_file() and path.suffix.lower() in (".jpg", ".jpeg", ".tif"):
            counts[str(path.parent.parent.relative_to(root))] += 1
    return dict(sorted(counts.items()))


def generate_variant(out_dir: str | Path, layout: str, config: SynthConfig, *,
                     workers: int | None = None, progress: bool = True,
                     overwrite: bool = False) -> SynthSummary:
    """Write the synthetic benchmark in the ``layout`` (``sues200`` or ``denseuav``) tree.

    ``config.extra_distractors`` must be 0 (they belong to the 160k-style gallery of the
    University-1652 output); ``config.views`` is the number of drone views per height of
    SUES-200 (DenseUAV has one per height).

    Raises:
        UserError: an unknown layout, bad configuration or output folder.
    """
    start = time.perf_counter()
    if layout not in VARIANTS:
        raise UserError(f"--layout {layout!r}: the synthetic benchmark is written as university1652, "
                        f"{' or '.join(VARIANTS)}")
    config.validate()
    if config.extra_distractors:
        raise UserError(f"--extra-distractors applies to the university1652 layout (its 160k gallery); "
                        f"--layout {layout} has none")
    workers = default_workers() if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UserError(f"--workers must be a positive integer (got {workers!r})")
    out = Path(out_dir)
    jobs = plan_locations(config)
    tmp = _prepare_out(out, overwrite)
    try:
        results = _run_all(layout, jobs, config, tmp, min(workers, len(jobs)), progress)
        if layout == "denseuav":
            base = tmp / VARIANTS[layout]
            train, test = _gps_lines(results, ("train",)), _gps_lines(results, ("test", "distractor"))
            (base / "Dense_GPS_train.txt").write_text(train, encoding="utf-8", newline="\n")
            (base / "Dense_GPS_test.txt").write_text(test, encoding="utf-8", newline="\n")
            (base / "Dense_GPS_ALL.txt").write_text(train + test, encoding="utf-8", newline="\n")
        metadata = {
            "generator": GENERATOR,
            "format_version": FORMAT_VERSION,
            "mcgf_version": __version__,
            "layout": layout,
            "config": config.to_dict(),
            "seed": config.seed,
            "splits": {role: [_ids(layout, n) for n, r in jobs if r == role] for role in _ROLES},
            "locations": {_ids(layout, n): results[n] for n in sorted(results)},
        }
        (tmp / METADATA).write_text(json.dumps(metadata, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        counts = _count(tmp)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    classes = {role: sum(r == role for _, r in jobs) for role in _ROLES}
    return SynthSummary(out_dir=out, config=config, counts=counts, classes=classes,
                        seconds=time.perf_counter() - start)


def format_variant_summary(summary: SynthSummary, layout: str) -> str:
    """Human-readable report of :func:`generate_variant`'s summary."""
    c = summary.config
    per = (f"{c.views} drone views per height ({', '.join(SUES_ORBITS)} m)" if layout == "sues200"
           else f"one drone view per height ({', '.join(f'H{h}' for h in DENSE_HEIGHTS)})")
    lines = [f"synthetic benchmark ({VARIANTS[layout]} layout) written to {summary.out_dir}",
             f"  style {c.style.name}, seed {c.seed}, {c.size} px, {per}"
             + (f", {summary.seconds:.1f} s" if summary.seconds else ""),
             f"  locations: {c.train} train, {c.test} test, {c.distractors} distractors"]
    width = max((len(k) for k in summary.counts), default=0)
    lines += [f"  {k:<{width}}  {v:>7} images" for k, v in summary.counts.items()]
    return "\n".join(lines)
