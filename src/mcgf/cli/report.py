"""``mcgf report``: one static HTML page about a trained model (see docs/report.md)."""

from __future__ import annotations

import argparse

from mcgf.cli.options import int_option


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``mcgf report``."""
    p = subparsers.add_parser(
        "report",
        help="HTML report of a run: metrics, match grids, heatmaps, restoration, posture",
        description="Write RUN_DIR/report/index.html (or --out DIR/index.html), a static page "
        "that opens offline: evaluation metrics and per-weather bars, training curves, top-5 "
        "match grids of a few queries under the ten weather conditions (drone->satellite and "
        "satellite->drone), similarity heatmaps, restoration previews and R@1 against the "
        "drone's pose. Features come from the evaluation's feature cache when it has them.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR",
                   help="output folder of mcgf demo, or of mcgf train (then give --data)")
    p.add_argument("--layout", default=None, metavar="NAME",
                   help="dataset layout: university1652, sues200 or denseuav (default: the run's, "
                        "else detected from the folder tree)")
    p.add_argument("--data", default=None, metavar="ROOT",
                   help="dataset with its test split (default: RUN_DIR/data, the "
                        "dataset of metrics.json or the checkpoint's data.root)")
    p.add_argument("--checkpoint", default=None, metavar="DIR",
                   help="checkpoint folder (default RUN_DIR/train/last or RUN_DIR/last)")
    p.add_argument("--out", default=None, metavar="DIR", help="report folder (default RUN_DIR/report)")
    p.add_argument("--queries", default="4", metavar="N",
                   help="random drone queries to show (default 4)")
    p.add_argument("--query", action="append", default=[], metavar="KEY",
                   help="show this query instead: '<class>/<file>' (e.g. 0839/image-07.jpeg) or a "
                        "class folder (repeatable)")
    p.add_argument("--seed", default="0", help="seed of the random choice of queries (default 0)")
    p.add_argument("--weather-seed", default=None, metavar="S",
                   help="seed of the on-the-fly weather (default: the evaluation's, else 0)")
    p.add_argument("--dark-variant", choices=("train", "test"), default=None,
                   help="on-the-fly 'dark' (default: the evaluation's, else test, as mcgf "
                        "evaluate)")
    p.add_argument("--no-heatmaps", action="store_true", help="skip the saliency heatmaps")
    p.add_argument("--compute-weather", action="store_true",
                   help="embed weathered folders missing from the feature cache (as costly as "
                        "mcgf evaluate --weather all) instead of leaving those conditions out")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="feature cache (default: RUN_DIR/eval/feature-cache when present)")
    p.add_argument("--restore-steps", default="25", metavar="N",
                   help="DDIM steps of the restoration previews (default 25)")
    p.add_argument("--tile", default="96", metavar="PX", help="picture tile size in px (default 96)")
    p.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", default=None, metavar="N",
                   help="torch CPU threads (default 1 on the CPU: the report's batches are small; "
                        "raise it for a large model on an idle many-core CPU)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from mcgf.reporting import build_report

    queries: int | list[str] = (list(args.query) if args.query
                                else int_option(args.queries, "--queries", 0))
    path = build_report(
        args.run_dir, data_root=args.data, checkpoint=args.checkpoint, out=args.out,
        queries=queries, seed=int_option(args.seed, "--seed", 0), heatmaps=not args.no_heatmaps,
        device=args.device, progress=not args.quiet,
        weather_seed=None if args.weather_seed is None else int_option(args.weather_seed, "--weather-seed", 0),
        dark_variant=args.dark_variant, compute_weather=args.compute_weather,
        cache_dir=args.cache_dir, restore_steps=int_option(args.restore_steps, "--restore-steps", 1),
        tile=int_option(args.tile, "--tile", 32),
        threads=None if args.threads is None else int_option(args.threads, "--threads", 1),
        layout=args.layout,
    )
    print(path)
    return 0
