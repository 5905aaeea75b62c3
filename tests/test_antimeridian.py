"""The antimeridian (issue 11): grids that cross 180 degrees search only what is near them.

Scenes are generated in code on both sides of the world at the same latitudes: two near a
grid that straddles 180 degrees (one in UTM zone 60, one in zone 1, both overlapping the
grid), two far (zone 31 at 3 E, zone 46 at 90 E: inside the 360-degree box that a naive
EPSG:4326 bbox of the grid becomes) and one at the same longitude in the other hemisphere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely
import xarray as xr
from odc.geo.geobox import GeoBox
from pyproj import Geod, Transformer
from shapely.geometry import Point, box

from geochip.builder.config import parse_config
from geochip.builder.run import build
from geochip.core.geometry import rfc7946_bbox, stac_footprint, wgs84_footprint
from geochip.sources.catalog import ItemCatalog
from geochip.sources.open import open_catalog
from geochip.store.reader import open_store
from geochip.testing import make_catalog, make_cog, make_item
from geochip.workflows.timeseries import TimeseriesConfig, run_timeseries

GEOD = Geod(ellps="WGS84")
LAT = 63.1  # the scenes' latitude
NEAR = ["near-z60", "near-z01"]
FAR = ["far-z31", "far-z46", "far-south"]


def utm_box(lon: float, lat: float, epsg: int, half: float, res: float = 100) -> GeoBox:
    """A GeoBox in ``epsg`` centred on (lon, lat), ``half`` metres each way."""
    x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)
    x, y = round(x / res) * res, round(y / res) * res
    return GeoBox.from_bbox(
        (x - half, y - half, x + half, y + half), f"EPSG:{epsg}", resolution=res
    )


SCENES = {  # id: (grid, date)
    "near-z60": (utm_box(179.9, LAT, 32660, 10_000), "2024-03-01T12:00:00Z"),
    "near-z01": (utm_box(-179.9, LAT, 32601, 10_000), "2024-03-11T12:00:00Z"),
    "far-z31": (utm_box(3.0, LAT, 32631, 10_000), "2024-03-06T12:00:00Z"),
    "far-z46": (utm_box(90.0, LAT, 32646, 10_000), "2024-03-16T12:00:00Z"),
    "far-south": (utm_box(180.0, -LAT, 32760, 10_000), "2024-03-21T12:00:00Z"),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Any]]:
    root = tmp_path_factory.mktemp("antimeridian")
    items = []
    for n, (item_id, (grid, date)) in enumerate(SCENES.items()):
        path = make_cog(root / "data" / f"{item_id}.tif", grid, pattern="random", seed=n)
        items.append(make_item(item_id, {"red": path}, datetime=date, collection="am"))
    return make_catalog(root, items, collection="am"), items


def test_item_footprints_of_scenes_over_180_are_split_and_narrow(world: tuple) -> None:
    _, items = world
    for item in items:
        geom = shapely.geometry.shape(item.geometry)
        assert geom.is_valid and geom.bounds[0] >= -180 and geom.bounds[2] <= 180
        west, _, east, _ = item.bbox
        span = (east - west) % 360
        assert span < 1, (item.id, item.bbox)  # 20 km at 63 degrees: ~0.4 degrees
    crossing = {i.id: i for i in items}["near-z60"]
    assert shapely.geometry.shape(crossing.geometry).geom_type == "MultiPolygon"
    assert crossing.bbox[0] > crossing.bbox[2]  # RFC 7946: west > east over 180


@pytest.mark.parametrize("crs", ["EPSG:32660", "EPSG:32601"])
def test_timeseries_of_a_geometry_on_180_stacks_only_the_scenes_near_it(
    world: tuple, tmp_path: Path, crs: str
) -> None:
    catalog, _ = world
    geoms = gpd.GeoDataFrame({"id": ["dateline"]}, geometry=[Point(180.0, LAT)], crs=4326)
    cfg = TimeseriesConfig(
        catalog=str(catalog),
        bands=("red",),
        crs=crs,
        resolution=100,
        datetime="2024-03",
        buffer=3000,
        buffer_unit="m",
        resampling="nearest",
    )
    summary = run_timeseries(geoms, cfg, tmp_path / "out")
    assert [r.status for r in summary.results] == ["done"], summary.results
    with xr.open_dataset(tmp_path / "out" / "dateline.nc") as ds:
        assert sorted(ds.attrs["geochip_items"]) == sorted(NEAR)
        assert ds.sizes["time"] == 2
        red = ds["red"].values
        nodata = ds["red"].attrs.get("_FillValue", 0)
        for t in range(2):  # each scene covers its side of 180 in the grid
            assert ((red[t] != nodata) & ~np.isnan(red[t])).any()


def test_build_with_geometries_on_180_stacks_only_the_near_scenes(
    world: tuple, tmp_path: Path
) -> None:
    catalog, _ = world
    gpd.GeoDataFrame({"id": ["p0"]}, geometry=[Point(180.0, LAT)], crs=4326).to_file(
        tmp_path / "points.geojson"
    )
    cfg = {
        "sources": {"kind": "catalog", "path": str(catalog)},
        "bands": ["red"],
        "grid": {
            "crs": "EPSG:32660",
            "resolution": 100,
            "geometries": {"path": str(tmp_path / "points.geojson"), "size": 64},
        },
        "time": {"start": "2024-03-01", "end": "2024-03-31"},
        "chips": {"size": 32},
        "split": {"method": "none"},
        "output": {"path": str(tmp_path / "ds")},
    }
    store = open_store(build(parse_config(cfg), progress=False).path)
    assert len(store) == 4
    for row in store.index.itertuples():
        assert sorted(row.item_ids) == sorted(NEAR), row.item_ids
        assert sorted(i for step in json.loads(row.steps) for i in step) == sorted(NEAR)
    index = gpd.read_parquet(Path(store.path) / "index.parquet")
    assert index.geometry.is_valid.all()
    assert (index.geometry.bounds["minx"] >= -180).all()
    for geom in index.geometry:
        west, _, east, _ = rfc7946_bbox(geom)
        assert (east - west) % 360 < 0.2  # 3.2 km chips, never the globe
    crossing = [g for g in index.geometry if g.geom_type == "MultiPolygon"]
    assert crossing, "the patch is centred on 180: some chips cross it"


def test_a_stac_api_searched_with_the_split_footprint_answers_the_near_items(
    world: tuple,
) -> None:
    from geochip.testing.rustac import RustacServer

    _, items = world
    grid = utm_box(180.0, LAT, 32660, 5_000)
    footprint = wgs84_footprint(grid.extent)
    assert footprint.geom.geom_type == "MultiPolygon"
    with RustacServer(items) as server:
        catalog = open_catalog(server.url)
        found = catalog.search(intersects=footprint.geom, collections="am")
        assert sorted(i.id for i in found) == sorted(NEAR)


def test_local_catalogs_match_crossing_items_with_split_and_unsplit_geometries(
    world: tuple, tmp_path: Path
) -> None:
    _, items = world
    unsplit = items[0].clone()  # near-z60 as other tools write it: one polygon over 180
    naive = SCENES["near-z60"][0].extent.to_crs("EPSG:4326").geom
    assert naive.bounds[2] - naive.bounds[0] > 180  # read literally: around the world
    unsplit.geometry = shapely.geometry.mapping(naive)
    unsplit.id = "near-unsplit"
    assert unsplit.bbox[0] > unsplit.bbox[2]  # but its bbox says it crosses 180
    far = stac_footprint(unsplit.geometry, unsplit.bbox)
    assert far.is_valid and far.geom_type == "MultiPolygon"
    assert far.symmetric_difference(shapely.geometry.shape(items[0].geometry)).area < 1e-3
    catalog = ItemCatalog([*items, unsplit], "memory")
    # near-z60 covers 179.70..-179.89, near-z01 179.89..-179.70 (RFC 7946 bboxes)
    found = catalog.search(intersects=box(179.7, LAT - 0.05, 179.8, LAT + 0.05))
    assert sorted(i.id for i in found) == ["near-unsplit", "near-z60"]
    found = catalog.search(bbox=(-179.8, LAT - 0.05, -179.7, LAT + 0.05))
    assert sorted(i.id for i in found) == ["near-z01"]
    found = catalog.search(bbox=(-180, LAT - 0.05, -179.95, LAT + 0.05))
    assert sorted(i.id for i in found) == ["near-unsplit", "near-z01", "near-z60"]
    # the stac-geoparquet pre-filter keeps an item whose bbox crosses 180
    import stac_geoparquet.arrow as sga

    path = tmp_path / "items.parquet"
    table = sga.parse_stac_items_to_arrow([i.to_dict() for i in items])
    sga.to_parquet(table, path)
    grid = utm_box(180.0, LAT, 32660, 5_000)
    found = open_catalog(str(path)).search(intersects=wgs84_footprint(grid.extent).geom)
    assert sorted(i.id for i in found) == sorted(NEAR)
    assert pq.read_table(path).num_rows == len(items)


# Ways to turn a geometry into EPSG:4326 that do not split at 180 degrees, and the modules
# allowed to use them (with why).
NAIVE = ['to_crs("EPSG:4326"', "to_crs(4326", 'footprint("EPSG:4326"', "transform_bounds"]
NAIVE += ["geographic_extent", "wrapdateline", "boundingbox)"]
ALLOWED = {
    "core/geometry.py": "the one home",
    "read/load.py": "the longitude of one point (a grid's centre)",
    "testing/datasets.py": "generated labels in UTM zone 33, far from 180",
}


def test_geometries_reach_epsg4326_through_one_home() -> None:
    src = Path(__file__).parents[1] / "src" / "geochip"
    found = sorted(
        f"{path.relative_to(src)}: {pattern}"
        for path in src.rglob("*.py")
        if path.relative_to(src).as_posix() not in ALLOWED
        for pattern in NAIVE
        if pattern in path.read_text()
    )
    assert not found, "use geochip.core.geometry (wgs84_footprint, rfc7946_bbox) instead"
