"""Training: the loop, its configuration, logs and exact resumption.

Checkpoint folders (weights + config + resumable training state) are
:mod:`mcgf.models.checkpoint`, re-exported here; what a resumed run restores from them is
:mod:`mcgf.training.resume`.
"""

from mcgf.models.checkpoint import (
    LoadedCheckpoint,
    TrainState,
    load_checkpoint,
    read_config,
    save_checkpoint,
)
from mcgf.training.resume import capture_rng_state, restore_rng_state

__all__ = [
    "LoadedCheckpoint",
    "TrainState",
    "capture_rng_state",
    "load_checkpoint",
    "read_config",
    "restore_rng_state",
    "save_checkpoint",
]
