"""Weather-invariance probes: how much of the weather survives in an embedding.

Two measures over the same images embedded clean and under several weather conditions,
from arrays only (no model, no files):

* :func:`cosine_invariance` — the mean cosine similarity between each image's clean
  embedding and its embedding under a condition, next to a *baseline*: the mean cosine
  between the weathered embedding and the clean embeddings of images of **other
  locations**. A cosine of 0.9 means little on its own (embeddings of a narrow model
  can all sit within 0.9 of each other); the normalised score
  ``(cosine − baseline) / (1 − baseline)`` is 1 when the weathered embedding equals the
  clean one and 0 when it is no closer to its own clean image than to unrelated places.
* :func:`condition_probe` — the cross-validated accuracy of a linear classifier that
  predicts the condition from the embedding. Near chance: the embedding does not encode
  the weather (invariant); near 100 %: it does, linearly. The folds hold whole locations
  (:func:`group_folds`), so a test fold only holds places the classifier never saw;
  otherwise it could recognise a place's weathered look instead of the weather.

Everything is vectorised over images; the classifier is a multinomial logistic
regression with an L2 penalty on standardised features, trained full-batch with
L-BFGS in torch (float64, deterministic on the CPU).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from mcgf.runtime import torch_threads

#: Defaults of the condition probe.
PROBE_FOLDS = 5
PROBE_L2 = 1e-3
PROBE_MAX_ITER = 100
#: Below this many feature values a fit runs on one thread: each L-BFGS step is then a
#: few small matrix products, where waking a thread team costs more than it saves (17×
#: slower measured with two threads on a busy 2-core CPU, 1200 × 16 features).
ONE_THREAD_BELOW = 1 << 22


@dataclass(frozen=True)
class CosineInvariance:
    """Clean–weathered similarity of one condition (cosines in [-1, 1]).

    ``cosine``: mean over images of cos(clean_i, weathered_i); ``cosine_std``: its spread
    over images; ``baseline``: mean over images of the mean cos(weathered_i, clean_j) over
    images ``j`` of other locations (``None`` with a single location); ``normalised``:
    ``(cosine − baseline) / (1 − baseline)``; ``images``: images used (valid in both).
    """

    cosine: float
    cosine_std: float
    baseline: float | None
    normalised: float | None
    images: int


@dataclass(frozen=True)
class ProbeResult:
    """Cross-validated accuracy of the condition probe (percent).

    ``fold_accuracies``: accuracy on each test fold; ``accuracy``/``accuracy_std``: their
    mean and (population) standard deviation; ``class_recall``: per condition, the share
    of its samples predicted correctly, pooled over folds; ``chance``: the accuracy of
    always predicting the most frequent condition (100/K for K balanced conditions);
    ``n``: samples (image × condition); ``groups``: locations.
    """

    accuracy: float
    accuracy_std: float
    fold_accuracies: tuple[float, ...]
    class_recall: tuple[float, ...]
    chance: float
    folds: int
    n: int
    groups: int
    seed: int
    l2: float
    max_iter: int
    conditions: tuple[str, ...] = field(default_factory=tuple)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def cosine_invariance(clean: np.ndarray, weathered: np.ndarray, labels: np.ndarray,
                      valid: np.ndarray | None = None) -> CosineInvariance:
    """Clean–weathered cosine of aligned embeddings and its other-location baseline.

    Args:
        clean: ``(N, D)`` clean embeddings (normalised here, so any scale works).
        weathered: ``(N, D)`` embeddings of the same images under one condition, row
            ``i`` the same image as ``clean[i]``.
        labels: ``(N,)`` location of each image (the baseline leaves out images of the
            same location: other views of the same building are not unrelated).
        valid: ``(N,)`` rows to use (e.g. images readable in both); default all.

    Returns:
        A :class:`CosineInvariance`.

    Raises:
        ValueError: shapes that do not align, or no valid row.
    """
    clean, weathered = np.asarray(clean), np.asarray(weathered)
    labels = np.asarray(labels)
    if clean.ndim != 2 or clean.shape != weathered.shape or labels.shape != (clean.shape[0],):
        raise ValueError(f"clean {clean.shape}, weathered {weathered.shape} and labels {labels.shape} "
                         "must be (N, D), (N, D) and (N,)")
    keep = np.ones(len(labels), bool) if valid is None else np.asarray(valid, bool)
    if not keep.any():
        raise ValueError("no valid image to compare")
    c, w, lab = _unit(clean[keep]), _unit(weathered[keep]), labels[keep]
    same = np.einsum("nd,nd->n", c, w)
    # Mean cosine to the clean embeddings of other locations without an N×N matrix:
    # w_i·(Σ_all c − Σ_{label(i)} c) / (N − n_label(i)).
    _, group, counts = np.unique(lab, return_inverse=True, return_counts=True)
    sums = np.zeros((len(counts), c.shape[1]))
    np.add.at(sums, group, c)
    others = len(lab) - counts[group]
    baseline: float | None = None
    normalised: float | None = None
    if (others > 0).all():
        per = np.einsum("nd,nd->n", w, sums.sum(axis=0)[None, :] - sums[group]) / others
        baseline = float(per.mean())
        cos = float(same.mean())
        normalised = (cos - baseline) / (1.0 - baseline) if baseline < 1.0 else None
    return CosineInvariance(float(same.mean()), float(same.std()), baseline, normalised, int(keep.sum()))


def group_folds(groups: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """Fold index of every sample such that all samples of a group share one fold.

    The distinct groups are shuffled (seeded) and dealt round-robin, so folds hold
    ⌊G/k⌋ or ⌈G/k⌉ groups each.

    Args:
        groups: ``(N,)`` group of each sample (here: the location).
        folds: number of folds, 2 ≤ folds ≤ number of groups.
        seed: fixes the shuffle.

    Returns:
        ``(N,)`` int64 fold indices in ``[0, folds)``.

    Raises:
        ValueError: fewer than 2 folds or more folds than groups.
    """
    uniq, inverse = np.unique(np.asarray(groups), return_inverse=True)
    if folds < 2 or folds > len(uniq):
        raise ValueError(f"folds must be between 2 and the number of groups ({len(uniq)}), got {folds}")
    order = np.random.default_rng(seed).permutation(len(uniq))
    fold_of_group = np.empty(len(uniq), np.int64)
    fold_of_group[order] = np.arange(len(uniq)) % folds
    return fold_of_group[inverse.reshape(-1)]


def fit_logistic(x: np.ndarray, y: np.ndarray, classes: int, *, l2: float = PROBE_L2,
                 max_iter: int = PROBE_MAX_ITER) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression: weights ``(D, K)`` and bias ``(K,)``.

    Minimises the mean cross-entropy plus ``l2/2·‖W‖²`` (bias not penalised) with
    full-batch L-BFGS (strong Wolfe line search) from zero, in float64 — deterministic
    for the same inputs. Standardise ``x`` first: the penalty assumes comparable scales.
    """
    xt = torch.as_tensor(np.asarray(x, np.float64))
    yt = torch.as_tensor(np.asarray(y, np.int64))
    w = torch.zeros(xt.shape[1], classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w + b, yt) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch_threads(1 if xt.numel() < ONE_THREAD_BELOW else None):
        opt.step(closure)
    return w.detach().numpy(), b.detach().numpy()


def condition_probe(embeddings: np.ndarray, conditions: np.ndarray, groups: np.ndarray, *,
                    folds: int = PROBE_FOLDS, seed: int = 0, l2: float = PROBE_L2,
                    max_iter: int = PROBE_MAX_ITER, names: Sequence[str] = ()) -> ProbeResult:
    """Group-k-fold accuracy of a linear classifier predicting the condition.

    Args:
        embeddings: ``(N, D)`` one row per (image, condition) sample.
        conditions: ``(N,)`` condition index of each sample, in ``[0, K)``.
        groups: ``(N,)`` location of each sample; a location's samples (all its images
            under all conditions) are all in one fold (:func:`group_folds`).
        folds: folds (reduced to the number of locations when there are fewer).
        seed: fixes the fold assignment (the fit itself has no randomness).
        l2: L2 penalty of the weights (features are standardised with the training
            fold's mean and standard deviation).
        max_iter: L-BFGS iterations per fold.
        names: condition names, recorded in the result.

    Returns:
        A :class:`ProbeResult` (accuracies in percent).

    Raises:
        ValueError: misaligned inputs, fewer than 2 conditions or fewer than 2 locations.
    """
    x = np.asarray(embeddings, np.float64)
    y = np.asarray(conditions, np.int64)
    g = np.asarray(groups)
    if x.ndim != 2 or y.shape != (x.shape[0],) or g.shape != (x.shape[0],):
        raise ValueError(f"embeddings {x.shape}, conditions {y.shape} and groups {g.shape} must be "
                         "(N, D), (N,) and (N,)")
    k = int(y.max()) + 1 if len(y) else 0
    if len(np.unique(y)) < 2:
        raise ValueError("the condition probe needs at least 2 conditions")
    n_groups = len(np.unique(g))
    if n_groups < 2:
        raise ValueError("the condition probe needs at least 2 locations (folds are split by location)")
    folds = min(folds, n_groups)
    fold = group_folds(g, folds, seed)
    correct = np.zeros(len(y), bool)
    accs = []
    for f in range(folds):  # a handful of folds, each one vectorised fit
        test = fold == f
        train = ~test
        mean = x[train].mean(axis=0)
        std = x[train].std(axis=0)
        std = np.where(std > 1e-12, std, 1.0)  # constant features carry nothing
        w, b = fit_logistic((x[train] - mean) / std, y[train], k, l2=l2, max_iter=max_iter)
        pred = np.argmax(((x[test] - mean) / std) @ w + b, axis=1)
        correct[test] = pred == y[test]
        accs.append(100.0 * float(correct[test].mean()))
    per_class = np.bincount(y, weights=correct, minlength=k) / np.maximum(np.bincount(y, minlength=k), 1)
    chance = 100.0 * float(np.bincount(y, minlength=k).max() / len(y))
    return ProbeResult(
        accuracy=float(np.mean(accs)), accuracy_std=float(np.std(accs)),
        fold_accuracies=tuple(accs), class_recall=tuple(100.0 * per_class), chance=chance,
        folds=folds, n=len(y), groups=n_groups, seed=seed, l2=l2, max_iter=max_iter,
        conditions=tuple(names),
    )
