"""Geo-localization head: the University-1652-style ``ClassBlock``."""

from __future__ import annotations

import torch
from torch import nn


class ClassBlock(nn.Module):
    """Pooled backbone feature → bottleneck embedding → location logits.

    ``linear(in_dim → bottleneck) → BatchNorm1d → dropout → linear(bottleneck → classes)``
    (with ``gelu``, a GELU between the first linear layer and the BatchNorm, as MBEG's head
    has; it has no parameters, so the state dict is the same).

    Retrieval uses the **bottleneck feature after BatchNorm, before dropout**, and
    L2-normalised (as the University-1652 baselines do): ``forward`` returns it
    un-normalised together with the logits, :meth:`embed` returns it normalised so that
    cosine similarity is a dot product. One head is shared by drone and satellite views,
    so both views of a location are pulled towards the same class weights.
    """

    def __init__(
        self, in_dim: int, num_classes: int, *, bottleneck: int = 512, dropout: float = 0.5,
        gelu: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.bottleneck = nn.Linear(in_dim, bottleneck)
        self.act: nn.Module = nn.GELU() if gelu else nn.Identity()
        self.bn = nn.BatchNorm1d(bottleneck)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(bottleneck, num_classes)
        # Kaiming init for the bottleneck and a small-std classifier: the usual recipe of
        # the University-1652 baselines, which keeps early logits near uniform.
        nn.init.kaiming_normal_(self.bottleneck.weight, a=0, mode="fan_out")
        nn.init.zeros_(self.bottleneck.bias)
        nn.init.normal_(self.classifier.weight, std=0.001)
        nn.init.zeros_(self.classifier.bias)

    @property
    def embed_dim(self) -> int:
        """Dimension of the retrieval embedding."""
        return self.bottleneck.out_features

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, in_dim)`` → ``(embedding (B, bottleneck), logits (B, num_classes))``."""
        emb = self.bn(self.act(self.bottleneck(pooled)))
        return emb, self.classifier(self.dropout(emb))

    def embed(self, pooled: torch.Tensor) -> torch.Tensor:
        """L2-normalised retrieval embedding (no classifier)."""
        return nn.functional.normalize(self.bn(self.act(self.bottleneck(pooled))), dim=-1)
