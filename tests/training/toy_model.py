"""The smallest model that meets the trainable contract, for tests of the loop and its
step: a convolution, global pooling and a linear classifier; cross-entropy on both views
plus an auxiliary term with its own weight."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mcgf.models.base import TrainableMixin

TOY = "toy-contract"


class ToyNet(TrainableMixin, nn.Module):
    """``total = ce + aux · mean(feature²)``; ``loss_weights`` reports ``aux``."""

    def __init__(self, num_classes: int = 4, width: int = 4, aux: float = 0.5) -> None:
        super().__init__()
        self.input_size = (16, 16)
        self.mean = (0.5, 0.5, 0.5)
        self.std = (0.25, 0.25, 0.25)
        self.encoder = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                                     nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(width, num_classes)
        self.aux = float(aux)

    @property
    def loss_weights(self) -> dict[str, float]:
        return {"aux": self.aux}

    def embed(self, images: torch.Tensor, view: str) -> torch.Tensor:
        return F.normalize(self.encoder(images), dim=1)

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def loss(self, batch: dict[str, Any], *,
             generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        fd, fs = self.encoder(batch["drone"]), self.encoder(batch["satellite"])
        ce = (F.cross_entropy(self.classifier(fd), batch["drone_label"])
              + F.cross_entropy(self.classifier(fs), batch["satellite_label"]))
        aux = fd.pow(2).mean()
        return {"ce": ce, "aux": aux, "total": ce + self.aux * aux}


@pytest.fixture
def toy_registered() -> Iterator[str]:
    """``ToyNet`` registered as a model named :data:`TOY` for the test's duration."""
    from mcgf.models import model_registry

    model_registry.register_model(TOY)(ToyNet)
    yield TOY
    model_registry._MODELS._factories.pop(TOY, None)


def toy_batch(n: int = 4, seed: int = 0, classes: int = 4) -> dict[str, torch.Tensor]:
    """``n`` drone images and ``n`` satellite tiles of 16 px, labels ``i % classes``."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    return {"drone": torch.randn(n, 3, 16, 16, generator=g), "drone_label": labels,
            "satellite": torch.randn(n, 3, 16, 16, generator=g), "satellite_label": labels}
