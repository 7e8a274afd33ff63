"""Tiny synthetic benchmarks generated once per test session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mcgf.synth import SynthConfig, SynthSummary, generate_benchmark
from mcgf.synth.layout import Building, Layout
from mcgf.synth.lighting import Sun, shade_top
from mcgf.synth.scene import Scene, rasterize
from mcgf.synth.shapes import Part

TINY = SynthConfig(train=3, test=3, distractors=2, extra_distractors=2, views=3, size=64, seed=7)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SynthSummary]:
    """The tiny benchmark written by one process, and its summary."""
    out = tmp_path_factory.mktemp("synth") / "one"
    return out, generate_benchmark(out, TINY, workers=1, progress=False)


@pytest.fixture(scope="session")
def tiny(tiny_run: tuple[Path, SynthSummary]) -> Path:
    return tiny_run[0]


def box_scene(parts: list[Part], cell: float = 1.0, n: int = 200) -> Scene:
    """A flat grass scene holding only the given building parts (no roads, trees)."""
    layout = Layout(half_extent=n * cell / 2, road_style="grid",
                    buildings=[Building(parts=(p,), target=i == 0) for i, p in enumerate(parts)])
    return rasterize(layout, cell, n, np.random.default_rng(0))


def box(cx: float, cy: float, half: float, height: float, **kw: object) -> Part:
    """A square flat-roofed block."""
    return Part("rect", cx, cy, 0.0, half, half, height, **kw)  # type: ignore[arg-type]


def shaded(scene: Scene, sun: Sun | None = None) -> np.ndarray:
    return shade_top(scene, sun or Sun(135.0, 45.0))
