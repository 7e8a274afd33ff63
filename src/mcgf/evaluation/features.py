"""Batched feature extraction over image records, with flip TTA and an on-disk cache.

``extract_features(records, embedder)`` decodes every image with
:func:`mcgf.data.images.read_image`, optionally applies a per-image transform at the
native resolution (the weather engine: weather parameters are pixel-sized, so they must
act before resizing), resizes and normalises it as the embedder asks, and embeds it in
batches. With ``flip=True`` (the public baselines' test-time augmentation) the feature
is ``embed(x) + embed(flip(x))``. Features are always L2-normalised (in float64, so any
finite output can be; an exactly zero output stays zero), so inner product is cosine
similarity. The embedder runs under :func:`mcgf.runtime.autocast` (bf16 on a GPU); an
``nn.Module`` embedder runs in eval mode, and its modes are restored afterwards.

With ``shard=`` (a :class:`~mcgf.evaluation.sharding.Shard`) the processes of a
``torch.distributed`` group split the records and gather the features (see
:mod:`mcgf.evaluation.sharding`): each rank gets the full matrix, equal to a
single-process extraction's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from mcgf import __version__
from mcgf.data.datasets import Degrade, ImageListDataset, collate_images, raise_unreadable
from mcgf.data.images import BAD_IMAGE_POLICIES, DECODER_VERSION
from mcgf.data.layout import UNKNOWN_LABEL, ImageRecord
from mcgf.data.transforms import Preprocess
from mcgf.errors import UserError
from mcgf.evaluation.cache import CachedFeatures, FeatureCache, cache_key, file_fingerprint
from mcgf.evaluation.sharding import Shard, gather_rows
from mcgf.models.registry import Embedder
from mcgf.runtime import autocast, precision, resolve_device
from mcgf.weather import CLEAN, ENGINE_VERSION, WeatherTransform
from mcgf.weather.conditions import check_condition


@dataclass
class FeatureSet:
    """L2-normalised features of a record list; ``valid[i]`` is False for a skipped image
    (its row is zero). ``from_cache`` tells whether nothing had to be computed."""

    features: np.ndarray
    valid: np.ndarray
    from_cache: bool = False

    @property
    def num_skipped(self) -> int:
        return int((~self.valid).sum())


def _embedder_name(embedder: Embedder) -> str:
    """How errors name ``embedder``: its identity, else its class."""
    return getattr(embedder, "identity", type(embedder).__name__)


def _checked_output(embedder: Embedder, out: object, batch: int) -> torch.Tensor:
    """``embed``'s output as a float64 ``(batch, D)`` tensor (a NumPy array is accepted).

    Raises:
        UserError: anything else, e.g. one row for the whole batch (numpy would silently
            copy that row to every image of the batch).
    """
    name = _embedder_name(embedder)
    if isinstance(out, np.ndarray):
        out = torch.from_numpy(np.ascontiguousarray(out))
    if not isinstance(out, torch.Tensor):
        raise UserError(f"embedder {name!r} returned a {type(out).__name__}: embed(images) must "
                        "return a tensor (or NumPy array) of shape (batch, features)")
    if out.ndim != 2 or out.shape[0] != batch:
        raise UserError(f"embedder {name!r} returned shape {tuple(out.shape)} for a batch of "
                        f"{batch} images: embed(images) must return one feature row per image, "
                        "shape (batch, features)")
    # float64: a float64 output beyond float32's range stays finite and nonzero. Always a
    # copy: an embedder may return one buffer that its next call (the flip) overwrites.
    return out.to(torch.float64, copy=True)


@torch.inference_mode()
def embed_batch(embedder: Embedder, images: torch.Tensor, *, flip: bool) -> torch.Tensor:
    """Features of one batch: ``embed(x)`` (+ ``embed(flip(x))``), L2-normalised, float32.

    Raises:
        UserError: ``embed`` did not return one feature row per image.
    """
    batch = int(images.shape[0])
    # Flipped before embed runs: an embed that works on its input in place (e.g. undoing
    # the normalisation) must not change the images the flipped feature comes from.
    flipped = torch.flip(images, dims=[3]) if flip else None
    with autocast(images.device):
        f = _checked_output(embedder, embedder.embed(images), batch)
        if flipped is not None:
            g = _checked_output(embedder, embedder.embed(flipped), batch)
            if g.shape != f.shape:
                raise UserError(f"embedder {_embedder_name(embedder)!r} returned {f.shape[1]} features for a batch and "
                                f"{g.shape[1]} for its flipped copy: every call must return the "
                                "same number")
            f = f + g.to(f.device)
    return _unit_rows(f).float()


def _unit_rows(f: torch.Tensor) -> torch.Tensor:
    """Each row of ``f`` (float64) divided by its norm; an exactly zero row stays zero and
    a non-finite one stays non-finite.

    Each row is first divided by its largest magnitude: its norm then lies in
    ``[1, sqrt(D)]``, so neither a huge row (whose squared norm would overflow) nor a tiny
    one (``F.normalize`` clamps a norm below 1e-12, leaving such a row far from unit
    length) escapes normalisation.
    """
    peak = f.abs().amax(dim=1, keepdim=True)
    f = f / torch.where(peak > 0, peak, torch.ones_like(peak))
    norm = torch.linalg.vector_norm(f, dim=1, keepdim=True)
    return f / torch.where(norm > 0, norm, torch.ones_like(norm))


def for_view(embedder: Embedder, view: str) -> Embedder:
    """The embedder for images of ``view`` (``"drone"`` or ``"satellite"``): models with one
    encoder per view (e.g. an unshared MCGF checkpoint) expose ``for_view``; any other
    embedder embeds every view alike."""
    pick = getattr(embedder, "for_view", None)
    return pick(view) if callable(pick) else embedder


def feature_cache_key(records: Sequence[ImageRecord], embedder: Embedder, *, flip: bool,
                      transform_id: str, on_bad_image: str = "stop",
                      device: str | torch.device | None = None) -> str:
    """The one cache key of a feature matrix: every input that changes it.

    The embedder's identity (model and weights), its preprocessing, the files (path, size,
    modification time), the image key prefixes (where any), flip TTA, the per-image
    transform (the weather's id carries the weather engine version), the bad-image
    policy, the image decoder version, the precision the device computes in, and the
    mcgf version (model code).
    """
    dev = resolve_device(device)
    extra = {"flip": bool(flip), "transform": transform_id, "on_bad_image": on_bad_image,
             "decoder": DECODER_VERSION, "precision": precision(dev), "mcgf": __version__}
    prefixes = [r.key_prefix for r in records]
    if any(prefixes):  # image keys seed the weather; beyond the prefix they follow from the paths
        extra["key_prefixes"] = hashlib.sha256("\n".join(prefixes).encode()).hexdigest()
    return cache_key(
        embedder=embedder.identity, preprocess=Preprocess.for_embedder(embedder).describe(),
        files=file_fingerprint([r.path for r in records]), extra=extra,
    )


def extract_features(
    records: Sequence[ImageRecord],
    embedder: Embedder,
    *,
    batch_size: int = 32,
    flip: bool = True,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    cache_dir: str | Path | None = None,
    transform: Degrade | None = None,
    transform_id: str = "",
    on_bad_image: str = "stop",
    progress: bool = True,
    desc: str = "features",
    shard: Shard | None = None,
) -> FeatureSet:
    """Embed every record (in order) and return a :class:`FeatureSet`.

    Args:
        records: images to embed.
        embedder: see :mod:`mcgf.models.registry`.
        batch_size: images per forward pass.
        flip: add the feature of the horizontally flipped image (test-time augmentation).
        device: where the embedder runs (default: GPU if present, else CPU).
        num_workers: DataLoader worker processes decoding images.
        cache_dir: folder of the feature cache (``None``: no cache).
        transform: per-image transform before resizing (e.g. weather); must be picklable
            when ``num_workers > 0`` and deterministic per record for the cache to be valid.
        transform_id: stable description of ``transform`` (part of the cache key).
        on_bad_image: ``"stop"`` raises on an unreadable image; ``"skip"`` marks it invalid.
        progress: show a progress bar.
        desc: progress bar label.
        shard: split the records over a process group (every rank calls this with the
            same arguments and gets the same result); ``None`` or a group of one: this
            process embeds them all. Not cached (``cache_dir`` must be ``None``).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if transform is not None and not transform_id:
        raise ValueError("a transform needs a transform_id (it is part of the cache key)")
    if shard is not None and shard.world > 1:
        if cache_dir is not None:
            raise ValueError("a sharded extraction is not cached: pass cache_dir=None")
        return _extract_shard(records, embedder, shard, batch_size=batch_size, flip=flip,
                              device=device, num_workers=num_workers, transform=transform,
                              transform_id=transform_id, on_bad_image=on_bad_image,
                              progress=progress, desc=desc)
    preprocess = Preprocess.for_embedder(embedder)
    cache = FeatureCache(cache_dir) if cache_dir is not None else None
    dev = resolve_device(device)
    key = ""
    if cache is not None:
        key = feature_cache_key(records, embedder, flip=flip, transform_id=transform_id,
                                on_bad_image=on_bad_image, device=dev)
        hit = _usable(cache.load(key), len(records))
        if hit is not None:
            return hit

    to = getattr(embedder, "to", None)
    if callable(to):
        to(dev)
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise ValueError(f"on_bad_image must be one of {BAD_IMAGE_POLICIES}")
    dataset = ImageListDataset(records, preprocess, degrade=transform,
                               on_bad_image=on_bad_image)  # type: ignore[arg-type]
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_images, pin_memory=dev.type == "cuda",
                        persistent_workers=False)
    with _eval_mode(embedder):
        result = _embed_loader(loader, records, embedder, dev, flip=flip, progress=progress,
                               desc=desc, pad_to=min(batch_size, len(records)))
    if cache is not None:
        cache.store(key, CachedFeatures(result.features, result.valid), {
            "embedder": embedder.identity, "preprocess": preprocess.describe(), "flip": flip,
            "transform": transform_id, "images": len(records),
        })
    return result


def _extract_shard(records: Sequence[ImageRecord], embedder: Embedder, shard: Shard, *,
                   batch_size: int, flip: bool, device: str | torch.device | None,
                   num_workers: int, transform: Degrade | None, transform_id: str,
                   on_bad_image: str, progress: bool, desc: str) -> FeatureSet:
    """:func:`extract_features` of this rank's run of batches (:meth:`Shard.span`), then
    every rank's rows gathered; an error here is raised on every rank, after the gather."""
    start, end = shard.span(len(records), batch_size)
    # A rank holding only the short last batch embeds it in a pass as large as the one
    # process would (see _padded): its first image repeated, the copies dropped below.
    extra = max(0, min(batch_size, len(records)) - (end - start)) if end > start else 0
    features: np.ndarray | None = None
    valid: np.ndarray | None = None
    error: BaseException | None = None
    try:
        part = extract_features(list(records[start:end]) + [records[start]] * extra, embedder,
                                batch_size=batch_size, flip=flip, device=device, num_workers=num_workers, transform=transform,
                                transform_id=transform_id, on_bad_image=on_bad_image,
                                progress=progress, desc=desc)
        features, valid = part.features[: end - start], part.valid[: end - start]
    except Exception as err:  # raised again by gather_rows, once every rank knows
        error = err
    all_features, all_valid = gather_rows(features, valid, shard, error)
    return FeatureSet(all_features, all_valid)


@contextmanager
def _eval_mode(embedder: Embedder) -> Iterator[None]:
    """An ``nn.Module`` embedder in eval mode (no dropout, BatchNorm running statistics)
    for the extraction; each submodule's own mode comes back afterwards."""
    if not isinstance(embedder, torch.nn.Module):
        yield
        return
    modes = [(m, m.training) for m in embedder.modules()]
    embedder.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _usable(hit: CachedFeatures | None, n: int) -> FeatureSet | None:
    """A cache entry as a :class:`FeatureSet` when it fits ``n`` records, else ``None``."""
    # A non-finite entry (written before the check of _embed_loader existed) is a miss, so
    # the extraction runs and names the image.
    if hit is not None and hit.features.shape[0] == n and np.isfinite(hit.features).all():
        return FeatureSet(hit.features, hit.valid, from_cache=True)
    return None


def _padded(images: torch.Tensor, size: int) -> torch.Tensor:
    """``images`` with copies of its first image appended up to ``size`` rows.

    Convolution kernels round differently for different batch sizes (on the CPU a pass
    of one to three images differs from a full one in the last bits), so the short last
    batch (or one thinned by skipped images) is filled up: every image is then embedded
    in a pass of the same size, and duplicate images get identical features, which rank
    as exact ties wherever they fall among the batches. ``size`` is at most the number of
    records, so a single image is still embedded alone.
    """
    missing = size - int(images.shape[0])
    if missing <= 0:
        return images
    return torch.cat([images, images[:1].expand(missing, *images.shape[1:])])


def _embed_loader(loader: DataLoader, records: Sequence[ImageRecord], embedder: Embedder,
                  dev: torch.device, *, flip: bool, progress: bool, desc: str,
                  pad_to: int) -> FeatureSet:
    """Embed every batch of ``loader`` (over ``records``) into one :class:`FeatureSet`,
    each pass filled up to ``pad_to`` images (:func:`_padded`); skipped images keep zero
    rows.

    Raises:
        UserError: the embedder gave non-finite features for an image.
    """
    features: np.ndarray | None = None
    valid = np.zeros(len(records), bool)
    from mcgf.progress import progress_bar

    with progress_bar(total=len(records), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for batch in loader:
            kept = raise_unreadable(batch).get("index")
            bar.update(batch["skipped"] + (0 if kept is None else int(kept.numel())))
            if kept is None:
                continue
            images = _padded(batch["image"], pad_to)
            f = embed_batch(embedder, images.to(dev, non_blocking=True), flip=flip)[: kept.numel()]
            f = f.cpu().numpy()
            bad = ~np.isfinite(f).all(axis=1)
            if bad.any():
                # Checked before anything is cached, so a rerun does not replay the failure.
                first = records[int(kept.numpy()[int(np.argmax(bad))])]
                raise UserError(f"the embedder gave non-finite features for {first.path} "
                                f"({int(bad.sum())} image(s) of this batch): check the model "
                                "weights or the image")
            if features is None:
                features = np.zeros((len(records), f.shape[1]), np.float32)
            elif f.shape[1] != features.shape[1]:
                raise UserError(f"the embedder gave {f.shape[1]} features for {records[int(kept[0])].path} "
                                f"but {features.shape[1]} for the images before it: every call of "
                                "embed must return the same number of features")
            rows = kept.numpy()
            features[rows] = f
            valid[rows] = True
    if features is None:
        features = np.zeros((len(records), 0), np.float32)
    return FeatureSet(features, valid)


def weather_transform(condition: str, seed: int, dark_variant: str = "train",
                      jpeg_quality: int | None = None) -> tuple[Degrade | None, str]:
    """A picklable per-image weather transform (:class:`mcgf.weather.WeatherTransform`).

    ``jpeg_quality`` stores each weathered image as a JPEG of that quality and decodes it
    again, as the published weathered test sets are stored (``None``: no re-encoding).

    Pixels depend only on (image, condition, seed, record key), so the features are
    cacheable and identical for any worker count. Returns ``(None, "")`` for
    :data:`~mcgf.weather.CLEAN` (identity), so clean features are shared with the clean
    evaluation.

    Raises:
        UserError: ``condition`` is not a weather condition.
    """
    if check_condition(condition) == CLEAN:
        return None, ""
    # The engine version is part of the id: features cached from another engine's pixels
    # must not be reused.
    tid = f"weather:{condition}:seed={seed}:dark={dark_variant}:engine={ENGINE_VERSION}"
    if jpeg_quality is not None:
        tid += f":jpeg={int(jpeg_quality)}"
    return (WeatherTransform(condition, seed=seed, dark_variant=dark_variant,
                             jpeg_quality=jpeg_quality), tid)


def embed_images(
    embedder: Embedder,
    images: Sequence[str | Path],
    *,
    view: str = "drone",
    batch_size: int = 32,
    flip: bool = True,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    progress: bool = False,
) -> np.ndarray:
    """Embeddings ``(N, D)`` (float32, L2-normalised) of image files, in order.

    The convenience form of :func:`extract_features` for applications: ``view`` picks the
    encoder of models that have one per view (``"drone"`` or ``"satellite"``); an
    unreadable image raises :class:`~mcgf.errors.ImageReadError` naming it.
    """
    records = [ImageRecord(Path(p), UNKNOWN_LABEL, view) for p in images]
    return extract_features(records, for_view(embedder, view), batch_size=batch_size, flip=flip,
                            device=device, num_workers=num_workers, progress=progress,
                            desc=view).features
