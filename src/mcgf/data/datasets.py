"""Torch datasets over dataset records.

Every item carries the image's stable ``key`` (see :attr:`ImageRecord.key`), so that
per-image randomness such as synthetic weather can be seeded by the image rather than by
call order or worker.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, get_worker_info

from mcgf.data.images import BadImagePolicy, read_image_or_none
from mcgf.data.layout import ClassFolderSet, ImageRecord, aligned_classes
from mcgf.data.sampler import LocationIndex
from mcgf.errors import ImageReadError, UserError
from mcgf.weather.conditions import CLEAN

#: ``transform(image) -> tensor`` applied to a decoded RGB image.
Transform = Callable[[Image.Image], torch.Tensor]
#: ``degrade(rgb_uint8_hwc, key) -> (degraded, name)``, e.g. a weather condition.
Degrade = Callable[[np.ndarray, str], tuple[np.ndarray, str]]


def degrade_image(image: Image.Image, key: str, degrade: Degrade | None) -> tuple[Image.Image, str]:
    """``image`` under ``degrade`` (applied to its pixels, at its own size) and the condition
    name it reports; unchanged and :data:`~mcgf.weather.CLEAN` without one. What every
    dataset here does to an image before its transform, so anything that shows "the image
    the model saw" (e.g. the report) calls this too."""
    if degrade is None:
        return image, CLEAN
    arr, condition = degrade(np.asarray(image), key)
    return Image.fromarray(arr), condition


def _read(path: Path, policy: BadImagePolicy) -> Image.Image | ImageReadError | None:
    """The decoded image, ``None`` for an unreadable one under ``"skip"``.

    Under ``"stop"`` a DataLoader worker process returns the :class:`ImageReadError`
    instead of raising it: the loader would raise it in the main process as a
    ``RuntimeError`` holding the worker's traceback. The collate functions carry it in
    the batch and :func:`raise_unreadable` raises it in the main process.
    """
    try:
        return read_image_or_none(path, policy)
    except ImageReadError as err:
        if get_worker_info() is None:
            raise
        return err


def raise_unreadable(batch: dict[str, Any]) -> dict[str, Any]:
    """``batch`` as it is, or the :class:`ImageReadError` met while loading it raised."""
    error = batch.get("error")
    if isinstance(error, ImageReadError):
        raise error
    return batch


def _readable(items: Sequence[Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The readable items of a batch and the dict the collated batch starts from:
    ``{"skipped": n}`` for ``n`` skipped (``None``) items, or ``{"error": ..., "skipped": 0}``
    with no items when a worker process met an unreadable image (:func:`raise_unreadable`)."""
    error = next((it for it in items if isinstance(it, ImageReadError)), None)
    if error is not None:
        return [], {"error": error, "skipped": 0}
    kept = [it for it in items if isinstance(it, dict)]
    return kept, {"skipped": len(items) - len(kept)}


class ImageListDataset(Dataset):
    """Images of a list of records; item ``i`` is ``{"image", "label", "index", "key"}``.

    With ``on_bad_image="skip"`` an unreadable image yields ``None``, which
    :func:`collate_images` drops and counts.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        transform: Transform,
        *,
        degrade: Degrade | None = None,
        on_bad_image: BadImagePolicy = "stop",
    ) -> None:
        self.records = list(records)
        self.transform = transform
        self.degrade = degrade
        self.on_bad_image = on_bad_image

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any] | ImageReadError | None:
        rec = self.records[index]
        image = _read(rec.path, self.on_bad_image)
        if not isinstance(image, Image.Image):
            return image
        image, condition = degrade_image(image, rec.key, self.degrade)
        return {
            "image": self.transform(image),
            "label": rec.label,
            "index": index,
            "key": rec.key,
            "condition": condition,
        }


def collate_images(items: Sequence[dict[str, Any] | ImageReadError | None]) -> dict[str, Any]:
    """Stack items of :class:`ImageListDataset`, dropping skipped (``None``) ones; an
    unreadable image of a worker process makes the batch ``{"error": ..., "skipped": 0}``
    (see :func:`raise_unreadable`)."""
    kept, out = _readable(items)
    if not kept:
        return out
    out["image"] = torch.stack([it["image"] for it in kept])
    out["label"] = torch.tensor([it["label"] for it in kept], dtype=torch.long)
    out["index"] = torch.tensor([it["index"] for it in kept], dtype=torch.long)
    out["key"] = [it["key"] for it in kept]
    out["condition"] = [it["condition"] for it in kept]
    return out


class CrossViewTrainSet(Dataset):
    """Drone and satellite images of the locations present in both views.

    Locations are aligned by location id (``0839`` and ``839`` are one location) and
    numbered ``0..C-1`` in id order (``class_ids[c]`` is the drone folder name of label
    ``c``). Dataset indices
    ``0..n_drone-1`` are drone images, the rest satellite tiles; use
    :attr:`location_index` with :class:`~mcgf.data.sampler.CrossViewBatchSampler` and
    :func:`collate_cross_view` to get aligned batches.

    Drone items may be degraded on the fly (``degrade``); with ``return_clean`` the
    item also holds the clean drone image (the restoration target). With
    ``augment_seed`` and epoch-tagged indices (:class:`EpochTagged`) the random
    augmentation of an item depends only on ``(augment_seed, epoch, index)``.
    """

    def __init__(
        self,
        drone: ClassFolderSet,
        satellite: ClassFolderSet,
        *,
        drone_transform: Transform,
        satellite_transform: Transform,
        degrade: Degrade | None = None,
        return_clean: bool = False,
        on_bad_image: BadImagePolicy = "stop",
        augment_seed: int | None = None,
    ) -> None:
        self.class_ids = aligned_classes(drone, satellite)
        if not self.class_ids:
            raise UserError(
                f"no location has images in both {drone.root} and {satellite.root}: "
                "class folders of the two views must share names (run mcgf data check)"
            )
        label_of = {name: i for i, name in enumerate(self.class_ids)}
        # The satellite folder of a location may spell its id otherwise (``3`` vs ``0003``).
        satellite_of = {int(name): paths for name, paths in satellite.classes.items()}
        self.drone_records = [
            ImageRecord(p, label_of[n], "drone", drone.key_prefixes.get(p, ""))
            for n in self.class_ids for p in drone.classes[n]
        ]
        self.satellite_records = [
            ImageRecord(p, label_of[n], "satellite", satellite.key_prefixes.get(p, ""))
            for n in self.class_ids for p in satellite_of[int(n)]
        ]
        n_d = len(self.drone_records)
        drone_idx: list[list[int]] = [[] for _ in self.class_ids]
        sat_idx: list[list[int]] = [[] for _ in self.class_ids]
        for i, r in enumerate(self.drone_records):
            drone_idx[r.label].append(i)
        for i, r in enumerate(self.satellite_records):
            sat_idx[r.label].append(n_d + i)
        self.location_index = LocationIndex(drone_idx, sat_idx)
        self.drone_transform = drone_transform
        self.satellite_transform = satellite_transform
        self.degrade = degrade
        self.return_clean = return_clean
        self.on_bad_image = on_bad_image
        self.augment_seed = augment_seed

    @property
    def num_classes(self) -> int:
        return len(self.class_ids)

    def __len__(self) -> int:
        return len(self.drone_records) + len(self.satellite_records)

    def record(self, index: int) -> ImageRecord:
        """The record behind dataset index ``index``."""
        n_d = len(self.drone_records)
        return self.drone_records[index] if index < n_d else self.satellite_records[index - n_d]

    def __getitem__(self, index: int | tuple[int, ...]) -> dict[str, Any] | ImageReadError | None:
        """Item ``index``, or ``(epoch, index[, draw])`` as :class:`EpochTagged` batches
        give it.

        With an epoch tag the weather switches to that epoch (so persistent DataLoader
        workers follow the epochs) and, when ``augment_seed`` is set, the random
        augmentation is seeded from ``(augment_seed, epoch, index, draw)``: the item is
        then the same whichever worker loads it and whatever was loaded before, and an
        image the plan holds several times (a satellite tile, once per batch of its
        location) gets a fresh augmentation each time (``draw``: 0, 1, ...).
        """
        if isinstance(index, tuple):
            epoch, index, *rest = index
            draw = rest[0] if rest else 0
            set_epoch = getattr(self.degrade, "set_epoch", None)
            if callable(set_epoch) and getattr(self.degrade, "epoch", None) != epoch:
                set_epoch(epoch)
            if self.augment_seed is not None:
                # Seed the CPU generator directly (torch.manual_seed records a stack trace
                # per call, which costs more than loading the image) and restore it after.
                state = torch.get_rng_state()
                torch.default_generator.manual_seed(_item_seed(self.augment_seed, epoch, index, draw))
                try:
                    return self._load(index)
                finally:
                    torch.set_rng_state(state)
        return self._load(index)

    def _load(self, index: int) -> dict[str, Any] | ImageReadError | None:
        rec = self.record(index)
        image = _read(rec.path, self.on_bad_image)
        if not isinstance(image, Image.Image):
            return image
        item: dict[str, Any] = {"view": rec.view, "label": rec.label, "key": rec.key}
        if rec.view == "satellite":
            item["image"] = self.satellite_transform(image)
            return item
        degraded, condition = degrade_image(image, rec.key, self.degrade)
        # The clean target must get the same random augmentation as the weathered input:
        # replay the torch RNG state (what random transforms draw from) for it.
        state = torch.get_rng_state() if self.return_clean else None
        item["image"] = self.drone_transform(degraded)
        item["condition"] = condition
        if state is not None:
            after = torch.get_rng_state()
            torch.set_rng_state(state)
            item["clean"] = self.drone_transform(image)
            torch.set_rng_state(after)
        return item


def _item_seed(seed: int, epoch: int, index: int, draw: int = 0) -> int:
    """A 63-bit seed from ``(seed, epoch, index, draw)`` (BLAKE2: no correlation between
    items); an item's first draw keeps the seed of ``(seed, epoch, index)``."""
    text = f"{seed}/{epoch}/{index}" + (f"/{draw}" if draw else "")
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class EpochTagged:
    """Wraps a batch sampler with ``epoch`` (e.g. :class:`CrossViewBatchSampler`) so that
    each index comes as ``(epoch, index, draw)``: :class:`CrossViewTrainSet` then follows
    the epoch inside persistent DataLoader workers, which never see the main process's
    ``set_epoch`` calls. ``draw`` counts the earlier appearances of ``index`` in the
    epoch's global plan (a sampler with ``plan``, ``rank`` and ``num_replicas``, taking
    batches ``rank, rank + num_replicas, ...`` of it), else in this sampler's batches, so
    that a repeated image gets a fresh augmentation on every rank alike."""

    def __init__(self, batch_sampler: Any) -> None:
        self.batch_sampler = batch_sampler

    def __iter__(self) -> Any:
        sampler = self.batch_sampler
        epoch = int(sampler.epoch)
        plan = getattr(sampler, "plan", None)
        if callable(plan):
            batches: Any = plan(epoch)
            rank, world = int(sampler.rank), int(sampler.num_replicas)
        else:
            batches, rank, world = sampler, 0, 1
        return self._tagged(batches, epoch, rank, world)

    @staticmethod
    def _tagged(batches: Any, epoch: int, rank: int, world: int) -> Any:
        seen: dict[int, int] = {}
        for n, batch in enumerate(batches):
            tagged = []
            for i in batch:
                draw = seen.get(int(i), 0)
                seen[int(i)] = draw + 1
                tagged.append((epoch, int(i), draw))
            if n % world == rank:
                yield tagged

    def __len__(self) -> int:
        return len(self.batch_sampler)


def collate_cross_view(items: Sequence[dict[str, Any] | ImageReadError | None]) -> dict[str, Any]:
    """Split a sampler batch into aligned ``satellite`` and ``drone`` tensors.

    Order within each view follows the batch, so ``satellite_label`` and
    ``drone_label`` refer to the same location numbering. Skipped (``None``) items are
    dropped and counted in ``"skipped"``; an unreadable image of a worker process makes
    the batch ``{"error": ..., "skipped": 0}`` (see :func:`raise_unreadable`).
    """
    kept, out = _readable(items)
    if "error" in out:
        return out
    for view in ("satellite", "drone"):
        sel = [it for it in kept if it["view"] == view]
        out[view] = torch.stack([it["image"] for it in sel]) if sel else torch.empty(0)
        out[f"{view}_label"] = torch.tensor([it["label"] for it in sel], dtype=torch.long)
        out[f"{view}_key"] = [it["key"] for it in sel]
        if view == "drone":
            out["drone_condition"] = [it["condition"] for it in sel]
            if sel and "clean" in sel[0]:
                out["drone_clean"] = torch.stack([it["clean"] for it in sel])
    return out
