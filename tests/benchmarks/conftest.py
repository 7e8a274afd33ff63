"""Helpers for testing the scripts under ``benchmarks/`` (not a package: loaded by path)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
# The scripts import their private helpers (``_profiling``) from their own folder, which is
# on the path when a script runs; tests load them by path, so put the folder there too.
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

#: Shrinks a paper-scale MCGF config to a model that steps in well under a second on a CPU.
TINY = [
    "model.backbone_name=vit_tiny_patch16_224", "model.img_size=32", "model.grad_checkpointing=false",
    "model.restoration_width=8", "model.restoration_mults=[1,2]", "model.restoration_blocks=1",
    "model.restore_size=16", "model.num_classes=10", "data.locations_per_batch=2",
]


def load_script(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` as a module."""
    key = f"_bench_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: tiny operators only lose from more on a shared machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
