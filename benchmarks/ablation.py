"""Ablation of MCGF's restoration branch over several training seeds, with a paired verdict.

    python benchmarks/ablation.py --seeds 3                  # the demo config, six variants
    python benchmarks/ablation.py --seeds 3 --epochs 12 --variants weather,mcgf-image
    python benchmarks/ablation.py --config configs/mcgf-eva02-l-448.yaml \\
        --set data.root=/data/University-Release --seeds 3  # paper scale (GPU)

Every variant is the base config with a few keys changed (see :data:`VARIANTS`); data,
weather, batches and budget are shared, and for seed ``s`` every variant trains with
``train.seed = s``, so the variants of one seed see identical batches. Each run lives in
``OUT/<variant>/seed<s>/`` and is reused when it already finished with the same config
(``--retrain`` to train again). Each checkpoint is evaluated with ``mcgf evaluate
--directions d2s --weather all`` (clean plus the nine weathers rendered with one fixed
weather seed; the feature cache makes re-evaluating a reused run cheap).

Writes ``OUT/ablation.json`` and ``OUT/ablation.md`` (after every run, so an interrupted
ablation keeps what it measured): R@1/AP per condition as mean ± std over seeds, the
nine-weather mean, a paired comparison of every MCGF variant against ``weather`` (per-seed
differences, seed-noise σ, the "beats by > 2σ" verdict, paired t), the invariance probes
when ``metrics.json`` has them, and the training seconds of every run.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mcgf.cli.main import main as mcgf_main
from mcgf.config import apply_overrides, load_config
from mcgf.errors import UserError
from mcgf.fileio import write_json_atomic, write_text_atomic
from mcgf.training.config import parse_run_config
from mcgf.training.loop import finished_run, train

_OFF = {"model": {"restoration": False, "lambda_restore": 0.0}}


def _mcgf(condition: str, lam: float) -> dict[str, dict[str, Any]]:
    return {"model": {"restoration": True, "restoration_condition": condition,
                      "lambda_restore": lam}}


#: Variant name → the config keys it sets (``section → option → value``); everything
#: else comes from the base config. ``train.seed`` is set per run on top of these.
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "no-weather": {"weather": {"conditions": "none"}, **_OFF},
    "weather": _OFF,
    "mcgf-image": _mcgf("features+image", 0.1),
    "mcgf-features-0.1": _mcgf("features", 0.1),
    "mcgf-features-0.5": _mcgf("features", 0.5),
    "mcgf-features-1": _mcgf("features", 1.0),
}
#: The variant every MCGF variant is compared with (weather training, no branch).
BASELINE = "weather"
#: Variants with the restoration branch, compared with :data:`BASELINE`.
MCGF_VARIANTS = tuple(v for v in VARIANTS if v.startswith("mcgf-"))
#: The clean condition, left out of the nine-weather mean.
CLEAN = "normal"
METRICS = ("R@1", "AP")


# ---------------------------------------------------------------- configs


def variant_config(base: Mapping[str, Any], variant: str, seed: int) -> dict[str, Any]:
    """The config of one run: ``base`` with ``variant``'s keys and ``train.seed = seed``.

    Args:
        base: the loaded base config (after ``--set`` and ``--epochs``); not modified.
        variant: a key of :data:`VARIANTS`.
        seed: the training seed.

    Returns:
        A deep copy of ``base`` that differs from it only in :data:`VARIANTS` ``[variant]``'s
        keys and ``train.seed`` (model options that an older ``base`` kept under ``train:``,
        e.g. ``train.lambda_restore``, are moved to ``model:`` first).

    Raises:
        KeyError: unknown ``variant``.
    """
    from mcgf.models.model_registry import move_legacy_train_options

    out = copy.deepcopy(move_legacy_train_options(base)[0])
    for section, options in VARIANTS[variant].items():
        out[section] = {**(out.get(section) or {}), **options}
    out["train"] = {**(out.get("train") or {}), "seed": seed}
    return out


def parse_names(text: str | None, known: Sequence[str], option: str, noun: str) -> list[str]:
    """A comma-separated ``--option`` list of names from ``known``, in ``known``'s order;
    all of them when ``None``.

    Raises:
        UserError: an unknown or empty name list (``noun`` names one item in the message).
    """
    if text is None:
        return list(known)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        what = f"unknown {noun} {unknown[0]!r}" if unknown else f"no {noun} given"
        raise UserError(f"{option}: {what} (known: {', '.join(known)})")
    return [k for k in known if k in names]


def parse_variants(text: str | None) -> list[str]:
    """``--variants`` (comma-separated names) in :data:`VARIANTS` order; all when ``None``.

    Raises:
        UserError: an unknown or empty name list.
    """
    return parse_names(text, list(VARIANTS), "--variants", "variant")


def missing_model_options(variants: Iterable[str], accepted: set[str]) -> dict[str, list[str]]:
    """Model options that ``variants`` set but the model does not accept, per variant.

    Args:
        variants: names from :data:`VARIANTS`.
        accepted: the model's keyword options (``mcgf.models.model_registry.model_options``).

    Returns:
        ``{variant: [option, ...]}`` for the variants that cannot be built (empty: all can).
    """
    out = {}
    for v in variants:
        missing = sorted(set(VARIANTS[v].get("model", {})) - accepted)
        if missing:
            out[v] = missing
    return out


# ---------------------------------------------------------------- statistics


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (``n - 1`` in the denominator).

    Returns:
        ``(mean, std)``; ``std`` is ``None`` with fewer than two values, both are ``None``
        with none.
    """
    n = len(values)
    if n == 0:
        return None, None
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((x - mean) ** 2 for x in values) / (n - 1))


def _ms(values: Sequence[float]) -> dict[str, Any]:
    mean, std = mean_std(values)
    return {"mean": mean, "std": std, "n": len(values)}


def weather_mean(rows: Mapping[str, Mapping[str, float]], metric: str) -> float:
    """Mean of ``metric`` over the conditions of ``rows`` other than :data:`CLEAN`.

    Args:
        rows: ``condition → {metric: value}`` of one run.
        metric: ``"R@1"`` or ``"AP"``.

    Raises:
        ValueError: no weathered condition in ``rows``.
    """
    vals = [m[metric] for c, m in rows.items() if c != CLEAN]
    if not vals:
        raise ValueError("no weathered condition to average")
    return sum(vals) / len(vals)


def paired_comparison(baseline: Mapping[int, float], variant: Mapping[int, float]) -> dict[str, Any]:
    """Paired comparison of a variant with the baseline on the seeds both have.

    Args:
        baseline: seed → the baseline's score (e.g. nine-weather mean R@1).
        variant: seed → the variant's score.

    Returns:
        ``seeds``; ``differences`` (variant − baseline, per seed); ``mean`` and ``std``
        (sample) of the differences; ``noise_std``: the sample std over the same seeds of
        the baseline's score (the seed noise σ); ``beats_by_2sigma``: ``mean > 2 ×
        noise_std`` (``None`` with fewer than two seeds); ``t``: the paired t statistic
        ``mean / (std / √n)`` (``None`` with fewer than two seeds or identical
        differences) and ``df = n − 1``.
    """
    seeds = sorted(set(baseline) & set(variant))
    diffs = [variant[s] - baseline[s] for s in seeds]
    mean, std = mean_std(diffs)
    _, noise = mean_std([baseline[s] for s in seeds])
    n = len(seeds)
    t = mean / (std / math.sqrt(n)) if mean is not None and std else None
    return {"seeds": seeds, "differences": diffs, "mean": mean, "std": std, "noise_std": noise,
            "beats_by_2sigma": None if mean is None or noise is None else bool(mean > 2 * noise),
            "t": t, "df": n - 1 if n >= 2 else None}


# ---------------------------------------------------------------- reading metrics.json


def read_results(metrics: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Drone→satellite ``condition → {"R@1", "AP"}`` (percent) of a ``metrics.json``."""
    rows = {r["condition"]: r["metrics"] for r in metrics.get("results", [])
            if r.get("direction") == "drone->satellite"}
    return {c: {k: float(m[k]) for k in METRICS} for c, m in rows.items()}


def read_invariance(metrics: Mapping[str, Any]) -> dict[str, float | None] | None:
    """The invariance probes of a ``metrics.json``, averaged over the weathered conditions.

    Args:
        metrics: a parsed ``metrics.json``.

    Returns:
        ``None`` when it has no ``invariance`` section; otherwise ``cosine`` and
        ``normalised`` (means over the conditions other than the clean one, ``None`` when
        none has a value) and ``probe_accuracy`` / ``probe_chance`` (percent; ``None``
        when the probe did not run).
    """
    section = metrics.get("invariance")
    if not isinstance(section, Mapping):
        return None
    rows = [r for r in section.get("per_condition") or []
            if not r.get("same_as_clean") and r.get("condition") != CLEAN]
    out: dict[str, float | None] = {}
    for key in ("cosine", "normalised"):
        out[key] = mean_std([float(r[key]) for r in rows if r.get(key) is not None])[0]
    probe = section.get("probe")
    out["probe_accuracy"] = float(probe["accuracy"]) if probe else None
    out["probe_chance"] = float(probe["chance"]) if probe else None
    return out


def run_record(variant: str, seed: int, metrics: Mapping[str, Any],
               train_seconds: float | None) -> dict[str, Any]:
    """One run's entry of ``ablation.json`` ``runs`` from its ``metrics.json``.

    Returns:
        ``variant``, ``seed``, ``train_seconds``, ``conditions`` (``condition → {"R@1",
        "AP"}``), ``weather_mean`` (``{"R@1", "AP"}`` over the conditions other than the
        clean one) and ``invariance`` (:func:`read_invariance`).
    """
    rows = read_results(metrics)
    return {"variant": variant, "seed": seed, "train_seconds": train_seconds, "conditions": rows,
            "weather_mean": {k: weather_mean(rows, k) for k in METRICS},
            "invariance": read_invariance(metrics)}


# ---------------------------------------------------------------- aggregation


def summarise(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-variant aggregates of :func:`run_record` entries (mean ± sample std over seeds).

    Returns:
        ``variant → {"seeds", "conditions": {cond: {"R@1": ms, "AP": ms}}, "weather_mean":
        {"R@1": ms, "AP": ms}, "invariance": {"cosine": ms, "normalised": ms,
        "probe_accuracy": ms} or None, "train_seconds": ms}`` where ``ms`` is ``{"mean",
        "std", "n"}``; variants in order of first appearance.
    """
    by_variant: dict[str, list[Mapping[str, Any]]] = {}
    for r in runs:
        by_variant.setdefault(r["variant"], []).append(r)
    out: dict[str, Any] = {}
    for v, rs in by_variant.items():
        conds = list(dict.fromkeys(c for r in rs for c in r["conditions"]))
        inv = [r["invariance"] for r in rs if r.get("invariance")]
        out[v] = {
            "seeds": [r["seed"] for r in rs],
            "conditions": {c: {k: _ms([r["conditions"][c][k] for r in rs if c in r["conditions"]])
                               for k in METRICS} for c in conds},
            "weather_mean": {k: _ms([r["weather_mean"][k] for r in rs]) for k in METRICS},
            "invariance": {k: _ms([i[k] for i in inv if i.get(k) is not None])
                           for k in ("cosine", "normalised", "probe_accuracy")} if inv else None,
            "train_seconds": _ms([r["train_seconds"] for r in rs if r.get("train_seconds") is not None]),
        }
    return out


def _moved(base: Mapping[str, Any], other: Mapping[str, Any], *, up: bool) -> bool | None:
    a, b = base["mean"], other["mean"]
    return None if a is None or b is None else bool(b > a if up else b < a)


def compare(runs: Sequence[Mapping[str, Any]], summary: Mapping[str, Any],
            metric: str = "R@1") -> dict[str, Any]:
    """Every MCGF variant present against :data:`BASELINE`.

    Returns:
        ``variant → {"metric", ...`` :func:`paired_comparison` ``..., "invariance": {
        "cosine_up", "normalised_up", "probe_down"} or None}`` (each flag ``None`` when
        either side lacks the value); empty when the baseline did not run.
    """
    if BASELINE not in summary:
        return {}
    score = {v: {r["seed"]: r["weather_mean"][metric] for r in runs if r["variant"] == v} for v in summary}
    out = {}
    for v in (v for v in summary if v in MCGF_VARIANTS):
        entry: dict[str, Any] = {"metric": f"{metric} nine-weather mean",
                                 **paired_comparison(score[BASELINE], score[v])}
        base_inv, inv = summary[BASELINE]["invariance"], summary[v]["invariance"]
        entry["invariance"] = None if not (base_inv and inv) else {
            "cosine_up": _moved(base_inv["cosine"], inv["cosine"], up=True),
            "normalised_up": _moved(base_inv["normalised"], inv["normalised"], up=True),
            "probe_down": _moved(base_inv["probe_accuracy"], inv["probe_accuracy"], up=False)}
        out[v] = entry
    return out


# ---------------------------------------------------------------- Markdown


def _f(x: float | None, digits: int = 2, sign: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _pm(ms: Mapping[str, Any] | None, digits: int = 2) -> str:
    if not ms or ms["mean"] is None:
        return "–"
    return _f(ms["mean"], digits) + ("" if ms["std"] is None else f" ± {_f(ms['std'], digits)}")


def _yn(flag: bool | None) -> str:
    return "–" if flag is None else ("yes" if flag else "no")


def markdown(result: Mapping[str, Any]) -> str:
    """``ablation.md`` from the ``ablation.json`` mapping (``summary``, ``paired``, ``runs``).

    Sections: R@1 (mean ± std) and AP (mean) per condition and variant with the
    nine-weather mean; the paired comparison against :data:`BASELINE`; the invariance
    probes (or a line saying the metrics have none); training seconds per run.
    """
    summary, paired, runs = result["summary"], result["paired"], result["runs"]
    variants = list(summary)
    seeds = sorted({r["seed"] for r in runs})
    conds = list(dict.fromkeys(c for v in variants for c in summary[v]["conditions"]))
    lines = [f"# Restoration-branch ablation ({len(seeds)} seed{'s' * (len(seeds) != 1)}: "
             f"{', '.join(map(str, seeds))})", ""]
    if result.get("config"):
        lines += [f"Base config `{result['config']}`"
                  + "".join(f", `--set {o}`" for o in result.get("overrides", []))
                  + (f", {result['epochs']} epochs" if result.get("epochs") else "")
                  + f"; drone→satellite, evaluation weather seed {result.get('weather_seed', '0')}; "
                  "mean ± sample std over seeds.", ""]
    head = "| condition | " + " | ".join(variants) + " |"
    rule = "|---|" + "---:|" * len(variants)
    for metric, cell in (("R@1", _pm), ("AP", lambda ms: _f(ms["mean"]) if ms else "–")):
        lines += [f"## {metric} (%)" + (" mean ± std" if metric == "R@1" else " mean"), "", head, rule]
        for c in conds:
            lines.append(f"| {c} | " + " | ".join(cell(summary[v]["conditions"].get(c, {}).get(metric))
                                                   for v in variants) + " |")
        lines.append("| **nine-weather mean** | "
                     + " | ".join(_pm(summary[v]["weather_mean"][metric]) for v in variants) + " |")
        lines.append("")
    if paired:
        lines += [f"## MCGF variants against `{BASELINE}` (nine-weather mean R@1, paired by seed)", "",
                  "| variant | Δ per seed | mean Δ ± std | seed noise σ | beats by > 2σ | paired t (df) |",
                  "|---|---|---:|---:|:---:|---:|"]
        for v, p in paired.items():
            per_seed = ", ".join(f"{s}: {_f(d, sign=True)}" for s, d in zip(p["seeds"], p["differences"],
                                                                            strict=True))
            t = "–" if p["t"] is None else f"{p['t']:+.2f} ({p['df']})"
            mean = _f(p["mean"], sign=True) + ("" if p["std"] is None else f" ± {_f(p['std'])}")
            lines.append(f"| {v} | {per_seed or '–'} | {mean} | {_f(p['noise_std'])} | "
                         f"{_yn(p['beats_by_2sigma'])} | {t} |")
        lines += ["", "Δ = variant − `weather`. \"beats by > 2σ\": mean Δ > 2 × seed noise σ (the std over "
                  "seeds of `weather`'s nine-weather mean). t = mean Δ / (std Δ / √n), n − 1 degrees of "
                  "freedom.", ""]
    elif BASELINE not in summary:
        lines += [f"No paired comparison: the `{BASELINE}` variant was not run.", ""]
    if any(summary[v]["invariance"] for v in variants):
        lines += ["## Invariance probes (weathered conditions, mean ± std over seeds)", "",
                  "| variant | clean–weathered cosine | normalised cosine | condition probe accuracy (%) "
                  "| cosine ↑ | normalised ↑ | probe ↓ |", "|---|---:|---:|---:|:---:|:---:|:---:|"]
        for v in variants:
            inv = summary[v]["invariance"] or {}
            d = (paired.get(v) or {}).get("invariance") or {}
            lines.append(f"| {v} | {_pm(inv.get('cosine'), 3)} | {_pm(inv.get('normalised'), 3)} | "
                         f"{_pm(inv.get('probe_accuracy'), 1)} | {_yn(d.get('cosine_up'))} | "
                         f"{_yn(d.get('normalised_up'))} | {_yn(d.get('probe_down'))} |")
        lines += ["", f"Arrows: the direction of more invariance, compared with `{BASELINE}` (means).", ""]
    else:
        lines += ["No invariance probes: the metrics have no `invariance` section.", ""]
    lines += ["## Training time (s)", "", "| variant | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
              "|---|" + "---:|" * (len(seeds) + 1)]
    for v in variants:
        secs = {r["seed"]: r["train_seconds"] for r in runs if r["variant"] == v}
        lines.append(f"| {v} | " + " | ".join(_f(secs.get(s), 0) for s in seeds)
                     + f" | {_f(summary[v]['train_seconds']['mean'], 0)} |")
    lines.append("")
    lines.append("– : not available (one seed for a std, a run reused without its recorded training time).")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- running


#: Written beside each run's checkpoint: how long its training took.
TIMING = "ablation_train.json"


def _train_or_reuse(run_cfg: Any, run: Path, retrain: bool, label: str) -> float | None:
    if not retrain and finished_run(run, run_cfg):
        try:
            seconds = json.loads((run / TIMING).read_text(encoding="utf-8"))["seconds"]
        except (OSError, ValueError, KeyError):
            seconds = None
        print(f"[{label}] reusing the finished run in {run}")
        return None if seconds is None else float(seconds)
    shutil.rmtree(run, ignore_errors=True)
    result = train(run_cfg, run, progress=True)
    print(f"[{label}] trained {result.epochs} epochs in {result.seconds:.0f} s")
    write_json_atomic(run / TIMING, {"seconds": result.seconds, "epochs": result.epochs,
                                     "steps": result.steps})
    return result.seconds


def _result(args: argparse.Namespace, variants: list[str], seeds: list[int],
            runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary = summarise(runs)
    return {"config": args.config, "overrides": args.overrides, "epochs": args.epochs,
            "weather_seed": args.weather_seed, "seeds": seeds,
            "variants": {v: VARIANTS[v] for v in variants},
            "baseline": BASELINE, "runs": runs, "summary": summary, "paired": compare(runs, summary)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/demo-cpu.yaml", help="base config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override of the base config (repeatable)")
    p.add_argument("--out", default="runs/ablation")
    p.add_argument("--seeds", type=int, default=3, help="training seeds 0..N-1 (default 3)")
    p.add_argument("--variants", default=None,
                   help=f"comma-separated subset of {','.join(VARIANTS)} (default: all)")
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs of every run")
    p.add_argument("--weather-seed", default="0", help="seed of the evaluation weather (fixed)")
    p.add_argument("--retrain", action="store_true", help="train every run again")
    args = p.parse_args(argv)
    try:
        if args.seeds < 1:
            raise UserError(f"--seeds must be >= 1, got {args.seeds}")
        if args.epochs is not None and args.epochs < 1:
            raise UserError(f"--epochs must be >= 1, got {args.epochs}")
        variants = parse_variants(args.variants)
        base = apply_overrides(load_config(args.config), args.overrides)
        if args.epochs is not None:
            base["train"] = {**(base.get("train") or {}), "epochs": args.epochs}
        from mcgf.models.model_registry import move_legacy_train_options

        base, moved = move_legacy_train_options(base)
        if moved:
            print(f"ablation: warning: {args.config}: "
                  f"{', '.join(f'train.{k}' for k in moved)} moved to the model section: "
                  f"write {', '.join(f'model.{k}' for k in moved)} instead", file=sys.stderr)
        if (base.get("weather") or {}).get("conditions", "random") == "none" and variants != ["no-weather"]:
            raise UserError(f"{args.config}: weather.conditions is 'none', so the weather variants would "
                            "train without weather: set it (e.g. --set weather.conditions=random)")
        from mcgf.models.model_registry import model_options

        name = str((base.get("model") or {}).get("name", "mcgf"))
        missing = missing_model_options(variants, model_options(name))
        if missing:
            v, opts = next(iter(missing.items()))
            raise UserError(f"variant {v} needs model.{opts[0]}, which model {name!r} does not accept "
                            "in this version (leave it out with --variants)")
        seeds = list(range(args.seeds))
        out = Path(args.out)
        runs: list[dict[str, Any]] = []
        # Seed-major order: an interrupted ablation has every variant at the first seeds.
        for seed in seeds:
            for v in variants:
                label = f"{v} seed{seed}"
                run_cfg = parse_run_config(variant_config(base, v, seed), args.config)
                run = out / v / f"seed{seed}"
                seconds = _train_or_reuse(run_cfg, run, args.retrain, label)
                code = mcgf_main(["evaluate", run_cfg.data.val_root or run_cfg.data.root,
                                  "--checkpoint", str(run / "last"), "--out", str(run / "eval"),
                                  "--directions", "d2s", "--weather", "all",
                                  "--weather-seed", args.weather_seed, "--quiet"])
                if code:
                    return code
                metrics = json.loads((run / "eval" / "metrics.json").read_text(encoding="utf-8"))
                runs.append(run_record(v, seed, metrics, seconds))
                result = _result(args, variants, seeds, runs)
                write_json_atomic(out / "ablation.json", result)
                write_text_atomic(out / "ablation.md", markdown(result))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
