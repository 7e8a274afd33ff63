"""Procedural cross-view benchmark: the project's built-in default data.

``generate_benchmark(out_dir, SynthConfig(...))`` writes drone views and satellite tiles
of synthetic 2.5D locations in the University-1652 and University-160k-WX layouts, so
the loaders, training and evaluation run end to end without downloading a dataset;
a :class:`SynthStyle` (``SynthConfig(style=...)``) sets how the world looks.
Building blocks (layouts, scenes, renderers) are importable from the submodules.
"""

from mcgf.synth.benchmark import (
    QueryTransform,
    SynthConfig,
    SynthSummary,
    format_summary,
    generate_benchmark,
    plan_jobs,
)
from mcgf.synth.contact_sheet import make_contact_sheet
from mcgf.synth.style import STYLES, SynthStyle, load_style

__all__ = [
    "STYLES",
    "QueryTransform",
    "SynthConfig",
    "SynthStyle",
    "SynthSummary",
    "format_summary",
    "generate_benchmark",
    "load_style",
    "make_contact_sheet",
    "plan_jobs",
]
