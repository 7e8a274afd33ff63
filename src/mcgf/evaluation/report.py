"""Evaluation reports: ``metrics.json`` and a Markdown table, written atomically as one unit."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mcgf.fileio import write_files_together

#: Columns of the Markdown table: (header, metrics key, format).
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("R@1", "R@1", "{:.2f}"),
    ("R@5", "R@5", "{:.2f}"),
    ("R@10", "R@10", "{:.2f}"),
    ("R@top1%", "R@top1%", "{:.2f}"),
    ("AP", "AP", "{:.2f}"),
    ("queries", "num_queries", "{:d}"),
    ("no match", "queries_without_match", "{:d}"),
    # Unreadable images left out by --on-bad-image skip (a skipped query counts as a miss).
    ("skipped queries", "skipped_query_images", "{:d}"),
    ("skipped gallery", "skipped_gallery_images", "{:d}"),
)


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "–"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def row_label(row: dict[str, Any]) -> str:
    """The condition cell of a row: ``fog (partial 120/200)`` for a row scored on part of
    a pre-rendered folder, ``mean (with partial rows: fog)`` for a mean over such rows."""
    m = row["metrics"]
    label = str(row["condition"])
    if isinstance(m.get("partial"), dict):
        parts = [f"{p['images']}/{p['of']}" for p in m["partial"].values()]
        label += f" (partial {', '.join(parts)})"
    if m.get("partial_conditions"):
        label += f" (with partial rows: {', '.join(m['partial_conditions'])})"
    return label


def extra_columns(rows: Sequence[dict[str, Any]]) -> tuple[tuple[str, str, str], ...]:
    """Columns of metrics some layouts add (DenseUAV's ``SDM@K``), in the order the rows
    first have them; none for rows without them."""
    keys = dict.fromkeys(k for r in rows for k in r.get("metrics", {}) if str(k).startswith("SDM@"))
    return tuple((k, k, "{:.2f}") for k in keys)


def markdown_table(rows: Sequence[dict[str, Any]], subset_label: str = "") -> str:
    """A Markdown table of result rows (each with ``condition``, ``direction``, ``metrics``
    and, for a layout with several test sets, ``subset``: then a first column headed
    ``subset_label``, e.g. ``height``)."""
    columns = COLUMNS + extra_columns(rows)
    split = any("subset" in r for r in rows)
    lead = [subset_label or "test set"] if split else []
    head = [*lead, "condition", "direction", *(c[0] for c in columns)]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] * (2 + len(lead)) + ["---:"] * len(columns)) + "|"]
    for row in rows:
        m = row["metrics"]
        cells = [str(row.get("subset", ""))] if split else []
        cells += [row_label(row), str(row["direction"])]
        cells += [_cell(m.get(key), fmt) for _, key, fmt in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def invariance_markdown(section: dict[str, Any]) -> str:
    """The ``invariance`` section as a short Markdown table and a line about the probe."""
    lines = [f"## Weather invariance ({section.get('folder', '')}, {section.get('images', '–')} images)", "",
             "| condition | cosine clean–weathered | baseline other locations | normalised | probe recall % |",
             "|---|---:|---:|---:|---:|"]
    for row in section.get("per_condition", []):
        lines.append("| " + " | ".join([
            str(row.get("condition")), _cell(row.get("cosine"), "{:.3f}"),
            _cell(row.get("baseline"), "{:.3f}"), _cell(row.get("normalised"), "{:.3f}"),
            _cell(row.get("probe_recall"), "{:.1f}")]) + " |")
    lines.append("")
    probe = section.get("probe")
    if probe:
        lines.append(f"Condition probe (linear, {probe['folds']} folds split by location, "
                     f"{probe['n']} samples): accuracy {probe['accuracy']:.1f} ± "
                     f"{probe['accuracy_std']:.1f} % (chance {probe['chance']:.1f} %). Lower is "
                     "more invariant.")
    lines += [f"Note: {n}" for n in section.get("notes", [])]
    lines.append("normalised = (cosine − baseline) / (1 − baseline): 1 when weather leaves the "
                 "embedding unchanged, 0 when it is no closer to its clean image than to other "
                 "locations.")
    return "\n".join(lines) + "\n"


def render_markdown(report: dict[str, Any]) -> str:
    """The whole Markdown report: a header naming the run and the results table."""
    lines = [f"# Evaluation: {report.get('protocol', '')}", ""]
    for key in ("dataset", "layout", "embedder", "flip_tta", "weather", "no_match_policy"):
        if key in report:
            lines.append(f"- {key}: `{report[key]}`")
    lines += ["", markdown_table(report["results"] + report.get("mean", []), report.get("subset_label", ""))]
    for note in report.get("notes", []):  # rows or directions left out, partial folders
        lines += [f"Note: {note}", ""]
    lines.append(
        "R@top1% is the CMC at 0-based index round(0.01·|gallery|) (the public script's "
        "convention: Recall@11 for the 951-tile gallery). AP uses the trapezoid rule. "
        "Metrics in percent. Equal scores rank the lower gallery index first (the public "
        "script's argsort-then-reverse usually puts the higher one first)."
    )
    if extra_columns(report["results"]):
        lines.append(
            "SDM@K (DenseUAV): mean over queries of sum_i w_i·exp(−5000·d_i) / sum_i w_i over the K "
            "best gallery items, d_i the distance in degrees between the query's and the item's "
            "(longitude, latitude), w_i = 1 − (i−1)/K; in percent.")
    if isinstance(report.get("invariance"), dict):
        lines += ["", invariance_markdown(report["invariance"])]
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``metrics.json`` and ``metrics.md`` into ``out_dir`` as one unit (both new, or
    both as they were: never the table of an earlier evaluation beside new metrics);
    returns their paths."""
    out = Path(out_dir)
    json_path, md_path = out / "metrics.json", out / "metrics.md"
    write_files_together({json_path: (json.dumps(report, indent=2) + "\n").encode("utf-8"),
                          md_path: render_markdown(report).encode("utf-8")})
    return json_path, md_path
