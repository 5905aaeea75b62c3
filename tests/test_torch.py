"""ChipDataset and collate: every chip once, right values, with 0 and 2 DataLoader workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from odc.geo.geobox import GeoBox
from torch.utils.data import DataLoader

from geochip.errors import InputError
from geochip.ml.torch import ChipDataset, collate_chips
from geochip.plan.chips import plan_chips
from geochip.plan.splits import assign_splits
from geochip.store.reader import open_store
from geochip.store.writer import ChipSource, write_store
from geochip.testing import pixel_pattern


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    grid = GeoBox.from_bbox((600_000, 0, 606_400, 6_400), "EPSG:32633", resolution=10)
    image = np.stack([pixel_pattern((640, 640), b, "uint32") for b in range(3)])
    mask = (np.arange(640 * 640).reshape(640, 640) % 3).astype("uint8")
    plan = assign_splits(plan_chips(grid, 64, grid_id="g"), block_size=128, seed=0).plan
    out = tmp_path_factory.mktemp("torch") / "ds"
    return write_store(out, plan, {"g": ChipSource(image, ["a", "b", "c"], 0, mask=mask)})


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_yields_every_chip_of_a_split_once(store_path: Path, workers: int) -> None:
    dataset = ChipDataset(store_path, split="train")
    loader = DataLoader(dataset, batch_size=5, num_workers=workers, collate_fn=collate_chips)
    seen: list[str] = []
    for batch in loader:
        assert batch["image"].dtype == torch.uint32
        assert batch["mask"].dtype == torch.uint8
        assert batch["bounds"].shape == (len(batch["chip_id"]), 4)
        for k, chip_id in enumerate(batch["chip_id"]):
            row, col = (int(p[1:]) for p in chip_id.split("-")[1:])
            # the pixel values encode their own grid position
            assert int(batch["image"][k, 0, 0, 0]) == 10_000_000 + row * 10_000 + col
            assert int(batch["image"][k, 2, 63, 63]) == 30_000_000 + (row + 63) * 10_000 + col + 63
        seen += batch["chip_id"]
    index = open_store(store_path).index
    expected = index.loc[index["split"] == "train", "chip_id"].tolist()
    assert sorted(seen) == sorted(expected)
    assert len(seen) == len(set(seen))


def test_workers_under_spawn_also_work(store_path: Path) -> None:
    dataset = ChipDataset(store_path, split="val")
    loader = DataLoader(
        dataset,
        batch_size=4,
        num_workers=2,
        collate_fn=collate_chips,
        multiprocessing_context="spawn",
    )
    assert sum(len(b["chip_id"]) for b in loader) == len(dataset)


def test_sample_follows_torchgeo_convention(store_path: Path) -> None:
    sample = ChipDataset(store_path)[0]
    assert set(sample) == {"image", "mask", "crs", "bounds", "chip_id"}
    assert sample["crs"] == "EPSG:32633"
    minx, miny, maxx, maxy = sample["bounds"].tolist()
    assert (maxx - minx, maxy - miny) == (640.0, 640.0)
    assert sample["image"].shape == (3, 64, 64)


def test_splits_partition_the_store(store_path: Path) -> None:
    sizes = [len(ChipDataset(store_path, split=s)) for s in ("train", "val", "test")]
    assert sum(sizes) == len(ChipDataset(store_path)) == 100
    assert all(n > 0 for n in sizes)


def test_transforms_are_applied(store_path: Path) -> None:
    def to_float(sample: dict) -> dict:
        sample["image"] = sample["image"].float() / 1e7
        return sample

    sample = ChipDataset(store_path, transforms=to_float)[0]
    assert sample["image"].dtype == torch.float32


def test_unknown_split_is_refused(store_path: Path) -> None:
    with pytest.raises(InputError, match="train, val, test"):
        ChipDataset(store_path, split="validation")


def test_index_out_of_range(store_path: Path) -> None:
    with pytest.raises(IndexError):
        ChipDataset(store_path, split="test")[10_000]


def test_collate_matches_torch_stack() -> None:
    samples = [
        {"image": torch.full((2, 4, 4), i, dtype=torch.uint16), "chip_id": f"c{i}"}
        for i in range(3)
    ]
    out = collate_chips(samples)
    assert torch.equal(out["image"], torch.stack([s["image"] for s in samples]))
    assert out["chip_id"] == ["c0", "c1", "c2"]
    with pytest.raises(InputError, match="empty batch"):
        collate_chips([])
