"""Model-ready tensors: ChipDataset(dtype=..., normalize=...), the valid mask, transforms."""

from __future__ import annotations

from pathlib import Path

import kornia.augmentation as K
import numpy as np
import pytest
import torch
from odc.geo.geobox import GeoBox
from torch.utils.data import DataLoader

from geochip.ml.torch import ChipDataset, collate_chips
from geochip.plan.chips import plan_chips
from geochip.plan.splits import assign_splits
from geochip.store.bandstats import band_stats
from geochip.store.reader import open_store
from geochip.store.writer import ChipSource, write_store

NODATA = 0


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("normalize")
    gbox = GeoBox.from_bbox((500_000, 0, 501_280, 1280), "EPSG:32633", resolution=10)
    plan = assign_splits(plan_chips(gbox, 16), block_size=32, seed=1).plan
    rng = np.random.default_rng(3)
    image = np.stack(
        [rng.integers(100, 500, (128, 128)), rng.integers(1000, 9000, (128, 128))]
    ).astype("uint16")
    image[:, :8, :] = NODATA
    image[0, 40:44, 40:44] = NODATA
    mask = rng.integers(0, 3, (128, 128)).astype("uint8")
    return write_store(tmp / "ds", plan, {"grid": ChipSource(image, ["red", "nir"], NODATA, mask)})


def _raw(ds: ChipDataset) -> np.ndarray:
    store = open_store(ds.store.path)
    return np.stack([store.read(int(p))[0] for p in ds.positions])


def test_raw_dtype_stays_the_default(store_path: Path) -> None:
    sample = ChipDataset(store_path, split="train")[0]
    assert sample["image"].dtype == torch.uint16 and "valid" not in sample


def test_zscore_uses_the_train_split_statistics(store_path: Path) -> None:
    stats = band_stats(open_store(store_path), "train")
    for split in ("train", "val"):
        ds = ChipDataset(store_path, split=split, dtype="float32", normalize="zscore", fill=-9)
        batch = collate_chips(ds.__getitems__(list(range(len(ds)))))
        image, valid = batch["image"].numpy(), batch["valid"].numpy()
        raw = _raw(ds)
        want_valid = (raw != NODATA).all(axis=1)
        assert image.dtype == np.float32 and (valid == want_valid).all()
        for b, band in enumerate(["red", "nir"]):
            want = (raw[:, b].astype(np.float64) - stats[band]["mean"]) / stats[band]["std"]
            got = image[:, b]
            np.testing.assert_allclose(got[want_valid], want[want_valid], rtol=1e-5, atol=1e-5)
            assert (got[~want_valid] == -9).all()
            if split == "train":  # an independent check: the train split comes out standard
                assert abs(got[want_valid].mean()) < 1e-4
                assert abs(got[want_valid].std() - 1) < 1e-4


def test_percentile_maps_p2_p98_to_0_1(store_path: Path) -> None:
    stats = band_stats(open_store(store_path), "train")
    ds = ChipDataset(store_path, split="test", normalize="percentile")
    sample = ds[1]
    raw = _raw(ds)[1]
    assert sample["image"].dtype == torch.float32
    lo, hi = stats["nir"]["p2"], stats["nir"]["p98"]
    want = np.clip((raw[1] - lo) / (hi - lo), 0, 1)
    valid = sample["valid"].numpy()
    np.testing.assert_allclose(sample["image"][1].numpy()[valid], want[valid], atol=1e-6)
    assert float(sample["image"].min()) >= 0 and float(sample["image"].max()) <= 1


def test_a_callable_and_no_method(store_path: Path) -> None:
    ds = ChipDataset(store_path, split="val", dtype="float64", normalize=lambda x: x / 1000)
    raw = _raw(ds)[0]
    sample = ds[0]
    valid = sample["valid"].numpy()
    assert sample["image"].dtype == torch.float64
    np.testing.assert_allclose(sample["image"][0].numpy()[valid], raw[0][valid] / 1000)
    cast = ChipDataset(store_path, split="val", dtype="float32")[0]
    assert (cast["image"][0].numpy()[valid] == raw[0][valid]).all()


def test_dataloader_workers_give_the_same_floats(store_path: Path) -> None:
    ds = ChipDataset(store_path, split="train", normalize="zscore")
    here = collate_chips(ds.__getitems__(list(range(8))))
    loader = DataLoader(ds, batch_size=8, num_workers=2, collate_fn=collate_chips)
    first = next(iter(loader))
    assert torch.equal(first["image"], here["image"]) and torch.equal(first["valid"], here["valid"])


def test_batch_buffers_are_reused_only_once_the_caller_lets_go(store_path: Path) -> None:
    # workers normalise into shared buffers reused once released: batches the main process
    # keeps must never be overwritten, and single samples (the valid mask lies after the
    # image in the same buffer) must arrive intact
    ds = ChipDataset(store_path, split="train", normalize="zscore", fill=-9)
    here = collate_chips(ds.__getitems__(list(range(len(ds)))))
    loader = DataLoader(
        ds, batch_size=4, num_workers=2, collate_fn=collate_chips, persistent_workers=True
    )
    for _ in range(2):
        kept = list(loader)  # more batches than a worker keeps buffers
        assert torch.equal(torch.cat([b["image"] for b in kept]), here["image"])
        assert torch.equal(torch.cat([b["valid"] for b in kept]), here["valid"])
        del kept
    for epoch in range(2):  # dropped at once: the same buffers again
        for k, batch in enumerate(loader):
            assert torch.equal(batch["image"], here["image"][4 * k : 4 * k + 4]), epoch
            assert torch.equal(batch["valid"], here["valid"][4 * k : 4 * k + 4]), epoch
            del batch
    singles = DataLoader(ds, batch_size=None, num_workers=2)
    for k, sample in enumerate(singles):
        assert torch.equal(sample["image"], here["image"][k])
        assert torch.equal(sample["valid"], here["valid"][k])
    # without workers batches are recycled too: one the caller holds is never written again
    local = DataLoader(ds, batch_size=4, collate_fn=collate_chips)
    kept = list(local)
    again = [b["image"].clone() for b in local]  # dropped at once: recycled
    assert torch.equal(torch.cat([b["image"] for b in kept]), here["image"])
    assert torch.equal(torch.cat([b["valid"] for b in kept]), here["valid"])
    assert torch.equal(torch.cat(again), here["image"])


def test_kornia_transforms_move_image_mask_and_valid_together(store_path: Path) -> None:
    # the README's example: kornia's AugmentationSequential moves image and masks together
    augment = K.AugmentationSequential(
        K.RandomHorizontalFlip(p=1.0),
        K.RandomVerticalFlip(p=1.0),
        data_keys=["input", "mask", "mask"],
    )

    def transforms(sample: dict) -> dict:
        image, mask, valid = augment(
            sample["image"][None],
            sample["mask"][None, None].float(),
            sample["valid"][None, None].float(),
        )
        sample["image"] = image[0]
        sample["mask"] = mask[0, 0].round().to(torch.uint8)
        sample["valid"] = valid[0, 0] > 0.5
        return sample

    plain = ChipDataset(store_path, split="train", normalize="zscore")
    ds = ChipDataset(store_path, split="train", normalize="zscore", transforms=transforms)
    for i in range(len(ds)):
        got, before = ds[i], plain[i]

        # both flips: the chip turned by 180 degrees, pixel for pixel
        def turned(t: torch.Tensor) -> torch.Tensor:
            return t.flip(-1).flip(-2)

        torch.testing.assert_close(got["image"], turned(before["image"]), atol=0, rtol=0)
        assert torch.equal(got["mask"], turned(before["mask"]))
        assert torch.equal(got["valid"], turned(before["valid"]))
