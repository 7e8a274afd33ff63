"""University-160k(-WX) challenge protocol: answer files and their scoring.

An answer (University-160k challenge format) is ``answer.txt``: one line per query in names-file order,
each the 10 best gallery names without extension, best first, separated by a tab (the
official script) or a space; LF line ends; submitted as ``answer.zip`` with
``answer.txt`` at the zip root. Both files are validated before anything is written and
written as one unit (:func:`mcgf.fileio.write_files_together`): the output folder holds
the old pair or the new pair, never a partial answer or a new file beside an old
partner, and writing a new answer removes the reports of the old one
(:data:`ANSWER_REPORTS`).

:func:`score_answer` scores any answer file against a ground-truth file
(``<query file name>\\t<true gallery stem>`` per line, as written by ``mcgf synth``):
R@1, R@5, R@10 and the trapezoid AP with a single true item per query (the true item at
rank ``r`` scores ``1/(2(r+1))``, 1 at rank 0, and 0 when it is not among the 10).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mcgf.data.layout import without_image_extension
from mcgf.errors import UserError
from mcgf.fileio import write_files_together
from mcgf.retrieval.metrics import Summary, per_query_metrics, summarize

ANSWER_TXT = "answer.txt"
ANSWER_ZIP = "answer.zip"
#: Files ``mcgf predict`` writes about an answer: removed when a new answer replaces it.
SCORE_JSON = "score.json"
PREDICTION_JSON = "prediction.json"
ANSWER_REPORTS: tuple[str, ...] = (SCORE_JSON, PREDICTION_JSON)
ANSWER_LENGTH = 10
SEPARATORS = {"tab": "\t", "space": " "}
#: A fixed timestamp keeps answer.zip byte-identical for identical answers.
_ZIP_TIME = (2024, 1, 1, 0, 0, 0)


def answer_rows(indices: np.ndarray, gallery_stems: Sequence[str]) -> list[list[str]]:
    """Gallery names of each query's top-``k`` indices."""
    stems = np.asarray(gallery_stems, dtype=object)
    return [list(row) for row in stems[np.asarray(indices)]]


def validate_rows(rows: Sequence[Sequence[str]], num_queries: int,
                  gallery_stems: set[str] | None = None, *, source: str = "answer") -> None:
    """Check an answer: one line per query, 10 distinct names per line, names known.

    Raises:
        UserError: naming the first offending line.
    """
    if len(rows) != num_queries:
        raise UserError(f"{source} has {len(rows)} lines but there are {num_queries} queries "
                        "(one line per query, in names-file order)")
    for n, row in enumerate(rows, 1):
        if len(row) != ANSWER_LENGTH:
            raise UserError(f"{source} line {n} has {len(row)} names; it needs exactly {ANSWER_LENGTH}")
        if len(set(row)) != len(row):
            raise UserError(f"{source} line {n} names a gallery image twice")
        if gallery_stems is not None:
            missing = [s for s in row if s not in gallery_stems]
            if missing:
                raise UserError(f"{source} line {n} names {missing[0]!r}, which is not in the gallery")


def format_answer(rows: Sequence[Sequence[str]], separator: str = "tab") -> str:
    """The text of ``answer.txt`` (LF line ends, final newline)."""
    if separator not in SEPARATORS:
        raise UserError(f"--separator must be one of {', '.join(SEPARATORS)} (got {separator!r})")
    sep = SEPARATORS[separator]
    # Each distinct name is checked once (a gallery name recurs in many of the lines);
    # only an answer holding a bad one is searched line by line for the first.
    if any(_unwritable(s) for s in set().union(*rows)):
        for n, row in enumerate(rows, 1):
            bad = [s for s in row if _unwritable(s)]
            if bad:
                raise UserError(f"gallery name {bad[0]!r} (answer line {n}) contains whitespace; "
                                "answers cannot represent it")
    return "".join(sep.join(row) + "\n" for row in rows)


def _unwritable(name: str) -> bool:
    """Whether an answer line cannot hold ``name``: empty, or holding a separator."""
    return not name or any(c in name for c in "\t \r\n")


def zip_answer(text: str) -> bytes:
    """``answer.zip`` bytes holding ``answer.txt`` at the root (deflated, fixed timestamp)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo(ANSWER_TXT, date_time=_ZIP_TIME)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        zf.writestr(info, text.encode("utf-8"))
    return buf.getvalue()


def write_answer(out_dir: str | Path, rows: Sequence[Sequence[str]], *, num_queries: int,
                 gallery_stems: Sequence[str], separator: str = "tab") -> tuple[Path, Path]:
    """Validate ``rows`` and write ``answer.txt`` and ``answer.zip`` into ``out_dir``.

    Nothing is written unless the whole answer is valid. The two files are written as one
    unit, and the reports of an earlier answer there (:data:`ANSWER_REPORTS`) are removed
    with it: if writing fails, the earlier answer and its reports are left as they were.
    """
    validate_rows(rows, num_queries, set(gallery_stems))
    text = format_answer(rows, separator)
    blob = zip_answer(text)
    # Re-read what will be written: the zip must round-trip to the same lines.
    if parse_answer_text(_read_zip(io.BytesIO(blob), "answer.zip")) != [list(r) for r in rows]:
        raise RuntimeError("answer.zip does not round-trip; refusing to write it")
    out = Path(out_dir)
    txt_path, zip_path = out / ANSWER_TXT, out / ANSWER_ZIP
    write_files_together({txt_path: text.encode("utf-8"), zip_path: blob},
                         remove=[out / name for name in ANSWER_REPORTS])
    return txt_path, zip_path


def parse_answer_text(text: str) -> list[list[str]]:
    """Lines of an answer (tab- or space-separated; CRLF tolerated; blank lines at the end
    ignored)."""
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    return [line.split() for line in lines]


def _read_zip(source: str | Path | io.BytesIO, label: str) -> str:
    try:
        with zipfile.ZipFile(source) as zf:
            names = zf.namelist()
            if ANSWER_TXT not in names:
                raise UserError(f"{label} has no {ANSWER_TXT} at its root (it holds: "
                                f"{', '.join(names[:5]) or 'nothing'})")
            return zf.read(ANSWER_TXT).decode("utf-8-sig")  # editors may add a BOM
    except zipfile.BadZipFile:
        raise UserError(f"{label} is not a valid zip file") from None


def read_answer(path: str | Path) -> list[list[str]]:
    """Rows of an ``answer.txt`` or of the ``answer.txt`` inside an ``answer.zip``."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"answer file {p} does not exist")
    try:
        text = (_read_zip(p, str(p)) if p.suffix.lower() == ".zip"
                else p.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise UserError(f"answer file {p} is not UTF-8 text") from None
    return parse_answer_text(text)


def read_ground_truth(path: str | Path) -> list[tuple[str, str]]:
    """``(query name, true gallery stem)`` pairs of a ground-truth file, in file order."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"ground-truth file {p} does not exist") from None
    except UnicodeDecodeError:
        raise UserError(f"ground-truth file {p} is not UTF-8 text") from None
    pairs = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.strip().split("\t") if "\t" in line else line.split()
        if len(parts) != 2:
            raise UserError(f"ground-truth file {p} line {n} is not '<query name><TAB><gallery stem>'")
        # The answer holds gallery names without extension; a ground truth that spells
        # the files with theirs is read as their stems.
        pairs.append((parts[0].strip(), without_image_extension(parts[1].strip())))
    if not pairs:
        raise UserError(f"ground-truth file {p} is empty")
    return pairs


@dataclass
class AnswerScore:
    """Scores of an answer file (percent) and how many queries it covered."""

    summary: Summary
    num_queries: int

    def as_dict(self) -> dict[str, object]:
        d = self.summary.as_dict()
        return {k: d[k] for k in ("R@1", "R@5", "R@10", "AP", "num_queries")}


def true_stems(ground_truth_path: str | Path, names_file: str | Path | None = None) -> list[str]:
    """The true gallery stem of each query of ``names_file``, in its order (without it,
    the ground-truth file's order); queries are matched by name, with or without extension.

    Raises:
        UserError: the ground-truth file is missing or malformed, or lacks a query.
    """
    truth = read_ground_truth(ground_truth_path)
    if names_file is None:
        return [g for _, g in truth]
    from mcgf.data.layout import read_names_file

    names = read_names_file(names_file)
    lookup: dict[str, str] = {}
    for q, g in truth:
        lookup[q] = g
        lookup.setdefault(without_image_extension(q), g)
    keys = [n if n in lookup else without_image_extension(n) for n in names]
    missing = [n for n, k in zip(names, keys, strict=True) if k not in lookup]
    if missing:
        raise UserError(f"query {missing[0]!r} of {names_file} is not in {ground_truth_path}")
    return [lookup[k] for k in keys]


def score_answer(answer_path: str | Path, ground_truth_path: str | Path, *,
                 names_file: str | Path | None = None) -> AnswerScore:
    """Score an answer file (``.txt`` or ``.zip``) against a ground-truth file.

    Line ``i`` of the answer belongs to query ``i`` of the names file. Without
    ``names_file`` the ground-truth file's order is taken as the names-file order (true for
    files written by ``mcgf synth``); with it, queries are matched by name (with or
    without extension).

    Raises:
        UserError: if the answer is malformed or does not cover every query.
    """
    true = true_stems(ground_truth_path, names_file)
    rows = read_answer(answer_path)
    validate_rows(rows, len(true), source=str(answer_path))
    hits = np.array([[name == t for name in row] for row, t in zip(rows, true, strict=True)],
                    dtype=np.int64).reshape(len(true), ANSWER_LENGTH)
    per = per_query_metrics(hits, np.ones(len(true), np.int64), num_good=np.ones(len(true), np.int64))
    summary = summarize(per, ANSWER_LENGTH, ks=(1, 5, 10), ranking_length=ANSWER_LENGTH)
    return AnswerScore(summary, len(true))


# --------------------------------------------------------------------------- predict

GALLERY_FOLDER = "gallery_satellite_160k"
NAMES_FILE = "query_drone_name.txt"


def _split_folder(root: str | Path) -> Path:
    """``root``, or its one sub-folder holding a 160k split (a names file) when ``root``
    holds no part of one (the folder an archive was unpacked into).

    Raises:
        UserError: ``root`` is not a folder, or holds several splits.
    """
    base = Path(root)
    if not base.is_dir():
        raise UserError(f"{base} is not a folder")
    if (base / NAMES_FILE).is_file() or (base / GALLERY_FOLDER).is_dir() or any(
            p.is_dir() and p.name.startswith("query_drone") for p in base.iterdir()):
        return base
    below = sorted(p for p in base.iterdir() if p.is_dir() and (p / NAMES_FILE).is_file())
    if len(below) > 1:
        raise UserError(f"{base} holds several University-160k splits "
                        f"({', '.join(p.name for p in below)}); point at one of them")
    return below[0] if below else base


def _names_in(base: Path) -> Path:
    names = base / NAMES_FILE
    if not names.is_file():
        raise UserError(f"{base} has no {NAMES_FILE}; give --names")
    return names


def find_names_file(root: str | Path) -> Path:
    """The names file of the University-160k(-WX) split at ``root``, or in its one
    sub-folder holding a split (as :func:`find_160k_layout` finds it).

    Raises:
        UserError: ``root`` is not a folder, or no names file is there.
    """
    return _names_in(_split_folder(root))


def find_160k_layout(root: str | Path, *, queries: str | Path | None = None,
                     names: str | Path | None = None, gallery: str | Path | None = None
                     ) -> tuple[Path, Path, Path]:
    """``(query folder, names file, gallery folder)`` of a University-160k(-WX) folder.

    The query folder is the one subfolder whose name starts with ``query_drone``
    (``query_drone_160k_wx_24``, ``query_drone160k``, ...); a ``root`` holding no part of
    a split may hold one in a sub-folder (the only one with a names file). ``queries``, ``names`` and
    ``gallery`` override their part: ``root`` is not searched for a part that is given
    (e.g. a root with both the 2023 and the 2024 query folders and ``queries`` naming one).
    """
    base = _split_folder(root)
    if queries is None:
        found = sorted(p for p in base.iterdir() if p.is_dir() and p.name.startswith("query_drone"))
        if len(found) != 1:
            listed = ", ".join(p.name for p in found) or "none"
            raise UserError(f"{base} must hold exactly one query_drone* folder (found: {listed}); "
                            "name the query folder with --queries")
        queries = found[0]
    if names is None:
        names = _names_in(base)
    if gallery is None:
        gallery = base / GALLERY_FOLDER
        if not gallery.is_dir():
            raise UserError(f"{base} has no {GALLERY_FOLDER}/ folder; give --gallery")
    return Path(queries), Path(names), Path(gallery)


@dataclass
class Prediction:
    """What :func:`predict` produced."""

    answer_txt: Path
    answer_zip: Path
    num_queries: int
    gallery_size: int
    search_stats: dict[str, object]


def predict(queries_dir: str | Path, names_file: str | Path, gallery_dir: str | Path,
            embedder: object, out_dir: str | Path, *, separator: str = "tab",
            backend: str = "auto", threads: int | None = None, options: object = None
            ) -> Prediction:
    """Embed queries and gallery, search the top 10 and write a validated answer.

    Args:
        queries_dir, names_file, gallery_dir: the 160k layout (names fix the line order).
        embedder: see :mod:`mcgf.models.registry`.
        out_dir: where ``answer.txt`` and ``answer.zip`` go.
        separator: ``"tab"`` (official) or ``"space"``.
        backend: search backend (:data:`mcgf.retrieval.search.BACKENDS`).
        threads: search threads (``None``: PyTorch's setting).
        options: :class:`mcgf.evaluation.university.ExtractOptions` for feature extraction.
    """
    from mcgf.data.layout import UNKNOWN_LABEL, ImageRecord, load_flat_gallery, load_flat_queries
    from mcgf.evaluation.features import extract_features, for_view
    from mcgf.evaluation.university import ExtractOptions
    from mcgf.retrieval.search import topk_search

    if separator not in SEPARATORS:
        raise UserError(f"--separator must be one of {', '.join(SEPARATORS)} (got {separator!r})")
    opts = options if isinstance(options, ExtractOptions) else ExtractOptions()
    if opts.on_bad_image != "stop":
        raise UserError("--on-bad-image skip cannot be used with predict: every query needs an answer line")
    qset = load_flat_queries(queries_dir, names_file)
    gallery = load_flat_gallery(gallery_dir)
    if len(gallery.paths) < ANSWER_LENGTH:
        raise UserError(f"gallery {gallery_dir} has {len(gallery.paths)} images; an answer needs {ANSWER_LENGTH}")

    def extract(paths: Sequence[Path], desc: str, view: str) -> np.ndarray:
        records = [ImageRecord(p, UNKNOWN_LABEL, desc) for p in paths]
        return extract_features(
            records, for_view(embedder, view), batch_size=opts.batch_size, flip=opts.flip,  # type: ignore[arg-type]
            device=opts.device, num_workers=opts.num_workers, cache_dir=opts.cache_dir,
            progress=opts.progress, desc=desc,
        ).features

    # University-160k: drone queries against satellite tiles.
    gf = extract(gallery.paths, "gallery", "satellite")
    qf = extract(qset.paths, "queries", "drone")
    result = topk_search(qf, gf, ANSWER_LENGTH, backend=backend, threads=threads)
    if (result.indices < 0).any():
        raise UserError(f"search backend {backend!r} returned fewer than {ANSWER_LENGTH} "
                        "results for some queries (raise nprobe or use backend 'exact')")
    stems = gallery.stems
    rows = answer_rows(result.indices, stems)
    txt, zp = write_answer(out_dir, rows, num_queries=len(qset.names), gallery_stems=stems,
                           separator=separator)
    return Prediction(txt, zp, len(qset.names), len(stems), dict(result.stats))
