"""ChipDataset over built stores: every layout reads back exactly what Zarr reads, with 0 and
2 DataLoader workers, in one batch buffer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from odc.geo.geobox import GeoBox
from torch.utils.data import DataLoader, default_collate

from geochip.builder.config import parse_config
from geochip.builder.run import build
from geochip.ml.torch import ChipDataset, collate_chips
from geochip.plan.chips import plan_chips
from geochip.store.format import MASK_IGNORE, Layout
from geochip.store.reader import ArrayReader, open_store
from geochip.store.writer import ChipSource, write_store
from geochip.testing import pixel_pattern
from geochip.testing.catalogs import make_scene_catalog, scene_config

LAYOUTS = [Layout(c, None, k) for c in ("none", "lz4", "zstd") for k in (1, 3)]


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda lay: f"{lay.codec}-{lay.chips_per_shard}")
def test_the_direct_reader_equals_zarr_for_every_layout(layout: Layout, tmp_path: Path) -> None:
    grid = GeoBox.from_bbox((600_000, 0, 600_800, 640), "EPSG:32633", resolution=10)  # 64x80
    image = np.stack([pixel_pattern((64, 80), b, "uint16", "texture", seed=3) for b in range(2)])
    image[:, :16, :16] = 0  # chip 0 is all nodata: its chunk is not stored
    mask = (np.arange(64 * 80).reshape(64, 80) % 5).astype("uint8")
    plan = plan_chips(grid, 16, grid_id="g")  # 4 x 5 = 20 chips: the last shard is partial
    path = write_store(
        tmp_path / "ds", plan, {"g": ChipSource(image, ["a", "b"], 0, mask=mask)}, layout=layout
    )
    for name in ("image", "mask"):
        reader = ArrayReader(path / "chips.zarr" / name)
        assert reader._fast and reader.sharded == (layout.chips_per_shard > 1)
        expected = zarr.open_array(path / "chips.zarr" / name, mode="r")[:]
        for i in range(len(plan)):
            np.testing.assert_array_equal(reader.read(i), expected[i], f"{name} {i}")
    assert (ArrayReader(path / "chips.zarr" / "image").read(0) == 0).all()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("dataset")
    catalog = make_scene_catalog(tmp / "cogs", scenes=2, size=160)
    import geopandas as gpd
    from shapely.geometry import box

    gpd.GeoDataFrame(
        {"class": ["x"]}, geometry=[box(500_000, 4_000_000, 500_800, 4_001_600)], crs=32633
    ).to_file(tmp / "labels.geojson")
    cfg = scene_config(
        catalog,
        tmp / "ds",
        size=32,
        labels={"path": str(tmp / "labels.geojson"), "classes": {"x": 1}},
        output={"path": str(tmp / "ds"), "codec": "lz4", "chips_per_shard": 4},
    )
    return build(parse_config(cfg), progress=False).path


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_yields_every_chip_once_equal_to_zarr(built: Path, workers: int) -> None:
    dataset = ChipDataset(built, split="train")
    images = zarr.open_array(built / "chips.zarr" / "image", mode="r")
    masks = zarr.open_array(built / "chips.zarr" / "mask", mode="r")
    index = open_store(built).index.set_index("chip_id")
    loader = DataLoader(
        dataset, batch_size=5, shuffle=True, num_workers=workers, collate_fn=collate_chips
    )
    seen: list[str] = []
    for batch in loader:
        assert batch["image"].dtype == torch.uint32 and batch["mask"].dtype == torch.uint8
        assert batch["image"].shape[1:] == (2, 32, 32)
        for k, chip_id in enumerate(batch["chip_id"]):
            i = int(index.loc[chip_id, "index"])
            np.testing.assert_array_equal(batch["image"][k].numpy(), images[i])
            np.testing.assert_array_equal(batch["mask"][k].numpy(), masks[i])
            assert batch["bounds"][k].tolist() == [
                index.loc[chip_id, c] for c in ("minx", "miny", "maxx", "maxy")
            ]
        seen += batch["chip_id"]
    index_train = index[(index["split"] == "train") & (index["status"] == "ok")]
    assert sorted(seen) == sorted(index_train.index)


def test_collate_returns_the_batch_buffer_without_a_copy(built: Path) -> None:
    dataset = ChipDataset(built)
    samples = dataset.__getitems__([3, 0, 7])
    batch = collate_chips(samples)
    pointer = samples[0]["image"].untyped_storage().data_ptr()
    assert batch["image"].untyped_storage().data_ptr() == pointer
    assert torch.equal(batch["image"][1], dataset[0]["image"])
    assert torch.equal(batch["image"], torch.stack([s["image"] for s in samples]))


def test_torchs_default_collate_works_too(built: Path) -> None:
    dataset = ChipDataset(built, split="val")
    ours = [b["image"] for b in DataLoader(dataset, batch_size=4, collate_fn=collate_chips)]
    theirs = [
        b["image"]
        for b in DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=default_collate)
    ]
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))


def test_samples_follow_the_torchgeo_convention(built: Path) -> None:
    sample = ChipDataset(built)[0]
    assert set(sample) == {"image", "mask", "crs", "bounds", "chip_id"}
    assert sample["crs"] == "EPSG:32633"
    assert sample["bounds"].dtype == torch.float64
    assert int(sample["mask"].max()) <= 1 or MASK_IGNORE in sample["mask"].unique().tolist()


def test_negative_indices_and_out_of_range(built: Path) -> None:
    dataset = ChipDataset(built, split="test")
    assert dataset[-1]["chip_id"] == dataset.chip_ids[-1]
    with pytest.raises(IndexError, match="out of range"):
        dataset[len(dataset)]


def test_chip_data_module() -> None:
    from geochip.errors import MissingExtraError
    from geochip.ml.lightning import ChipDataModule, lightning_available

    if lightning_available():  # the extra is installed: it builds the three loaders
        dm = ChipDataModule("unused")
        assert callable(dm.train_dataloader)
    else:
        with pytest.raises(MissingExtraError, match=r"pip install 'geochip\[lightning\]'"):
            ChipDataModule("unused")
