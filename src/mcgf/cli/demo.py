"""``mcgf demo``: the end-to-end job on the built-in synthetic benchmark.

It generates the benchmark (or reuses an identical earlier one), validates it with the
same checker users run on real data, trains the MCGF model of ``configs/demo-cpu.yaml``
on its training split (or reuses a finished identical run), and evaluates the checkpoint
under the University-1652 and University-WX protocols (clean and each of the ten weather
conditions), exactly as ``mcgf train`` and ``mcgf evaluate`` do, and ends with the HTML
report of ``mcgf report``. The synthetic benchmark's defaults are those of
``configs/demo.yaml``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

#: Where the demo's benchmark differs from ``mcgf synth``'s defaults (configs/demo.yaml):
#: four times the training places, rendered at the demo model's 64-px input.
DEMO_SYNTH_DEFAULTS = {"train": 400, "train_size": 64}
#: Evaluation batch of the demo's small 64-px model: on 2 CPU cores, 128 images per pass
#: take the evaluation from 96 to 84 s (same metrics) against ``mcgf evaluate``'s default
#: 32, which stays sized for paper-scale encoders.
DEMO_EVAL_BATCH = 128
SYNTH_KEYS = ("train", "test", "distractors", "extra_distractors", "views", "size", "seed", "train_size",
              "style", "query_weather")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole pipeline on the built-in synthetic benchmark",
        description="Generate the synthetic benchmark under OUT/data (reused when an identical one "
        "is there), check it, train the demo model on it (OUT/train, reused when finished with the "
        "same config), evaluate it clean and under each weather condition (OUT/eval) and write "
        "the HTML report (OUT/report/index.html).",
    )
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--config", default=None, help="YAML config (default: the values of configs/demo.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set synth.views=4 (repeatable)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    parser.add_argument("--regenerate", action="store_true", help="regenerate the benchmark even if present")
    parser.add_argument("--train-config", default="configs/demo-cpu.yaml",
                        help="training config (default configs/demo-cpu.yaml); its data.root is "
                        "replaced by the demo's benchmark")
    parser.add_argument("--train-set", dest="train_overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a training config value, e.g. "
                        "--train-set train.epochs=2 (repeatable)")
    parser.add_argument("--retrain", action="store_true", help="train again even if a finished run is there")
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


def same_benchmark(data_dir: Path, config: Any, weather: str) -> bool:
    """Whether ``data_dir`` already holds the benchmark ``config`` with query weather
    ``weather`` (``random`` or ``none``), so that it can be reused."""
    from mcgf.weather import CLEAN

    old_config, old_queries = _existing(data_dir)
    weathered = _conditions(old_queries) != {CLEAN}
    return old_config == config.to_dict() and weathered == (weather == "random")


def synth_config(cfg: dict[str, Any], where: str) -> tuple[Any, str]:
    """The validated :class:`~mcgf.synth.SynthConfig` of a config's ``synth`` section and
    its ``query_weather`` mode; ``synth.style`` is a style name or a style YAML file.

    Raises:
        UserError: one line naming ``where`` and the bad option, or a section other than
            ``synth`` (e.g. a training option given with ``--set`` instead of ``--train-set``).
    """
    from mcgf.config import section
    from mcgf.errors import UserError
    from mcgf.synth import SynthConfig
    from mcgf.synth.style import load_style

    other = sorted(str(k) for k in cfg if k != "synth")
    if other:
        raise UserError(f"{where}: unknown section '{other[0]}' (the demo config has a synth section "
                        "only: training options go in --train-config, or --train-set KEY=VALUE)")
    synth = section(cfg, "synth", SYNTH_KEYS, where)
    weather = synth.pop("query_weather", "random")
    if weather not in ("random", "none"):
        raise UserError(f"{where}: synth.query_weather must be 'random' or 'none' (got {weather!r})")
    style = load_style(synth.pop("style", "default"), f"{where}: synth.style")
    try:
        config = SynthConfig(**synth, style=style)
    except TypeError as err:
        raise UserError(f"{where}: bad synth section: {err}") from None
    config.validate(f"{where}: synth.")
    return config, weather


def run(args: argparse.Namespace) -> int:
    from mcgf.cli.options import folder_option
    from mcgf.config import apply_overrides, load_config
    from mcgf.errors import UserError

    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be >= 1 (got {args.workers})")
    where = args.config or "the demo config"
    cfg: dict[str, Any] = (load_config(args.config) if args.config
                           else {"synth": dict(DEMO_SYNTH_DEFAULTS)})
    cfg = apply_overrides(cfg, args.overrides)
    config, weather = synth_config(cfg, where)

    out = folder_option(args.out, "--out")
    # Every value of both configs is checked before any work starts.
    run_cfg = _training_config(args, out / "data" / "University-Release")
    from mcgf.fileio import folder_lock

    # The lock of mcgf train's run folder, for the whole demo: another demo into OUT would
    # regenerate the data and delete the run under this one, and mcgf train the same.
    with folder_lock(out / "train", f"{out / 'train'} is in use by another mcgf demo or train: "
                     "wait for it to end, or give this demo another --out"):
        return _run_locked(args, out, run_cfg, config, weather)


def _run_locked(args: argparse.Namespace, out: Path, run_cfg: Any, config: Any, weather: str) -> int:
    """:func:`run` once ``OUT/train`` is locked."""
    from mcgf.cli.synth import query_weather
    from mcgf.data.check import check_dataset, format_report
    from mcgf.errors import UserError
    from mcgf.synth import format_summary, generate_benchmark

    data_dir = out / "data"
    root = data_dir / "University-Release"
    print(f"[1/5] synthetic benchmark -> {data_dir}")
    regenerated = False
    if not args.regenerate and same_benchmark(data_dir, config, weather):
        print("  an identical benchmark is already there; reusing it (--regenerate to rebuild)")
    else:
        regenerated = True
        summary = generate_benchmark(data_dir, config, workers=args.workers, overwrite=True,
                                     query_transform=query_weather(weather, config.seed))
        print(format_summary(summary))

    print(f"[2/5] dataset check of {data_dir}")
    report = check_dataset(data_dir, workers=args.workers)
    print(format_report(report))
    if not report.ok:
        raise UserError(f"the benchmark under {data_dir} failed its check; rerun with --regenerate")
    from mcgf.cli.main import main as mcgf_main
    from mcgf.training.loop import finished_run, train

    train_dir = out / "train"
    print(f"[3/5] training {args.train_config} -> {train_dir}")
    # A new benchmark has the same path, so the config alone cannot tell: retrain.
    if not args.retrain and not regenerated and finished_run(train_dir, run_cfg):
        print("  a finished run with the same config is already there; reusing it (--retrain to train again)")
    else:
        # Emptied, not removed: the folder keeps its lock.
        for entry in list(train_dir.iterdir()) if train_dir.is_dir() else []:
            if entry.is_dir() and not entry.is_symlink():
                import shutil

                shutil.rmtree(entry)
            else:
                entry.unlink()
        result = train(run_cfg, train_dir, progress=True)
        print(f"  trained {result.epochs} epochs ({result.steps} steps) in {result.seconds:.0f} s")

    eval_dir = out / "eval"
    print(f"[4/5] University-1652 / University-WX evaluation of {train_dir / 'last'} -> {eval_dir}")
    code = mcgf_main(evaluation_argv(root, eval_dir, train_dir / "last", config.seed, args.workers))
    if code:
        return code
    from mcgf.reporting import build_report

    print(f"[5/5] report -> {out / 'report'}")
    report = build_report(out, progress=False)
    print(f"demo finished: data in {data_dir}, model in {train_dir / 'last'}, metrics in {eval_dir}")
    print(f"report: {report}")
    return 0


def evaluation_argv(root: Path, eval_dir: Path, checkpoint: Path, seed: int,
                    workers: int | None) -> list[str]:
    """The ``mcgf evaluate`` command line of the demo's evaluation step: clean and every
    weather condition, weather seed ``seed``, in batches of :data:`DEMO_EVAL_BATCH`."""
    argv = ["evaluate", str(root), "--out", str(eval_dir), "--checkpoint", str(checkpoint),
            "--weather", "all", "--weather-seed", str(seed), "--quiet",
            "--batch-size", str(DEMO_EVAL_BATCH)]
    if workers is not None:
        argv += ["--workers", str(max(workers - 1, 0))]
    return argv


def _training_config(args: argparse.Namespace, root: Path) -> Any:
    """The demo's training config with ``data.root`` pointing at the generated benchmark."""
    from mcgf.cli.train import blame_override
    from mcgf.config import apply_overrides, load_config
    from mcgf.errors import UserError
    from mcgf.training.config import parse_run_config

    path = Path(args.train_config)
    if not path.is_file():
        raise UserError(f"--train-config {path} not found: run from the repository root or pass "
                        "--train-config PATH (configs/demo-cpu.yaml in the source tree)")
    cfg = apply_overrides(load_config(path), args.train_overrides)
    cfg.setdefault("data", {})["root"] = str(root)
    try:
        return parse_run_config(cfg, str(path))
    except UserError as err:  # a bad --train-set is named as such, as mcgf train names --set
        raise UserError(blame_override(str(err), str(path), args.train_overrides,
                                       "--train-set")) from None
