"""The candidate GEMMs run at nominal precision whatever the process-wide torch settings."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from mcgf.retrieval.candidates import Fp32Scorer, strict_matmul
from mcgf.retrieval.search import topk_search

CUDA = torch.backends.cuda.matmul
MKLDNN = torch.backends.mkldnn.matmul


def flags() -> dict[str, object]:
    """Every setting strict_matmul touches, read without the legacy getter (which raises
    once a program mixed the legacy and the new API)."""
    return {
        "cuda_fp32": CUDA.fp32_precision, "mkldnn_fp32": MKLDNN.fp32_precision,
        "bf16": (CUDA.allow_bf16_reduced_precision_reduction,
                 CUDA.allow_bf16_reduced_precision_reduction_split_k),
        "fp16": (CUDA.allow_fp16_reduced_precision_reduction,
                 CUDA.allow_fp16_reduced_precision_reduction_split_k),
    }


@pytest.fixture(autouse=True)
def default_flags() -> Iterator[None]:
    """Each test starts from and leaves PyTorch's defaults."""

    def reset() -> None:
        CUDA.fp32_precision = "none"
        MKLDNN.fp32_precision = "none"
        torch.set_float32_matmul_precision("highest")
        CUDA.fp32_precision = "none"
        MKLDNN.fp32_precision = "none"
        CUDA.allow_bf16_reduced_precision_reduction = (True, True)
        CUDA.allow_fp16_reduced_precision_reduction = (True, True)

    reset()
    yield
    reset()


def test_strict_matmul_sets_and_restores_flags() -> None:
    torch.set_float32_matmul_precision("medium")  # TF32 on CUDA, bf16 in oneDNN
    CUDA.allow_fp16_reduced_precision_reduction = (False, False)  # no split-K either
    before = flags()
    assert before["cuda_fp32"] == "tf32" and before["mkldnn_fp32"] == "bf16"
    with strict_matmul():
        inside = flags()
        assert torch.get_float32_matmul_precision() == "highest"
    assert inside["cuda_fp32"] == "ieee" and inside["mkldnn_fp32"] == "ieee"
    assert inside["bf16"][0] is False and inside["fp16"][0] is False
    assert flags() == before and torch.get_float32_matmul_precision() == "medium"

    with pytest.raises(KeyError), strict_matmul():  # restored when the block raises
        raise KeyError("boom")
    assert flags() == before and torch.get_float32_matmul_precision() == "medium"


def test_strict_matmul_restores_a_mixed_state() -> None:
    CUDA.fp32_precision = "tf32"  # new API over the legacy default: the legacy getter raises
    before = flags()
    with strict_matmul():
        assert flags()["cuda_fp32"] == "ieee"
    assert flags() == before


def test_fp32_scores_ignore_reduced_precision_settings() -> None:
    """Under 'medium', oneDNN may multiply float32 in bfloat16, beyond the float32 bound."""
    rng = np.random.default_rng(0)
    g = torch.from_numpy(rng.standard_normal((512, 256)).astype(np.float32))
    q = torch.from_numpy(rng.standard_normal((64, 256)).astype(np.float32))
    scorer = Fp32Scorer(g, chunk=512)
    block = scorer.prepare_queries(q)
    expected = scorer.scores(block, 0).clone()
    torch.set_float32_matmul_precision("medium")
    assert torch.equal(scorer.scores(block, 0), expected)
    assert flags()["mkldnn_fp32"] == "bf16"  # the caller's setting is back


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_cuda_search_is_exact_with_fast_settings_on(precision: str) -> None:
    """The CUDA candidate pass stays exact with TF32 and reduced-precision reductions
    switched on by the caller (runs only where a GPU is present)."""
    from tests.retrieval.test_search import brute_force, clustered

    torch.set_float32_matmul_precision("high")
    CUDA.allow_bf16_reduced_precision_reduction = True
    q, g = clustered(0, nq=300, ng=20000, d=256)
    ref_i, _ = brute_force(q, g, 10)
    res = topk_search(q, g, 10, backend="exact", precision=precision, device="cuda",
                      gallery_chunk=4096, query_block=128)
    assert np.array_equal(res.indices, ref_i)
