"""Training logs: ``log.csv`` (always) and TensorBoard (when the ``tensorboard`` package
is installed; otherwise skipped with a one-time note).

The columns follow the keys of the rows: ``step, epoch, lr`` first, then every loss term
the model returns (``total`` last of them), ``images_per_s``, the per-term gradient norms
reaching the encoder (``grad_encoder_<term>``) and the validation values (``val_*``),
each group in the order its keys first appeared. A value a row lacks stays empty.

``log.csv`` is rewritten atomically on each :meth:`TrainLog.flush`, so a crash never
leaves a torn row; runs are short enough in rows that the rewrite is cheap.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mcgf.errors import UserError
from mcgf.fileio import write_text_atomic
from mcgf.safeload import one_line

#: The first columns of ``log.csv``, always present and in this order.
LEADING_COLUMNS = ("step", "epoch", "lr")
#: Row keys that are not TensorBoard scalars.
_NOT_SCALARS = ("step", "epoch")


def column_rank(name: str) -> int:
    """Where a column goes in ``log.csv``: leading, loss terms, total, throughput,
    encoder gradient norms, validation."""
    if name in LEADING_COLUMNS:
        return 0
    if name.startswith("val_"):
        return 5
    if name.startswith("grad_"):
        return 4
    return {"images_per_s": 3, "total": 2}.get(name, 1)


class TrainLog:
    """Collects per-step rows and writes them to ``OUT/log.csv`` (+ TensorBoard).

    Args:
        out: the run folder.
        keep_until_step: on resume, keep the existing rows up to this step (later ones
            belong to an interrupted epoch that is being redone).
        tensorboard: try to write TensorBoard events under ``OUT/tb`` (earlier events of
            the steps this log redoes are purged, as their rows are).
    """

    def __init__(self, out: Path, *, keep_until_step: int | None = None, tensorboard: bool = True) -> None:
        self.path = Path(out) / "log.csv"
        self.rows: list[dict[str, Any]] = []
        self._seen: list[str] = list(LEADING_COLUMNS)
        if keep_until_step is not None and self.path.is_file():
            self._read(keep_until_step)
        self.writer = None
        self.note: str | None = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self.note = "TensorBoard logging off (pip install tensorboard to enable it)"
            else:
                # Events past the kept rows (an interrupted epoch being redone, or all of
                # an earlier start's in a new run) are purged, so no step shows twice.
                purge = 0 if keep_until_step is None else keep_until_step + 1
                self.writer = SummaryWriter(str(Path(out) / "tb"), purge_step=purge)

    def _read(self, keep_until_step: int) -> None:
        """Keep the rows of the existing log up to ``keep_until_step``.

        Raises:
            UserError: the log is not a ``log.csv`` of this format (one line naming it).
        """
        try:
            with open(self.path, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                if "step" not in (reader.fieldnames or []):
                    raise ValueError("no step column")
                self.rows = [r for r in reader if int(r["step"]) <= keep_until_step]
                self._note_keys(reader.fieldnames or [])
        except (OSError, ValueError, TypeError, csv.Error) as err:  # UnicodeError is a ValueError
            raise UserError(f"cannot continue {self.path}: {one_line(err)} (move the file away "
                            "to resume with a new log)") from None

    @property
    def columns(self) -> list[str]:
        """The columns of ``log.csv`` so far (see :func:`column_rank` for the order)."""
        order = {k: i for i, k in enumerate(self._seen)}
        return sorted(self._seen, key=lambda k: (column_rank(k), order[k]))

    def _note_keys(self, keys: Any) -> None:
        for k in keys:
            if k not in self._seen:
                self._seen.append(k)

    def add(self, row: Mapping[str, Any]) -> None:
        """Record one row (needs ``step``; any other keys become columns)."""
        clean = {k: v for k, v in row.items() if v is not None and v != ""}
        self._note_keys(clean)
        self.rows.append(clean)
        if self.writer is not None:
            for k, v in clean.items():
                if k in _NOT_SCALARS:
                    continue
                group = "val" if k.startswith("val_") else "train"
                self.writer.add_scalar(f"{group}/{k.removeprefix('val_')}", float(v), int(clean["step"]))

    def flush(self) -> None:
        """Rewrite ``log.csv`` atomically with every row so far."""
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n", restval="",
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
