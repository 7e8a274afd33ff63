"""``mcgf data``: inspect dataset folders."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="inspect and validate dataset folders")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    check = sub.add_parser(
        "check",
        help="count images per split/view/class, decode every image, report problems",
        description="Validate a dataset tree (University-1652, SUES-200, DenseUAV: see "
        "docs/data.md), a University-160k(-WX) flat split, or a folder holding such datasets. "
        "Exit code 0 if the dataset can be used, 1 otherwise.",
    )
    check.add_argument("path", help="dataset root (e.g. University-Release, or the output of mcgf synth)")
    check.add_argument("--no-decode", action="store_true", help="only list files; do not decode images")
    check.add_argument("--per-class", action="store_true", help="also print the image count of every class")
    check.add_argument("--workers", type=int, default=None, help="decoding processes (default: all CPUs)")
    check.add_argument("--layout", default=None, metavar="NAME",
                       help="dataset layout: university1652, sues200 or denseuav (default: each tree's "
                            "own, detected from its folders)")
    check.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    from mcgf.data.check import check_dataset, format_report
    from mcgf.errors import UserError

    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be >= 1 (got {args.workers})")
    report = check_dataset(args.path, decode=not args.no_decode, workers=args.workers,
                           layout=args.layout)
    print(format_report(report, per_class=args.per_class))
    return 0 if report.ok else 1
