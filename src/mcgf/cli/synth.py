"""``mcgf synth OUT``: generate the procedural cross-view benchmark."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from mcgf.cli.options import file_option
from mcgf.errors import UserError

if TYPE_CHECKING:  # the synth package is imported only when the command runs
    from mcgf.synth.benchmark import QueryTransform

_INT_OPTIONS = ("train", "test", "distractors", "extra_distractors", "views", "size", "seed")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="generate a synthetic drone/satellite benchmark (no download needed)",
        description="Render procedural 2.5D locations as drone orbits and north-up satellite tiles, "
        "written in the University-1652 and University-160k-WX layouts, or with --layout in the "
        "SUES-200 or DenseUAV layout (see docs/synth.md). Same arguments and seed give "
        "byte-identical files, whatever --workers.",
    )
    parser.add_argument("out", metavar="OUT", help="output folder (must be absent or empty, see --force)")
    # Integers are parsed in run() so that a bad value is a one-line error like every other.
    parser.add_argument("--train", metavar="N", default="100", help="training locations (default 100)")
    parser.add_argument("--test", metavar="N", default="100", help="test (query) locations (default 100)")
    parser.add_argument("--distractors", metavar="N", default="50",
                        help="extra locations in the test galleries only (default 50)")
    parser.add_argument("--extra-distractors", metavar="N", default=None,
                        help="satellite-only distractors added to the 160k gallery (default 300; "
                             "university1652 layout only)")
    parser.add_argument("--views", metavar="N", default=None,
                        help="drone views per location, 1-54 (default 8; sues200: per height; "
                             "denseuav: one per height, not settable)")
    parser.add_argument("--size", metavar="PX", default="128", help="image side in pixels, 64-512 (default 128)")
    parser.add_argument("--seed", metavar="S", default="0", help="random seed (default 0)")
    parser.add_argument("--train-size", metavar="PX", default=None,
                        help="image side of the train split, 64-512 (default: --size), e.g. a model's "
                        "input size; the test split keeps --size")
    parser.add_argument("--style", metavar="NAME|FILE.yaml", default="default",
                        help="look of the world: a built-in style (default, town) or a YAML file "
                        "overriding fields of the default style (see docs/synth.md)")
    parser.add_argument("--workers", metavar="W", default=None, help="processes (default: all CPUs)")
    parser.add_argument("--force", action="store_true",
                        help="replace OUT if it holds an earlier output of mcgf synth")
    parser.add_argument("--contact-sheet", metavar="PNG", default=None,
                        help="also write a labelled contact sheet of a few locations to this .png")
    parser.add_argument("--query-weather", choices=("random", "none"), default="random",
                        help="weather of the 160k-WX queries: one random condition of the ten per "
                        "query, reproducible from --seed and the image (default), or none")
    parser.add_argument("--layout", choices=("university1652", "sues200", "denseuav"),
                        default="university1652",
                        help="dataset layout of the output: university1652 (with the 160k-WX split, "
                             "default), sues200 (four flight heights) or denseuav (three heights "
                             "looking down, coordinates files)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


#: Defaults of the options whose default depends on --layout.
_DEFAULTS = {"extra_distractors": "300", "views": "8"}


def _int(args: argparse.Namespace, name: str) -> int:
    value = getattr(args, name)
    try:
        return int(str(value).strip())
    except ValueError:
        raise UserError(f"--{name.replace('_', '-')} must be an integer (got {value!r})") from None


def query_weather(mode: str, seed: int) -> QueryTransform | None:
    """The weather applied to the 160k-WX queries: the 160k-WX working assumption of one
    random condition per query, with the milder test-set variant of ``dark``."""
    if mode == "none":
        return None
    from mcgf.weather import WeatherTransform

    return WeatherTransform("random", seed=seed, dark_variant="test")


def _layout_options(args: argparse.Namespace) -> None:
    """Fill the layout-dependent defaults; refuse options the layout has no use for."""
    if args.layout == "university1652":
        for name, value in _DEFAULTS.items():
            if getattr(args, name) is None:
                setattr(args, name, value)
        return
    if args.extra_distractors not in (None, "0"):
        raise UserError(f"--extra-distractors applies to --layout university1652 (its 160k gallery); "
                        f"--layout {args.layout} has none")
    args.extra_distractors = "0"
    if args.layout == "denseuav" and args.views is not None:
        raise UserError("--views does not apply to --layout denseuav (one drone view per height: "
                        "H80, H90, H100)")
    args.views = args.views or ("1" if args.layout == "denseuav" else _DEFAULTS["views"])
    if args.contact_sheet is not None:
        raise UserError(f"--contact-sheet applies to --layout university1652 (not {args.layout})")


def run(args: argparse.Namespace) -> int:
    from mcgf.synth import SynthConfig, format_summary, generate_benchmark, make_contact_sheet
    from mcgf.synth.style import load_style

    _layout_options(args)
    train_size = None if args.train_size is None else _int(args, "train_size")
    config = SynthConfig(**{name: _int(args, name) for name in _INT_OPTIONS}, train_size=train_size,
                         style=load_style(args.style))
    config.validate()
    workers = None if args.workers is None else _int(args, "workers")
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be >= 1 (got {workers})")
    if args.contact_sheet is not None and not args.contact_sheet.lower().endswith(".png"):
        raise UserError(f"--contact-sheet {args.contact_sheet} must be a .png file name")
    if args.contact_sheet is not None:
        file_option(args.contact_sheet, "--contact-sheet")  # before the long render
    if args.layout != "university1652":
        from mcgf.synth.variants import format_variant_summary, generate_variant

        summary = generate_variant(args.out, args.layout, config, workers=workers,
                                   progress=not args.quiet, overwrite=args.force)
        print(format_variant_summary(summary, args.layout))
        return 0
    summary = generate_benchmark(args.out, config, workers=workers, progress=not args.quiet,
                                 overwrite=args.force,
                                 query_transform=query_weather(args.query_weather, config.seed))
    print(format_summary(summary))
    if args.contact_sheet is not None:
        path = make_contact_sheet(args.out, args.contact_sheet)
        print(f"contact sheet written to {path}")
    return 0
