"""A benchmark rendered with several workers after torch has run in the same process
finishes and equals the one-process rendering (a plain fork there can deadlock)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import sys
    import torch
    torch.set_num_threads(2)
    torch.ones(256, 256) @ torch.ones(256, 256)  # start torch's thread pool
    from mcgf.synth import SynthConfig, generate_benchmark
    from mcgf.weather import WeatherTransform
    cfg = SynthConfig(train=2, test=2, distractors=1, extra_distractors=1, views=2, size=64, seed=3)
    weather = WeatherTransform("random", seed=3, dark_variant="test")
    generate_benchmark(sys.argv[1], cfg, workers=int(sys.argv[2]), progress=False,
                       query_transform=weather)
""")


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "metadata.json"}


def test_pool_after_torch_finishes_and_matches(tmp_path: Path) -> None:
    for workers in (1, 2):
        subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / str(workers)), str(workers)],
                       check=True, timeout=240)
    one, two = _tree(tmp_path / "1"), _tree(tmp_path / "2")
    assert one.keys() == two.keys() and len(one) > 10
    assert [k for k in one if one[k] != two[k]] == []
