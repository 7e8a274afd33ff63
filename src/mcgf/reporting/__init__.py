"""One static HTML report of what a trained model sees and how well it matches.

:func:`build_report` writes ``RUN/report/index.html`` with pictures beside it:
metrics tables and per-weather bars, training curves, top-5 match grids under the ten
weather conditions (both directions), similarity heatmaps, restoration previews and R@1
against the drone's pose. Modules: :mod:`.grids` (retrieval for the grids),
:mod:`.heatmaps` (saliency), :mod:`.posture` (pose binning), :mod:`.drawing` (pictures),
:mod:`.svg` (charts), :mod:`.html` (page), :mod:`.sources` (what the run folder holds).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mcgf.reporting.build import build_report

__all__ = ["build_report"]


def __getattr__(name: str) -> Any:
    # torch and the model code load only when a report is actually built.
    if name == "build_report":
        from mcgf.reporting.build import build_report

        return build_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
