"""Training-free embedders, so that evaluation and submission run before any model exists.

``thumbnail``: the image shrunk to a ``grid × grid`` mean-colour grid, each colour
channel standardised over the grid (which removes global brightness and contrast, e.g.
of the ``dark``/``light`` weather), flattened and L2-normalised. It is a sanity
baseline: it measures how much plain layout/colour agreement the protocol rewards.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mcgf.models.registry import register_embedder


class ThumbnailEmbedder:
    """Mean colours on a ``grid × grid`` grid, standardised per channel, L2-normalised."""

    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)

    def __init__(self, grid: int = 8, size: int = 64) -> None:
        if not 1 <= grid <= size:
            raise ValueError(f"grid must be between 1 and size ({size}), got {grid}")
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        self.grid = int(grid)
        self.input_size = (int(size), int(size))
        self.identity = f"thumbnail-v1(grid={self.grid},size={int(size)})"

    @property
    def dim(self) -> int:
        return 3 * self.grid * self.grid

    def to(self, device: torch.device | str) -> ThumbnailEmbedder:
        """No parameters: nothing to move."""
        return self

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` → ``(B, 3·grid²)`` unit vectors."""
        x = F.adaptive_avg_pool2d(images.float(), self.grid).flatten(2)  # (B, 3, grid²)
        x = x - x.mean(dim=2, keepdim=True)
        x = x / (x.std(dim=2, keepdim=True, unbiased=False) + 1e-6)
        return F.normalize(x.flatten(1), dim=1)


@register_embedder("thumbnail")
def thumbnail(grid: int = 8, size: int = 64) -> ThumbnailEmbedder:
    """Build the ``thumbnail`` baseline (``grid`` cells per side, images resized to ``size``)."""
    return ThumbnailEmbedder(grid=grid, size=size)
