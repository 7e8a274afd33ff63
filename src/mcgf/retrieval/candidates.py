"""Fast approximate inner products that come with a proven error bound.

The exact top-k search (:mod:`mcgf.retrieval.search`) scores the whole gallery with one
of these scorers, keeps every item that the bound below cannot rule out, and re-scores
those exactly. Each scorer prepares the gallery once (quantisation, packing, per-row
residual norms) and then scores query blocks against gallery chunks.

For any precision, write ``q̂``/``ĝ`` for the rounded vectors the kernel multiplies and
``t`` for the value it returns. Then, for the exact score ``q·g``::

    |q·g − t| ≤ |(q − q̂)·g| + |q̂·(g − ĝ)| + |q̂·ĝ − t|
             ≤ ‖q − q̂‖·‖g‖ + ‖q̂‖·‖g − ĝ‖ + arithmetic error of the kernel

by Cauchy–Schwarz. The norms are measured from the actual rounded vectors (in float32,
then enlarged by their own worst-case rounding error so they are upper bounds), so the
bound holds for any data, not just for unit vectors.

Scorers:

``int8``
    Symmetric per-vector int8 quantisation multiplied with oneDNN's u8×s8 GEMM (the
    x86 int8 kernel behind PyTorch's quantised linear layers; integer accumulation is
    exact). Queries use 7 bits: on AVX2 the kernel multiplies byte pairs into a saturating
    int16, and ``127·127·2`` is the largest pair sum that cannot saturate. A self-test
    against exact integer arithmetic runs once before the scorer is used.
``bf16``
    bfloat16 inputs, fp32 accumulation (fast on CPUs with native bf16 and on GPUs).
``fp32``
    Plain float32 GEMM; the bound is the classic ``γ_D = D·u/(1 − D·u)`` rounding bound
    of a length-``D`` dot product in any summation order.

Both GEMMs run under :func:`strict_matmul`, so process-wide settings that allow TF32,
bfloat16 internals or reduced-precision reductions cannot void those bounds.

Written here because no library exposes a GEMM together with a rigorous per-query error
bound, which is what turns a low-precision ranking into an exact one.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

#: Unit roundoff of float32 and bfloat16 (round to nearest).
U_FP32 = 2.0**-24
U_BF16 = 2.0**-8


def dot_rounding_bound(n: int, u: float) -> float:
    """Rounding bound of a length-``n`` dot product: ``n·u / (1 − n·u)``."""
    nu = n * u
    if nu >= 1.0:
        raise ValueError(f"dimension {n} too large for a rounding bound at u={u}")
    return nu / (1.0 - nu)


def _legacy_matmul_precision() -> str | None:
    """``torch.get_float32_matmul_precision()``, or ``None`` where PyTorch refuses to say
    (a program that mixed the legacy and the ``fp32_precision`` settings)."""
    try:
        return torch.get_float32_matmul_precision()
    except RuntimeError:
        return None


@contextlib.contextmanager
def strict_matmul() -> Iterator[None]:
    """Run the block with matrix products at their nominal precision.

    The bounds of the scorers assume that a float32 GEMM rounds as float32 and that a
    bfloat16 GEMM accumulates in float32, with the result rounded once. PyTorch lets a
    program trade that for speed process-wide: TF32 or bfloat16 internals for float32
    products (``torch.set_float32_matmul_precision``,
    ``torch.backends.cuda.matmul.allow_tf32`` / ``fp32_precision``,
    ``torch.backends.mkldnn.matmul.fp32_precision`` on the CPU) and reduced-precision
    reductions in cuBLAS's bf16/fp16 GEMMs
    (``torch.backends.cuda.matmul.allow_{bf16,fp16}_reduced_precision_reduction``).
    This turns all of them off and restores the previous values on exit, also when the
    block raises. ``torch.backends.cudnn.allow_tf32`` is left alone: it governs cuDNN
    convolutions, which no search runs.
    """
    cuda = torch.backends.cuda.matmul
    mkldnn = torch.backends.mkldnn.matmul
    legacy = _legacy_matmul_precision()
    saved_fp32 = (cuda.fp32_precision, mkldnn.fp32_precision)
    saved_bf16 = (cuda.allow_bf16_reduced_precision_reduction,
                  cuda.allow_bf16_reduced_precision_reduction_split_k)
    saved_fp16 = (cuda.allow_fp16_reduced_precision_reduction,
                  cuda.allow_fp16_reduced_precision_reduction_split_k)
    try:
        if legacy is not None:
            # Keeps the legacy and the new setting consistent (PyTorch refuses a mix).
            torch.set_float32_matmul_precision("highest")
        cuda.fp32_precision = "ieee"
        mkldnn.fp32_precision = "ieee"
        cuda.allow_bf16_reduced_precision_reduction = False
        cuda.allow_fp16_reduced_precision_reduction = False
        yield
    finally:
        if legacy is not None:
            torch.set_float32_matmul_precision(legacy)
        cuda.fp32_precision, mkldnn.fp32_precision = saved_fp32
        cuda.allow_bf16_reduced_precision_reduction = saved_bf16
        cuda.allow_fp16_reduced_precision_reduction = saved_fp16


@dataclass
class QueryBlock:
    """A block of queries prepared for one scorer.

    ``t = scale·out`` is the approximate score of the kernel output ``out`` (selection
    can work on ``out`` because ``scale > 0``). ``residual`` is ``‖q − q̂‖`` and
    ``rounded_norm`` is ``‖q̂‖`` (float64), which enter the error bound.
    """

    data: torch.Tensor
    scale: torch.Tensor
    residual: torch.Tensor
    rounded_norm: torch.Tensor


#: Rows per step when a whole gallery is converted, to bound temporary memory.
_ROWS = 8192


class Scorer:
    """Base class: approximate ``queries @ gallery.T`` in gallery chunks, with bounds.

    Subclasses set, per gallery row (float64 tensors): ``norm`` ``‖g‖``, ``residual``
    ``‖g − ĝ‖`` and ``rounded_norm`` ``‖ĝ‖``, plus ``arith``: the kernel's arithmetic
    error relative to ``‖q̂‖·‖ĝ‖``. Then for every pair
    ``|q·g − t| ≤ ‖q − q̂‖·‖g‖ + ‖q̂‖·‖g − ĝ‖ + arith·‖q̂‖·‖ĝ‖`` (:meth:`pair_bound`).
    """

    name = "base"
    arith = 0.0

    def __init__(self, gallery: torch.Tensor, chunk: int) -> None:
        if gallery.ndim != 2:
            raise ValueError(f"gallery must be 2-D, got shape {tuple(gallery.shape)}")
        self.size = int(gallery.shape[0])
        self.dim = int(gallery.shape[1])
        self.chunk = max(1, int(chunk))  # the last chunk is padded (scores -inf)
        dev = gallery.device
        #: Gallery row held at each position of the chunk layout (``None``: identity).
        self.order: torch.Tensor | None = None
        self.norm = torch.zeros(self.size, dtype=torch.float64, device=dev)
        self.residual = torch.zeros(self.size, dtype=torch.float64, device=dev)
        self.rounded_norm = torch.zeros(self.size, dtype=torch.float64, device=dev)

    def _finish(self) -> None:
        """Cache the per-chunk maxima used by :meth:`row_bound`."""
        maxima = []
        for c in range(self.num_chunks):
            start, stop = self.chunk_range(c)
            rows = self.order[start:stop] if self.order is not None else slice(start, stop)
            maxima.append((float(self.norm[rows].max()), float(self.residual[rows].max()),
                           float(self.rounded_norm[rows].max())))
        self._chunk_max = maxima

    @property
    def num_chunks(self) -> int:
        return math.ceil(self.size / self.chunk)

    def chunk_range(self, c: int) -> tuple[int, int]:
        """Positions ``[start, stop)`` of chunk ``c`` in the chunk layout (see
        :meth:`gallery_rows` for the gallery rows they hold)."""
        start = c * self.chunk
        return start, min(start + self.chunk, self.size)

    def prepare_queries(self, queries: torch.Tensor) -> QueryBlock:
        """Round a block of float32 queries for the kernel and measure their residuals."""
        raise NotImplementedError

    def scores(self, block: QueryBlock, c: int) -> torch.Tensor:
        """``(rows, chunk)`` kernel output against chunk ``c`` (float32 or bfloat16);
        columns past the end of the gallery (last chunk) are ``-inf``."""
        raise NotImplementedError

    def pair_bound(self, block: QueryBlock, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Proven ``|q·g − t|`` bound of the pairs (``rows`` of the block, gallery ``cols``)."""
        qr, qn = block.residual.index_select(0, rows), block.rounded_norm.index_select(0, rows)
        g_res = self.residual.index_select(0, cols) + self.arith * self.rounded_norm.index_select(0, cols)
        return qr * self.norm.index_select(0, cols) + qn * g_res

    def row_bound(self, block: QueryBlock, c: int | None = None) -> torch.Tensor:
        """A bound valid for each query row against every item of chunk ``c`` (``None``:
        of the whole gallery)."""
        chunks = self._chunk_max if c is None else [self._chunk_max[c]]
        gn = max((m[0] for m in chunks), default=0.0)
        gr = max((m[1] for m in chunks), default=0.0)
        ghn = max((m[2] for m in chunks), default=0.0)
        return block.residual * gn + block.rounded_norm * (gr + self.arith * ghn)

    def gallery_rows(self, positions: torch.Tensor) -> torch.Tensor:
        """Gallery row indices of positions in the chunk layout."""
        if self.order is None:
            return positions
        return self.order.index_select(0, positions.reshape(-1)).view(positions.shape)


#: Rows whose float32 norm is below this are measured again in float64 (see :func:`_norm_up`).
_SMALL_NORM = 2.0**-40


def _norm_up(x: torch.Tensor) -> torch.Tensor:
    """Upper bounds of the row norms of a float32 matrix, as float64.

    Computed in float32 (fast); a float32 sum of ``D`` squares and the square root are
    within a relative ``(D + 2)·u`` of the exact norm, which is added. That holds while no
    square underflows: a coordinate below 2^-63 squares to less than float32's smallest
    normal, and a row of norm below about 1e-19 gets a float32 norm far too small, even 0,
    which would void every bound built on it. Rows below :data:`_SMALL_NORM` are therefore
    measured in float64; above it, the squares lost to underflow (at most ``D·2^-126``)
    are within the added margin.
    """
    if x.numel() == 0:
        return torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    norm = torch.linalg.vector_norm(x, dim=1).double()
    small = (norm < _SMALL_NORM).nonzero().squeeze(1)
    if small.numel():
        norm[small] = torch.linalg.vector_norm(x.index_select(0, small).double(), dim=1)
    return norm * (1.0 + (x.shape[1] + 4) * U_FP32)


def _rounding_stats(exact: torch.Tensor, approx: torch.Tensor, approx_exact: bool
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Upper bounds of ``‖x‖``, ``‖x − x̂‖`` and ``‖x̂‖`` per row.

    ``approx`` holds ``x̂`` rounded to float32 (``approx_exact``: it *is* ``x̂``, e.g. bf16
    values, and the float32 subtraction is then exact by Sterbenz' lemma). When it was
    rounded (int8 level × scale), ``‖x̂ − approx‖ ≤ u·‖approx‖`` and the subtraction adds
    at most ``u`` relative: both are added, so no float64 copy is ever made.
    """
    norm = _norm_up(exact)
    diff = _norm_up(exact - approx)
    size = _norm_up(approx)
    if approx_exact:
        return norm, diff, size
    up = 1.0 + 4 * U_FP32
    return norm, (diff + U_FP32 * size) * up, size * up


def _fill_stats(scorer: Scorer, exact: torch.Tensor, approx: torch.Tensor, start: int,
                approx_exact: bool) -> None:
    """Per-row bound ingredients of one slice of the gallery (see :func:`_rounding_stats`)."""
    stop = start + exact.shape[0]
    n, r, a = _rounding_stats(exact, approx, approx_exact)
    scorer.norm[start:stop] = n
    scorer.residual[start:stop] = r
    scorer.rounded_norm[start:stop] = a


class Fp32Scorer(Scorer):
    """Float32 GEMM: no rounding of the inputs; arithmetic bound ``γ_D`` (+ the store)."""

    name = "fp32"

    def __init__(self, gallery: torch.Tensor, chunk: int = 16384) -> None:
        super().__init__(gallery, chunk)
        self.gallery = gallery.float().contiguous()
        for s in range(0, self.size, _ROWS):
            g = self.gallery[s: s + _ROWS]
            _fill_stats(self, g, g, s, approx_exact=True)
        self.arith = dot_rounding_bound(self.dim, U_FP32) + 2 * U_FP32
        self._finish()

    def prepare_queries(self, queries: torch.Tensor) -> QueryBlock:
        q = queries.float().contiguous()
        zero = torch.zeros(q.shape[0], dtype=torch.float64, device=q.device)
        one = torch.ones(q.shape[0], dtype=torch.float64, device=q.device)
        return QueryBlock(q, one, zero, _norm_up(q))

    def scores(self, block: QueryBlock, c: int) -> torch.Tensor:
        start, stop = self.chunk_range(c)
        with strict_matmul():  # no TF32 / bf16 internals: the bound is float32's
            out = block.data @ self.gallery[start:stop].T
        return _pad(out, self.chunk)


class Bf16Scorer(Scorer):
    """bfloat16 inputs and output, fp32 accumulation."""

    name = "bf16"

    def __init__(self, gallery: torch.Tensor, chunk: int = 16384) -> None:
        super().__init__(gallery, chunk)
        g = gallery.float()
        self.gallery = g.bfloat16().contiguous()
        for s in range(0, self.size, _ROWS):
            _fill_stats(self, g[s: s + _ROWS], self.gallery[s: s + _ROWS].float(), s, approx_exact=True)
        # fp32 accumulation (γ_D), the result rounded to bf16, then stored as float32.
        gamma = dot_rounding_bound(self.dim, U_FP32)
        self.arith = gamma * (1 + U_BF16) + U_BF16 + 2 * U_FP32
        self._finish()

    def prepare_queries(self, queries: torch.Tensor) -> QueryBlock:
        q = queries.float()
        qb = q.bfloat16().contiguous()
        one = torch.ones(q.shape[0], dtype=torch.float64, device=q.device)
        _, res, size = _rounding_stats(q, qb.float(), approx_exact=True)
        return QueryBlock(qb, one, res, size)

    def scores(self, block: QueryBlock, c: int) -> torch.Tensor:
        start, stop = self.chunk_range(c)
        # Left in bfloat16: the selection reads it directly, which halves its memory
        # traffic (the bound already covers the output rounding). Float32 accumulation:
        # no reduced-precision reductions (see strict_matmul).
        with strict_matmul():
            out = block.data @ self.gallery[start:stop].T
        return _pad(out, self.chunk)


#: Query levels: values ``x - 64`` with ``x`` in ``[1, 127]`` (see module docstring).
_Q_LEVELS = 63
_Q_ZERO = 64
_G_LEVELS = 127


def _quantize(x: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row quantisation: (integer levels as float, scale per row)."""
    peak = torch.maximum(x.amax(dim=1), x.amin(dim=1).neg_())  # no |x| temporary
    scale = (peak / levels).clamp_min(torch.finfo(torch.float32).tiny)
    # Multiplying by the reciprocal may round a level differently from a division; the
    # bound is computed from the levels actually chosen, so any rounding is fine.
    return (x * scale.reciprocal()[:, None]).round_().clamp_(-levels, levels), scale


class Int8Scorer(Scorer):
    """Per-vector symmetric int8 (gallery 8 bits, queries 7 bits) with oneDNN u8×s8 GEMM."""

    name = "int8"

    def __init__(self, gallery: torch.Tensor, chunk: int = 4096, query_block: int = 1024) -> None:
        super().__init__(gallery, chunk)
        if not int8_available():
            raise RuntimeError("the int8 kernel is not available on this machine")
        g = gallery.float()
        levels = torch.empty(g.shape, dtype=torch.int8)
        scales = torch.empty(self.size)
        for start in range(0, self.size, _ROWS):
            lv, sc = _quantize(g[start: start + _ROWS], _G_LEVELS)
            _fill_stats(self, g[start: start + _ROWS], lv * sc[:, None], start, approx_exact=False)
            levels[start: start + _ROWS] = lv.to(torch.int8)
            scales[start: start + _ROWS] = sc
        # Chunks hold rows of similar rounding error: the error bound of a chunk is set by
        # its worst row, so grouping keeps most chunks' bounds at the typical value.
        self.order = torch.argsort(self.residual, stable=True)
        self._packed = []
        self._scales = []
        self._zeros = torch.zeros(self.chunk, dtype=torch.int64)
        levels, scales = levels.index_select(0, self.order), scales.index_select(0, self.order)
        for c in range(self.num_chunks):
            start, stop = self.chunk_range(c)
            wc, sc = levels[start:stop], scales[start:stop]
            if stop - start < self.chunk:  # pad the last chunk: zero rows, masked later
                pad = self.chunk - (stop - start)
                wc = torch.cat([wc, torch.zeros(pad, self.dim, dtype=torch.int8)])
                sc = torch.cat([sc, torch.ones(pad)])
            self._packed.append(torch.ops.onednn.qlinear_prepack(wc.contiguous(), [query_block, self.dim]))
            self._scales.append(sc.float().contiguous())
        # Integer accumulation is exact; its conversion to float32 (exact below 2^24) and
        # the scaling by the row scales add a few roundings, covered with room to spare.
        self.arith = 8 * U_FP32
        self._finish()

    def prepare_queries(self, queries: torch.Tensor) -> QueryBlock:
        q = queries.float()
        levels, scale = _quantize(q, _Q_LEVELS)
        x = (levels + _Q_ZERO).to(torch.uint8).contiguous()
        _, res, size = _rounding_stats(q, levels * scale[:, None], approx_exact=False)
        return QueryBlock(x, scale.double(), res, size)

    def scores(self, block: QueryBlock, c: int) -> torch.Tensor:
        out = torch.ops.onednn.qlinear_pointwise(
            block.data, 1.0, _Q_ZERO, self._packed[c], self._scales[c], self._zeros,
            None, 1.0, 0, torch.float32, "none", [], "",
        )
        start, stop = self.chunk_range(c)
        if stop - start < self.chunk:
            out[:, stop - start:] = -math.inf
        return out


def _pad(out: torch.Tensor, width: int) -> torch.Tensor:
    if out.shape[1] == width:
        return out
    padded = out.new_full((out.shape[0], width), -math.inf)
    padded[:, : out.shape[1]] = out
    return padded


@functools.cache
def int8_available() -> bool:
    """True if oneDNN's u8×s8 GEMM exists here and reproduces exact integer products.

    Checked once per process on values at the extremes of the ranges the scorer uses
    (the saturation case included), so a kernel that rounds or saturates is never used.
    """
    try:
        op = torch.ops.onednn.qlinear_pointwise
        prepack = torch.ops.onednn.qlinear_prepack
    except (AttributeError, RuntimeError):
        return False
    gen = torch.Generator().manual_seed(0)
    for m, n, d in ((7, 33, 64), (64, 256, 520)):
        x = torch.randint(_Q_ZERO - _Q_LEVELS, _Q_ZERO + _Q_LEVELS + 1, (m, d), generator=gen,
                          dtype=torch.int64)
        w = torch.randint(-_G_LEVELS, _G_LEVELS + 1, (n, d), generator=gen, dtype=torch.int64)
        x[0] = _Q_ZERO + _Q_LEVELS  # worst case for a saturating pair sum
        w[0] = _G_LEVELS
        w[1] = -_G_LEVELS
        try:
            out = op(x.to(torch.uint8), 1.0, _Q_ZERO, prepack(w.to(torch.int8), [m, d]),
                     torch.ones(n), torch.zeros(n, dtype=torch.int64), None, 1.0, 0,
                     torch.float32, "none", [], "")
        except RuntimeError:
            return False
        exact = (x - _Q_ZERO) @ w.T
        if not torch.equal(out.double(), exact.double()):
            return False
    return True


def cpu_has_native_bf16() -> bool:
    """True if the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


SCORERS: dict[str, type[Scorer]] = {
    "fp32": Fp32Scorer,
    "bf16": Bf16Scorer,
    "int8": Int8Scorer,
}


def default_precision(device: torch.device) -> str:
    """The fastest candidate precision available on ``device`` (see the module docstring)."""
    if device.type == "cuda":
        return "bf16"
    if cpu_has_native_bf16():
        return "bf16"
    if int8_available():
        return "int8"
    return "fp32"
