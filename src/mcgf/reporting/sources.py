"""What a run folder holds: checkpoint, dataset, evaluation metrics, training log.

Two layouts are recognised: the demo's (``RUN/data``, ``RUN/train/last``,
``RUN/train/log.csv``, ``RUN/eval/metrics.json``) and a plain training folder (the
``--out`` of ``mcgf train``: ``RUN/log.csv``, ``RUN/last``; the dataset is given with
``--data`` or found through the checkpoint's ``data.root``). Nothing is computed here:
missing metrics or logs are reported as missing, not made up.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcgf.errors import UserError
from mcgf.models.checkpoint import CONFIG_FILE, WEIGHTS_FILE

if TYPE_CHECKING:
    from mcgf.data.layouts import DatasetLayout

#: Where a checkpoint folder is looked for, relative to the run folder, in this order.
CHECKPOINT_CANDIDATES = ("train/last", "last", "train/best", "best", ".")
#: Where ``log.csv`` is looked for.
LOG_CANDIDATES = ("train/log.csv", "log.csv")


@dataclass
class MetricsFile:
    """One ``metrics.json`` of ``mcgf evaluate``."""

    path: Path
    report: dict[str, Any]

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Result rows (``condition``, ``direction``, ``metrics``) then the mean rows."""
        return list(self.report.get("results", [])) + list(self.report.get("mean", []))

    @property
    def weather(self) -> dict[str, Any]:
        w = self.report.get("weather")
        return w if isinstance(w, dict) else {}


@dataclass
class RunInputs:
    """Everything a report reads from the run folder."""

    run_dir: Path
    checkpoint: Path
    data_root: Path
    metrics: list[MetricsFile] = field(default_factory=list)
    log_csv: Path | None = None
    notes: list[str] = field(default_factory=list)
    #: The dataset opened with its layout (``data_root`` is its root).
    dataset: DatasetLayout | None = None


def is_checkpoint(folder: Path) -> bool:
    """Whether ``folder`` holds a checkpoint written by ``save_checkpoint``."""
    return (folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def find_checkpoint(run_dir: Path, checkpoint: str | Path | None) -> Path:
    """The checkpoint folder: ``checkpoint`` if given, else the first of
    :data:`CHECKPOINT_CANDIDATES` under ``run_dir`` that is one."""
    if checkpoint is not None:
        path = Path(checkpoint)
        if path.is_file():
            path = path.parent
        if not path.exists():
            raise UserError(f"--checkpoint {checkpoint} does not exist: give the checkpoint folder "
                            "(it holds config.json and model.safetensors)")
        if not is_checkpoint(path):
            raise UserError(f"--checkpoint {checkpoint} is not a checkpoint folder (no config.json "
                            "and model.safetensors in it)")
        return path
    for rel in CHECKPOINT_CANDIDATES:
        if is_checkpoint(run_dir / rel):
            return run_dir / rel
    raise UserError(f"no checkpoint in {run_dir} (looked for {', '.join(CHECKPOINT_CANDIDATES[:4])}): "
                    "pass --checkpoint DIR")


def _has_test(dataset: DatasetLayout) -> bool:
    return any(ts.has("query_drone") for ts in dataset.test_sets())


def _layout_hint(metrics: list[MetricsFile], config: dict[str, Any]) -> str | None:
    """The layout the run used: that of its ``metrics.json``, else the checkpoint's
    ``data.layout`` (``None``: detect it)."""
    for m in metrics:
        if isinstance(m.report.get("layout"), str) and m.report["layout"]:
            return str(m.report["layout"])
    layout = config.get("data", {}).get("layout") if isinstance(config.get("data"), dict) else None
    return layout if isinstance(layout, str) and layout else None


def find_dataset_for_run(run_dir: Path, data_root: str | Path | None, checkpoint: Path,
                         metrics: list[MetricsFile], layout: str | None = None) -> DatasetLayout:
    """The dataset whose test split the report shows, opened with its layout.

    Order: ``data_root``; ``RUN/data``; the dataset named in ``metrics.json``; the
    checkpoint's training ``data.root``. The layout: ``layout``, else the one
    ``metrics.json`` or the checkpoint's config names, else the folder tree's.
    """
    from mcgf.data.layouts import find_dataset, parse_layout

    if layout:
        parse_layout(layout)  # a misspelt name is its own error, not "no dataset found"
    try:
        config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
        config = config if isinstance(config, dict) else {}
    except (OSError, ValueError):
        config = {}
    if data_root is not None:
        ds = find_dataset(data_root, layout)
        if not _has_test(ds):
            raise UserError(f"--data {data_root} has no query_drone test folder ({ds.title} layout): "
                            "point at a dataset with its test split")
        return ds
    hint = layout or _layout_hint(metrics, config)
    candidates: list[Path] = [run_dir / "data"]
    candidates += [Path(m.report["dataset"]) for m in metrics if isinstance(m.report.get("dataset"), str)]
    root = config.get("data", {}).get("root") if isinstance(config.get("data"), dict) else None
    if isinstance(root, str):
        candidates.append(Path(root))
    for cand in candidates:
        for spec in dict.fromkeys([hint, None] if layout is None else [layout]):
            try:
                ds = find_dataset(cand, spec)
            except UserError:
                continue
            if _has_test(ds):
                return ds
    raise UserError(f"no dataset found for {run_dir} (looked in {run_dir / 'data'}, metrics.json "
                    "and the checkpoint's data.root): pass --data ROOT (the folder holding test/)")


def find_data_root(run_dir: Path, data_root: str | Path | None, checkpoint: Path,
                   metrics: list[MetricsFile]) -> Path:
    """The root of the dataset whose test split the report shows (see
    :func:`find_dataset_for_run`)."""
    return find_dataset_for_run(run_dir, data_root, checkpoint, metrics).root


def find_metrics(run_dir: Path, exclude: Path | None = None) -> list[MetricsFile]:
    """Every readable ``metrics.json`` of the run: ``RUN/eval/metrics.json`` first, then
    ``RUN/metrics.json`` and ``RUN/*/metrics.json`` in name order (``exclude``, e.g. the
    report's own folder, is skipped)."""
    paths = [run_dir / "eval" / "metrics.json", run_dir / "metrics.json"]
    paths += sorted(run_dir.glob("*/metrics.json"))
    out: list[MetricsFile] = []
    seen: set[Path] = set()
    for path in paths:
        real = path.resolve()
        if real in seen or not path.is_file():
            continue
        if exclude is not None and exclude.resolve() in real.parents:
            continue
        seen.add(real)
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(report, dict) and isinstance(report.get("results"), list):
            out.append(MetricsFile(path, report))
    return out


def find_log(run_dir: Path, checkpoint: Path) -> Path | None:
    """``log.csv`` of the run (``RUN/train/log.csv``, ``RUN/log.csv`` or beside the checkpoint)."""
    for cand in [*(run_dir / rel for rel in LOG_CANDIDATES), checkpoint.parent / "log.csv"]:
        if cand.is_file():
            return cand
    return None


def resolve_run(run_dir: str | Path, *, data_root: str | Path | None = None,
                checkpoint: str | Path | None = None, out: Path | None = None,
                layout: str | None = None) -> RunInputs:
    """Find the checkpoint, dataset (with its ``layout``, default as the run used or
    detected), metrics and training log of ``run_dir``.

    Raises:
        UserError: ``run_dir`` is not a folder, or no checkpoint / dataset can be found.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise UserError(f"run folder {run} does not exist (give the folder of a training run or "
                        "of mcgf demo)")
    ckpt = find_checkpoint(run, checkpoint)
    metrics = find_metrics(run, exclude=out)
    dataset = find_dataset_for_run(run, data_root, ckpt, metrics, layout)
    root = dataset.root
    inputs = RunInputs(run, ckpt, root, metrics, find_log(run, ckpt), dataset=dataset)
    if not metrics:
        inputs.notes.append(f"No metrics.json in {run} (or its eval/ folder): run mcgf evaluate "
                            f"{root} --checkpoint {ckpt} --weather all --out {run / 'eval'} to add "
                            "the metrics tables and per-weather bars.")
    if inputs.log_csv is None:
        inputs.notes.append(f"No log.csv in {run}: no training curves.")
    return inputs


def read_log(path: Path) -> dict[str, list[float | None]]:
    """Columns of ``log.csv`` as floats (empty or unparsable cells are ``None``)."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    columns: dict[str, list[float | None]] = {}
    for name in (rows[0].keys() if rows else []):
        col: list[float | None] = []
        for r in rows:
            try:
                v = float(r.get(name) or "nan")
            except ValueError:
                v = math.nan
            col.append(v if math.isfinite(v) else None)
        columns[name] = col
    return columns
