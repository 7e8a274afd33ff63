"""Cross-style transfer: train on one synthetic world, test on another.

    python benchmarks/transfer.py                               # default and town styles
    python benchmarks/transfer.py --styles default,town,my.yaml --set train.epochs=12
    python benchmarks/transfer.py --data default=runs/demo/data --run default=runs/demo/train
                                  # reuse the benchmark and model of `mcgf demo`

For each style it generates the demo benchmark in that style (``configs/demo.yaml`` with
``synth.style`` replaced; reused when an identical one is there), trains the training
config on its train split (reused when finished with the same config), and evaluates every
trained model on every style's test split, clean and under the ten weather conditions
(``mcgf evaluate --weather all``, drone→satellite). A model that learnt layout rather than
one renderer's colours keeps its accuracy off the diagonal.

Writes ``OUT/transfer.json`` and ``OUT/transfer.md``: R@1 clean and the nine-weather
mean (``normal`` excluded) for each (train style, test style) pair.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from mcgf.cli.demo import same_benchmark, synth_config
from mcgf.cli.main import main as mcgf_main
from mcgf.cli.synth import query_weather
from mcgf.config import apply_overrides, load_config
from mcgf.errors import UserError
from mcgf.fileio import write_json_atomic, write_text_atomic
from mcgf.synth import generate_benchmark
from mcgf.training.config import parse_run_config
from mcgf.training.loop import finished_run, train


def style_label(style: str) -> str:
    """A folder-safe name of a style given by name or YAML path."""
    return Path(style).stem if style.endswith((".yaml", ".yml")) else style


def summarise(metrics: dict[str, Any]) -> dict[str, float]:
    """R@1 clean, the mean over the nine weathered conditions, and AP of both, from an
    ``mcgf evaluate`` metrics.json (drone→satellite rows)."""
    rows = {r["condition"]: r["metrics"] for r in metrics["results"]
            if r["direction"] == "drone->satellite"}
    clean = rows.get("normal", rows.get("clean"))
    if clean is None:
        raise ValueError("metrics hold no clean (normal) drone->satellite row")
    weathered = [m for c, m in rows.items() if c not in ("normal", "clean", "mean")]
    if not weathered:
        raise ValueError("metrics hold no weathered drone->satellite row")
    return {
        "R@1_clean": float(clean["R@1"]),
        "R@1_weather": sum(float(m["R@1"]) for m in weathered) / len(weathered),
        "AP_clean": float(clean["AP"]),
        "AP_weather": sum(float(m["AP"]) for m in weathered) / len(weathered),
    }


def markdown(table: dict[str, dict[str, dict[str, float]]]) -> str:
    """Rows: trained on; columns: tested on (R@1 clean / nine-weather mean)."""
    tests = list(next(iter(table.values())))
    lines = ["| trained on \\ tested on | " + " | ".join(tests) + " |",
             "|---|" + "---:|" * len(tests)]
    for train_style, row in table.items():
        cells = [f"{row[t]['R@1_clean']:.1f} / {row[t]['R@1_weather']:.1f}" for t in tests]
        lines.append(f"| {train_style} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nR@1 (%) clean / mean of the nine weathered conditions.\n"


def pairs(items: list[str], option: str) -> dict[str, Path]:
    """``STYLE=PATH`` options as a mapping (one line naming the option when malformed)."""
    out: dict[str, Path] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UserError(f"{option} {item!r} must look like STYLE=PATH")
        out[key.strip()] = Path(value.strip())
    return out


def _benchmark(out: Path, synth: dict[str, Any], style: str, workers: int | None,
               data: Path | None = None) -> Path:
    cfg = {"synth": {**synth, "style": style}}
    config, weather = synth_config(cfg, f"style {style}")
    data = data or out / "data" / style_label(style)
    if not same_benchmark(data, config, weather):
        generate_benchmark(data, config, workers=workers, overwrite=True,
                           query_transform=query_weather(weather, config.seed))
    return data / "University-Release"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/demo-cpu.yaml", help="training config")
    p.add_argument("--synth-config", default="configs/demo.yaml", help="benchmark config")
    p.add_argument("--styles", default="default,town", help="comma-separated styles (names or .yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training config value (repeatable)")
    p.add_argument("--out", default="runs/transfer")
    p.add_argument("--workers", type=int, default=None, help="synth processes (default: all CPUs)")
    p.add_argument("--weather-seed", default="0")
    p.add_argument("--data", action="append", default=[], metavar="STYLE=DIR",
                   help="benchmark folder of a style (generated there unless identical)")
    p.add_argument("--run", action="append", default=[], metavar="STYLE=DIR",
                   help="training run folder of a style (reused when finished with this config)")
    p.add_argument("--retrain", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    try:
        styles = [s.strip() for s in args.styles.split(",") if s.strip()]
        if len(styles) < 2:
            raise UserError("--styles needs at least two styles (e.g. default,town)")
        synth = dict(load_config(args.synth_config).get("synth") or {})
        cfg = apply_overrides(load_config(args.config), args.overrides)
        data_dirs, run_dirs = pairs(args.data, "--data"), pairs(args.run, "--run")
        roots = {style_label(s): _benchmark(out, synth, s, args.workers, data_dirs.get(style_label(s)))
                 for s in styles}
        table: dict[str, dict[str, dict[str, float]]] = {}
        for name, root in roots.items():
            run_cfg = parse_run_config({**cfg, "data": {**cfg.get("data", {}), "root": str(root)}},
                                       args.config)
            run = run_dirs.get(name, out / "train" / name)
            if args.retrain or not finished_run(run, run_cfg):
                shutil.rmtree(run, ignore_errors=True)
                result = train(run_cfg, run, progress=True)
                print(f"[{name}] trained {result.epochs} epochs in {result.seconds:.0f} s")
            table[name] = {}
            for test_name, test_root in roots.items():
                eval_dir = out / "eval" / f"{name}-on-{test_name}"
                code = mcgf_main(["evaluate", str(test_root), "--checkpoint", str(run / "last"),
                                  "--out", str(eval_dir), "--directions", "d2s", "--weather", "all",
                                  "--weather-seed", args.weather_seed, "--no-probes", "--quiet"])
                if code:
                    return code
                metrics = json.loads((eval_dir / "metrics.json").read_text(encoding="utf-8"))
                table[name][test_name] = summarise(metrics)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = markdown(table)
    write_text_atomic(out / "transfer.md", text)
    write_json_atomic(out / "transfer.json", {"config": args.config, "overrides": args.overrides,
                                               "styles": styles, "results": table})
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
