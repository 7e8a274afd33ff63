"""``build_report``: one static HTML page about a trained model, with pictures beside it.

Sections: evaluation metrics and per-weather bars (from ``metrics.json``), training
curves (``log.csv``), top-5 match grids in both directions under the ten weather
conditions, similarity heatmaps, restoration previews and R@1 against the drone's pose.
The report is written to a temporary sibling folder and swapped into place, so an
earlier report stays intact until the new one is complete.
"""

from __future__ import annotations

import shutil
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mcgf.data.layout import ImageRecord
from mcgf.data.layouts import TestFolders
from mcgf.data.transforms import Preprocess
from mcgf.errors import UserError
from mcgf.fileio import replace_dir
from mcgf.models import load_embedder
from mcgf.models.restore_api import has_restoration, max_steps, missing_restoration
from mcgf.panels import fit_square
from mcgf.reporting import html
from mcgf.reporting.drawing import COLOURS, GridLayout, GridRow, Tile, draw_grid, overlay_heat
from mcgf.reporting.featurestore import FeatureStore
from mcgf.reporting.grids import (
    GridSet,
    drone_to_satellite,
    render_grid,
    satellite_to_drone,
)
from mcgf.reporting.heatmaps import NoGradient, similarity_saliency
from mcgf.reporting.posture import posture_axes, posture_curves, top1_correct
from mcgf.reporting.restoration import restoration_preview
from mcgf.reporting.sections import metrics_section, training_section
from mcgf.reporting.sources import MetricsFile, RunInputs, resolve_run
from mcgf.reporting.svg import line_chart
from mcgf.runtime import resolve_device, torch_threads
from mcgf.weather import CLEAN, CONDITIONS

IMG = "img"


@dataclass
class ReportContext:
    """What every section shares while the report is built."""

    inputs: RunInputs
    folder: Path  # the temporary report folder
    data: TestFolders  # the test set shown (the first of a layout with several)
    store: FeatureStore
    model: Any
    device: Any
    tile: int
    conditions: tuple[str, ...]
    log: Callable[[str], None]
    compute_weather: bool = False
    _native: dict[tuple[Path, str], np.ndarray] = field(default_factory=dict)
    _shown: dict[tuple[Path, str], np.ndarray] = field(default_factory=dict)

    #: Native-size images kept decoded (a query under each condition is used by its grid
    #: row and its heatmap); bounded because real drone views are 512 px.
    NATIVE_CACHE = 48

    def raw(self, record: ImageRecord) -> np.ndarray:
        """The decoded RGB image."""
        return self.weathered(record, CLEAN)

    def weathered(self, record: ImageRecord, condition: str) -> np.ndarray:
        """The image at its native size under ``condition`` (drone views only; satellite
        images are never weathered), with the same pixels as the features saw."""
        if condition != CLEAN and record.view != "drone":
            condition = CLEAN
        key = (record.path, condition)
        if key not in self._native:
            image = self.store.image(record, condition)
            if len(self._native) >= self.NATIVE_CACHE:
                self._native.pop(next(iter(self._native)))
            self._native[key] = image
        return self._native[key]

    def shown(self, record: ImageRecord, condition: str) -> np.ndarray:
        """``weathered`` scaled to the tile size (kept: tiles repeat across rows)."""
        key = (record.path, condition if record.view == "drone" else CLEAN)
        if key not in self._shown:
            self._shown[key] = fit_square(self.weathered(record, condition), self.tile)
        return self._shown[key]

    def save(self, name: str, image: np.ndarray) -> str:
        """Write ``image`` as ``img/<name>`` (JPEG or PNG by suffix); returns the relative path."""
        path = self.folder / IMG / name
        kwargs = {"quality": 88} if path.suffix.lower() in (".jpg", ".jpeg") else {"optimize": True}
        Image.fromarray(image).save(path, **kwargs)
        return f"{IMG}/{name}"


# --------------------------------------------------------------------------- queries


def pick_queries(records: Sequence[ImageRecord], queries: int | Sequence[str], seed: int,
                 matched_labels: set[int]) -> list[ImageRecord]:
    """The drone queries to show.

    Args:
        records: every drone query image (``query_drone``) of the test set shown.
        queries: a number (random distinct locations, seeded, preferring locations with a
            satellite tile in the gallery, one random view each) or keys —
            ``"<class>/<file>"`` for one image, ``"<class>"`` for a random view of it.
        seed: fixes the random choices.
        matched_labels: locations that have a true match in the satellite gallery.
    """
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[ImageRecord]] = {}
    for r in records:
        by_label.setdefault(r.path.parent.name, []).append(r)
    if isinstance(queries, int):
        if queries < 0:
            raise UserError(f"--queries must be 0 or more (got {queries})")
        names = sorted(by_label)
        preferred = [n for n in names if int(n) in matched_labels] or names
        take = rng.permutation(len(preferred))[: min(queries, len(preferred))]
        chosen = [preferred[i] for i in take]
        return [by_label[n][int(rng.integers(len(by_label[n])))] for n in chosen]
    # "<class>/<file>" names an image of the one test set shown even where keys carry a
    # prefix (SUES-200's height).
    by_key = {r.folder_key: r for r in records} | {r.key: r for r in records}
    out = []
    for key in queries:
        key = key.strip().strip("/")
        if key in by_key:
            out.append(by_key[key])
        elif key in by_label:
            views = by_label[key]
            out.append(views[int(rng.integers(len(views)))])
        else:
            example = records[0].folder_key if records else "0001/image-01.jpeg"
            raise UserError(f"--query {key!r} is not a query_drone test image: give "
                            f"'<class>/<file>' (e.g. {example}) or a class folder name")
    return list(dict.fromkeys(out))  # a query given twice is shown once


# --------------------------------------------------------------------------- sections


def grids_section(ctx: ReportContext, picked: list[ImageRecord]) -> list[str]:
    """Top-5 grids in both directions for every picked query."""
    if not picked:
        return [html.note("No query picked (--queries 0).")]
    test = ctx.data
    swatches = "".join(
        f'<span style="background:#{"".join(f"{v:02x}" for v in COLOURS[key])}">{name}</span>'
        for key, name in (("query", "query"), ("match", "true match"), ("wrong", "other location"),
                          ("unknown", "no label")))
    body = [f'<p class="legend">Frames: {swatches} Captions: location folder and cosine '
            "similarity.</p>"]
    sets: list[GridSet] = [drone_to_satellite(ctx.store, picked, test["gallery_satellite"].records(),
                                              ctx.conditions)]
    scored = {str(r.get("direction")) for m in ctx.inputs.metrics for r in m.rows}
    if ctx.inputs.metrics and "satellite->drone" not in scored:
        # Its features would be the whole drone gallery's (51,355 images in
        # University-1652), embedded for a few grid rows of a direction not evaluated.
        body.append(html.note("The evaluation scored drone → satellite only: satellite → drone "
                              "grids skipped (evaluate with --directions d2s,s2d to show them)."))
    elif "query_satellite" in test and "gallery_drone" in test:
        qs: dict[int, ImageRecord] = {}
        for r in test["query_satellite"].records():
            qs.setdefault(r.label, r)
        sat = [qs[q.label] for q in picked if q.label in qs]
        if sat:
            sets.append(satellite_to_drone(
                ctx.store, sat, test["gallery_drone"].records(), ctx.conditions,
                compute_weather=ctx.compute_weather))
    else:
        body.append(html.note("No query_satellite or gallery_drone test folder: satellite → drone "
                              "grids skipped."))
    for gs in sets:
        body.append(f"<h3>{html.text(gs.direction)}</h3>")
        if gs.direction == "drone->satellite":
            body.append(html.paragraph("Rows: the drone query rendered under each weather "
                                       "condition; columns: its five best satellite tiles "
                                       "(clean, as always).", "meta"))
        else:
            body.append(html.paragraph("Rows: the clean satellite query against the gallery drone "
                                       "views rendered under each condition; the tiles shown carry "
                                       "that weather.", "meta"))
        if gs.missing:
            body.append(html.note(
                "Rows left out (weathered gallery_drone features not in the feature cache): "
                + ", ".join(gs.missing) + ". Run mcgf evaluate --weather all on this checkpoint "
                "(same cache) or pass --compute-weather."))
        for i, grid in enumerate(gs.grids):
            tag = "d2s" if gs.direction.startswith("drone") else "s2d"
            query = grid.lines[0].query
            picture = render_grid(grid, ctx.shown, layout=GridLayout(tile=ctx.tile))
            src = ctx.save(f"grid-{tag}-{i + 1:02d}-{query.path.parent.name}.jpg", picture)
            hits = sum(line.is_match[0] for line in grid.lines if line.is_match)
            body.append(html.figure(
                src, f"{query.key}: top-1 correct in {hits} of {len(grid.lines)} rows",
                f"{gs.direction} grid of {query.key}",
                picture.shape[1], picture.shape[0]))
    return body


def heatmap_section(ctx: ReportContext, picked: list[ImageRecord], batch: int = 16) -> list[str]:
    """Similarity saliency of each picked drone query (under each condition) and its true
    satellite tile."""
    if ctx.model is None or not callable(getattr(ctx.model, "embed", None)):
        return [html.note("The embedder exposes no model.embed(images, view): heatmaps skipped.")]
    tiles: dict[int, ImageRecord] = {}
    for r in ctx.data["gallery_satellite"].records():
        tiles.setdefault(r.label, r)
    shown = [q for q in picked if q.label in tiles]
    pairs = [(q, c) for q in shown for c in ctx.conditions]
    body = [html.paragraph(
        "|gradient × input| of the cosine similarity between the drone query (under each "
        "condition) and its true satellite tile, through the retrieval forward path "
        "(model.embed, with flip TTA), summed over colour channels, blurred and scaled per "
        "image. Red: pixels that raise the match score most. Columns: the condition of the "
        "drone query; captions: the pair's cosine similarity.", "meta")]
    skipped = [q.key for q in picked if q.label not in tiles]
    if skipped:
        body.append(html.note("No true satellite tile for " + ", ".join(skipped) + ": no heatmap."))
    if not pairs:
        return body
    try:
        qm, mm, sim = _saliency_maps(ctx, pairs, tiles, batch)
    except NoGradient as err:
        return [*body, html.note(f"No heatmaps: {err}, so the similarity cannot be traced "
                                 "back to pixels.")]
    n = len(ctx.conditions)
    for i, q in enumerate(shown):
        sat = ctx.shown(tiles[q.label], CLEAN)
        drone_row, sat_row = [], []
        for j, cond in enumerate(ctx.conditions):
            k = i * n + j
            drone_row.append(Tile(overlay_heat(ctx.shown(q, cond), qm[k]), "none", f"cos {sim[k]:.3f}"))
            sat_row.append(Tile(overlay_heat(sat, mm[k]), "none"))
        rows = [GridRow("drone", drone_row), GridRow("satellite", sat_row)]
        picture = draw_grid(rows, headers=list(ctx.conditions),
                            layout=GridLayout(tile=ctx.tile, border=1, label_width=70, split_after=None))
        src = ctx.save(f"heatmap-{i + 1:02d}-{q.path.parent.name}.jpg", picture)
        body.append(html.figure(src, f"{q.key} and satellite tile {tiles[q.label].key}",
                                f"heatmaps {q.key}", picture.shape[1], picture.shape[0]))
    return body


def _saliency_maps(ctx: ReportContext, pairs: list[tuple[ImageRecord, str]],
                   tiles: dict[int, ImageRecord], batch: int) -> tuple[np.ndarray, ...]:
    """Saliency maps of the drone queries and of their true tiles, and the similarities,
    of every (query, condition) pair, ``batch`` pairs per pass."""
    prep = Preprocess.for_embedder(ctx.model)
    q_maps, m_maps, sims = [], [], []
    for start in range(0, len(pairs), batch):
        chunk = pairs[start: start + batch]
        xq = torch.stack([prep(Image.fromarray(ctx.weathered(q, c))) for q, c in chunk]).to(ctx.device)
        xm = torch.stack([prep(Image.fromarray(ctx.raw(tiles[q.label]))) for q, _ in chunk]).to(ctx.device)
        a, b, s = similarity_saliency(ctx.model, xq, "drone", xm, "satellite", flip=ctx.store.flip)
        q_maps.append(a.numpy())
        m_maps.append(b.numpy())
        sims.append(s.numpy())
    return np.concatenate(q_maps), np.concatenate(m_maps), np.concatenate(sims)


def restoration_section(ctx: ReportContext, picked: list[ImageRecord], steps: int) -> list[str]:
    """weathered | restored | clean for each condition, for each picked query."""
    if ctx.model is None or not has_restoration(ctx.model):
        why = "has no restoration branch" if ctx.model is None else missing_restoration(ctx.model)
        return [html.note(f"This checkpoint {why}: no restoration previews.")]
    body = [html.paragraph(
        f"Each row: the drone query under a condition | what the diffusion restoration branch "
        f"makes of it ({steps} DDIM steps, seed {ctx.store.weather_seed}) | the clean image. "
        "The branch works at its own (small) resolution, so restored panels are blurrier than "
        "the inputs.", "meta")]
    figures = []
    for i, q in enumerate(picked):
        picture = restoration_preview(ctx.model, ctx.raw(q), conditions=ctx.conditions, steps=steps,
                                      seed=ctx.store.weather_seed, key=q.key,
                                      dark_variant=ctx.store.dark_variant, device=ctx.device,
                                      tile=ctx.tile * 7 // 8)  # four previews fit side by side
        src = ctx.save(f"restore-{i + 1:02d}-{q.path.parent.name}.jpg", picture)
        figures.append(html.figure(src, q.key,
                                   f"restoration {q.key}", picture.shape[1], picture.shape[0]))
    body.append('<div class="charts">' + "".join(figures) + "</div>")
    return body


def posture_section(ctx: ReportContext, compute_weather: bool) -> list[str]:
    """R@1 (drone → satellite) per bin of heading / altitude / image index."""
    test = ctx.data
    queries = test["query_drone"].records()
    source, axes = posture_axes(queries, ctx.inputs.data_root)
    if not axes:
        return [html.note(f"R@1 against the pose left out: {source}.")]
    gallery = test["gallery_satellite"].records()
    glabels = np.array([r.label for r in gallery], np.int64)
    qlabels = np.array([r.label for r in queries], np.int64)
    g = ctx.store.get(gallery, "satellite", desc="gallery_satellite")
    assert g is not None
    correct: dict[str, np.ndarray] = {}
    per_condition = []
    missing = []
    for cond in ctx.conditions:
        f = ctx.store.get(queries, "drone", cond, compute=cond == CLEAN or compute_weather,
                          desc="query_drone")
        if f is None:
            missing.append(cond)
            continue
        per_condition.append(top1_correct(f, qlabels, g, glabels))
        if cond == CLEAN:
            correct["clean"] = per_condition[-1]
    weathered = len(per_condition) - (1 if "clean" in correct else 0)
    if weathered > 0:
        correct[f"mean over {len(per_condition)} conditions"] = np.stack(per_condition)
    curves = posture_curves(axes, correct)
    body = [html.paragraph(f"R@1 (drone → satellite, {len(queries)} queries) per bin of the "
                           f"drone's pose; {source}. Per-query correctness is the evaluation's R@1 "
                           "of the query (a true match ranked first). Bins with no query are gaps.",
                           "meta")]
    if missing:
        body.append(html.note("Weather conditions without cached query features, left out of the "
                              "mean: " + ", ".join(missing) + " (run mcgf evaluate --weather all "
                              "or pass --compute-weather)."))
    charts = []
    for curve in curves:
        xs = list(range(len(curve.axis.bin_labels)))
        series = {name: (xs, rate) for name, rate in curve.series.items()}
        labels = [(x, f"{lab}\nn={int(c)}") for x, lab, c in
                  zip(xs, curve.axis.bin_labels, curve.counts, strict=True)]
        charts.append(line_chart(series, title=f"R@1 vs {curve.axis.name}", x_label=curve.axis.label,
                                 y_label="R@1 %", x_ticks=labels, x_range=(-0.5, len(xs) - 0.5),
                                 markers=True, width=max(560, 70 * len(xs) + 180)))
    body.append('<div class="charts">' + "".join(charts) + "</div>")
    return body


# --------------------------------------------------------------------------- entry point


def _pick_primary(metrics: list[MetricsFile], checkpoint_identity: str) -> MetricsFile | None:
    """The metrics file of this checkpoint when there is one, else the first.

    ``checkpoint_identity`` is the embedder's view-independent identity
    (:attr:`~mcgf.models.checkpoint_embedder.CheckpointEmbedder.base_identity`); a metrics
    file of a model with one encoder per view names a view after it.
    """
    for mf in metrics:
        if str(mf.report.get("embedder", "")).startswith(checkpoint_identity):
            return mf
    return metrics[0] if metrics else None


def weather_notes(metrics: list[MetricsFile], store: FeatureStore) -> list[str]:
    """A note for each evaluation whose weathered images the pictures do not show: the
    pictures render the weather on the fly, which is not what a pre-rendered evaluation
    (``mcgf evaluate --wx-dir``) scored."""
    out = []
    for mf in metrics:
        if mf.weather.get("mode") == "pre-rendered":
            out.append(f"{mf.path} scores pre-rendered weathered images ({mf.weather.get('folder', '?')}); "
                       "the pictures render the weather on the fly (seed "
                       f"{store.weather_seed}, dark variant {store.dark_variant}), so their "
                       "weathered images are not the ones its rows scored.")
    return out


def _caches(inputs: RunInputs, cache_dir: str | Path | None) -> list[Path]:
    if cache_dir is not None:
        return [Path(cache_dir)]
    out = [inputs.run_dir / "eval" / "feature-cache"]
    out += [m.path.parent / "feature-cache" for m in inputs.metrics]
    out = [p for p in dict.fromkeys(out) if p.is_dir()]
    return out or [inputs.run_dir / "feature-cache"]


def build_report(
    run_dir: str | Path,
    *,
    data_root: str | Path | None = None,
    checkpoint: str | Path | None = None,
    out: str | Path | None = None,
    queries: int | Sequence[str] = 4,
    seed: int = 0,
    heatmaps: bool = True,
    device: str | None = None,
    progress: bool = True,
    weather_seed: int | None = None,
    dark_variant: str | None = None,
    compute_weather: bool = False,
    cache_dir: str | Path | None = None,
    restore_steps: int = 25,
    tile: int = 96,
    threads: int | None = None,
    batch_size: int = 32,
    layout: str | None = None,
) -> Path:
    """Build the HTML report of a run; returns the path of ``index.html``.

    Args:
        run_dir: the demo's output folder or a ``mcgf train`` run folder.
        data_root: the dataset (default: ``RUN/data``, the dataset of ``metrics.json``,
            or the checkpoint's training ``data.root``). Of a layout with several test
            sets (SUES-200's heights) the pictures show the first; the metrics, all.
        checkpoint: the checkpoint folder (default ``RUN/train/last`` or ``RUN/last``).
        out: the report folder (default ``RUN/report``); replaced atomically. It must be
            new, empty or an earlier report (a file or a folder of other files is refused).
        queries: how many random drone queries to show, or their keys
            (``"<class>/<file>"`` or ``"<class>"``).
        seed: fixes the random choice of queries.
        heatmaps: draw the saliency heatmaps (one forward and backward pass per pair).
        device: ``"auto"``/``None`` (GPU if present), ``"cpu"``, ``"cuda"``, ...
        progress: print stages and progress bars on stderr.
        weather_seed, dark_variant: the on-the-fly weather (default: those of the
            evaluation's ``metrics.json``, else seed 0 and the training ``dark``).
        compute_weather: embed weathered folders the feature cache lacks (as costly as an
            evaluation) instead of leaving those conditions out.
        cache_dir: feature cache folder (default: the evaluation's cache, else ``RUN/feature-cache``).
        restore_steps: DDIM steps of the restoration previews.
        tile: side of a picture tile in px.
        threads: torch intra-op threads. ``None``: 1 on a CPU device — the report runs
            small batches, where a thread team gains little and, on a CPU shared with other
            work, loses a lot (5× slower measured with 2 threads on a busy 2-core machine);
            torch's default on a GPU.
        batch_size: images per forward pass when features are computed.
        layout: the dataset layout (default: the run's, else detected from the folders).

    Raises:
        UserError: a missing run folder, checkpoint or dataset, or a bad option.
    """
    t0 = time.perf_counter()
    log = _stderr_log if progress else _no_log
    _check_sizes(tile, restore_steps)
    run = Path(run_dir)
    dest = Path(out) if out is not None else run / "report"
    _check_dest(dest)
    inputs = resolve_run(run, data_root=data_root, checkpoint=checkpoint, out=dest, layout=layout)
    dev = resolve_device(device)
    data = _shown_test_set(inputs)
    log(f"report of {run}: checkpoint {inputs.checkpoint}, data {inputs.data_root}")
    with torch_threads(_thread_count(threads, dev)):
        embedder = load_embedder(str(inputs.checkpoint), device=str(dev))
        _check_restore_steps(getattr(embedder, "model", None), restore_steps)
        store = _feature_store(inputs, embedder, dev, cache_dir=cache_dir, weather_seed=weather_seed,
                               dark_variant=dark_variant, batch_size=batch_size, progress=progress,
                               log=log)
        page = _PageOptions(run, queries, seed, heatmaps, restore_steps, t0)

        def write(folder: Path) -> None:
            ctx = ReportContext(inputs, folder, data, store, getattr(embedder, "model", None), dev,
                                tile, CONDITIONS, log, compute_weather)
            (folder / "index.html").write_text(_page(ctx, page), encoding="utf-8")

        _write_folder(dest, write)
    log(f"report written to {dest / 'index.html'} in {time.perf_counter() - t0:.1f} s")
    return dest / "index.html"


def _stderr_log(msg: str) -> None:
    """Progress of the report, on stderr."""
    print(msg, file=sys.stderr, flush=True)


def _no_log(msg: str) -> None:
    """No progress output."""


def _check_sizes(tile: int, restore_steps: int) -> None:
    """A :class:`UserError` for a tile or a restoration step count the report cannot use."""
    if tile < 32:
        raise UserError(f"tile must be at least 32 px (got {tile})")
    if restore_steps < 1:
        raise UserError(f"restore steps must be at least 1 (got {restore_steps})")


def _check_restore_steps(model: Any, restore_steps: int) -> None:
    """A :class:`UserError` for more restoration steps than the branch's schedule has,
    raised before the pictures are drawn rather than half-way through them."""
    if has_restoration(model) and restore_steps > max_steps(model):
        raise UserError(f"restore steps must be at most {max_steps(model)} (the restoration "
                        f"schedule's training timesteps; got {restore_steps})")


def _shown_test_set(inputs: RunInputs) -> TestFolders:
    """The test set the pictures show: the first with drone queries (a note names it when
    the layout has several).

    Raises:
        UserError: it lacks ``query_drone`` or ``gallery_satellite``.
    """
    assert inputs.dataset is not None
    sets = [ts for ts in inputs.dataset.test_sets() if ts.has("query_drone")]
    data = inputs.dataset.read_test(sets[0])
    for name in ("query_drone", "gallery_satellite"):
        data.folder(name)  # a one-line UserError when absent
    if len(sets) > 1:
        names = ", ".join(ts.name for ts in sets)
        rest = (f"the metrics cover every {inputs.dataset.subset_label} ({names})"
                if inputs.metrics else f"it has a test set per {inputs.dataset.subset_label} ({names})")
        inputs.notes.append(
            f"Pictures: the {inputs.dataset.subset_title(sets[0].name)} test set of "
            f"{inputs.dataset.title} ({sets[0].base}); {rest}.")
    return data


def _thread_count(threads: int | None, dev: Any) -> int | None:
    """The torch intra-op threads of the report (see :func:`build_report`'s ``threads``)."""
    if threads is None and dev.type == "cpu":
        threads = 1
    if threads is not None and threads < 1:
        raise UserError(f"threads must be at least 1 (got {threads})")
    return threads


def _feature_store(inputs: RunInputs, embedder: Any, dev: Any, *, cache_dir: str | Path | None,
                   weather_seed: int | None, dark_variant: str | None, batch_size: int,
                   progress: bool, log: Callable[[str], None]) -> FeatureStore:
    """The features of the report, with the flip TTA and on-the-fly weather of this
    checkpoint's evaluation unless the options say otherwise."""
    primary = _pick_primary(inputs.metrics, embedder.base_identity)
    weather = primary.weather if primary is not None and primary.weather.get("mode") == "on-the-fly" else {}
    return FeatureStore(
        embedder, _caches(inputs, cache_dir),
        flip=bool(primary.report.get("flip_tta", True)) if primary is not None else True,
        weather_seed=int(weather_seed if weather_seed is not None
                         else weather.get("seed", FeatureStore.weather_seed)),
        # With no on-the-fly weather recorded, the store's defaults (mcgf evaluate --weather's).
        dark_variant=str(dark_variant or weather.get("dark_variant", FeatureStore.dark_variant)),
        weather_jpeg=weather.get("jpeg_quality") if weather else FeatureStore.weather_jpeg,
        device=str(dev), batch_size=batch_size, progress=progress, log=log,
    )


def _check_dest(dest: Path) -> None:
    """Refuse a report folder ``dest`` that the swap into place would take away: a file,
    or a folder holding anything but an earlier report (``index.html`` and ``img/``).

    Raises:
        UserError: naming ``dest``.
    """
    if (dest.exists() or dest.is_symlink()) and not dest.is_dir():
        raise UserError(f"--out {dest} exists and is not a folder: choose another report folder")
    if not dest.is_dir():
        return
    names = {p.name for p in dest.iterdir()}
    if names and ("index.html" not in names or not names <= {"index.html", IMG}):
        raise UserError(f"--out {dest} is not a report folder (it holds "
                        f"{', '.join(sorted(names)[:3])}{', ...' if len(names) > 3 else ''}), and "
                        "the report replaces its folder: choose a new or empty folder or an "
                        "earlier report's")


def _write_folder(dest: Path, write: Callable[[Path], None]) -> None:
    """Let ``write`` fill a temporary sibling of ``dest`` (with an empty ``img/``), then
    swap it into place; on any failure the temporary folder is removed and ``dest`` is
    left as it was."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    (tmp / IMG).mkdir(parents=True)
    try:
        write(tmp)
        replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@dataclass(frozen=True)
class _PageOptions:
    """What the page shows, as :func:`build_report` was asked (``t0``: when it started)."""

    run: Path
    queries: int | Sequence[str]
    seed: int
    heatmaps: bool
    restore_steps: int
    t0: float


def _page(ctx: ReportContext, opts: _PageOptions) -> str:
    """The HTML page: header, then every section (their pictures written on the way)."""
    data, store, inputs, t0 = ctx.data, ctx.store, ctx.inputs, opts.t0
    picked = pick_queries(data["query_drone"].records(), opts.queries, opts.seed,
                          set(data["gallery_satellite"].labels()))
    sections: list[tuple[str, str, list[str]]] = [
        ("metrics", "Evaluation metrics", metrics_section(inputs.metrics)),
    ]
    ctx.log(f"[1/4] match grids ({time.perf_counter() - t0:.1f} s)")
    sections.append(("grids", "Top-5 matches under each weather", grids_section(ctx, picked)))
    ctx.log(f"[2/4] heatmaps ({time.perf_counter() - t0:.1f} s)")
    sections.append(("heatmaps", "Where the model looks",
                     heatmap_section(ctx, picked) if opts.heatmaps
                     else [html.note("Heatmaps turned off (--no-heatmaps).")]))
    ctx.log(f"[3/4] restoration previews ({time.perf_counter() - t0:.1f} s)")
    sections.append(("restoration", "Restoration previews",
                     restoration_section(ctx, picked, opts.restore_steps)))
    ctx.log(f"[4/4] posture analysis ({time.perf_counter() - t0:.1f} s)")
    sections.append(("posture", "R@1 against the drone's pose",
                     posture_section(ctx, ctx.compute_weather)))
    sections.append(("training", "Training curves", training_section(inputs.log_csv)))
    header = [html.paragraph(
        f"Run {opts.run} · checkpoint {inputs.checkpoint} · data {inputs.data_root} · "
        f"weather seed {store.weather_seed}, dark variant {store.dark_variant} · flip TTA "
        f"{store.flip} · queries picked with seed {opts.seed}", "meta")]
    header += [html.note(n) for n in inputs.notes]
    header += [html.note(n) for n in weather_notes(inputs.metrics, store)]
    if store.computed:
        header.append(html.paragraph("Features computed for this report (not found in the "
                                     "feature cache): " + ", ".join(store.computed), "meta"))
    return html.page(f"mcgf report: {opts.run.resolve().name}", header,
                     [(a, t, html.section(a, t, b)) for a, t, b in sections])
