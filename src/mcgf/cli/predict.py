"""``mcgf predict``: University-160k(-WX) challenge answer (answer.txt + answer.zip) and scoring."""

from __future__ import annotations

import argparse
import json
import os

from mcgf.cli.evaluate import (
    add_embedder_options,
    add_extract_options,
    embedder_from_args,
    extract_options_from_args,
)
from mcgf.cli.options import int_option
from mcgf.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="write a University-160k(-WX) challenge answer (answer.txt, answer.zip)",
        description="Embed the 160k queries and gallery, search the 10 best tiles of every query "
        "and write OUT/answer.txt (names-file order, 10 gallery names without extension) and "
        "OUT/answer.zip, after validating them. With --ground-truth the answer is scored "
        "(R@1, R@5, R@10, AP); --score-only ANSWER scores an existing answer file. "
        "See docs/evaluation.md.",
    )
    parser.add_argument("root", nargs="?", metavar="ROOT",
                        help="University-160k(-WX) folder holding query_drone*/, "
                             "query_drone_name.txt and gallery_satellite_160k/")
    parser.add_argument("--queries", default=None, help="query image folder (overrides ROOT)")
    parser.add_argument("--names", default=None, help="query names file (overrides ROOT)")
    parser.add_argument("--gallery", default=None, help="gallery image folder (overrides ROOT)")
    parser.add_argument("--out", default="prediction", help="output folder (default ./prediction)")
    parser.add_argument("--separator", choices=("tab", "space"), default="tab",
                        help="separator of the 10 names on a line (default tab, as the official script)")
    parser.add_argument("--backend", choices=("auto", "exact", "faiss-flat", "faiss-ivf"), default="auto",
                        help="top-10 search: auto (default), exact (certified exact), faiss-flat, "
                             "faiss-ivf (approximate)")
    parser.add_argument("--threads", default=None, help="search threads (default: PyTorch's)")
    parser.add_argument("--ground-truth", default=None, metavar="FILE",
                        help="'<query name>\\t<true gallery stem>' per line: score the answer")
    parser.add_argument("--score-only", default=None, metavar="ANSWER",
                        help="score this answer.txt/answer.zip against --ground-truth; no prediction")
    add_embedder_options(parser)
    add_extract_options(parser)
    parser.set_defaults(func=run)


def _print_score(score: object) -> None:
    d = score.as_dict()  # type: ignore[attr-defined]
    print(f"R@1 {d['R@1']:.2f}  R@5 {d['R@5']:.2f}  R@10 {d['R@10']:.2f}  AP {d['AP']:.2f}  "
          f"({d['num_queries']} queries)")


def run(args: argparse.Namespace) -> int:
    from mcgf.evaluation.challenge import (
        PREDICTION_JSON,
        SCORE_JSON,
        find_160k_layout,
        find_names_file,
        predict,
        score_answer,
        true_stems,
    )
    from mcgf.fileio import write_json_atomic

    if args.score_only is not None:
        if args.ground_truth is None:
            raise UserError("--score-only needs --ground-truth FILE")
        names_file = args.names
        if names_file is None and args.root is not None:
            # The answer's lines follow ROOT's names file (found where a prediction finds
            # it); without it the ground truth's order would be taken for the names-file order.
            names_file = find_names_file(args.root)
        score = score_answer(args.score_only, args.ground_truth, names_file=names_file)
        _print_score(score)
        return 0

    if args.root is not None:
        queries, names, gallery = find_160k_layout(args.root, queries=args.queries,
                                                   names=args.names, gallery=args.gallery)
    else:
        queries, names, gallery = args.queries, args.names, args.gallery
    missing = [opt for opt, v in (("--queries", queries), ("--names", names), ("--gallery", gallery))
               if v is None]
    if missing:
        raise UserError(f"give ROOT or {', '.join(missing)}")
    threads = None if args.threads is None else int_option(args.threads, "--threads")
    if args.ground_truth is not None:
        true_stems(args.ground_truth, names)  # its errors before hours of embedding
    embedder = embedder_from_args(args)
    options = extract_options_from_args(args, args.out)
    result = predict(queries, names, gallery, embedder, args.out, separator=args.separator,
                     backend=args.backend, threads=threads, options=options)
    stats = result.search_stats
    print(f"{result.num_queries} queries x {result.gallery_size} gallery images; "
          f"search {stats.get('backend')} in {float(stats.get('seconds', 0.0)):.1f}s")
    print(f"wrote {result.answer_txt} and {result.answer_zip}")
    if args.ground_truth is not None:
        score = score_answer(result.answer_txt, args.ground_truth, names_file=names)
        _print_score(score)
        write_json_atomic(os.path.join(args.out, SCORE_JSON),
                          {"embedder": embedder.identity, **score.as_dict()})
    else:
        write_json_atomic(os.path.join(args.out, PREDICTION_JSON),
                          {"embedder": embedder.identity, "queries": result.num_queries,
                           "gallery": result.gallery_size,
                           "search": json.loads(json.dumps(stats, default=str))})
    return 0
