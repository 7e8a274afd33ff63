"""Tiny synthetic SUES-200 and DenseUAV trees (``mcgf synth --layout``), made once per module."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcgf.synth import SynthConfig
from mcgf.synth.variants import generate_variant


def make_tree(out: Path, layout: str, *, train: int = 6, test: int = 4, views: int = 2) -> Path:
    """``out`` holding the synthetic benchmark in ``layout`` at 64 px (no distractors)."""
    config = SynthConfig(train=train, test=test, distractors=0, extra_distractors=0,
                         views=views if layout == "sues200" else 1, size=64, seed=3)
    generate_variant(out, layout, config, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def sues_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 train / 4 test locations, 2 drone views per height (150, 200, 250, 300)."""
    return make_tree(tmp_path_factory.mktemp("sues") / "out", "sues200")


@pytest.fixture(scope="module")
def dense_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 train / 4 test locations, H80/H90/H100 views, coordinates files."""
    return make_tree(tmp_path_factory.mktemp("dense") / "out", "denseuav")
