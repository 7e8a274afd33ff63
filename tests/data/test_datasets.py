from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import functional as TF

from mcgf.data.datasets import (
    CrossViewTrainSet,
    ImageListDataset,
    collate_cross_view,
    collate_images,
)
from mcgf.data.layout import load_university1652
from mcgf.data.sampler import CrossViewBatchSampler
from mcgf.errors import ImageReadError


def to_tensor(im):
    return TF.to_tensor(im.resize((8, 8)))


def test_cross_view_batches_aligned_through_dataloader(u1652: Path) -> None:
    data = load_university1652(u1652)
    ds = CrossViewTrainSet(
        data.train["drone"], data.train["satellite"], drone_transform=to_tensor, satellite_transform=to_tensor
    )
    assert ds.class_ids == ["0001", "0002", "0004"]
    assert ds.num_classes == 3 and len(ds) == 9 + 3
    sampler = CrossViewBatchSampler(ds.location_index, 2, 2, seed=0)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_cross_view, num_workers=0)
    seen = set()
    for batch in loader:
        assert batch["satellite"].shape[1:] == (3, 8, 8)
        sat_labels = batch["satellite_label"].tolist()
        drone_labels = batch["drone_label"].tolist()
        assert drone_labels == [lab for lab in sat_labels for _ in range(2)]
        for key, lab in zip(batch["drone_key"], drone_labels, strict=True):
            assert key.startswith(ds.class_ids[lab] + "/")
        seen.update(batch["drone_key"])
    assert len(seen) == 9


def test_views_spelling_one_id_differently_are_aligned(u1652: Path) -> None:
    # The satellite folder of location 4 is "4", its drone folder "0004": one location.
    sat = u1652 / "train" / "satellite"
    (sat / "0004").rename(sat / "4")
    data = load_university1652(u1652)
    ds = CrossViewTrainSet(
        data.train["drone"], data.train["satellite"], drone_transform=to_tensor, satellite_transform=to_tensor
    )
    assert ds.class_ids == ["0001", "0002", "0004"]
    assert [(r.label, r.path.name) for r in ds.satellite_records] == [(0, "0001.jpg"), (1, "0002.jpg"), (2, "0004.jpg")]
    assert {r.label for r in ds.drone_records} == {0, 1, 2}


def test_degrade_hook_and_clean_target(u1652: Path) -> None:
    data = load_university1652(u1652)

    def darken(arr: np.ndarray, key: str) -> tuple[np.ndarray, str]:
        return (arr // 4).astype(np.uint8), "dark"

    ds = CrossViewTrainSet(
        data.train["drone"], data.train["satellite"], drone_transform=to_tensor,
        satellite_transform=to_tensor, degrade=darken, return_clean=True,
    )
    batch = collate_cross_view([ds[0], ds[len(ds) - 1]])
    assert batch["drone_condition"] == ["dark"]
    assert batch["drone"].mean() < batch["drone_clean"].mean() / 2
    assert batch["satellite"].shape[0] == 1


def test_bad_image_stop_names_file_and_skip_counts(u1652: Path) -> None:
    bad = u1652 / "test" / "query_drone" / "0010" / "image-01.jpeg"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # truncated JPEG
    recs = load_university1652(u1652).test["query_drone"].records()
    ds = ImageListDataset(recs, to_tensor)
    with pytest.raises(ImageReadError, match=r"image-01\.jpeg"):
        ds[0]
    ds_skip = ImageListDataset(recs, to_tensor, on_bad_image="skip")
    batch = collate_images([ds_skip[i] for i in range(len(ds_skip))])
    assert batch["skipped"] == 1
    assert batch["image"].shape[0] == len(recs) - 1
    assert batch["label"].tolist() == [10, 11, 11]
    assert isinstance(batch["image"], torch.Tensor)


def test_bad_image_in_a_worker_process_raises_the_image_error(u1652: Path) -> None:
    # With DataLoader workers the error must still be the one-line ImageReadError (the
    # loader would otherwise raise a RuntimeError holding the worker's traceback).
    from mcgf.evaluation.features import extract_features
    from mcgf.models import build_embedder
    from mcgf.training.loop import _batches

    sat = u1652 / "train" / "satellite" / "0002" / "0002.jpg"
    sat.write_bytes(b"")
    data = load_university1652(u1652)
    with pytest.raises(ImageReadError, match=r"0002\.jpg: not a recognised image format"):
        extract_features(data.train["satellite"].records(), build_embedder("thumbnail"),
                         num_workers=1, progress=False, device="cpu")
    ds = CrossViewTrainSet(
        data.train["drone"], data.train["satellite"], drone_transform=to_tensor, satellite_transform=to_tensor
    )
    sampler = CrossViewBatchSampler(ds.location_index, 3, 1, seed=0)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_cross_view, num_workers=1)
    with pytest.raises(ImageReadError, match=r"0002\.jpg"):
        list(_batches(loader))


def test_no_shared_location_is_a_user_error(tmp_path: Path) -> None:
    from mcgf.data.layout import read_class_folders
    from mcgf.errors import UserError

    from .conftest import write_image

    write_image(tmp_path / "drone" / "0001" / "a.jpg")
    write_image(tmp_path / "satellite" / "0002" / "0002.jpg")
    with pytest.raises(UserError, match="share names"):
        CrossViewTrainSet(
            read_class_folders(tmp_path / "drone", "drone"),
            read_class_folders(tmp_path / "satellite", "satellite"),
            drone_transform=to_tensor, satellite_transform=to_tensor,
        )


def test_clean_target_gets_the_same_random_augmentation(u1652: Path) -> None:
    """With a random geometric augmentation and an identity degrade, the weathered input
    and the clean target must be the same pixels (same rotation, shift, flip)."""
    from mcgf.data.transforms import Preprocess, TrainAugment

    data = load_university1652(u1652)
    aug = TrainAugment(Preprocess((16, 16), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), flip=True,
                       rotate=180, scale=0.2, translate=0.1)
    ds = CrossViewTrainSet(
        data.train["drone"], data.train["satellite"], drone_transform=aug, satellite_transform=aug,
        degrade=lambda arr, key: (arr, "normal"), return_clean=True,
    )
    torch.manual_seed(0)
    items = [ds[i] for i in range(3)]
    for item in items:
        assert torch.equal(item["image"], item["clean"])
    # ...and the augmentation is random: two draws of one image differ.
    assert not torch.equal(ds[0]["image"], ds[0]["image"])


def test_epoch_tagged_items_do_not_depend_on_workers(u1652: Path) -> None:
    """Persistent workers follow the epoch (weather and augmentation), and each item is
    the same whichever worker loads it."""
    from mcgf.data.datasets import EpochTagged
    from mcgf.data.transforms import Preprocess, TrainAugment

    data = load_university1652(u1652)
    aug = TrainAugment(Preprocess((16, 16), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), rotate=180, scale=0.2)

    class EpochShift:
        """A degrade whose output depends on the epoch it is set to."""

        epoch = 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __call__(self, arr: np.ndarray, key: str) -> tuple[np.ndarray, str]:
            return (arr // (self.epoch + 1)).astype(np.uint8), f"e{self.epoch}"

    def run(workers: int) -> list[dict]:
        ds = CrossViewTrainSet(data.train["drone"], data.train["satellite"], drone_transform=aug,
                               satellite_transform=aug, degrade=EpochShift(), augment_seed=7)
        sampler = CrossViewBatchSampler(ds.location_index, 2, 2, seed=0)
        loader = DataLoader(ds, batch_sampler=EpochTagged(sampler), collate_fn=collate_cross_view,
                            num_workers=workers, persistent_workers=workers > 0)
        out = []
        for epoch in range(2):
            sampler.set_epoch(epoch)
            out += list(loader)
        return out

    a, b = run(0), run(2)
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        assert x["drone_key"] == y["drone_key"] and x["drone_condition"] == y["drone_condition"]
        assert torch.equal(x["drone"], y["drone"]) and torch.equal(x["satellite"], y["satellite"])
    conds = {c for batch in a for c in batch["drone_condition"]}
    assert conds == {"e0", "e1"}  # the workers switched epochs


def test_a_tile_shown_in_several_batches_gets_a_fresh_augmentation(u1652: Path) -> None:
    """A satellite tile comes once per batch of its location: each appearance in an
    epoch draws its own augmentation, reproducibly; a drone image's first draw keeps the
    seed of (seed, epoch, index)."""
    from mcgf.data.datasets import EpochTagged, _item_seed
    from mcgf.data.transforms import Preprocess, TrainAugment

    data = load_university1652(u1652)
    aug = TrainAugment(Preprocess((16, 16), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), rotate=180, scale=0.2)
    ds = CrossViewTrainSet(data.train["drone"], data.train["satellite"], drone_transform=aug,
                           satellite_transform=aug, augment_seed=7)
    tags = [t for b in EpochTagged(CrossViewBatchSampler(ds.location_index, 2, 1, seed=0)) for t in b]
    n_drone = len(ds.drone_records)
    tile = next(t[1] for t in tags if t[1] >= n_drone)
    shown = [t for t in tags if t[1] == tile]
    assert len(shown) > 1
    images = [ds[t]["image"] for t in shown]
    assert all(not torch.equal(images[0], x) for x in images[1:])
    assert torch.equal(ds[shown[1]]["image"], images[1])
    assert _item_seed(7, 0, 3, 0) == _item_seed(7, 0, 3)
