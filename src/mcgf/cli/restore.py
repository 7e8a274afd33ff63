"""``mcgf restore``: what a checkpoint's restoration branch makes of drone images."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mcgf.cli.options import file_option, folder_option, int_option
from mcgf.errors import UserError

_SUFFIXES = (".png", ".jpg", ".jpeg")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``mcgf restore``."""
    p = subparsers.add_parser(
        "restore",
        help="restoration previews: weathered | restored (| clean) side by side",
        description="Run the diffusion restoration branch of a trained checkpoint. Without "
        "--condition each IMAGE is taken as already weathered and the output is "
        "'weathered | restored'. With --condition each IMAGE is taken as clean: the weather "
        "is synthesised (from --seed and the key '<parent folder>/<file name>') and each "
        "row is 'weathered | restored | clean'.",
    )
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="input images (jpg, png, webp), or folders of them")
    p.add_argument("--checkpoint", required=True, type=Path, metavar="DIR",
                   help="checkpoint folder of a model trained with the restoration branch")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="OUT",
                   help="image to write (.png or .jpg) for one IMAGE; a folder for several "
                        "(one PNG per input, named after its file stem)")
    p.add_argument("--condition", default=None, metavar="NAME|all",
                   help="treat IMAGE as clean and synthesise this weather; 'all' gives one row "
                        "per condition, all ten including normal; a comma-separated list works too")
    p.add_argument("--steps", default="25", help="DDIM steps (default 25)")
    p.add_argument("--seed", default="0", help="seeds the weather and the starting noise (default 0)")
    p.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:1, ...")
    p.add_argument("--dark-variant", choices=("train", "test"), default="test",
                   help="dark of the published test sets (default) or the nearly black training one")
    p.add_argument("--tile", default=None, metavar="PX",
                   help="panel width in px (default: the input image's width)")
    p.add_argument("--batch-size", default="16", help="images per restoration pass (default 16)")
    p.set_defaults(func=_run)


def input_images(args: list[Path]) -> list[Path]:
    """The IMAGE arguments with each folder replaced by the images directly inside it
    (sorted by name; University-1652 class folders hold a location's views).

    Raises:
        UserError: a folder holds no image.
    """
    from mcgf.data.layout import list_images

    out: list[Path] = []
    for p in args:
        if not p.is_dir():
            out.append(p)
            continue
        found = list_images(p)
        if not found:
            raise UserError(f"folder {p} holds no image (.jpg .jpeg .png .webp): pass images or "
                            "a folder of them")
        out += found
    return out


def output_paths(images: list[Path], output: Path) -> list[Path]:
    """Where each input's picture goes.

    One input and ``output`` with an image suffix: ``output`` itself. Otherwise ``output``
    is a folder holding ``<stem>.png`` per input, or ``<parent>_<stem>.png`` for all of
    them when stems repeat (University-1652 names every class's views alike).

    Raises:
        UserError: ``output`` does not fit the number of inputs, two inputs would share an
            output, or an output is one of the inputs (``-o`` their own folder).
    """
    outputs = _output_paths(images, output)
    inputs = {p.resolve(): p for p in images}
    for out in outputs:
        if out.resolve() in inputs:
            raise UserError(f"-o {output} would write over the input image {inputs[out.resolve()]}: "
                            "choose another -o")
    return outputs


def _output_paths(images: list[Path], output: Path) -> list[Path]:
    """:func:`output_paths` before the check that no input is written over."""
    names_image = output.suffix.lower() in _SUFFIXES and not output.is_dir()
    if len(images) == 1 and names_image:
        return [output]
    if output.exists() and not output.is_dir():
        raise UserError(f"-o {output} exists and is not a folder: with {len(images)} images -o "
                        "must be a folder (one PNG is written per image)")
    if names_image:
        raise UserError(f"-o {output}: with {len(images)} images -o must be a folder "
                        "(one PNG is written per image)")
    if len(images) == 1 and output.suffix and not output.is_dir():
        raise UserError(f"-o {output} must end in .png or .jpg (or name a folder)")
    stems = [p.stem for p in images]
    if len(set(stems)) < len(stems):
        stems = [f"{p.resolve().parent.name}_{p.stem}" for p in images]
    if len(set(stems)) < len(stems):
        dup = sorted({s for s in stems if stems.count(s) > 1})[0]
        raise UserError(f"two input images would both be written to {output / (dup + '.png')}: "
                        "run them in separate calls with different -o folders")
    return [output / f"{s}.png" for s in stems]


def _encode(image: Any, path: Path) -> bytes:
    import cv2

    suffix = path.suffix.lower()
    ok, data = cv2.imencode(suffix, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise UserError(f"could not encode {path} as {suffix}")
    return data.tobytes()


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from mcgf.data.images import read_image
    from mcgf.fileio import write_bytes_atomic
    from mcgf.models.checkpoint import read_config
    from mcgf.models.restore_api import load_restoration_model, max_steps
    from mcgf.reporting.restoration import restoration_preview
    from mcgf.runtime import resolve_device
    from mcgf.weather.conditions import parse_conditions

    # Every check that needs no model first, so a typo costs no loading time.
    steps = int_option(args.steps, "--steps", 1)
    seed = int_option(args.seed, "--seed", 0)
    batch_size = int_option(args.batch_size, "--batch-size", 1)
    tile = None if args.tile is None else int_option(args.tile, "--tile", 16)
    conditions = None if args.condition is None else parse_conditions(args.condition, "--condition")
    device = resolve_device(args.device)
    paths = input_images(args.images)
    outputs = output_paths(paths, args.output)
    # Before the model runs: an unwritable place would end in a traceback at the first write.
    if outputs == [args.output]:
        file_option(args.output, "-o")
    else:
        folder_option(args.output, "-o")
    read_config(args.checkpoint)
    images = [np.asarray(read_image(p)) for p in paths]

    model = load_restoration_model(args.checkpoint, device)
    if steps > max_steps(model):
        raise UserError(f"--steps must be at most {max_steps(model)} (the schedule's training "
                        f"timesteps), got {steps}")
    for path, image, out in zip(paths, images, outputs, strict=True):
        # Each image on its own, seeded afresh: its picture does not depend on the other
        # images of the command line.
        picture = restoration_preview(
            model, image, conditions=conditions, steps=steps, seed=seed,
            key=f"{path.parent.name}/{path.name}", dark_variant=args.dark_variant,
            batch_size=batch_size, device=device, tile=tile, source=args.checkpoint,
        )
        write_bytes_atomic(out, _encode(picture, out))
        print(out)
    return 0
