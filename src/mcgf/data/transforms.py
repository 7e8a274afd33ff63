"""The one image preprocessing of the project: resize, scale to [0, 1], normalise.

Training and evaluation both use :class:`Preprocess`, so a model sees the same
interpolation and normalisation when it is trained as when it is evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
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
        x = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float()
        x = x.div_(255.0)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (x - mean) / std
