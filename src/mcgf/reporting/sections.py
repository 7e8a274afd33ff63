"""Report sections that only read files: metrics tables, per-weather bars, training curves.

Each function returns HTML markup (strings); nothing is computed from images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mcgf.reporting import html
from mcgf.reporting.sources import MetricsFile, read_log
from mcgf.reporting.svg import bar_chart, line_chart

#: Metrics shown per direction in the tables: (header, key).
METRIC_COLUMNS: tuple[tuple[str, str], ...] = (
    ("R@1", "R@1"), ("R@5", "R@5"), ("R@10", "R@10"), ("R@top1%", "R@top1%"), ("AP", "AP"),
)
#: ``log.csv`` columns that are not loss terms.
NOT_LOSSES = ("step", "epoch", "lr", "images_per_s")
#: Validation columns of the restoration branch (PSNR in dB, SSIM in [-1, 1]).
RESTORE_PSNR, RESTORE_SSIM = "val_restore_psnr", "val_restore_ssim"


def column_groups(names: Sequence[str]) -> dict[str, list[str]]:
    """``log.csv`` columns by chart: ``losses`` (every loss term, ``total`` first),
    ``gradients`` (``grad_encoder_*``), ``retrieval`` (``val_*`` other than the
    restoration ones), ``psnr`` and ``ssim``."""
    groups: dict[str, list[str]] = {"losses": [], "gradients": [], "retrieval": [], "psnr": [],
                                    "ssim": []}
    for name in names:
        if name in NOT_LOSSES:
            continue
        if name == RESTORE_PSNR:
            groups["psnr"].append(name)
        elif name == RESTORE_SSIM:
            groups["ssim"].append(name)
        elif name.startswith("val_"):
            groups["retrieval"].append(name)
        elif name.startswith("grad_"):
            groups["gradients"].append(name)
        else:
            groups["losses"].append(name)
    groups["losses"].sort(key=lambda n: n != "total")
    return groups


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.2f}" if math.isfinite(value) else "–"
    return str(value)


def row_name(row: dict[str, Any], subset_label: str = "") -> str:
    """The name of a result row: its condition, after its test set for a layout with
    several (``height 150 · fog``, ``height mean · clean``)."""
    cond = str(row.get("condition", ""))
    if "subset" not in row:
        return cond
    return f"{subset_label or 'test set'} {row['subset']} · {cond}"


def partial_marks(row: dict[str, Any]) -> list[str]:
    """What marks a row scored on part of a pre-rendered weather folder (``mcgf evaluate
    --wx-dir --allow-partial``): ``partial query_drone 20/24`` for such a row, ``with
    partial rows: rain`` for a mean over such rows (empty for any other row)."""
    m = row.get("metrics", {})
    marks = []
    if isinstance(m.get("partial"), dict):
        marks += [f"partial {folder} {p.get('images')}/{p.get('of')}"
                  for folder, p in m["partial"].items() if isinstance(p, dict)]
    if m.get("partial_conditions"):
        marks.append(f"with partial rows: {', '.join(map(str, m['partial_conditions']))}")
    return marks


def metrics_table(mf: MetricsFile) -> str:
    """One evaluation as a table: a row per condition (and test set, for a layout with
    several; then the means), the metrics of each direction side by side. A row scored on
    part of its pre-rendered images says so after its name (:func:`partial_marks`)."""
    rows = mf.rows
    label = str(mf.report.get("subset_label", ""))
    columns = METRIC_COLUMNS + tuple((k, k) for k in dict.fromkeys(
        k for r in rows for k in r.get("metrics", {}) if str(k).startswith("SDM@")))
    directions = list(dict.fromkeys(str(r.get("direction", "")) for r in rows))
    by_cell = {(row_name(r, label), str(r.get("direction", ""))): r.get("metrics", {}) for r in rows}
    marks: dict[str, list[str]] = {}
    for r in rows:
        marks.setdefault(row_name(r, label), []).extend(partial_marks(r))
    heads = "".join(f'<th colspan="{len(columns)}">{html.text(d)}</th>' for d in directions)
    sub = "".join(f"<th>{html.text(h)}</th>" for _ in directions for h, _ in columns)
    body = []
    for name, mark in marks.items():
        shown = f"{name} ({'; '.join(dict.fromkeys(mark))})" if mark else name
        cells = [f"<td>{html.text(shown)}</td>"]
        for d in directions:
            m = by_cell.get((name, d), {})
            cells += [f'<td class="num">{html.text(_cell(m.get(k)))}</td>' for _, k in columns]
        body.append("<tr>" + "".join(cells) + "</tr>")
    first = f"{label or 'test set'} · condition" if any("subset" in r for r in rows) else "condition"
    table = (f'<table><thead><tr><th rowspan="2">{html.text(first)}</th>{heads}</tr><tr>{sub}</tr>'
             f"</thead><tbody>{''.join(body)}</tbody></table>")
    sizes = [size_line(d, [r.get("metrics", {}) for r in rows if r.get("direction") == d])
             for d in directions]
    sizes = [line for line in sizes if line]
    return table + (html.paragraph("; ".join(sizes) + ".", "meta") if sizes else "")


def size_line(direction: str, metrics: list[dict[str, Any]]) -> str:
    """``direction: N queries, gallery G, U without a true match`` over the rows' metrics
    that carry sizes; a size that differs between rows (SUES-200's heights, a partial
    row) is given as its range. Empty when no row has sizes."""
    rows = [m for m in metrics if "num_queries" in m]
    if not rows:
        return ""

    def span(key: str, default: Any = None) -> str:
        values = {m.get(key, default) for m in rows}
        if len(values) > 1 and all(isinstance(v, int | float) for v in values):
            return f"{min(values)}–{max(values)}"
        return str(min(values, key=str))

    return (f"{direction}: {span('num_queries')} queries, gallery {span('gallery_size')}, "
            f"{span('queries_without_match', 0)} without a true match")


def metrics_description(mf: MetricsFile) -> str:
    """A line naming what was evaluated and how."""
    r = mf.report
    parts = [f"{mf.path}", f"protocol {r.get('protocol', '?')}", f"embedder {r.get('embedder', '?')}",
             f"flip TTA {r.get('flip_tta', '?')}"]
    if mf.weather:
        w = mf.weather
        parts.append("weather " + ", ".join(f"{k}={v}" for k, v in w.items() if k != "conditions"))
    return " · ".join(parts)


def weather_bars(mf: MetricsFile) -> list[str]:
    """Per-direction bar charts of R@1 and AP per condition (means excluded, drawn as
    their own category at the end when present)."""
    out = []
    rows = mf.rows
    label = str(mf.report.get("subset_label", ""))
    for direction in dict.fromkeys(r.get("direction") for r in rows):
        sel = [r for r in rows if r.get("direction") == direction]
        cats = [row_name(r, label) for r in sel]
        series = {key: [_num(r.get("metrics", {}).get(key)) for r in sel] for key in ("R@1", "AP")}
        out.append(bar_chart(cats, series, title=f"{direction}: R@1 and AP per condition",
                             y_label="%", width=560, height=250))
    return out


def _num(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def invariance_charts(mf: MetricsFile) -> list[str]:
    """Bars of the ``invariance`` section of ``metrics.json`` (written by ``mcgf evaluate``
    since the weather-invariance probes exist): per condition the clean–weathered cosine
    beside its other-location baseline, and the condition probe's recall per condition
    and overall accuracy against the chance line. Empty for files without the section."""
    section = mf.report.get("invariance")
    if not isinstance(section, dict):
        return []
    rows = [r for r in section.get("per_condition", []) if isinstance(r, dict)]
    out = []
    if rows:
        cats = [str(r.get("condition")) for r in rows]
        out.append(bar_chart(cats, {"clean–weathered": [_num(r.get("cosine")) for r in rows],
                                    "other locations": [_num(r.get("baseline")) for r in rows]},
                             title=f"cosine to the clean embedding ({section.get('folder', '?')})",
                             y_label="cosine", y_max=1.0, width=560, height=250))
    probe = section.get("probe")
    if isinstance(probe, dict) and _num(probe.get("accuracy")) is not None:
        cats = [str(r.get("condition")) for r in rows if _num(r.get("probe_recall")) is not None]
        values = [_num(r.get("probe_recall")) for r in rows if _num(r.get("probe_recall")) is not None]
        chance = _num(probe.get("chance"))
        out.append(bar_chart(
            [*cats, "all"], {"probe": [*values, _num(probe.get("accuracy"))]},
            title=f"condition probe: {probe['accuracy']:.1f} ± {_num(probe.get('accuracy_std')) or 0:.1f} %"
                  f" ({probe.get('folds', '?')} folds by location)",
            y_label="recall / accuracy %", y_max=100.0, width=560, height=250,
            references=[(chance, f"chance {chance:.0f} %")] if chance is not None else ()))
    return out


def invariance_block(mf: MetricsFile) -> list[str]:
    """The charts of :func:`invariance_charts` with how to read them (nothing without the
    section)."""
    charts = invariance_charts(mf)
    section = mf.report.get("invariance")
    if not charts or not isinstance(section, dict):
        return []
    body = [f"<h4>Weather invariance of {html.text(str(section.get('folder', '?')))} embeddings</h4>",
            html.paragraph(
                "Left: mean cosine between each image's clean embedding and its embedding under "
                "the condition, beside the mean cosine of the weathered embedding to the clean "
                "embeddings of all other locations (how similar unrelated places are). Right: "
                "a linear classifier predicting the condition from the embedding, cross-validated "
                "with folds split by location; bars are the share of each condition's images it "
                "recognises, 'all' the accuracy. Near the chance line: the embedding does not "
                "encode the weather.", "meta"),
            '<div class="charts">' + "".join(charts) + "</div>"]
    notes = section.get("notes")
    body += [html.note(str(n)) for n in notes] if isinstance(notes, list) else []
    return body


def metrics_section(metrics: Sequence[MetricsFile]) -> list[str]:
    """Tables and bars of every metrics file (the primary one first)."""
    if not metrics:
        return [html.note("No evaluation metrics found (RUN/eval/metrics.json or a metrics.json "
                          "in the run folder): run mcgf evaluate to add them.")]
    body = []
    for mf in metrics:
        body.append(f"<h3>{html.text(mf.path.parent.name or mf.path)}</h3>")
        body.append(html.paragraph(metrics_description(mf), "meta"))
        body.append(metrics_table(mf))
        notes = mf.report.get("notes")
        body += [html.note(str(n)) for n in notes] if isinstance(notes, list) else []
        body.append('<div class="charts">' + "".join(weather_bars(mf)) + "</div>")
        body += invariance_block(mf)
    body.append(html.paragraph("Metrics in percent. R@top1% is the CMC at 0-based index "
                               "round(0.01·|gallery|) (the public script's convention); AP uses "
                               "the trapezoid rule.", "meta"))
    return body


def training_section(log_csv: Path | None) -> list[str]:
    """Curves against the optimizer step from ``log.csv``, following its columns: loss
    terms, the gradient norm each term sends into the encoder, validation R@1/AP and the
    restoration branch's validation PSNR and SSIM (each chart only when it has values)."""
    if log_csv is None:
        return [html.note("No log.csv found (RUN/train/log.csv or RUN/log.csv): no training curves.")]
    try:
        cols = read_log(log_csv)
    except (OSError, ValueError, KeyError) as err:
        return [html.note(f"{log_csv} could not be read ({err}): no training curves.")]
    steps = cols.get("step")
    if not steps or all(s is None for s in steps):
        return [html.note(f"{log_csv} has no rows: no training curves.")]
    xs = [float(s) if s is not None else math.nan for s in steps]
    body = [html.paragraph(f"From {log_csv} ({len(xs)} rows).", "meta")]
    groups = column_groups(list(cols))

    def points(names: Sequence[str]) -> dict[str, tuple[list[float], list[float | None]]]:
        # Some columns are logged every few steps only: join the rows that have a value.
        out = {}
        for c in names:
            pts = [(x, v) for x, v in zip(xs, cols[c], strict=False) if v is not None]
            if pts:
                out[c] = ([x for x, _ in pts], [v for _, v in pts])
        return out

    charts = []
    charts_spec: list[tuple[str, str, str, tuple[float, float] | None, bool]] = [
        ("losses", "training losses", "loss", None, False),
        ("gradients", "gradient norm reaching the encoder, per weighted term", "L2 norm", None, False),
        ("retrieval", "validation", "%", (0.0, 100.0), True),
        ("psnr", "validation restoration PSNR", "dB", None, True),
        ("ssim", "validation restoration SSIM", "SSIM", None, True),
    ]
    for group, title, unit, y_range, markers in charts_spec:
        series = points(groups[group])
        if series:
            charts.append(line_chart(series, title=title, x_label="step", y_label=unit,
                                     y_range=y_range, markers=markers, width=560, height=250))
    body.append('<div class="charts">' + "".join(charts) + "</div>")
    if not any(points(groups[g]) for g in ("retrieval", "psnr", "ssim")):
        body.append(html.note("log.csv has no validation values (val_R@1, val_AP, "
                              "val_restore_psnr, val_restore_ssim)."))
    return body
