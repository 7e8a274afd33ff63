"""Training logs: ``log.csv`` (always) and TensorBoard (when the ``tensorboard`` package
is installed; otherwise skipped with a one-time note).

The columns follow the keys of the rows: ``step, epoch, lr`` first, then every loss term
the model returns (``total`` last of them), ``images_per_s``, the per-term gradient norms
reaching the encoder (``grad_encoder_<term>``) and the validation values (``val_*``),
each group in the order its keys first appeared. A value a row lacks stays empty.

``log.csv`` gains each row as it is added, so a long epoch can be followed while it runs:
a row is appended whole, and the file is rewritten atomically when a column first appears
(the header changes) or a resume drops the rows past its checkpoint. Appending keeps the
cost of a row independent of the rows before it; a row torn by a kill mid-write is the
file's unterminated last line, which a resume leaves out.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from mcgf.errors import UserError
from mcgf.fileio import atomic_write
from mcgf.safeload import one_line

#: The first columns of ``log.csv``, always present and in this order.
LEADING_COLUMNS = ("step", "epoch", "lr")
#: Row keys that are not TensorBoard scalars.
_NOT_SCALARS = ("step", "epoch")


def _writer(fh: IO[str], columns: list[str]) -> csv.DictWriter:
    return csv.DictWriter(fh, fieldnames=columns, lineterminator="\n", restval="",
                          extrasaction="ignore")


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


def loss_term_name(name: str) -> bool:
    """Whether ``name`` can be a loss term's column: ``log.csv`` keeps the leading
    columns, ``images_per_s``, ``grad_*`` and ``val_*`` for its own (the columns that
    :func:`column_rank` places apart from the terms and ``total``)."""
    return column_rank(name) in (1, 2)


class TrainLog:
    """Collects per-step rows and writes them to ``OUT/log.csv`` (+ TensorBoard).

    Rows are not kept in memory once written (a run of a million rows would hold
    gigabytes): a rewrite for a new column streams the earlier rows from the file.

    Args:
        out: the run folder.
        keep_until_step: on resume, keep the existing rows up to this step (later ones
            belong to an interrupted epoch that is being redone).
        tensorboard: try to write TensorBoard events under ``OUT/tb`` (earlier events of
            the steps this log redoes are purged, as their rows are).
    """

    def __init__(self, out: Path, *, keep_until_step: int | None = None, tensorboard: bool = True) -> None:
        self.path = Path(out) / "log.csv"
        #: Rows added but not yet in ``log.csv``.
        self.pending: list[dict[str, Any]] = []
        #: How many rows (kept and added) have a value in each column.
        self.filled: dict[str, int] = {}
        self._seen: list[str] = list(LEADING_COLUMNS)
        # The header on disk: None until this log first writes, so that write is a
        # rewrite (it drops the rows of an interrupted epoch a resume redoes).
        self._written_columns: list[str] | None = None
        # The file's rows up to this step go into a rewrite (None: none, a new log).
        self._carry: float | None = None
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

    def _file_rows(self, until: float) -> Iterator[dict[str, str]]:
        """The rows of ``log.csv`` up to step ``until``, read as they are needed."""
        with open(self.path, encoding="utf-8", newline="") as fh:
            # A kill during an append can leave the last row without its line end.
            reader = csv.DictReader(line for line in fh if line.endswith("\n"))
            if "step" not in (reader.fieldnames or []):
                raise ValueError("no step column")
            self._note_keys(reader.fieldnames or [])
            for r in reader:
                if int(r["step"]) <= until:
                    yield r

    def _read(self, keep_until_step: int) -> None:
        """Check the existing log and count its rows up to ``keep_until_step``, which
        the first write carries over.

        Raises:
            UserError: the log is not a ``log.csv`` of this format (one line naming it).
        """
        try:
            for r in self._file_rows(keep_until_step):
                self._count(r)
        except (OSError, ValueError, TypeError, csv.Error) as err:  # UnicodeError is a ValueError
            raise UserError(f"cannot continue {self.path}: {one_line(err)} (move the file away "
                            "to resume with a new log)") from None
        self._carry = keep_until_step

    def _count(self, row: Mapping[str, Any]) -> None:
        for k, v in row.items():
            if v is not None and v != "":
                self.filled[k] = self.filled.get(k, 0) + 1

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
        """Record one row (needs ``step``; any other keys become columns) and write it to
        ``log.csv``."""
        clean = {k: v for k, v in row.items() if v is not None and v != ""}
        self._note_keys(clean)
        self._count(clean)
        self.pending.append(clean)
        self._write_csv()
        if self.writer is not None:
            for k, v in clean.items():
                if k in _NOT_SCALARS:
                    continue
                group = "val" if k.startswith("val_") else "train"
                self.writer.add_scalar(f"{group}/{k.removeprefix('val_')}", float(v), int(clean["step"]))

    def _write_csv(self) -> None:
        """Bring ``log.csv`` up to date: append the pending rows, or rewrite it atomically
        when its header would change (or this log has not written it yet)."""
        columns = self.columns
        rewrite = columns != self._written_columns or not self.path.is_file()
        if not self.pending and not rewrite:
            return
        new = [{k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()}
               for r in self.pending]
        if rewrite:
            earlier = (self._file_rows(self._carry)
                       if self._carry is not None and self.path.is_file() else ())
            with atomic_write(self.path, "w", encoding="utf-8", newline="") as fh:
                w = _writer(fh, columns)
                w.writeheader()
                w.writerows(earlier)
                w.writerows(new)
        else:
            with open(self.path, "a", encoding="utf-8", newline="") as fh:
                _writer(fh, columns).writerows(new)
        # From now on the file holds exactly this log's rows.
        self._written_columns, self._carry, self.pending = columns, math.inf, []

    def flush(self) -> None:
        """Write any row ``log.csv`` lacks and flush the TensorBoard events."""
        self._write_csv()
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        """Flush and release the TensorBoard writer (released even when the flush fails)."""
        try:
            self.flush()
        finally:
            if self.writer is not None:
                self.writer.close()
