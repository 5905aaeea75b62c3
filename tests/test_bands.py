"""STAC metadata as providers publish it, and bands of multi-band files (issue 11, parts 2-3).

Items are written the way Planetary Computer, Earth Search, the Copernicus Data Space, USGS
(Landsat C2) and STAC 1.0 catalogs publish them, pointing at COGs generated here. The oracle
is a plain rasterio read of the file (times the published scale, plus the offset)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
from odc.geo.geobox import GeoBox

from geochip.builder.config import parse_config
from geochip.builder.plan import plan_build
from geochip.builder.run import build
from geochip.core.bands import band_choices, header_bands, parse_nodata, resolve_bands
from geochip.errors import AmbiguousBandError, BandNotFoundError, MissingHrefError
from geochip.read.cube import scale_cube
from geochip.read.load import band_scaling, load_cube, load_stack
from geochip.read.open import open_scene
from geochip.sources.files import folder_items
from geochip.sources.items import normalize_item
from geochip.sources.open import open_catalog
from geochip.store.reader import open_store
from geochip.testing import make_cog

GRID = GeoBox.from_bbox((500_000, 4_999_360, 500_640, 5_000_000), "EPSG:32633", resolution=10)
GRID20 = GeoBox.from_bbox((500_000, 4_999_360, 500_640, 5_000_000), "EPSG:32633", resolution=20)
FOOTPRINT = GRID.extent.to_crs("EPSG:4326")
COG = "image/tiff; application=geotiff; profile=cloud-optimized"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("provider-files")
    return {
        "b04": make_cog(root / "B04.tif", GRID, dtype="uint16", nodata=0, seed=1),
        "b04_20m": make_cog(root / "B04_20m.tif", GRID20, dtype="uint16", nodata=0, seed=2),
        "scl": make_cog(root / "SCL.tif", GRID20, dtype="uint8", pattern="random", seed=3),
        "visual": make_cog(root / "TCI.tif", GRID, bands=3, dtype="uint8", pattern="random"),
        "f32": make_cog(root / "f32.tif", GRID, dtype="float32", nodata=float("nan")),
        "qa": make_cog(root / "QA.tif", GRID, dtype="uint16", nodata=1, pattern="random"),
    }


def proj(grid: GeoBox, epsg: bool = False) -> dict[str, Any]:
    crs = {"proj:epsg": 32633} if epsg else {"proj:code": "EPSG:32633"}
    return {**crs, "proj:shape": list(grid.shape.yx), "proj:transform": list(grid.affine)[:6]}


def feature(item_id: str, assets: dict[str, Any], version: str = "1.0.0", **props: Any) -> Any:
    return {
        "type": "Feature",
        "stac_version": version,
        "stac_extensions": [
            "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
            "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
        ],
        "id": item_id,
        "geometry": FOOTPRINT.json,
        "bbox": list(FOOTPRINT.boundingbox),
        "properties": {"datetime": "2024-05-01T10:00:00Z", **props},
        "links": [],
        "assets": assets,
    }


def planetary_computer(files: dict[str, Path]) -> dict[str, Any]:
    """Sentinel-2 L2A as the Planetary Computer publishes it: eo:bands only, no raster:bands."""
    return feature(
        "S2B_MSIL2A_20240501_pc",
        {
            "B04": {
                "href": str(files["b04"]),
                "type": COG,
                "roles": ["data"],
                "title": "Band 4 - Red - 10m",
                "gsd": 10.0,
                "eo:bands": [
                    {
                        "name": "B04",
                        "common_name": "red",
                        "description": "Band 4 - Red",
                        "center_wavelength": 0.665,
                        "full_width_half_max": 0.038,
                    }
                ],
                **proj(GRID),
            },
            "SCL": {
                "href": str(files["scl"]),
                "type": COG,
                "roles": ["data"],
                "title": "Scene classfication map (SCL)",
                "gsd": 20.0,
                **proj(GRID20),
            },
            "visual": {
                "href": str(files["visual"]),
                "type": COG,
                "roles": ["data"],
                "gsd": 10.0,
                "eo:bands": [
                    {"name": "B04", "common_name": "red"},
                    {"name": "B03", "common_name": "green"},
                    {"name": "B02", "common_name": "blue"},
                ],
                **proj(GRID),
            },
            "preview": {"href": "https://example.com/preview", "type": "text/html"},
        },
        **{"proj:epsg": 32633, "eo:cloud_cover": 3.2, "s2:mgrs_tile": "33TWM"},
    )


def earth_search(files: dict[str, Path]) -> dict[str, Any]:
    """Earth Search v1: asset keys are common names, raster:bands with scale and offset."""
    return feature(
        "S2B_33TWM_20240501_0_L2A",
        {
            "red": {
                "href": str(files["b04"]),
                "type": COG,
                "roles": ["data", "reflectance"],
                "eo:bands": [{"name": "red", "common_name": "red", "center_wavelength": 0.665}],
                "raster:bands": [
                    {
                        "nodata": 0,
                        "data_type": "uint16",
                        "bits_per_sample": 15,
                        "spatial_resolution": 10,
                        "scale": 0.0001,
                        "offset": -0.1,
                    }
                ],
                **proj(GRID, epsg=True),
            },
            "scl": {
                "href": str(files["scl"]),
                "type": COG,
                "roles": ["data"],
                "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": 20}],
                **proj(GRID20, epsg=True),
            },
        },
        **{"proj:epsg": 32633},
    )


def copernicus(files: dict[str, Path]) -> dict[str, Any]:
    """The Copernicus Data Space (STAC 1.1): band fields given once on the asset."""

    def asset(path: Path, grid: GeoBox, name: str, **fields: Any) -> dict[str, Any]:
        return {
            "href": str(path),
            "type": COG,
            "roles": ["data"],
            "bands": [{"name": name, **({"eo:common_name": "red"} if name == "B04" else {})}],
            **fields,
            **proj(grid),
        }

    scaled = {"data_type": "uint16", "nodata": 0, "raster:scale": 0.0001, "raster:offset": -0.1}
    return feature(
        "S2B_MSIL2A_20240501_cdse",
        {
            "B04_10m": asset(files["b04"], GRID, "B04", gsd=10, **scaled),
            "B04_20m": asset(files["b04_20m"], GRID20, "B04", gsd=20, **scaled),
            "SCL_20m": asset(files["scl"], GRID20, "SCL", data_type="uint8", nodata=0),
        },
        version="1.1.0",
    )


def landsat(files: dict[str, Path]) -> dict[str, Any]:
    """USGS Landsat Collection 2 Level-2: band names SR_B4..., raster:bands per asset."""
    return feature(
        "LC09_L2SP_190029_20240501_02_T1_SR",
        {
            "red": {
                "href": str(files["b04"]),
                "type": COG,
                "roles": ["data"],
                "eo:bands": [{"name": "SR_B4", "common_name": "red", "gsd": 30}],
                "raster:bands": [
                    {
                        "data_type": "uint16",
                        "nodata": 0,
                        "unit": "unitless",
                        "scale": 2.75e-05,
                        "offset": -0.2,
                    }
                ],
                **proj(GRID, epsg=True),
            },
            "qa_pixel": {
                "href": str(files["qa"]),
                "type": COG,
                "roles": ["cloud", "cloud-shadow"],
                "raster:bands": [{"data_type": "uint16", "nodata": 1, "unit": "bit index"}],
                **proj(GRID, epsg=True),
            },
        },
        **{"proj:epsg": 32633, "landsat:collection_number": "02"},
    )


def stac09_indexes(files: dict[str, Path]) -> dict[str, Any]:
    """Old Earth Search (sentinel-s2-l2a-cogs): item-level eo:bands, assets point by index."""
    names = [("B02", "blue"), ("B03", "green"), ("B04", "red")]
    data = feature(
        "S2B_33TWM_20240501_0_L2A_old",
        {
            "B04": {
                "href": str(files["b04"]),
                "type": COG,
                "roles": ["data"],
                "eo:bands": [2],
                **proj(GRID, epsg=True),
            }
        },
        **{"proj:epsg": 32633},
    )
    data["properties"]["eo:bands"] = [{"name": n, "common_name": c} for n, c in names]
    return data


def rio(path: Path, band: int = 1) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(band)


AS_PUBLISHED: list[Callable[[pystac.Item], pystac.Item]] = [lambda i: i, normalize_item]


@pytest.mark.parametrize("prepare", AS_PUBLISHED, ids=["raw", "normalized"])
def test_planetary_computer_items_keep_the_source_dtype_and_nodata(
    files: dict[str, Path], prepare: Callable[[pystac.Item], pystac.Item], caplog: Any
) -> None:
    item = prepare(pystac.Item.from_dict(planetary_computer(files)))
    with caplog.at_level(logging.DEBUG, logger="geochip.core.bands"):
        cube = load_cube([item], ["red", "SCL"], GRID, chunks=None)
    assert "band 'red' is band 1 of asset 'B04' (common name" in caplog.text
    assert cube.red.dtype == np.uint16 and cube.red.attrs["nodata"] == 0  # not float32/NaN
    np.testing.assert_array_equal(cube.red.values[0], rio(files["b04"]))
    assert cube.SCL.dtype == np.uint8  # from the header: the item says nothing
    np.testing.assert_array_equal(cube.SCL.values[0, ::2, ::2], rio(files["scl"]))
    visual = load_stack([item], ["visual"], GRID, chunks=None)
    assert list(visual.band.values) == ["visual.1", "visual.2", "visual.3"]
    assert visual.dtype == np.uint8
    for i in range(3):
        np.testing.assert_array_equal(visual.values[0, i], rio(files["visual"], i + 1))


@pytest.mark.parametrize("prepare", AS_PUBLISHED, ids=["raw", "normalized"])
def test_earth_search_scale_and_offset_are_applied(
    files: dict[str, Path], prepare: Callable[[pystac.Item], pystac.Item]
) -> None:
    item = prepare(pystac.Item.from_dict(earth_search(files)))
    cube = load_stack([item], ["red", "SCL"], GRID, chunks=None)  # SCL: the asset scl
    assert list(cube.band.values) == ["red", "SCL"] and cube.dtype == np.uint16
    assert cube.scale.values[0] == pytest.approx(1e-4) and cube.offset.values[0] == -0.1
    scaled = scale_cube(cube.sel(band=["red"]))
    raw = rio(files["b04"]).astype("float64")
    oracle = np.where(raw == 0, np.nan, raw * 1e-4 - 0.1)
    np.testing.assert_allclose(scaled.values[0, 0], oracle, atol=1e-6)


@pytest.mark.parametrize("prepare", AS_PUBLISHED, ids=["raw", "normalized"])
def test_copernicus_asset_level_fields_are_read(
    files: dict[str, Path], prepare: Callable[[pystac.Item], pystac.Item]
) -> None:
    item = prepare(pystac.Item.from_dict(copernicus(files)))
    assert band_scaling([item], "B04_10m") == (0.0001, -0.1)
    with pytest.raises(AmbiguousBandError, match=r"'B04'.*'B04_10m', 'B04_20m'"):
        resolve_bands(item, ["B04"], headers=False)
    (scl,) = resolve_bands(item, ["scl"], headers=False)  # band name SCL, any case
    assert (scl.asset, scl.data_type, scl.nodata) == ("SCL_20m", "uint8", 0)
    cube = load_stack([item], ["B04_10m"], GRID, chunks=None)
    assert cube.dtype == np.uint16 and cube.nodata.values.tolist() == [0.0]
    raw = rio(files["b04"]).astype("float64")
    np.testing.assert_allclose(
        scale_cube(cube).values[0, 0], np.where(raw == 0, np.nan, raw * 1e-4 - 0.1), atol=1e-6
    )


def test_a_build_with_scale_reads_copernicus_asset_level_scale(
    files: dict[str, Path], tmp_path: Path
) -> None:
    catalog = tmp_path / "items.json"
    catalog.write_text(json.dumps({"type": "FeatureCollection", "features": [copernicus(files)]}))
    config = {
        "sources": {"kind": "catalog", "path": str(catalog)},
        "bands": ["B04_10m"],
        "chips": {"size": 32},
        "split": {"method": "none"},
        "scale": {},
        "output": {"path": str(tmp_path / "ds")},
        "engine": {"threads": 1},
    }
    store = open_store(build(parse_config(config), progress=False).path)
    raw = rio(files["b04"]).astype("float64")
    oracle = np.where(raw == 0, np.nan, raw * 1e-4 - 0.1).astype("float32")
    for n, (row, col) in enumerate(zip(store.index["row"], store.index["col"], strict=True)):
        np.testing.assert_allclose(
            store.image[n][0], oracle[row : row + 32, col : col + 32], atol=1e-6
        )


def test_landsat_band_names_and_bit_fields(files: dict[str, Path]) -> None:
    item = normalize_item(pystac.Item.from_dict(landsat(files)))
    cube = load_stack([item], ["SR_B4"], GRID, chunks=None)  # a band name -> asset red
    assert cube.scale.values[0] == pytest.approx(2.75e-5) and cube.offset.values[0] == -0.2
    np.testing.assert_array_equal(cube.values[0, 0], rio(files["b04"]))
    qa = load_cube([item], ["qa_pixel"], GRID, chunks=None, resampling="bilinear")
    assert qa.qa_pixel.dtype == np.uint16 and qa.qa_pixel.attrs["nodata"] == 1


@pytest.mark.parametrize("prepare", AS_PUBLISHED, ids=["raw", "normalized"])
def test_item_level_eo_bands_by_index(
    files: dict[str, Path], prepare: Callable[[pystac.Item], pystac.Item]
) -> None:
    item = prepare(pystac.Item.from_dict(stac09_indexes(files)))
    (red,) = resolve_bands(item, ["red"])
    assert (red.asset, red.data_type, red.nodata) == ("B04", "uint16", 0)


def test_nodata_strings_and_missing_data_type(files: dict[str, Path]) -> None:
    assert [parse_nodata(v) for v in ("nan", "inf", "-inf", "-9999", 5.5, "x")][1:] == [
        float("inf"),
        float("-inf"),
        -9999,
        5.5,
        None,
    ]
    item = pystac.Item.from_dict(
        feature(
            "f",
            {
                "f32": {"href": str(files["f32"]), "type": COG, "bands": [{"nodata": "nan"}]},
                "u16": {"href": str(files["b04"]), "type": COG, "raster:bands": [{"nodata": 0}]},
            },
            version="1.1.0",
            **{"proj:code": "EPSG:32633"},
        )
    )
    cube = load_cube([item], ["f32", "u16"], GRID, chunks=None)
    assert cube.f32.dtype == np.float32 and np.isnan(cube.f32.attrs["nodata"])
    assert cube.u16.dtype == np.uint16 and cube.u16.attrs["nodata"] == 0  # dtype: the header
    np.testing.assert_array_equal(cube.f32.values[0], rio(files["f32"]))


def _pure_item() -> pystac.Item:
    data = feature(
        "order",
        {
            "red": {"href": "red.tif", "bands": [{"name": "B04", "eo:common_name": "red"}]},
            "B8A_20m": {"href": "b8a.tif", "bands": [{"name": "B8A", "eo:common_name": "nir08"}]},
            "scl": {"href": "scl.tif", "bands": [{"name": "SCL"}]},
            "SCL_60m": {"href": "scl60.tif", "bands": [{"name": "SCL"}]},
            "visual": {
                "href": "tci.tif",
                "bands": [{"name": "B04", "eo:common_name": "red"}, {"name": "B03"}],
            },
            "rgb": {"href": "rgb.tif", "bands": [{"name": "R"}, {"name": "G"}]},
            "RGB": {"href": "rgb2.tif", "bands": [{}]},
        },
        version="1.1.0",
    )
    return pystac.Item.from_dict(data)


@pytest.mark.parametrize(
    ("name", "asset", "index", "channel"),
    [
        ("red", "red", 1, "red"),  # asset key first, even though B04 is also a band name
        ("B04", "red", 1, "B04"),  # band name: the single-band asset over visual's band 1
        ("nir08", "B8A_20m", 1, "nir08"),  # common name
        ("b8a", "B8A_20m", 1, "b8a"),  # band name, any case
        ("visual.2", "visual", 2, "visual.2"),
        ("B03", "visual", 2, "B03"),
        ("scl", "scl", 1, "scl"),  # exact key before the band name SCL of two assets
        ("rgb.2", "rgb", 2, "rgb.2"),
    ],
)
def test_resolution_order(name: str, asset: str, index: int, channel: str) -> None:
    (band,) = resolve_bands(_pure_item(), [name], headers=False)
    assert (band.asset, band.index, band.name) == (asset, index, channel)


def test_ambiguous_names_list_the_candidates() -> None:
    item = _pure_item()
    with pytest.raises(AmbiguousBandError, match=r"'Rgb'.*'rgb', 'RGB'"):
        resolve_bands(item, ["Rgb"], headers=False)
    with pytest.raises(AmbiguousBandError, match=r"'SCL'.*band name: 'scl', 'SCL_60m'"):
        resolve_bands(item, ["SCL"], headers=False)
    with pytest.raises(BandNotFoundError) as info:
        resolve_bands(item, ["swir16"], headers=False)
    assert {"red", "visual.1", "B04", "nir08", "SCL"} <= set(info.value.available)
    assert band_choices(item)[:3] == ["red", "B8A_20m", "scl"]


@pytest.fixture(scope="module")
def rgbn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("rgbn")
    for n in range(2):
        make_cog(
            folder / f"tile{n}_2024050{n + 1}.tif",
            GRID,
            bands=4,
            dtype="uint16",
            seed=n,
            pattern="random",
            descriptions=["blue", "green", "red", "nir"],
        )
    return folder


def test_a_four_band_file_is_four_channels_by_its_key(rgbn: Path) -> None:
    items = folder_items(rgbn)
    path = Path(items[0].assets["data"].href)
    cube = load_stack(items[:1], ["data"], GRID, chunks=None)
    assert list(cube.band.values) == ["data.1", "data.2", "data.3", "data.4"]
    with rasterio.open(path) as ds:
        np.testing.assert_array_equal(cube.values[0], ds.read())
    named = load_stack(items[:1], ["nir", "blue", "data.2"], GRID, chunks=None)
    assert list(named.band.values) == ["nir", "blue", "data.2"]
    for n, band in enumerate((4, 1, 2)):
        np.testing.assert_array_equal(named.values[0, n], rio(path, band))
    with pytest.raises(BandNotFoundError, match=r"'purple'.*'data\.1'.*'blue'"):
        load_cube(items, ["purple"], GRID)
    with pytest.raises(BandNotFoundError, match=r"'data\.5'"):
        load_cube(items, ["data.5"], GRID)
    scene = open_scene(items[0], asset="red")
    assert scene.band_names == ("red",) and scene.parts[0].bands == (3,)
    # named as a build names them (the cube above); the STAC names still select bands
    assert open_scene(items[0], asset="data").band_names == ("data.1", "data.2", "data.3", "data.4")
    picked = open_scene(items[0], asset="data", bands=["nir", "blue"])
    assert picked.band_names == ("nir", "blue") and picked.parts[0].bands == (4, 1)


@pytest.mark.parametrize("bands", [["data"], ["blue", "nir"]])
def test_a_build_of_four_band_files(rgbn: Path, tmp_path: Path, bands: list[str]) -> None:
    config = {
        "sources": {"kind": "files", "path": str(rgbn)},
        "bands": bands,
        "chips": {"size": 32},
        "split": {"method": "none"},
        "output": {"path": str(tmp_path / "ds")},
        "engine": {"threads": 1},
    }
    store = open_store(build(parse_config(config), progress=False).path)
    which = [1, 2, 3, 4] if bands == ["data"] else [1, 4]
    assert store.image.shape[1] == len(which)
    assert store.bands == (["data.1", "data.2", "data.3", "data.4"] if bands == ["data"] else bands)
    for n, row in store.index.iterrows():
        path = rgbn / f"{row['grid_id']}.tif"
        with rasterio.open(path) as ds:
            window = ((row["row"], row["row"] + 32), (row["col"], row["col"] + 32))
            np.testing.assert_array_equal(store.image[n], ds.read(which, window=window))


def test_search_json_shows_names_that_load(rgbn: Path) -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "geochip", "search", "--catalog", str(rgbn), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    feature_ = json.loads(shown.stdout)["features"][0]
    names = [b["name"] for b in feature_["assets"]["data"]["bands"]]
    assert names == ["blue", "green", "red", "nir"]
    item = pystac.Item.from_dict(feature_)
    assert [b.index for b in resolve_bands(item, names)] == [1, 2, 3, 4]


def test_an_asset_without_href_is_named(files: dict[str, Path], tmp_path: Path) -> None:
    data = earth_search(files)
    del data["assets"]["scl"]["href"]
    path = tmp_path / "items.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [data]}))
    with pytest.raises(MissingHrefError, match=r"item 'S2B_33TWM_20240501_0_L2A'.*'scl'"):
        open_catalog(str(path)).search()
    item = pystac.Item.from_dict(earth_search(files))
    item.assets["scl"].href = ""
    with pytest.raises(MissingHrefError, match="asset 'scl' has no href"):
        load_cube([item], ["scl"], GRID)


def test_headers_are_read_once_per_href(files: dict[str, Path], tmp_path: Path) -> None:
    path = make_cog(tmp_path / "once.tif", GRID, bands=2, dtype="int16", nodata=-1)
    first = header_bands(str(path))
    path.unlink()  # the second answer comes from the cache
    assert (
        header_bands(str(path))
        == first
        == [
            {"data_type": "int16", "nodata": -1.0},
            {"data_type": "int16", "nodata": -1.0},
        ]
    )


def test_a_build_from_planetary_computer_items_keeps_uint16(
    files: dict[str, Path], tmp_path: Path
) -> None:
    catalog = tmp_path / "items.json"
    catalog.write_text(
        json.dumps({"type": "FeatureCollection", "features": [planetary_computer(files)]})
    )
    config = parse_config(
        {
            "sources": {"kind": "catalog", "path": str(catalog)},
            "bands": ["red"],
            "chips": {"size": 32},
            "split": {"method": "none"},
            "output": {"path": str(tmp_path / "ds")},
            "engine": {"threads": 1},
        }
    )
    (spec,) = plan_build(config).grids.values()  # the header's answer travels to the tasks
    (band,) = spec.item["assets"]["B04"]["bands"]
    assert (band["name"], band["eo:common_name"], band["data_type"], band["nodata"]) == (
        "B04",
        "red",
        "uint16",
        0,
    )
    store = open_store(build(config, progress=False).path)
    assert store.image.dtype == np.uint16 and store.manifest["image"]["nodata"] == 0
    raw = rio(files["b04"])
    for n, (row, col) in enumerate(zip(store.index["row"], store.index["col"], strict=True)):
        np.testing.assert_array_equal(store.image[n][0], raw[row : row + 32, col : col + 32])


def test_band_fields_win_over_asset_fields_over_item_fields() -> None:
    data = feature(
        "levels",
        {
            "a": {
                "href": "a.tif",
                "nodata": 0,
                "raster:scale": 0.5,
                "bands": [{"nodata": 7, "data_type": "int16"}, {"data_type": "int16"}],
            }
        },
        version="1.1.0",
        **{"nodata": -1, "raster:offset": 3.0},
    )
    first, second = resolve_bands(pystac.Item.from_dict(data), ["a"], headers=False)
    assert (first.nodata, first.scale, first.offset) == (7, 0.5, 3.0)
    assert (second.nodata, second.scale, second.offset) == (0, 0.5, 3.0)
