"""distinct_rows: the hash pre-check never changes its answer."""

from __future__ import annotations

import numpy as np
import pytest

from mcgf.retrieval.ranking import distinct_rows


def _by_sorting(features: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    rows = np.ascontiguousarray(features)
    if rows.ndim != 2 or rows.shape[0] < 2 or rows.shape[1] == 0:
        return None
    rows = rows + rows.dtype.type(0)
    keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    _, first, which = np.unique(keys, return_index=True, return_inverse=True)
    return None if first.shape[0] == rows.shape[0] else (first, which.reshape(-1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int64, np.uint8])
def test_distinct_rows_is_the_sorted_unique_of_the_rows(dtype: type) -> None:
    rng = np.random.default_rng(0)
    for case in range(40):
        n, d = int(rng.integers(0, 300)), int(rng.integers(0, 9))
        x = (rng.standard_normal((n, d)) * 3).astype(dtype)
        if case % 3 == 0 and n > 4:
            x[rng.integers(0, n, n // 3)] = x[1]  # copies
        if case % 4 == 0 and n > 2 and d:
            x[0] = 0
            if x.dtype.kind == "f":
                x[2] = -x[0]  # -0.0: the same vector
        if case % 5 == 0:
            x = np.round(x / 4)  # few distinct values
        got, want = distinct_rows(x), _by_sorting(x)
        if want is None:
            assert got is None, case
        else:
            assert got is not None and all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
    assert distinct_rows(np.zeros((3, 0), np.float32)) is None
