"""Models behind a name registry (:mod:`mcgf.models.registry`).

Importing this package registers the built-in embedders (:mod:`mcgf.models.baselines`,
:mod:`mcgf.models.checkpoint_embedder`).
"""

from mcgf.models import baselines as _baselines  # noqa: F401  (registers "thumbnail")
from mcgf.models import checkpoint_embedder as _checkpoint_embedder  # noqa: F401  ("checkpoint")
from mcgf.models.checkpoint_embedder import checkpoint as load_embedder
from mcgf.models.registry import (
    CHECKPOINT_EMBEDDER,
    Embedder,
    available_embedders,
    build_embedder,
    parse_embedder_args,
    register_embedder,
)

__all__ = [
    "CHECKPOINT_EMBEDDER",
    "Embedder",
    "available_embedders",
    "build_embedder",
    "load_embedder",
    "parse_embedder_args",
    "register_embedder",
]
