"""A labelled contact sheet of a generated benchmark: per row one location, its satellite
tile followed by several of its drone views (with heading and altitude)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from mcgf.data.images import read_image
from mcgf.errors import UserError
from mcgf.fileio import write_bytes_atomic
from mcgf.synth.benchmark import METADATA, RELEASE

_BAND = 16


def _tile(path: Path, size: int, label: str) -> np.ndarray:
    img = np.asarray(read_image(path).resize((size, size), Image.Resampling.LANCZOS))
    band = np.full((_BAND, size, 3), 255, np.uint8)
    cv2.putText(band, label, (3, _BAND - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (20, 20, 20), 1, cv2.LINE_AA)
    return np.concatenate([band, img], 0)


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
        width = (views + 1) * (tile + 4)
        row = np.full((tile + _BAND, width, 3), 255, np.uint8)
        for j, cell in enumerate(cells):
            row[:, j * (tile + 4): j * (tile + 4) + tile] = cell
        rows.append(row)
    if not rows:
        raise UserError(f"{root} holds no location with drone views")
    sheet = np.concatenate([np.concatenate([r, np.full((4, r.shape[1], 3), 255, np.uint8)], 0) for r in rows], 0)
    pil = Image.fromarray(sheet)
    buf = io.BytesIO()
    pil.save(buf, "PNG", optimize=True)
    if buf.tell() > max_bytes:
        buf = io.BytesIO()
        pil.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG).save(
            buf, "PNG", optimize=True)
    write_bytes_atomic(out, buf.getvalue())
    return out
