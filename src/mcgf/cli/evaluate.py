"""``mcgf evaluate DATA``: University-1652 / University-WX evaluation of an embedder.

Also home of the options shared with ``mcgf predict`` (embedder choice and feature
extraction), so both commands build models and features the same way.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from mcgf.cli.options import folder_option, int_option
from mcgf.errors import UserError

#: ``mcgf.evaluation.university.WX_JPEG_QUALITY``, spelt out: importing the evaluation
#: library here would load torch for ``mcgf --help``.
WX_JPEG_QUALITY = 95

DIRECTION_ALIASES = {
    "d2s": "drone->satellite", "drone->satellite": "drone->satellite",
    "s2d": "satellite->drone", "satellite->drone": "satellite->drone",
}


# --------------------------------------------------------------------------- shared options


def add_embedder_options(parser: argparse.ArgumentParser) -> None:
    """``--embedder``, ``--embedder-arg`` and ``--checkpoint``."""
    group = parser.add_argument_group("model")
    group.add_argument("--embedder", default=None,
                       help="registered embedder name (default: thumbnail, or the checkpoint "
                            "loader when --checkpoint is given)")
    group.add_argument("--embedder-arg", action="append", metavar="KEY=VALUE", default=[],
                       help="option for the embedder, repeatable (e.g. grid=8)")
    group.add_argument("--checkpoint", default=None, metavar="PATH",
                       help="trained model checkpoint, passed to the embedder as checkpoint=PATH")


def add_extract_options(parser: argparse.ArgumentParser) -> None:
    """Feature-extraction options."""
    group = parser.add_argument_group("features")
    group.add_argument("--batch-size", default="32", help="images per forward pass (default 32)")
    group.add_argument("--workers", default=None,
                       help="image-decoding processes (default: min(4, CPUs - 1))")
    group.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: GPU if present)")
    group.add_argument("--no-flip", action="store_true",
                       help="no flip test-time augmentation (default: feature + flipped feature)")
    group.add_argument("--cache-dir", default=None,
                       help="feature cache folder (default: OUT/feature-cache); 'none' disables it")
    group.add_argument("--quiet", action="store_true", help="no progress bars")


def embedder_from_args(args: argparse.Namespace) -> Any:
    """Build the embedder the options ask for (through the registry)."""
    from mcgf.models import CHECKPOINT_EMBEDDER, build_embedder, parse_embedder_args

    kwargs = parse_embedder_args(args.embedder_arg)
    name = args.embedder
    if args.checkpoint is not None:
        if not os.path.exists(args.checkpoint):
            raise UserError(f"--checkpoint {args.checkpoint} does not exist (give the checkpoint folder)")
        kwargs["checkpoint"] = args.checkpoint
        name = name or CHECKPOINT_EMBEDDER
    return build_embedder(name or "thumbnail", **kwargs)


def extract_options_from_args(args: argparse.Namespace, out_dir: str, *,
                              on_bad_image: str = "stop") -> Any:
    """:class:`~mcgf.evaluation.university.ExtractOptions` from the shared options."""
    from mcgf.evaluation.university import ExtractOptions

    workers = (max(0, min(4, (os.cpu_count() or 1) - 1)) if args.workers is None
               else int_option(args.workers, "--workers", 0))
    folder_option(out_dir, "--out")
    cache: str | None = args.cache_dir
    if cache is None:
        cache = os.path.join(out_dir, "feature-cache")
    elif cache.lower() == "none":
        cache = None
    else:
        folder_option(cache, "--cache-dir")
    device = args.device
    if device is not None:
        from mcgf.runtime import resolve_device

        resolve_device(device)  # a one-line error now rather than after loading the model
    return ExtractOptions(
        batch_size=int_option(args.batch_size, "--batch-size"), flip=not args.no_flip, device=device,
        num_workers=workers, cache_dir=cache, on_bad_image=on_bad_image, progress=not args.quiet,
    )


# --------------------------------------------------------------------------- evaluate


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="University-1652 / University-WX retrieval metrics of a model (also SUES-200, DenseUAV)",
        description="Rank gallery_satellite for every query_drone image (and gallery_drone for "
        "query_satellite) of each test set of the dataset's layout, compute R@1/5/10, R@top1% "
        "and AP exactly as the University-1652 protocol does (SUES-200: a row per height and "
        "the mean over heights; DenseUAV: also SDM@1/3/5/10), print a table and write "
        "OUT/metrics.json and OUT/metrics.md. With --wx-dir or --weather, one row per weather "
        "condition plus the mean (University-WX). See docs/evaluation.md.",
    )
    parser.add_argument("data", metavar="DATA",
                        help="dataset root (University-1652: holding test/; SUES-200: Testing/; "
                             "DenseUAV: test/)")
    parser.add_argument("--layout", default=None, metavar="NAME",
                        help="dataset layout: university1652, sues200 (or sues200:150,200 for some "
                             "heights) or denseuav (default: detected from the folder tree)")
    parser.add_argument("--out", default="evaluation", help="output folder (default ./evaluation)")
    parser.add_argument("--directions", default=None,
                        help="comma-separated: d2s (drone->satellite), s2d (satellite->drone); "
                             "default: each direction whose test folders exist (the others are "
                             "named in a note); a direction named here must have its folders")
    wx = parser.add_mutually_exclusive_group()
    wx.add_argument("--wx-dir", default=None, metavar="DIR",
                    help="pre-rendered weathered drone images: DIR/<condition>/<class>/<image> "
                         "(query_drone), or DIR/<condition>/query_drone|gallery_drone/<class>/"
                         "<image>")
    parser.add_argument("--allow-partial", action="store_true",
                        help="--wx-dir: score a condition folder holding fewer images than its "
                             "test/ folder on that subset (its rows are marked partial) instead "
                             "of stopping")
    wx.add_argument("--weather", default=None, metavar="CONDITIONS",
                    help="render weather on the fly on drone images: 'all' or a comma-separated "
                         "list (normal,fog,rain,...)")
    parser.add_argument("--weather-seed", default=None, help="seed of on-the-fly weather (default 0)")
    parser.add_argument("--dark-variant", choices=("train", "test"), default=None,
                        help="on-the-fly 'dark': the milder one of the published weathered test "
                        "images (default) or the nearly black training recipe")
    parser.add_argument("--weather-jpeg", default=None, metavar="QUALITY",
                        help="on-the-fly weather: store each weathered query as a JPEG of this "
                        "quality and decode it again, as the published weathered test sets are "
                        "stored (default 95); 'none' scores the weathered pixels as rendered")
    parser.add_argument("--no-match", choices=("zero", "exclude"), default="zero",
                        help="queries without a true match: count as 0 (public script, default) "
                             "or exclude from the means; counted either way")
    probes = parser.add_argument_group("weather-invariance probes (on when two or more conditions "
                                       "are evaluated with drone->satellite)")
    probes.add_argument("--no-probes", action="store_true",
                        help="skip the clean-weathered cosine and the condition probe")
    probes.add_argument("--probe-folds", default="5",
                        help="folds of the condition probe, split by location (default 5)")
    probes.add_argument("--probe-seed", default="0",
                        help="seed of the probe's folds and image sample (default 0)")
    parser.add_argument("--on-bad-image", choices=("stop", "skip"), default="stop",
                        help="unreadable image: stop (default) or leave it out and count it")
    add_embedder_options(parser)
    add_extract_options(parser)
    parser.set_defaults(func=run)


def _directions(text: str) -> list[str]:
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part not in DIRECTION_ALIASES:
            raise UserError(f"--directions: unknown direction {part!r} (use d2s, s2d)")
        if DIRECTION_ALIASES[part] not in out:
            out.append(DIRECTION_ALIASES[part])
    if not out:
        raise UserError("--directions is empty (use d2s, s2d or d2s,s2d)")
    return out


def _probes(args: argparse.Namespace, conditions: list[Any] | None,
            directions: list[str]) -> tuple[Any, str]:
    """The invariance probes the options ask for (or ``None``) and why they are off."""
    from mcgf.evaluation.probes import InvarianceProbes

    folds = int_option(args.probe_folds, "--probe-folds", 2)
    seed = int_option(args.probe_seed, "--probe-seed", 0)
    if args.no_probes or not conditions or len(conditions) < 2:
        return None, ""
    if "drone->satellite" not in directions:
        return None, ("invariance probes skipped: they look at test/query_drone, which only "
                      "the d2s direction evaluates")
    return InvarianceProbes(folds=folds, seed=seed), ""


def _choose_directions(args: argparse.Namespace, dataset: Any = None
                       ) -> tuple[list[str], dict[str, list[Any]]]:
    """The directions to evaluate and, per direction left out, its missing test folders.

    ``--directions`` given: each named direction must have its folders (else a
    :class:`UserError` naming the missing one). Default: the directions the data has.
    ``dataset``: the opened layout (default: found from ``args.data``/``args.layout``).
    """
    from mcgf.evaluation.university import missing_folders

    explicit = args.directions is not None
    requested = _directions(args.directions if explicit else "d2s,s2d")
    missing = missing_folders(args.data, requested, dataset or getattr(args, "layout", None))
    if explicit and missing:
        direction, folders = next(iter(missing.items()))
        raise UserError(f"--directions {direction}: {folders[0]} is missing (leave the option "
                        "out to evaluate the directions this dataset has)")
    chosen = [d for d in requested if d not in missing]
    if not chosen:
        firsts = dict.fromkeys(str(folders[0]) for folders in missing.values())
        raise UserError(f"nothing to evaluate: {' and '.join(firsts)} missing")
    return chosen, missing


def _unweathered_note(conditions: list[Any] | None, directions: list[str], explicit: bool,
                      wx_dir: str | None, subsets: tuple[str, ...] = ("",),
                      subset_label: str = "") -> tuple[list[str], str]:
    """Pre-rendered conditions without a weathered drone gallery, and the note saying so.

    Their satellite->drone rows would be the clean result; they are left out of the table
    and the mean. An explicit satellite->drone with no condition to evaluate is an error.
    ``subsets``: the dataset's test sets (a condition lacking one in any is named).
    """
    if not conditions or "satellite->drone" not in directions:
        return [], ""
    names = [c.name for c in conditions
             if any(c.unweathered("satellite->drone", s) for s in subsets)]
    if not names:
        return [], ""
    if explicit and len(names) == len(conditions):
        raise UserError(f"--directions s2d with --wx-dir: no condition has a weathered drone "
                        f"gallery ({wx_dir}/<condition>/gallery_drone is missing, e.g. for "
                        f"{names[0]})")
    where = ("DIR/<condition>/gallery_drone" if subsets == ("",)
             else f"DIR/<condition>/<{subset_label or 'test set'}>/gallery_drone")
    return names, (f"satellite->drone left out for {', '.join(names)}: no weathered drone "
                   f"gallery ({where}); their rows would be the clean result")


def _missing_query_notes(conditions: list[Any] | None, directions: list[str], dataset: Any) -> list[str]:
    """Notes on pre-rendered conditions that have no weathered queries for some test set
    of a layout with several (their drone->satellite rows there are left out)."""
    sets = [ts.name for ts in dataset.test_sets() if ts.name]
    if not conditions or "drone->satellite" not in directions or not sets:
        return []
    notes = []
    for c in conditions:
        lacking = [s for s in sets if c.unweathered("drone->satellite", s)]
        if c.folders and lacking:
            notes.append(f"{c.name}: drone->satellite left out for {dataset.subset_label} "
                         f"{', '.join(lacking)} (no DIR/{c.name}/<{dataset.subset_label}>/query_drone)")
    return notes


def _jpeg_quality(text: str) -> int | None:
    """``--weather-jpeg``: a JPEG quality 1..100, or ``none``."""
    if str(text).lower() == "none":
        return None
    try:
        quality = int(text)
    except ValueError:
        quality = 0
    if not 1 <= quality <= 100:
        raise UserError(f"--weather-jpeg must be a JPEG quality 1..100 or 'none' (got {text!r})")
    return quality


def _weather(args: argparse.Namespace, dataset: Any, directions: list[str],
             subsets: tuple[str, ...]) -> tuple[list[Any] | None, dict[str, Any] | None, list[str]]:
    """The weather conditions ``--wx-dir`` or ``--weather`` ask for, the report's
    ``weather`` section and the notes about them (``None, None, []`` for clean images)."""
    from mcgf.evaluation.university import on_the_fly_conditions
    from mcgf.weather.conditions import parse_conditions

    if args.allow_partial and args.wx_dir is None:
        raise UserError("--allow-partial applies to --wx-dir only")
    if args.weather is None:
        given = [opt for opt, v in (("--weather-seed", args.weather_seed),
                                    ("--dark-variant", args.dark_variant),
                                    ("--weather-jpeg", args.weather_jpeg)) if v is not None]
        if given:
            raise UserError(f"{given[0]} applies to on-the-fly weather (--weather) only")
    if args.wx_dir is not None:
        return _prerendered_weather(args, dataset, directions, subsets)
    if args.weather is not None:
        names = parse_conditions(args.weather, "--weather")
        seed = 0 if args.weather_seed is None else int_option(args.weather_seed, "--weather-seed", 0)
        jpeg = WX_JPEG_QUALITY if args.weather_jpeg is None else _jpeg_quality(args.weather_jpeg)
        dark = "test" if args.dark_variant is None else args.dark_variant
        conditions = on_the_fly_conditions(names, seed, dark, jpeg)
        return conditions, {"mode": "on-the-fly", "conditions": names, "seed": seed,
                            "dark_variant": dark, "jpeg_quality": jpeg}, []
    return None, None, []


def _prerendered_weather(args: argparse.Namespace, dataset: Any, directions: list[str],
                         subsets: tuple[str, ...]
                         ) -> tuple[list[Any], dict[str, Any], list[str]]:
    """:func:`_weather` for ``--wx-dir``: the condition folders, what the report says of
    them and notes on the rows left out or scored on part of the images."""
    from mcgf.evaluation.university import prerendered_conditions

    conditions = prerendered_conditions(args.wx_dir, dataset=args.data,
                                        allow_partial=args.allow_partial, layout=dataset)
    weather: dict[str, Any] = {"mode": "pre-rendered", "folder": os.path.abspath(args.wx_dir),
                               "conditions": [c.name for c in conditions]}
    unweathered, note = _unweathered_note(conditions, directions, args.directions is not None,
                                          args.wx_dir, subsets, dataset.subset_label)
    weather["no_weathered_gallery_drone"] = unweathered
    notes = [note] if note else []
    notes += _missing_query_notes(conditions, directions, dataset)
    partial = {c.name: {f: {"images": n, "of": total} for f, (n, total) in c.partial.items()}
               for c in conditions if c.partial}
    weather["partial"] = partial
    notes += [f"{name}: scored on part of its pre-rendered images (" + ", ".join(
        f"{f} {p['images']}/{p['of']}" for f, p in folders.items()) + "), --allow-partial"
        for name, folders in partial.items()]
    return conditions, weather, notes


def _add_means_and_probes(report: dict[str, Any], rows: list[Any], weather: dict[str, Any] | None,
                          probes: Any, dataset: Any, subsets: tuple[str, ...]
                          ) -> dict[str, Any] | None:
    """Add the subset label, the weather section, the means (over conditions and over
    test sets) and the invariance section to ``report``; returns that last section."""
    from mcgf.evaluation.university import mean_over_conditions, mean_over_subsets

    if dataset.subset_label and any(r.subset for r in rows):
        report["subset_label"] = dataset.subset_label
    means = mean_over_conditions(rows) if weather is not None else []
    means += mean_over_subsets(rows + means)
    if weather is not None:
        report["weather"] = weather
    if means:
        report["mean"] = [r.as_dict() for r in means]
    section = probes.result() if probes is not None else None
    if section is not None:
        if len(subsets) > 1:
            section.setdefault("notes", []).append(
                f"probes on the {dataset.subset_title(subsets[0])} test set only")
        report["invariance"] = section
    return section


def _print_summary(report: dict[str, Any], section: dict[str, Any] | None, probe_note: str) -> None:
    """The metrics table, the notes and the probes' summary on stdout."""
    from mcgf.evaluation.probes import summary_line
    from mcgf.evaluation.report import markdown_table

    print(markdown_table(report["results"] + report.get("mean", []), report.get("subset_label", "")),
          end="")
    for note in report["notes"]:
        print(f"note: {note}")
    if section is not None:
        print(summary_line(section))
        for note in section["notes"]:
            print(f"note: {note}")
    elif probe_note:
        print(f"note: {probe_note}")


def run(args: argparse.Namespace) -> int:
    from mcgf.data.layouts import find_dataset
    from mcgf.evaluation.report import write_report
    from mcgf.evaluation.university import evaluate_university

    dataset = find_dataset(args.data, args.layout)
    subsets = tuple(ts.name for ts in dataset.test_sets()) or ("",)
    directions, left_out = _choose_directions(args, dataset)
    notes = [f"{d} left out: {', '.join(str(f) for f in folders)} missing"
             for d, folders in left_out.items()]
    conditions, weather, weather_notes = _weather(args, dataset, directions, subsets)
    notes += weather_notes
    probes, probe_note = _probes(args, conditions, directions)
    embedder = embedder_from_args(args)
    options = extract_options_from_args(args, args.out, on_bad_image=args.on_bad_image)
    log = None if args.quiet else print
    if log is not None:
        from mcgf.runtime import device_line, resolve_device

        log(device_line(resolve_device(options.device), requested=options.device))
    notes += dataset.notes()
    rows = evaluate_university(args.data, embedder, directions=directions, conditions=conditions,
                               options=options, no_match=args.no_match, log=log, tap=probes,
                               tap_folders=("query_drone",) if probes is not None else (),
                               layout=dataset)
    report: dict[str, Any] = {
        "protocol": dataset.protocol(bool(conditions)),
        "layout": dataset.spec,
        "dataset": os.path.abspath(args.data),
        "embedder": embedder.identity,
        "flip_tta": options.flip,
        "no_match_policy": args.no_match,
        "directions": directions,
        # Directions the data has no folders for: {direction: [missing folders]}.
        "directions_left_out": {d: [str(f) for f in folders] for d, folders in left_out.items()},
        "notes": notes,
        "results": [r.as_dict() for r in rows],
        # How many (condition, direction, side) feature sets were read from the cache.
        "feature_cache": {
            "hits": sum(int(r.metrics["query_features_cached"]) + int(r.metrics["gallery_features_cached"])
                        for r in rows),
            "sets": 2 * len(rows),
        },
    }
    section = _add_means_and_probes(report, rows, weather, probes, dataset, subsets)
    json_path, md_path = write_report(args.out, report)
    _print_summary(report, section, probe_note)
    print(f"wrote {json_path} and {md_path}")
    return 0
