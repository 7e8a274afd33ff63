"""mcgf: multi-weather cross-view geo-localization (drone <-> satellite).

The library is organised by concern: :mod:`mcgf.data` (dataset layouts, loaders,
samplers), :mod:`mcgf.synth` (the procedural cross-view benchmark), and the command
line in :mod:`mcgf.cli`, which the library never imports.
"""

__version__ = "0.1.0"

from mcgf.errors import UserError

__all__ = ["UserError", "__version__"]
