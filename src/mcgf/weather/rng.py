"""Per-image randomness: a generator derived from a stable hash of (seed, image key, purpose).

The recipe this package reproduces seeded its augmenters once per process, so the weather
an image received depended on call order and on how images were spread over DataLoader
workers. Here every random draw for one image comes from a generator of its own, keyed by
a BLAKE2b digest of ``(seed, key, purpose)``: the same image key and seed give the same
pixels on any machine, in any order, with any number of workers. Python's built-in
``hash`` is salted per process and is never used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

_DOMAIN = "mcgf.weather/v1"


def _check_seed(seed: int) -> int:
    # bool is an int subclass; accepting True as a seed would hide a mistake.
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
    return int(seed)


def stable_digest(*parts: object) -> bytes:
    """16-byte BLAKE2b digest of the parts, separated so that ``("a", "bc") != ("ab", "c")``.

    Text is hashed as UTF-8. A file name that is not valid UTF-8 reaches Python with its
    stray bytes as lone surrogates (``os.fsdecode``); those are encoded as such instead
    of failing, which leaves the digest of every other string unchanged.
    """
    text = "\x1f".join(str(p) for p in (_DOMAIN, *parts))
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def image_rng(seed: int, key: str, purpose: str) -> np.random.Generator:
    """A numpy generator that depends only on ``(seed, key, purpose)``.

    ``purpose`` separates independent streams of the same image, e.g. the condition name
    for the weather pixels and ``"choose"`` for the choice of a condition.
    """
    seed = _check_seed(seed)
    if not isinstance(key, str):
        raise TypeError(f"image key must be a string, got {type(key).__name__}")
    entropy = int.from_bytes(stable_digest(seed, key, purpose), "little")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))


def mix_seed(seed: int, *parts: object) -> int:
    """A new 63-bit seed derived from ``seed`` and extra parts (e.g. an epoch number)."""
    seed = _check_seed(seed)
    return int.from_bytes(stable_digest("mix", seed, *parts)[:8], "little") >> 1


def choose_index(seed: int, key: str, n: int) -> int:
    """Reproducible uniform choice of an index in ``range(n)`` for one image."""
    if n <= 0:
        raise ValueError("cannot choose from an empty set")
    return int(image_rng(seed, key, "choose").integers(n))


def choose_weighted(seed: int, key: str, weights: Sequence[float]) -> int:
    """Reproducible choice of an index with probability proportional to ``weights``.

    Uses the same per-image stream as :func:`choose_index` (one uniform draw, placed on
    the cumulative weights), so it depends only on ``(seed, key)`` and the weights.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or not len(w) or (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all 0, got {list(weights)}")
    u = image_rng(seed, key, "choose").random() * w.sum()
    # side="right" skips zero-weight entries whatever u is; min() guards rounding at the top.
    return int(min(np.searchsorted(np.cumsum(w), u, side="right"), len(w) - 1))


def choose_from(seed: int, key: str, options: Sequence[str]) -> str:
    """Reproducible uniform choice of one of ``options`` for one image (order matters)."""
    return options[choose_index(seed, key, len(options))]


#: A recipe parameter: a fixed value or a ``(low, high)`` range sampled uniformly per use.
Range = float | tuple[float, float]


def draw(rng: np.random.Generator, value: Range) -> float:
    """One value of a recipe parameter: itself if fixed, else uniform in ``[low, high)``."""
    if isinstance(value, tuple):
        low, high = value
        return float(rng.uniform(low, high))
    return float(value)


def range_max(value: Range) -> float:
    """Largest value a parameter can take (used to size canvases and kernels)."""
    return float(max(value)) if isinstance(value, tuple) else float(value)


def range_min(value: Range) -> float:
    """Smallest value a parameter can take."""
    return float(min(value)) if isinstance(value, tuple) else float(value)
