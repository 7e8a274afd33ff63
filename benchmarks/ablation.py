"""Ablation of MCGF's restoration branch: the same training run with the branch on and off.

    python benchmarks/ablation.py                       # the demo config on the demo benchmark
    python benchmarks/ablation.py --config configs/mcgf-eva02-l-448.yaml \\
        --set data.root=/data/University-Release        # paper scale (GPU)

Both runs share the config, seed, data order, weather and optimisation budget; the only
difference is the branch (``model.restoration`` and ``train.lambda_restore``), so the
encoder sees identical batches. Each checkpoint is evaluated with ``mcgf evaluate``
(drone→satellite, clean and each of the ten conditions rendered on the fly with one
weather seed). Prints R@1 and AP per condition for both runs and their difference, and
writes ``OUT/ablation.json`` and ``OUT/ablation.md``. Trained runs are reused when
``OUT/<on|off>/last`` already finished with the same config (``--retrain`` to train again).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mcgf.cli.main import main as mcgf_main
from mcgf.config import apply_overrides, load_config
from mcgf.errors import UserError
from mcgf.fileio import write_json_atomic, write_text_atomic
from mcgf.training.config import parse_run_config
from mcgf.training.loop import finished_run, train

VARIANTS = {"on": True, "off": False}


def variant_config(cfg: dict[str, Any], branch: bool, lambda_on: float) -> dict[str, Any]:
    """``cfg`` with the restoration branch on (weight ``lambda_on``) or off."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in cfg.items()}
    out.setdefault("model", {})["restoration"] = branch
    out.setdefault("train", {})["lambda_restore"] = lambda_on if branch else 0.0
    return out


def _rows(metrics_file: Path) -> dict[str, dict[str, float]]:
    data = json.loads(metrics_file.read_text(encoding="utf-8"))
    rows = {r["condition"]: r["metrics"] for r in data["results"] if r["direction"] == "drone->satellite"}
    return {c: {"R@1": float(m["R@1"]), "AP": float(m["AP"])} for c, m in rows.items()}


def markdown(table: dict[str, dict[str, dict[str, float]]]) -> str:
    """``| condition | R@1 on | R@1 off | ΔR@1 | AP on | AP off | ΔAP |`` with a mean row."""
    conds = list(table["on"])
    lines = ["| condition | R@1 branch on | R@1 branch off | ΔR@1 | AP on | AP off | ΔAP |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    means = {v: {k: sum(table[v][c][k] for c in conds) / len(conds) for k in ("R@1", "AP")}
             for v in VARIANTS}
    for name, on, off in [*[(c, table["on"][c], table["off"][c]) for c in conds],
                          ("mean", means["on"], means["off"])]:
        lines.append(f"| {name} | {on['R@1']:.2f} | {off['R@1']:.2f} | {on['R@1'] - off['R@1']:+.2f} | "
                     f"{on['AP']:.2f} | {off['AP']:.2f} | {on['AP'] - off['AP']:+.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/demo-cpu.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default="runs/ablation")
    p.add_argument("--lambda-restore", type=float, default=None,
                   help="branch weight of the 'on' run (default: the config's, or 0.1 if it is 0)")
    p.add_argument("--weather-seed", default="0")
    p.add_argument("--retrain", action="store_true")
    args = p.parse_args(argv)
    try:
        cfg = apply_overrides(load_config(args.config), args.overrides)
        lam = args.lambda_restore
        if lam is None:
            lam = float(cfg.get("train", {}).get("lambda_restore", 0.0)) or 0.1
        out = Path(args.out)
        table: dict[str, dict[str, dict[str, float]]] = {}
        for name, branch in VARIANTS.items():
            run_cfg = parse_run_config(variant_config(cfg, branch, lam), args.config)
            run = out / name
            if args.retrain or not finished_run(run, run_cfg):
                import shutil

                shutil.rmtree(run, ignore_errors=True)
                result = train(run_cfg, run, progress=True)
                print(f"[{name}] trained {result.epochs} epochs in {result.seconds:.0f} s")
            code = mcgf_main(["evaluate", run_cfg.data.val_root or run_cfg.data.root,
                              "--checkpoint", str(run / "last"), "--out", str(run / "eval"),
                              "--directions", "d2s", "--weather", "all",
                              "--weather-seed", args.weather_seed, "--quiet"])
            if code:
                return code
            table[name] = _rows(run / "eval" / "metrics.json")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = markdown(table)
    write_text_atomic(out / "ablation.md", text)
    write_json_atomic(out / "ablation.json", {"config": args.config, "overrides": args.overrides,
                                               "lambda_restore": lam, "results": table})
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
