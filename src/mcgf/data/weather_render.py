"""Pre-rendering weathered dataset splits, with a manifest of who got which weather.

Two protocols:

* ``university-wx``: a University-1652 class-folder view (e.g. ``test/query_drone``) is
  rendered under every condition separately, to ``DST/<condition>/<class>/<image>``; or
  a whole dataset (any layout of :mod:`mcgf.data.layouts`): the drone query folder of
  each of its test sets, to ``DST/<condition>/query_drone/<class>/<image>``
  (``DST/<condition>/<test set>/query_drone/...`` for a layout with several, e.g.
  SUES-200's heights), which ``mcgf evaluate --wx-dir DST`` reads;
* ``160k-wx``: a flat query folder gets one random condition per image
  (:func:`~mcgf.weather.choose_condition`), written to ``DST/<image>``.

Images are rendered by a pool of worker processes; every output depends only on
(seed, image key, condition), so the result is the same for any worker count (``normal``
outputs are byte copies of the sources, the others are re-encoded in the source's
format). Each file
is written atomically (a reader never sees half an image), files already present are
kept (an interrupted run resumes where it stopped; ``overwrite`` first removes the
files it is to render, so that resuming an interrupted overwrite keeps no old file), and
``manifest.csv`` (columns
``image, condition, seed``; ``image`` relative to DST) is written last, atomically, and
lists only files that exist. ``weather_render.json`` records the settings; resuming
with different settings is refused.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from mcgf.data.images import BAD_IMAGE_POLICIES, read_image_or_none
from mcgf.data.layout import list_images, list_subfolders, load_flat_queries, read_class_folders
from mcgf.errors import UserError, folder_error
from mcgf.fileio import write_bytes_atomic, write_json_atomic
from mcgf.weather.apply import apply_weather
from mcgf.weather.conditions import (
    CLEAN,
    CONDITIONS,
    check_conditions,
    check_dark_variant,
    choose_condition,
)
from mcgf.weather.plan import ENGINE_VERSION

if TYPE_CHECKING:
    from mcgf.data.layouts import DatasetLayout

PROTOCOLS: tuple[str, ...] = ("university-wx", "160k-wx")
MANIFEST = "manifest.csv"
SETTINGS = "weather_render.json"
#: Key of the settings record while ``--overwrite`` removes the images of an earlier render.
_CLEARING = "clearing"


@dataclass(frozen=True)
class RenderJob:
    """One output image: source file, path relative to DST, condition and image key."""

    source: Path
    relative: str
    condition: str
    key: str


@dataclass
class RenderSummary:
    """What a render did."""

    total: int
    written: int
    existing: int
    skipped_bad: list[str] = field(default_factory=list)
    manifest: Path | None = None


@dataclass(frozen=True)
class RenderSettings:
    """Everything besides the source images that determines the output pixels.

    ``engine`` is :data:`~mcgf.weather.plan.ENGINE_VERSION`: a render made by an engine
    that drew other pixels is not resumed.
    """

    protocol: str
    seed: int
    dark_variant: str
    conditions: tuple[str, ...]
    jpeg_quality: int
    engine: str = ENGINE_VERSION


def plan_university_wx(source: Path, conditions: Sequence[str]) -> list[RenderJob]:
    """Jobs rendering every image of ``source/<class>/<image>`` under every condition."""
    folder = read_class_folders(source, view="drone")
    records = folder.records()
    if not records:
        raise UserError(
            f"{source} holds no image in <class id>/<image> folders (point at e.g. "
            "University-Release/test/query_drone)"
        )
    return [
        RenderJob(r.path, f"{c}/{r.folder_key}", c, r.key)
        for c in conditions
        for r in records
    ]


def plan_dataset_wx(dataset: DatasetLayout, conditions: Sequence[str],
                    roles: Sequence[str] = ("query_drone",)) -> list[RenderJob]:
    """Jobs rendering the drone test folders ``roles`` of every test set of ``dataset``
    under every condition, laid out as ``mcgf evaluate --wx-dir`` reads them."""
    jobs = []
    for ts in dataset.test_sets():
        for role in roles:
            if not ts.has(role):
                continue
            prefix = f"{ts.name}/{role}" if ts.name else role
            records = dataset.read_folder(ts.path(role), "drone").records()
            jobs += [RenderJob(r.path, f"{c}/{prefix}/{r.folder_key}", c, r.key)
                     for c in conditions for r in records]
    if not jobs:
        raise UserError(f"{dataset.root} ({dataset.title} layout) has no drone image in its "
                        f"{', '.join(roles)} test folders")
    return jobs


def plan_160k_wx(
    source: Path, seed: int, conditions: Sequence[str], names_file: Path | None = None
) -> list[RenderJob]:
    """Jobs giving every image of a flat folder one random condition.

    The image key is the file name (flat folders have no class), so the choice does not
    depend on where the folder lives. With ``names_file`` only the listed queries are
    rendered, in that order.
    """
    if names_file is not None:
        paths = load_flat_queries(source, names_file).paths
    else:
        if not source.is_dir():
            raise folder_error("query folder", source)
        paths = list_images(source)
        if not paths:
            raise UserError(f"{source} holds no image (.jpg .jpeg .png .webp)")
    return [RenderJob(p, p.name, choose_condition(seed, p.name, conditions), p.name) for p in paths]


def source_dataset(source: Path, layout: str | None = None) -> DatasetLayout | None:
    """The dataset ``source`` is the root of (or the parent of one), opened with its
    layout; ``None`` for a class-folder view. With ``layout`` it must be a dataset."""
    from mcgf.data.layouts import detect_layouts, find_dataset

    if layout:
        return find_dataset(source, layout)
    if source.is_dir() and (detect_layouts(source) or any(
            detect_layouts(Path(e.path)) for e in list_subfolders(source))):
        return find_dataset(source)
    return None


def plan_jobs(
    protocol: str,
    source: str | Path,
    *,
    seed: int,
    conditions: Sequence[str] = CONDITIONS,
    names_file: str | Path | None = None,
    layout: str | None = None,
    gallery_drone: bool = False,
) -> list[RenderJob]:
    """The jobs of a protocol (see module doc). ``layout`` names the layout of a dataset
    ``source`` (default: detected); ``gallery_drone`` renders the drone galleries of a
    dataset too (weathered satellite -> drone)."""
    source = Path(source)
    conditions = check_conditions(conditions, "--conditions")
    if protocol == "university-wx":
        if names_file is not None:
            raise UserError("--names-file applies to --protocol 160k-wx only")
        dataset = source_dataset(source, layout)
        if dataset is not None:
            roles = ("query_drone", "gallery_drone") if gallery_drone else ("query_drone",)
            return plan_dataset_wx(dataset, conditions, roles)
        if gallery_drone:
            raise UserError("--gallery-drone needs a dataset root as SOURCE (not a class-folder view)")
        return plan_university_wx(source, conditions)
    if layout or gallery_drone:
        raise UserError("--layout and --gallery-drone apply to --protocol university-wx only")
    if protocol == "160k-wx":
        return plan_160k_wx(source, seed, conditions, Path(names_file) if names_file else None)
    raise UserError(f"unknown --protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")


# --------------------------------------------------------------------------- workers


def _encode(image: object, suffix: str, quality: int) -> bytes:
    buf = io.BytesIO()
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".tif": "TIFF",
           ".tiff": "TIFF"}[suffix.lower()]
    kwargs = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    image.save(buf, format=fmt, **kwargs)  # type: ignore[attr-defined]
    return buf.getvalue()


def _render_one(args: tuple[RenderJob, Path, int, str, int, str]) -> tuple[str, str]:
    """Render one job; returns ("ok" | "bad" | "error", message). Runs in workers."""
    job, dst, seed, dark_variant, quality, policy = args
    try:
        image = read_image_or_none(job.source, policy)  # type: ignore[arg-type]
        if image is None:
            return "bad", str(job.source)
        target = dst / job.relative
        if job.condition == CLEAN:  # the original file, not a re-encoded copy
            write_bytes_atomic(target, job.source.read_bytes())
            return "ok", ""
        out = apply_weather(np.asarray(image), job.condition, seed=seed, key=job.key,
                            dark_variant=dark_variant)
        write_bytes_atomic(target, _encode(Image.fromarray(out), target.suffix, quality))
    except UserError as err:  # custom exceptions do not always survive pickling: send text
        return "error", str(err)
    return "ok", ""


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)


def render_jobs(
    jobs: Sequence[RenderJob],
    destination: str | Path,
    settings: RenderSettings,
    *,
    workers: int = 1,
    on_bad_image: str = "stop",
    overwrite: bool = False,
    progress: Callable[[Iterable, int], Iterable] | None = None,
) -> RenderSummary:
    """Render ``jobs`` into ``destination`` and write the manifest (see module doc).

    ``progress(iterable, total)`` may wrap the result stream (e.g. with tqdm).
    """
    dst = Path(destination)
    check_dark_variant(settings.dark_variant)
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise UserError(f"unknown --on-bad-image {on_bad_image!r}: use stop or skip")
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    _check_destination(dst, jobs, settings, overwrite)

    todo = [j for j in jobs if overwrite or not (dst / j.relative).exists()]
    args = [(j, dst, settings.seed, settings.dark_variant, settings.jpeg_quality, on_bad_image)
            for j in todo]
    bad: list[str] = []
    results: Iterable[tuple[str, str]]
    pool = None
    if workers == 1 or len(todo) < 2:
        _init_worker()
        results = map(_render_one, args)
    else:
        # Never plain fork: a parent that already runs thread pools (torch, OpenMP) can
        # deadlock its forked children.
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        pool = multiprocessing.get_context(method).Pool(min(workers, len(todo)), initializer=_init_worker)
        results = pool.imap(_render_one, args, chunksize=8)
    try:
        stream = progress(results, len(todo)) if progress else results
        for status, message in stream:
            if status == "error":
                raise UserError(message)
            if status == "bad":
                bad.append(message)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()

    written = len(todo) - len(bad)
    bad_set = set(bad)
    rows = [j for j in jobs if str(j.source) not in bad_set and (dst / j.relative).exists()]
    manifest = dst / MANIFEST
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["image", "condition", "seed"])
    writer.writerows([j.relative, j.condition, settings.seed] for j in rows)
    # A file name that is not valid UTF-8 is listed with the bytes it has on disk.
    write_bytes_atomic(manifest, text.getvalue().encode("utf-8", "surrogateescape"))
    return RenderSummary(total=len(jobs), written=written, existing=len(jobs) - len(todo),
                         skipped_bad=bad, manifest=manifest)


def _check_destination(
    dst: Path, jobs: Sequence[RenderJob], settings: RenderSettings, overwrite: bool
) -> None:
    # The folder the images were listed from: a view's class folders are in the view, and
    # a render inside the view would be read back as one of its classes.
    sources = {(j.source.parent.parent if settings.protocol == "university-wx" else j.source.parent)
               .resolve() for j in jobs}
    resolved = dst.resolve()
    for src in sources:
        if resolved == src or src in resolved.parents:
            raise UserError(f"destination {dst} is inside the source folder {src}: choose another")
    record = {**asdict(settings), "conditions": list(settings.conditions)}
    settings_file = dst / SETTINGS
    if settings_file.exists() and not overwrite:
        try:
            previous = json.loads(settings_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if isinstance(previous, dict) and previous.get(_CLEARING):
            raise UserError(f"an --overwrite render into {dst} stopped before it had removed the "
                            "old images: pass --overwrite again")
        if previous != record:
            raise UserError(
                f"{dst} holds a render made with other settings ({settings_file}); "
                "use another destination or pass --overwrite"
            )
    if overwrite:
        # Old images are removed before any is rendered: a resume keeps the files present,
        # and an old one left by an interrupted overwrite would pass for a new one. Until
        # they are all gone the record says so, and only --overwrite goes on.
        write_json_atomic(settings_file, {**record, _CLEARING: True})
        (dst / MANIFEST).unlink(missing_ok=True)
        for job in jobs:
            (dst / job.relative).unlink(missing_ok=True)
    write_json_atomic(settings_file, record)
