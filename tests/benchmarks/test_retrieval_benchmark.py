"""``benchmarks/retrieval.py`` end to end on a tiny problem, and its feature generator."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tests.benchmarks.conftest import load_script


def test_features_are_unit_rows_with_planted_duplicates() -> None:
    bench = load_script("retrieval")
    q, g, truth = bench.make_features(50, 400, 16, locations=10, duplicates=3, seed=1)
    assert q.shape == (50, 16) and g.shape == (400, 16) and truth.shape == (50,)
    assert np.allclose(np.linalg.norm(q, axis=1), 1, atol=1e-5)
    assert np.allclose(np.linalg.norm(g, axis=1), 1, atol=1e-5)
    assert len(np.unique(g, axis=0)) == 400 - 3  # three exact twins of true tiles
    assert np.mean(np.argmax(q @ g.T, axis=1) == truth) > 0.2  # chance: 1/400


def test_baselines_agree_with_brute_force() -> None:
    bench = load_script("retrieval")
    q, g, _ = bench.make_features(40, 300, 12, locations=8, duplicates=0, seed=2)
    ref = bench.reference_top10(q, g)
    assert np.array_equal(bench.per_query_loop(q, g), ref)
    assert np.array_equal(bench.torch_chunked_top10(q, g, rows=16), ref)


def test_script_runs_and_checks_every_precision(monkeypatch, capsys) -> None:
    pytest.importorskip("faiss")
    bench = load_script("retrieval")
    monkeypatch.setattr(sys, "argv", [
        "retrieval.py", "--queries", "60", "--gallery", "500", "--dim", "16", "--threads", "1",
        "--sample", "20", "--locations", "10", "--precision", "fp32,bf16", "--torch-baseline",
    ])
    bench.main()
    out = capsys.readouterr().out
    assert out.count("identical to float64 brute force on 20 sampled queries: 100.0%") == 2
    assert "faiss flat / mcgf exact (fp32)" in out and "torch fp32 / mcgf exact (bf16)" in out


@pytest.mark.parametrize("option", [["--queries", "0"], ["--dim", "0"], ["--threads", "0"],
                                    ["--sample", "-1"], ["--gallery", "5"],
                                    ["--locations", "0"], ["--precision", "fp32,foo"]])
def test_bad_options_are_one_line_before_anything_runs(option, monkeypatch, capsys) -> None:
    bench = load_script("retrieval")
    monkeypatch.setattr(sys, "argv", ["retrieval.py", *option])
    with pytest.raises(SystemExit) as stop:
        bench.main()
    assert stop.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "retrieval.py: error: --" in captured.err
