"""A labelled contact sheet of a generated benchmark: per row one location, its satellite
tile followed by several of its drone views (with heading and altitude)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from mcgf.data.images import read_image
from mcgf.errors import UserError
from mcgf.fileio import write_bytes_atomic
from mcgf.panels import WHITE, caption_above, pad, side_by_side, stack_rows
from mcgf.synth.benchmark import METADATA, RELEASE

_BAND = 16
_GAP = 4


def _tile(path: Path, size: int, label: str) -> np.ndarray:
    img = np.asarray(read_image(path).resize((size, size), Image.Resampling.LANCZOS))
    return caption_above(img, label, height=_BAND)


def _images_of(root: Path, meta: dict, loc_id: str) -> tuple[Path, Path]:
    role = meta["locations"][loc_id]["role"]
    rel = Path(RELEASE)
    if role == "train":
        return rel / "train" / "satellite" / loc_id / f"{loc_id}.jpg", rel / "train" / "drone" / loc_id
    return (rel / "test" / "gallery_satellite" / loc_id / f"{loc_id}.jpg",
            rel / "test" / "gallery_drone" / loc_id)


def make_contact_sheet(dataset_dir: str | Path, path: str | Path, locations: int = 4, views: int = 5,
                       tile: int = 160, max_bytes: int = 500_000) -> Path:
    """Write a PNG contact sheet of the first ``locations`` locations with drone views.

    Drone views are spread evenly over each orbit. If the PNG would exceed
    ``max_bytes`` it is stored with a 256-colour palette instead.

    Raises:
        UserError: if ``dataset_dir`` is not an output of ``mcgf synth`` or ``path`` is
            not a ``.png`` file name.
    """
    root, out = Path(dataset_dir), Path(path)
    if out.suffix.lower() != ".png":
        raise UserError(f"contact sheet {out} must be a .png file")
    try:
        meta = json.loads((root / METADATA).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UserError(f"{root} has no readable {METADATA}: point at a folder written by mcgf synth") from None
    ids = [i for i, m in sorted(meta["locations"].items()) if m["drone"]][:locations]
    rows = []
    for loc_id in ids:
        sat, drone_dir = _images_of(root, meta, loc_id)
        shots = meta["locations"][loc_id]["drone"]
        picks = np.unique(np.linspace(0, len(shots) - 1, min(views, len(shots))).round().astype(int))
        cells = [_tile(root / sat, tile, f"{loc_id} satellite (N up)")]
        for k in picks:
            pose = shots[k]["pose"]
            label = f"view {shots[k]['view']:02d}  {pose['heading_deg']:.0f} deg  {pose['altitude_m']:.0f} m"
            cells.append(_tile(root / drone_dir / shots[k]["file"], tile, label))
        rows.append(side_by_side(cells, gap=_GAP, background=WHITE))
    if not rows:
        raise UserError(f"{root} holds no location with drone views")
    # Every row has room for ``views`` drone views, and a gap follows each row and tile.
    sheet = stack_rows(rows, gap=_GAP, background=WHITE)
    width = (views + 1) * (tile + _GAP)
    sheet = pad(sheet, right=width - sheet.shape[1], bottom=_GAP, background=WHITE)
    pil = Image.fromarray(sheet)
    buf = io.BytesIO()
    pil.save(buf, "PNG", optimize=True)
    if buf.tell() > max_bytes:
        buf = io.BytesIO()
        pil.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG).save(
            buf, "PNG", optimize=True)
    write_bytes_atomic(out, buf.getvalue())
    return out
