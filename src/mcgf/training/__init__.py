"""Training support: checkpoints (weights + config + resumable training state).

The training loop itself builds on :mod:`mcgf.training.checkpoint`.
"""

from mcgf.training.checkpoint import (
    LoadedCheckpoint,
    TrainState,
    capture_rng_state,
    load_checkpoint,
    read_config,
    restore_rng_state,
    save_checkpoint,
)

__all__ = [
    "LoadedCheckpoint",
    "TrainState",
    "capture_rng_state",
    "load_checkpoint",
    "read_config",
    "restore_rng_state",
    "save_checkpoint",
]
