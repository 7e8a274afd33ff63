"""Image decoding with errors that name the file: the one place that turns a file into pixels.

Every image the project reads (datasets, weather rendering, restoration previews,
reports) goes through :func:`read_image`, so that the same file gives the same pixels
everywhere. Beyond a plain ``convert("RGB")`` it fixes four cases that decode without
error but would give wrong pixels:

* **16-bit greyscale** (PNG/TIFF modes ``I;16``/``I``): samples are scaled to 8 bits by
  keeping their high byte (``v >> 8``); a plain conversion clips every sample above 255
  and turns the image almost entirely white. (16-bit RGB PNGs and TIFFs Pillow already
  opens as 8-bit RGB, by the high byte too.)
* **Floating-point greyscale** (32-bit float TIFF, Pillow mode ``F``): samples are read on
  the 0..1 scale of float images (scaled by 255) when none exceeds 1, else on the 0..255
  scale; then rounded, clipped to 0..255, NaN read as 0. A plain conversion truncates
  0..1 samples to 0 or 1, so the image comes out black. The scale is chosen per image
  because float images carry no record of it, and a 0..255 image whose samples all lie
  within 0..1 is black either way.
* **EXIF orientation**: the rotation or mirroring the camera recorded is applied
  (:func:`PIL.ImageOps.exif_transpose`), as every image viewer shows the file.
* **Transparency** (RGBA, LA, palette or greyscale with a transparent colour): the image
  is composited on :data:`BACKGROUND` (black) instead of keeping whatever colour values
  lie under transparent pixels.

A run decides by an explicit policy what a bad image does: ``"stop"`` (the default)
raises :class:`~mcgf.errors.ImageReadError`; ``"skip"`` returns ``None`` so that the
caller can drop and count it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mcgf.errors import ImageReadError

BadImagePolicy = Literal["stop", "skip"]
BAD_IMAGE_POLICIES: tuple[str, ...] = ("stop", "skip")

#: Colour that transparent pixels are composited on. Black, because transparent areas of
#: aerial images are no-data areas (outside a rotated or clipped tile or frame), and map
#: and GIS tools write no-data as black when they save without an alpha channel: the same
#: picture then gives the same pixels whether or not its producer kept the alpha channel.
BACKGROUND: tuple[int, int, int] = (0, 0, 0)

#: Changes whenever the same file may decode to other pixels (1: plain ``convert``;
#: 2: 16-bit scaling, EXIF orientation, transparency compositing; 3: float scaling).
#: Caches of anything computed from pixels (features) include it in their key.
DECODER_VERSION = 3

#: Adjustments :func:`decode_image` may make, by the name reports count them under.
SIXTEEN_BIT = "16-bit"
FLOAT = "float"
EXIF_ORIENTATION = "exif-orientation"
TRANSPARENCY = "transparency"
ADJUSTMENTS: tuple[str, ...] = (SIXTEEN_BIT, FLOAT, EXIF_ORIENTATION, TRANSPARENCY)

_ORIENTATION_TAG = 0x0112
_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA"})


def _describe(err: BaseException) -> str:
    if isinstance(err, UnidentifiedImageError):
        return "not a recognised image format"
    if isinstance(err, FileNotFoundError):
        return "file does not exist"
    if isinstance(err, PermissionError):
        return "permission denied"
    if isinstance(err, Image.DecompressionBombError):
        return "image is implausibly large (decompression bomb guard)"
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def _to_8bit(im: Image.Image) -> Image.Image:
    """A 16-bit (or 32-bit integer) greyscale image as 8-bit ``L``, or ``LA`` when it has
    a transparent grey value.

    Mode ``I`` (how some Pillow versions open a 16-bit greyscale PNG) holds the same
    16-bit samples in 32-bit integers; values outside 0..65535 cannot come from the
    accepted formats and are clipped.
    """
    arr = np.asarray(im).astype(np.int64)
    grey = (np.clip(arr, 0, 65535) >> 8).astype(np.uint8)
    transparent = im.info.get("transparency")
    if isinstance(transparent, int):
        alpha = np.where(arr == transparent, 0, 255).astype(np.uint8)
        return Image.fromarray(np.stack([grey, alpha], axis=-1), "LA")
    return Image.fromarray(grey, "L")


def _float_to_8bit(im: Image.Image) -> Image.Image:
    """A floating-point greyscale image (mode ``F``) as 8-bit ``L``: 0..1 samples scaled by
    255 when none exceeds 1, else taken as 0..255; rounded, clipped, NaN as 0."""
    arr = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
    scale = 255.0 if arr.size == 0 or arr.max() <= 1.0 else 1.0
    return Image.fromarray(np.clip(np.round(arr * scale), 0, 255).astype(np.uint8), "L")


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in _ALPHA_MODES or "transparency" in im.info


def _normalise(im: Image.Image, mode: str) -> tuple[Image.Image, frozenset[str]]:
    """Pixels of a loaded image in ``mode`` and the adjustments that needed."""
    done: set[str] = set()
    if im.getexif().get(_ORIENTATION_TAG, 1) in range(2, 9):
        im = ImageOps.exif_transpose(im)
        done.add(EXIF_ORIENTATION)
    if im.mode in _HIGH_DEPTH_MODES:
        im = _to_8bit(im)
        done.add(SIXTEEN_BIT)
    elif im.mode == "F":
        im = _float_to_8bit(im)
        done.add(FLOAT)
    if _has_alpha(im):
        rgba = im.convert("RGBA")
        if rgba.getchannel("A").getextrema()[0] < 255:  # fully opaque alpha changes nothing
            background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
            rgba = Image.alpha_composite(background, rgba)
            done.add(TRANSPARENCY)
        im = rgba.convert("RGB")
    return im.convert(mode), frozenset(done)


def decode_image(path: str | Path, mode: str = "RGB") -> tuple[Image.Image, frozenset[str]]:
    """Decode ``path`` fully into ``mode`` and say which :data:`ADJUSTMENTS` it needed.

    Truncated files are errors here (PIL would otherwise pad them with grey).

    Raises:
        ImageReadError: naming the file and the reason.
    """
    try:
        with warnings.catch_warnings():
            # Corrupt EXIF data is only a warning in Pillow: the pixels are fine, and an
            # orientation that cannot be read is taken as none.
            warnings.filterwarnings("ignore", "Corrupt EXIF data", UserWarning)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                return _normalise(im, mode)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as err:
        raise ImageReadError(path, _describe(err)) from err


def read_image(path: str | Path, mode: str = "RGB") -> Image.Image:
    """Decode ``path`` fully into ``mode`` (16-bit and float scaled, EXIF orientation applied,
    transparency composited on :data:`BACKGROUND`; see the module doc).

    Raises:
        ImageReadError: naming the file and the reason.
    """
    return decode_image(path, mode)[0]


def read_image_or_none(path: str | Path, policy: BadImagePolicy = "stop", mode: str = "RGB") -> Image.Image | None:
    """:func:`read_image` under a bad-image policy: ``"skip"`` turns a failure into ``None``."""
    if policy not in BAD_IMAGE_POLICIES:
        raise ValueError(f"unknown bad-image policy {policy!r}; use one of {BAD_IMAGE_POLICIES}")
    try:
        return read_image(path, mode)
    except ImageReadError:
        if policy == "skip":
            return None
        raise


def inspect_image(path: str | Path) -> tuple[str | None, frozenset[str]]:
    """``(why path cannot be used or None, adjustments decoding it needs)``."""
    try:
        return None, decode_image(path)[1]
    except ImageReadError as err:
        return err.reason, frozenset()


def image_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be used as an image, or ``None`` if it decodes."""
    return inspect_image(path)[0]
