"""Training logs: ``log.csv`` (always) and TensorBoard (when the ``tensorboard`` package
is installed; otherwise skipped with a one-time note).

``log.csv`` is rewritten atomically on each :meth:`TrainLog.flush`, so a crash never
leaves a torn row; runs are short enough in rows that the rewrite is cheap.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mcgf.fileio import write_text_atomic

#: Columns of ``log.csv``; a loss term the run does not compute is left empty.
COLUMNS = ("step", "epoch", "lr", "ce", "infonce", "restore", "total", "images_per_s",
           "val_R@1", "val_AP")


class TrainLog:
    """Collects per-step rows and writes them to ``OUT/log.csv`` (+ TensorBoard).

    Args:
        out: the run folder.
        keep_until_step: on resume, keep the existing rows up to this step (later ones
            belong to an interrupted epoch that is being redone).
        tensorboard: try to write TensorBoard events under ``OUT/tb``.
    """

    def __init__(self, out: Path, *, keep_until_step: int | None = None, tensorboard: bool = True) -> None:
        self.path = Path(out) / "log.csv"
        self.rows: list[dict[str, Any]] = []
        if keep_until_step is not None and self.path.is_file():
            with open(self.path, newline="", encoding="utf-8") as fh:
                self.rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= keep_until_step]
        self.writer = None
        self.note: str | None = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self.note = "TensorBoard logging off (pip install tensorboard to enable it)"
            else:
                self.writer = SummaryWriter(str(Path(out) / "tb"))

    def add(self, row: Mapping[str, Any]) -> None:
        """Record one row (keys from :data:`COLUMNS`; missing terms stay empty)."""
        clean = {k: row.get(k, "") for k in COLUMNS}
        self.rows.append(clean)
        if self.writer is not None:
            for k in COLUMNS[2:]:
                if clean[k] != "":
                    group = "val" if k.startswith("val_") else "train"
                    self.writer.add_scalar(f"{group}/{k.removeprefix('val_')}", float(clean[k]),
                                           int(clean["step"]))

    def flush(self) -> None:
        """Rewrite ``log.csv`` atomically with every row so far."""
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n", restval="",
                           extrasaction="ignore")
        w.writeheader()
        for r in self.rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
        write_text_atomic(self.path, buf.getvalue())
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        """Flush and release the TensorBoard writer."""
        self.flush()
        if self.writer is not None:
            self.writer.close()
