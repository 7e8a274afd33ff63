"""The one image preprocessing of the project: resize, scale to [0, 1], normalise.

Training and evaluation both use :class:`Preprocess`, so a model sees the same
interpolation and normalisation when it is trained as when it is evaluated.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


@dataclass(frozen=True)
class Preprocess:
    """Resize to ``size`` (height, width) with bicubic filtering, scale to [0, 1], normalise."""

    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def for_embedder(cls, embedder: Any) -> Preprocess:
        """From anything with ``input_size``, ``mean`` and ``std`` (an embedder, a model)."""
        return cls(tuple(embedder.input_size), tuple(embedder.mean), tuple(embedder.std))  # type: ignore[arg-type]

    def describe(self) -> str:
        """Stable text for the cache key."""
        return f"resize{self.size[0]}x{self.size[1]}-bicubic/mean{list(self.mean)}/std{list(self.std)}"

    def __call__(self, image: Image.Image) -> torch.Tensor:
        h, w = self.size
        if image.size != (w, h):
            image = image.resize((w, h), Image.Resampling.BICUBIC)
        # (x / 255 - mean) / std = x · a + b per channel, written straight into the
        # (C, H, W) tensor: no (H, W, C) float temporary and no transposing copy.
        a, b = self._scale_shift
        pixels = np.asarray(image, dtype=np.uint8)
        x = np.empty((len(self.std), *pixels.shape[:2]), np.float32)
        np.multiply(pixels.transpose(2, 0, 1), a, out=x)
        x += b
        return torch.from_numpy(x)

    @functools.cached_property
    def _scale_shift(self) -> tuple[np.ndarray, np.ndarray]:
        """Float32 ``(a, b)`` of ``x · a + b``, shaped ``(C, 1, 1)``; made once per instance."""
        a = np.asarray([1.0 / (255.0 * s) for s in self.std], np.float32)
        b = np.asarray([-m / s for m, s in zip(self.mean, self.std, strict=True)], np.float32)
        return a.reshape(-1, 1, 1), b.reshape(-1, 1, 1)


@dataclass(frozen=True)
class TrainAugment:
    """:class:`Preprocess` followed by random geometric augmentation of the tensor.

    ``rotate`` is the largest rotation in degrees (180: any heading, which suits north-up
    satellite tiles matched against drone views of every heading); ``scale`` and
    ``translate`` are relative jitters (0.1: ±10 %); ``flip`` a horizontal flip with
    probability 0.5; ``color`` a colour jitter of strength ``v`` (torchvision's
    ``ColorJitter(v, v, v, min(v, 0.5))``: brightness, contrast and saturation factors in
    ``[1 − v, 1 + v]``, hue shifted by up to ``±v`` of the colour circle, in random order),
    applied to the image in ``[0, 1]`` before it is normalised. Randomness comes from
    torch's global RNG, which the training dataset seeds per item (``augment_seed`` of
    :class:`~mcgf.data.datasets.CrossViewTrainSet`), so a seeded run is reproducible. Rotated corners are filled by reflection so that no black
    wedge tells the views apart.
    """

    base: Preprocess
    flip: bool = False
    rotate: float = 0.0
    scale: float = 0.0
    translate: float = 0.0
    color: float = 0.0

    def __call__(self, image: Image.Image) -> torch.Tensor:
        x = self.base(image)
        if self.color:
            x = _color_jitter(x, self.base, self.color)
        if self.flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        if self.rotate or self.scale or self.translate:
            x = _random_affine(x, self.rotate, self.scale, self.translate)
        return x


def _color_jitter(x: torch.Tensor, base: Preprocess, strength: float) -> torch.Tensor:
    """torchvision's colour jitter of strength ``strength`` on a normalised ``(C, H, W)``
    image: undone normalisation, jitter in ``[0, 1]``, normalised again."""
    from torchvision.transforms import v2

    mean = torch.tensor(base.mean, dtype=x.dtype).view(-1, 1, 1)
    std = torch.tensor(base.std, dtype=x.dtype).view(-1, 1, 1)
    jitter = v2.ColorJitter(strength, strength, strength, min(strength, 0.5))
    return (jitter((x * std + mean).clamp(0.0, 1.0)) - mean) / std


def _random_affine(x: torch.Tensor, rotate: float, scale: float, translate: float) -> torch.Tensor:
    """One random rotation/scale/shift of a ``(C, H, W)`` tensor with reflection padding
    (torchvision's affine fills with a constant, which leaves dark corners). The rotation
    is rigid in pixels, also for a non-square tensor."""
    r = torch.rand(4)
    theta = math.radians(float((r[0] * 2 - 1) * rotate))
    s = 1.0 + float((r[1] * 2 - 1) * scale)
    tx, ty = (float((r[2] * 2 - 1) * translate * 2), float((r[3] * 2 - 1) * translate * 2))
    c, si = math.cos(theta) / s, math.sin(theta) / s
    # The grid is in coordinates normalised per axis (x / (W/2), y / (H/2)): a rotation
    # there shears a non-square image unless its sine terms carry the aspect ratio.
    h, w = x.shape[-2:]
    mat = torch.tensor([[[c, -si * h / w, tx], [si * w / h, c, ty]]], dtype=x.dtype)
    grid = F.affine_grid(mat, [1, *x.shape], align_corners=False)
    return F.grid_sample(x[None], grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)[0]
