"""``mcgf weather``: preview the ten conditions on an image, pre-render weathered splits."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mcgf.cli.options import file_option, folder_option
from mcgf.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``mcgf weather {list,preview,render}``."""
    parser = subparsers.add_parser(
        "weather",
        help="synthetic weather: preview conditions, pre-render weathered test sets",
        description="Synthetic weather of the multi-weather recipe (ten conditions), "
        "reproducible per image from (seed, image key).",
    )
    sub = parser.add_subparsers(dest="weather_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: _usage(parser))

    p = sub.add_parser("list", help="list the conditions")
    p.set_defaults(func=_run_list)

    p = sub.add_parser("preview", help="an image under all ten conditions, side by side")
    p.add_argument("image", type=Path, help="input image (jpg, png, webp)")
    p.add_argument("-o", "--output", type=Path, required=True, help="grid image to write (.png or .jpg)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--key", help="image key (default: '<parent folder>/<file name>', as in datasets)")
    p.add_argument("--dark-variant", choices=("train", "test"), default="train",
                   help="dark of the training recipe or the milder test-set one (default train)")
    p.add_argument("--tile", type=int, default=256, help="width of each tile in px (default 256)")
    p.add_argument("--columns", type=int, default=5, help="tiles per row (default 5)")
    p.set_defaults(func=_run_preview)

    p = sub.add_parser(
        "render", help="pre-render a weathered split with a manifest",
        description="University-WX: every condition separately, DST/<condition>/<class>/<image> "
        "for a class-folder view; for a dataset root (University-1652, SUES-200, DenseUAV) the "
        "drone queries of each test set, DST/<condition>[/<test set>]/query_drone/<class>/<image>, "
        "as mcgf evaluate --wx-dir reads them. 160k-WX: one random condition per image of a flat "
        "folder, DST/<image>. Writes DST/manifest.csv (image, condition, seed) last; re-running "
        "resumes.",
    )
    p.add_argument("source", type=Path,
                   help="class-folder view or dataset root (university-wx), flat folder (160k-wx)")
    p.add_argument("destination", type=Path, help="output folder")
    p.add_argument("--protocol", required=True, choices=("university-wx", "160k-wx"))
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--workers", type=int, default=max(1, (_cpu_count() or 1)),
                   help="worker processes (default: all cores); the output does not depend on it")
    p.add_argument("--names-file", type=Path, help="160k-wx: query names file (submission order)")
    p.add_argument("--layout", default=None, metavar="NAME",
                   help="university-wx on a dataset root: its layout (university1652, sues200, "
                        "denseuav; default: detected)")
    p.add_argument("--gallery-drone", action="store_true",
                   help="university-wx on a dataset root: also render the drone galleries "
                        "(weathered satellite->drone rows)")
    p.add_argument("--dark-variant", choices=("train", "test"), default="test",
                   help="dark variant (default test: the milder dark of the published test sets)")
    p.add_argument("--conditions", help="comma-separated subset of conditions, or 'all' (default: all ten)")
    p.add_argument("--jpeg-quality", type=int, default=95, help="JPEG/WebP quality (default 95)")
    p.add_argument("--on-bad-image", choices=("stop", "skip"), default="stop",
                   help="stop at an unreadable image (default) or skip and report it")
    p.add_argument("--overwrite", action="store_true",
                   help="re-render existing files (default: keep them and resume)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_render)


def _cpu_count() -> int | None:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count()


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)  # exit code 2: not a result a script would keep
    return 2


def _run_list(args: argparse.Namespace) -> int:
    from mcgf.weather import CONDITIONS, describe

    for name in CONDITIONS:
        print(f"{name:10s} {describe(name)}")
    return 0


def _run_preview(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np

    from mcgf.data.images import read_image
    from mcgf.fileio import write_bytes_atomic
    from mcgf.weather.preview import preview_grid

    suffix = args.output.suffix.lower()
    if suffix not in (".png", ".jpg", ".jpeg"):
        raise UserError(f"output {args.output} must end in .png or .jpg")
    if not args.image.is_file():
        raise UserError(f"image {args.image} does not exist")
    # Checked before rendering, so that a bad -o is a one-line error, not a write traceback.
    file_option(args.output, "-o")
    if args.tile < 32 or args.columns < 1:
        raise UserError("--tile must be at least 32 and --columns at least 1")
    image = np.asarray(read_image(args.image))
    # absolute(): a bare file name in its class folder has the class as its parent too.
    key = args.key or f"{args.image.absolute().parent.name}/{args.image.name}"
    grid = preview_grid(image, seed=args.seed, key=key, dark_variant=args.dark_variant,
                        tile=args.tile, columns=args.columns)
    ok, data = cv2.imencode(suffix, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    if not ok:
        raise UserError(f"could not encode {args.output}")
    write_bytes_atomic(args.output, data.tobytes())
    print(f"wrote {args.output} ({grid.shape[1]}x{grid.shape[0]}, key {key!r}, seed {args.seed})")
    return 0


def _run_render(args: argparse.Namespace) -> int:
    from mcgf.data.weather_render import RenderSettings, plan_jobs, render_jobs
    from mcgf.progress import progress_bar
    from mcgf.weather.conditions import CONDITIONS, parse_conditions

    if not 1 <= args.jpeg_quality <= 100:
        raise UserError(f"--jpeg-quality must be 1..100, got {args.jpeg_quality}")
    # Parsed as mcgf evaluate --weather and mcgf restore --condition are: an empty value is
    # an error, not the default (for 160k-wx the set decides every image's condition).
    folder_option(args.destination, "destination")
    conditions = (CONDITIONS if args.conditions is None
                  else tuple(parse_conditions(args.conditions, "--conditions")))
    jobs = plan_jobs(args.protocol, args.source, seed=args.seed, conditions=conditions,
                     names_file=args.names_file, layout=args.layout, gallery_drone=args.gallery_drone)
    settings = RenderSettings(
        protocol=args.protocol, seed=args.seed, dark_variant=args.dark_variant,
        conditions=tuple(conditions), jpeg_quality=args.jpeg_quality,
    )
    summary = render_jobs(
        jobs, args.destination, settings, workers=args.workers,
        on_bad_image=args.on_bad_image, overwrite=args.overwrite,
        progress=lambda it, total: progress_bar(it, total=total, unit="img", desc="weather",
                                                disable=args.quiet),
    )
    print(f"{summary.written} images written, {summary.existing} already present, "
          f"{len(set(summary.skipped_bad))} unreadable skipped; manifest {summary.manifest}")
    for path in sorted(set(summary.skipped_bad))[:10]:
        print(f"  skipped unreadable image {path}")
    return 0
