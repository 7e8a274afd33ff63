"""``mcgf demo``: the end-to-end job on the built-in synthetic benchmark.

It generates the benchmark (or reuses an identical earlier one), validates it with the
same checker users run on real data, and evaluates the training-free ``thumbnail``
baseline on it under the University-1652 and University-WX protocols (clean and each of
the ten weather conditions), exactly as ``mcgf evaluate`` does for any model. The
defaults are those of ``configs/demo.yaml``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

SYNTH_KEYS = ("train", "test", "distractors", "extra_distractors", "views", "size", "seed", "query_weather")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole pipeline on the built-in synthetic benchmark",
        description="Generate the synthetic benchmark under OUT/data (reused when an identical one "
        "is there), check it, and evaluate the training-free thumbnail baseline on it, clean and "
        "under each weather condition (OUT/eval-thumbnail).",
    )
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--config", default=None, help="YAML config (default: the values of configs/demo.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set synth.views=4 (repeatable)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    parser.add_argument("--regenerate", action="store_true", help="regenerate the benchmark even if present")
    parser.set_defaults(func=run)


def _existing(data_dir: Path) -> tuple[dict | None, dict | None]:
    try:
        meta = json.loads((data_dir / "metadata.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    if not isinstance(meta, dict):
        return None, None
    return meta.get("config"), meta.get("queries_160k")


def _conditions(queries: dict | None) -> set[str]:
    return {str(q.get("condition")) for q in (queries or {}).values() if isinstance(q, dict)}


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from mcgf.cli.synth import query_weather
    from mcgf.config import apply_overrides, load_config, section
    from mcgf.data.check import check_dataset, format_report
    from mcgf.errors import UserError
    from mcgf.synth import SynthConfig, format_summary, generate_benchmark

    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be >= 1 (got {args.workers})")
    where = args.config or "the demo config"
    cfg: dict[str, Any] = load_config(args.config) if args.config else {}
    cfg = apply_overrides(cfg, args.overrides)
    synth = section(cfg, "synth", SYNTH_KEYS, where)
    weather = synth.pop("query_weather", "random")
    if weather not in ("random", "none"):
        raise UserError(f"{where}: synth.query_weather must be 'random' or 'none' (got {weather!r})")
    try:
        config = SynthConfig(**synth)
    except TypeError as err:
        raise UserError(f"{where}: bad synth section: {err}") from None
    config.validate()

    out = Path(args.out)
    data_dir = out / "data"
    print(f"[1/3] synthetic benchmark -> {data_dir}")
    old_config, old_queries = _existing(data_dir)
    weathered = _conditions(old_queries) != {"normal"}
    if not args.regenerate and old_config == asdict(config) and weathered == (weather == "random"):
        print("  an identical benchmark is already there; reusing it (--regenerate to rebuild)")
    else:
        summary = generate_benchmark(data_dir, config, workers=args.workers, overwrite=True,
                                     query_transform=query_weather(weather, config.seed))
        print(format_summary(summary))

    print(f"[2/3] dataset check of {data_dir}")
    report = check_dataset(data_dir, workers=args.workers)
    print(format_report(report))
    if not report.ok:
        raise UserError(f"the benchmark under {data_dir} failed its check; rerun with --regenerate")
    from mcgf.cli.main import main as mcgf_main

    eval_dir = out / "eval-thumbnail"
    print(f"[3/3] University-1652 / University-WX evaluation of the training-free thumbnail baseline -> {eval_dir}")
    argv = ["evaluate", str(data_dir / "University-Release"), "--out", str(eval_dir),
            "--embedder", "thumbnail", "--weather", "all", "--weather-seed", str(config.seed), "--quiet"]
    if args.workers is not None:
        argv += ["--workers", str(max(args.workers - 1, 0))]
    code = mcgf_main(argv)
    if code:
        return code
    print(f"demo finished: data in {data_dir}, metrics in {eval_dir}")
    return 0
