"""Image decoding with errors that name the file.

A run decides by an explicit policy what a bad image does: ``"stop"`` (the default)
raises :class:`~mcgf.errors.ImageReadError`; ``"skip"`` returns ``None`` so that the
caller can drop and count it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

from PIL import Image, UnidentifiedImageError

from mcgf.errors import ImageReadError

BadImagePolicy = Literal["stop", "skip"]
BAD_IMAGE_POLICIES: tuple[str, ...] = ("stop", "skip")


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


def read_image(path: str | Path, mode: str = "RGB") -> Image.Image:
    """Decode ``path`` fully and convert it to ``mode``.

    Truncated files are errors here (PIL would otherwise pad them with grey).

    Raises:
        ImageReadError: naming the file and the reason.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                return im.convert(mode)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as err:
        raise ImageReadError(path, _describe(err)) from err


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


def image_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be used as an image, or ``None`` if it decodes."""
    try:
        read_image(path)
    except ImageReadError as err:
        return err.reason
    return None
