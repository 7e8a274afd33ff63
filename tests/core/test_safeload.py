"""One-line errors of :func:`mcgf.safeload.load_plain` for files that are no torch file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mcgf.errors import UserError
from mcgf.safeload import PickledObjectsError, load_plain


def test_random_bytes_are_damaged_and_unsafe_loading_is_not_suggested(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    with pytest.raises(UserError) as info:
        load_plain(junk, "weights file", "convert it")
    msg = str(info.value)
    assert not isinstance(info.value, PickledObjectsError)
    assert "\n" not in msg
    assert msg.startswith(f"cannot read weights file {junk}: Unsupported operand ")
    assert msg.endswith("(damaged, or not a file written by torch.save)")
    # torch's advice to re-run with weights_only=False is no advice for a damaged file
    assert "weights_only" not in msg and "will likely succeed" not in msg
