"""``mcgf train``: train a model from a YAML config (see ``docs/train.md``)."""

from __future__ import annotations

import argparse
import contextlib
import re
import time
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model on a dataset's training split (University-1652, SUES-200, DenseUAV)",
        description="Train the model of a YAML config (sections data, weather, model, train) on the "
        "training split of data.root (its layout: data.layout, else detected) with on-the-fly "
        "weather. Writes OUT/log.csv and a resumable checkpoint OUT/last at each epoch end. Under torchrun (WORLD_SIZE>1) it trains with DDP.",
    )
    parser.add_argument("--config", default=None,
                        help="YAML config (e.g. configs/demo-cpu.yaml); with --resume the default is "
                        "the config saved in OUT/last")
    parser.add_argument("--out", required=True, help="run folder (log.csv, last/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.epochs=3 (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mcgf.cli.options import folder_option
    from mcgf.training.loop import run_lock

    out = folder_option(args.out, "--out")
    # Held from the first look at OUT, so that nothing of a run still going on there is
    # taken for a killed run's leftovers (train() takes the same lock again).
    with run_lock(out) if out.is_dir() else contextlib.nullcontext():
        return _run(args, out)


def _run(args: argparse.Namespace, out: Path) -> int:
    """:func:`run` once ``OUT`` is locked."""
    from mcgf.config import apply_overrides, load_config
    from mcgf.errors import UserError
    from mcgf.launch import launcher_rank
    from mcgf.models.checkpoint import read_config, recover_interrupted_save
    from mcgf.training.config import SECTIONS, parse_run_config
    from mcgf.training.loop import LAST, check_resumable, train

    if launcher_rank() == 0:
        # A run killed while saving its checkpoint may have left it aside: put back, so
        # that --resume finds it and a new run is refused as in any folder with one.
        recover_interrupted_save(out / LAST)
    else:
        # Only rank 0 holds OUT's lock: what looks like a killed save's leftovers here may
        # be the save of another run going on in OUT, so this rank only reads.
        _await_recovery(out / LAST)
    if args.config:
        where, cfg = args.config, load_config(args.config)
    elif args.resume:
        if not (out / LAST).exists():
            check_resumable(out)  # nothing to resume: says to train without --resume first
        where = str(out / LAST / "config.json")
        saved = read_config(out / LAST)
        cfg = {k: saved[k] for k in SECTIONS if k in saved}
    else:
        raise UserError("--config is required (e.g. --config configs/demo-cpu.yaml)")
    if not args.resume and (out / LAST).exists():
        raise UserError(f"{out / LAST} already exists: pass --resume to continue it or choose another --out")
    try:
        run_cfg = parse_run_config(apply_overrides(cfg, args.overrides), where, resume=args.resume)
    except UserError as err:
        raise UserError(blame_override(str(err), where, args.overrides)) from None
    if args.resume:
        check_resumable(out)  # nothing to resume says so, not that the data is missing
    for key in ("root", "val_root"):
        folder = getattr(run_cfg.data, key)
        if args.resume and folder and not Path(folder).is_dir():
            raise UserError(f"--resume: data.{key} {folder} (from {where}) is not a folder: if "
                            f"the data moved, resume with --set data.{key}=NEW_FOLDER")
    result = train(run_cfg, out, resume=args.resume, progress=not args.quiet,
                   validate=_validator(run_cfg))
    # Under torchrun every rank returns here: rank 0 speaks for the run, as in the loop.
    quiet = args.quiet or launcher_rank() != 0
    if not quiet and not result.final_losses:
        print(f"nothing to train: {result.checkpoint} already holds {result.epochs} epochs "
              f"(train.epochs {run_cfg.train.epochs}); resume with --set train.epochs=N, N > "
              f"{result.epochs}, to train longer")
    elif not quiet:
        losses = ", ".join(f"{k} {v:.4f}" for k, v in result.final_losses.items())
        print(f"trained {result.epochs} epochs ({result.steps} steps) in {result.seconds:.1f} s; "
              f"last epoch: {losses}; checkpoint {result.checkpoint}")
    return 0


def _await_recovery(last: Path, seconds: float = 60.0) -> None:
    """Wait (at most ``seconds``) while a checkpoint that a killed save left aside is not
    back at ``last``: under ``torchrun`` rank 0 puts it back as it starts."""
    from mcgf.models.checkpoint import interrupted_save

    deadline = time.monotonic() + seconds
    while interrupted_save(last) is not None and time.monotonic() < deadline:
        time.sleep(0.1)


def blame_override(message: str, where: str, overrides: list[str], flag: str = "--set") -> str:
    """``message`` (a config error that starts with ``where``) naming the ``flag``
    (``--set``, or ``mcgf demo``'s ``--train-set``) that gave the option it is about, when
    one did: the value is not in the file ``where`` names (nor in a resumed checkpoint's
    ``config.json``, which would look damaged)."""
    head = f"{where}: "
    found = re.match(r"(?:unknown option |unknown section ')?([\w.]+)", message[len(head):])
    if not message.startswith(head) or found is None:
        return message
    option = found.group(1)
    for item in reversed(overrides):  # the last --set of a key is the one applied
        key = item.partition("=")[0].strip()
        if key == option or key.startswith(f"{option}."):
            return f"{flag} {item}: {message[len(head):]}"
    return message


def _validator(cfg: Any) -> Any:
    """The validators of ``data.val_root`` (or ``data.root``, read with ``data.layout``)
    when ``train.eval_every > 0``: drone->satellite retrieval (``train.val_retrieval``)
    and the restoration branch's PSNR/SSIM (``train.restore_val_images`` > 0, a branch
    trained with ``model.lambda_restore`` > 0)."""
    if cfg.train.eval_every <= 0:
        return None
    from mcgf.data.layouts import find_dataset
    from mcgf.errors import UserError
    from mcgf.evaluation.validation import (
        combine_validators,
        restoration_validator,
        university_validator,
    )

    root = Path(cfg.data.val_root or cfg.data.root)
    layout = cfg.data.layout
    validators = []
    if cfg.train.val_retrieval:
        dataset = find_dataset(root, layout or None, option="data.layout")
        for ts in dataset.test_sets() or [None]:
            for folder in ("query_drone", "gallery_satellite"):
                path = ts.path(folder) if ts is not None else dataset.root / "test" / folder
                if ts is None or not ts.has(folder):
                    raise UserError(f"train.eval_every needs {path} (set data.val_root to a "
                                    f"{dataset.title} tree with its test split, or train.eval_every=0)")
        device = None if cfg.train.device == "auto" else cfg.train.device
        # Decoding 37,855 test images at paper scale is CPU work: the training's workers.
        validators.append(university_validator(root, device=device, layout=layout,
                                               num_workers=cfg.data.workers,
                                               on_bad_image=cfg.data.on_bad_image))
    from mcgf.models.model_registry import resolved_options

    model = resolved_options(cfg.model["name"], {k: v for k, v in cfg.model.items() if k != "name"})
    branch = model.get("restoration", False) and model.get("lambda_restore", 0) > 0
    if cfg.train.restore_val_images > 0 and branch:
        validators.append(restoration_validator(root, images=cfg.train.restore_val_images,
                                                steps=cfg.train.restore_val_steps, layout=layout))
    return combine_validators(validators) if validators else None
