"""`geochip build` with a time axis: scenes stacked per period, clouds masked per scene,
composites, gap-filling and scaling, checked against plain rasterio reads and numpy.

The scenario (one 64 x 64 px tile at 10 m, SCL at 20 m; 2024-01-01..06-30 by month):

    date        eo:cloud_cover  month
    2024-01-05  30              Jan
    2024-02-10   5              Feb (ranked first: least cloudy)
    2024-02-20  50              Feb
    2024-04-15  20              Apr
    2024-05-01  12              May
    (none)                      Mar, Jun: empty steps
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from geochip.builder.config import parse_config
from geochip.builder.run import build
from geochip.store.format import MASK_IGNORE
from geochip.store.reader import open_store
from geochip.testing.catalogs import make_time_catalog

DATES = ["2024-01-05", "2024-02-10", "2024-02-20", "2024-04-15", "2024-05-01"]
COVERS = [30.0, 5.0, 50.0, 20.0, 12.0]
SCL_MASKED = (0, 1, 3, 8, 9, 10)  # the default classes of masks.kind scl
MONTHS = [
    ["s2-2024-01-05-EPSG32633-0-0"],
    ["s2-2024-02-10-EPSG32633-0-0", "s2-2024-02-20-EPSG32633-0-0"],
    [],
    ["s2-2024-04-15-EPSG32633-0-0"],
    ["s2-2024-05-01-EPSG32633-0-0"],
    [],
]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_time_catalog(tmp_path_factory.mktemp("time"), DATES, covers=COVERS, size=64)


def scene(catalog: Path, item_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(bands (2, 64, 64) uint16, missing (64, 64)) of a scene, read with plain rasterio:
    missing where SCL (20 m, repeated to 10 m) is a masked class or a band is nodata."""
    folder = catalog.parent.parent / "scenes" / item_id
    bands = []
    for band in ("red", "nir"):
        with rasterio.open(folder / f"{band}.tif") as src:
            bands.append(src.read(1))
    with rasterio.open(folder / "scl.tif") as src:
        scl = src.read(1).repeat(2, 0).repeat(2, 1)
    image = np.stack(bands)
    missing = np.isin(scl, SCL_MASKED) | (image == 0).any(axis=0)
    return image, missing


def first_valid(catalog: Path, ids: list[str]) -> np.ndarray:
    """Per pixel, the first scene of ``ids`` valid in every band; 0 where none is."""
    out = np.zeros((2, 64, 64), dtype="uint16")
    taken = np.zeros((64, 64), dtype=bool)
    for item_id in ids:
        image, missing = scene(catalog, item_id)
        use = ~missing & ~taken
        out[:, use] = image[:, use]
        taken |= use
    return out


def config(catalog: Path, out: Path, **sections: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "sources": {"kind": "catalog", "path": str(catalog)},
        "bands": ["red", "nir"],
        "time": {"start": "2024-01-01", "end": "2024-06-30", "periods": "monthly"},
        "masks": {"kind": "scl", "band": "scl"},
        "chips": {"size": 32},
        "split": {"method": "none"},
        "output": {"path": str(out)},
        "engine": {"threads": 2, "batch_size": 2},
    }
    cfg.update(sections)
    return cfg


def chip_window(row: Any) -> tuple[slice, slice]:
    return slice(row.row, row.row + 32), slice(row.col, row.col + 32)


def test_scenes_of_a_tile_are_stacked_per_month_first_valid_scene_first(
    catalog: Path, tmp_path: Path
) -> None:
    result = build(parse_config(config(catalog, tmp_path / "ds")), progress=False)
    store = open_store(result.path)
    assert store.image.shape == (4, 6, 2, 32, 32) and store.image.dtype == "uint16"
    expected = np.stack([first_valid(catalog, ids) for ids in MONTHS])  # (6, 2, 64, 64)
    for row in store.index.itertuples():
        assert json.loads(row.steps) == MONTHS
        image, mask = store.read(row.index)
        ys, xs = chip_window(row)
        np.testing.assert_array_equal(image, expected[:, :, ys, xs], row.chip_id)
        never = (expected[:, :, ys, xs] == 0).any(axis=1).all(axis=0)
        np.testing.assert_array_equal(mask == MASK_IGNORE, never)
        empty = int((expected[:, :, ys, xs] == 0).any(axis=1).all(axis=(1, 2)).sum())
        assert row.empty_steps == empty >= 2  # March and June at least
    assert store.manifest["time"]["steps"] == 6
    assert store.manifest["image"]["dims"] == ["chip", "time", "band", "y", "x"]


def test_gapfill_fills_short_gaps_linearly_by_date_like_numpy(
    catalog: Path, tmp_path: Path
) -> None:
    cfg = config(catalog, tmp_path / "ds")
    cfg["time"]["gapfill"] = {"method": "linear", "max_gap": 1}
    store = open_store(build(parse_config(cfg), progress=False).path)
    assert store.image.dtype == "float32"
    steps = np.stack([first_valid(catalog, ids) for ids in MONTHS]).astype("float32")
    steps[np.broadcast_to((steps == 0).any(axis=1, keepdims=True), steps.shape)] = np.nan
    # the time of a step: its scenes' mean datetime, else the middle of its month
    at = [
        dt.datetime(2024, 1, 5, 10, 30),
        dt.datetime(2024, 2, 15, 10, 30),
        dt.datetime(2024, 3, 16, 12, 0),
        dt.datetime(2024, 4, 15, 10, 30),
        dt.datetime(2024, 5, 1, 10, 30),
        dt.datetime(2024, 6, 16, 0, 0),
    ]
    days = np.array([(t - at[0]).total_seconds() / 86400 for t in at])
    filled = steps.copy()
    for t in range(1, 5):  # interior steps; a gap of one step at most
        gap = np.isnan(steps[t]) & ~np.isnan(steps[t - 1]) & ~np.isnan(steps[t + 1])
        w = (days[t] - days[t - 1]) / (days[t + 1] - days[t - 1])
        value = steps[t - 1] + (steps[t + 1] - steps[t - 1]) * np.float32(w)
        filled[t][gap] = value[gap]
    for row in store.index.itertuples():
        image, _ = store.read(row.index)
        ys, xs = chip_window(row)
        np.testing.assert_allclose(image, filled[:, :, ys, xs], rtol=1e-5, equal_nan=True)
    # March (between Feb and Apr) is filled wherever both neighbours are valid
    image, _ = store.read(0)
    assert np.isfinite(image[2]).mean() > 0.5
    assert np.isnan(image[5]).all()  # June: nothing after it, never extrapolated


def test_median_composites_are_scaled_and_clipped_as_float32(catalog: Path, tmp_path: Path) -> None:
    cfg = config(catalog, tmp_path / "ds", scale={"clip": [0, 0.5]})
    cfg["time"]["composite"] = "median"
    cfg["time"]["periods"] = [["2024-02-01", "2024-02-29"]]  # the month with two scenes
    store = open_store(build(parse_config(cfg), progress=False).path)
    values = []
    for item_id in MONTHS[1]:
        image, missing = scene(catalog, item_id)
        obs = image.astype("float32")
        obs[:, missing] = np.nan
        values.append(obs)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        median = np.nanmedian(np.stack(values), axis=0)
    expected = np.clip(median * np.float32(1e-4) + np.float32(-0.1), 0, 0.5)  # raster:scale
    assert store.manifest["image"]["dtype"] == "float32"
    for row in store.index.itertuples():
        image, _ = store.read(row.index)
        ys, xs = chip_window(row)
        np.testing.assert_allclose(image[0], expected[:, ys, xs], rtol=1e-6, equal_nan=True)
    assert np.nanmax(store.image[:]) == pytest.approx(0.5)


def test_best_composite_takes_the_least_masked_scene_per_pixel(
    catalog: Path, tmp_path: Path
) -> None:
    cfg = config(catalog, tmp_path / "ds")
    cfg["time"].update(periods=[["2024-02-01", "2024-02-29"]], composite="best")
    store = open_store(build(parse_config(cfg), progress=False).path)
    orders = set()
    for row in store.index.itertuples():
        ys, xs = chip_window(row)
        # the cloud score of a scene: its share of masked pixels over the chip
        masked = {i: scene(catalog, i)[1][ys, xs].mean() for i in MONTHS[1]}
        order = sorted(MONTHS[1], key=lambda i: (masked[i], MONTHS[1].index(i)))
        orders.add(tuple(order))
        image, _ = store.read(row.index)
        np.testing.assert_array_equal(image[0], first_valid(catalog, order)[:, ys, xs])
    assert len(orders) == 2  # some chips prefer the scene that eo:cloud_cover ranks second


# --------------------------------------------------------------------------- selection
# 2024-01-01..06-30 in 3 equal periods: p0 [Jan 1, Mar 1 16:00), p1 [.., Apr 30 08:00),
# p2 [.., Jul 1). max_cloud 10, step 5, limit 15:
#   p0: 01-05 30 %, 02-10 5 %, 02-20 50 %  -> 02-10 at threshold 10
#   p1: 04-15 20 %                          -> empty (10, 15 tried)
#   p2: 05-01 12 %                          -> 05-01, relaxed once to 15
SELECTED = [["s2-2024-02-10-EPSG32633-0-0"], [], ["s2-2024-05-01-EPSG32633-0-0"]]


def utm_box(x0: float, y0: float, x1: float, y1: float) -> Any:
    import geopandas as gpd
    from shapely.geometry import box

    return gpd.GeoSeries([box(x0, y0, x1, y1)], crs=32633).to_crs(4326).iloc[0]


def selection_config(catalog: Path, tmp: Path, footprints: str, **sections: Any) -> dict[str, Any]:
    return config(
        catalog,
        tmp / "ds",
        selection={"labels": footprints, "max_cloud": 10, "relax_step": 5, "cloud_limit": 15},
        time={"start": "2024-01-01", "end": "2024-06-30", "periods": 3},
        chips={"size": 16},
        **sections,
    )


def test_selection_stacks_each_labels_chosen_scenes_on_the_scenes_pixels(
    catalog: Path, tmp_path: Path
) -> None:
    import geopandas as gpd

    from geochip.select.table import load_selection

    tiles = gpd.GeoDataFrame(
        {"id": ["A"]}, geometry=[utm_box(500_105, 4_999_455, 500_455, 4_999_805)], crs=4326
    )
    tiles.to_file(tmp_path / "tiles.geojson")
    cfg = selection_config(catalog, tmp_path, str(tmp_path / "tiles.geojson"))
    store = open_store(build(parse_config(cfg), progress=False).path)
    assert store.image.shape[1:] == (3, 2, 16, 16)
    table = load_selection(store.path / "selection.parquet").table
    assert [list(v) for v in table["item_ids"]] == SELECTED
    assert list(table["threshold"]) == [10.0, 15.0, 15.0]
    assert list(table["empty"]) == [False, True, False]
    assert list(table["relax_steps"]) == [0, 1, 1]
    steps = [first_valid(catalog, ids) for ids in SELECTED]
    for row in store.index.itertuples():
        assert json.loads(row.steps) == SELECTED
        # the label's grid lies on the scenes' 10 m pixels: no resampling
        col, rowpx = (row.transform[2] - 500_000) / 10, (5_000_000 - row.transform[5]) / 10
        assert col.is_integer() and rowpx.is_integer()
        ys, xs = slice(int(rowpx), int(rowpx) + 16), slice(int(col), int(col) + 16)
        image, _ = store.read(row.index)
        for t in range(3):
            np.testing.assert_array_equal(image[t], steps[t][:, ys, xs], (row.chip_id, t))
        assert row.empty_steps >= 1  # p1
    assert store.manifest["selection"]["empty"] == 1
    assert store.manifest["time"]["empty_steps"] == 1


def test_a_label_without_any_scene_gets_no_grid_and_is_listed(
    catalog: Path, tmp_path: Path
) -> None:
    import geopandas as gpd
    from shapely.geometry import box

    tiles = gpd.GeoDataFrame(
        {"id": ["A", "far"]},
        geometry=[utm_box(500_105, 4_999_455, 500_455, 4_999_805), box(100, 10, 100.01, 10.01)],
        crs=4326,
    )
    tiles.to_file(tmp_path / "tiles.geojson")
    cfg = selection_config(catalog, tmp_path, str(tmp_path / "tiles.geojson"))
    store = open_store(build(parse_config(cfg), progress=False).path)
    assert set(store.index["grid_id"]) == {"A"}
    assert "far" in store.manifest["time"]["skipped"]


def test_label_rasters_of_stac_label_items_define_the_grids(catalog: Path, tmp_path: Path) -> None:
    from odc.geo.geobox import GeoBox

    from geochip.testing import make_catalog, make_cog, make_item

    grid = GeoBox.from_bbox((500_100, 4_999_480, 500_420, 4_999_800), "EPSG:32633", resolution=10)
    values = np.random.default_rng(3).integers(0, 4, grid.shape.yx).astype("uint8")
    label = make_cog(tmp_path / "labels" / "A.tif", grid, data=values, dtype="uint8", nodata=None)
    item = make_item(
        "A", {"raster": label}, datetime="2024-01-01", properties={"label:type": "raster"}
    )
    labels = make_catalog(tmp_path / "labels", [item])
    cfg = selection_config(
        catalog,
        tmp_path,
        str(labels),
        labels={"kind": "raster", "asset": "raster", "classes": {1: 1, 2: 2, 3: 3}},
    )
    store = open_store(build(parse_config(cfg), progress=False).path)
    assert len(store) == 4  # the label's 32 x 32 px grid, exactly
    first = store.index.sort_values(["row", "col"]).iloc[0]
    assert tuple(first["transform"])[:6] == tuple(grid.affine)[:6]
    for row in store.index.itertuples():
        image, mask = store.read(row.index)
        expected = values[row.row : row.row + 16, row.col : row.col + 16].copy()
        expected[expected == 0] = MASK_IGNORE  # raster value 0 is not in the class map
        never = (image == 0).any(axis=1).all(axis=0)  # no valid value in any step
        expected[never] = MASK_IGNORE
        np.testing.assert_array_equal(mask, expected, row.chip_id)


# --------------------------------------------------------------------------- geometries, CRS


def odc_stack(items: list[Any], geobox: Any) -> tuple[np.ndarray, np.ndarray]:
    """(bands (n, 2, h, w), missing (n, h, w)) of ``items`` on ``geobox`` with odc.stac.load
    (nearest), one time step per item, masked with SCL by numpy."""
    import odc.stac

    ds = odc.stac.load(
        items, bands=["red", "nir", "scl"], geobox=geobox, groupby="id", resampling="nearest"
    )
    order = np.argsort([i.id for i in items])  # groupby id sorts by id; these ids sort by date
    image = np.stack([ds["red"].values, ds["nir"].values], axis=1)[order]
    scl = ds["scl"].values[order]
    return image, np.isin(scl, SCL_MASKED) | (image == 0).any(axis=1)


def test_points_become_patches_centred_on_them_stacked_and_gap_filled(
    catalog: Path, tmp_path: Path
) -> None:
    import geopandas as gpd
    import pystac
    from shapely.geometry import Point

    from geochip.core.grid import point_geobox

    utm = [(500_203.0, 4_999_611.0), (500_488.0, 4_999_420.0)]
    points = gpd.GeoSeries([Point(p) for p in utm], crs=32633).to_crs(4326)
    gpd.GeoDataFrame({"id": ["p0", "p1"]}, geometry=list(points), crs=4326).to_file(
        tmp_path / "points.geojson"
    )
    cfg = config(
        catalog,
        tmp_path / "ds",
        grid={
            "crs": "EPSG:32633",
            "resolution": 10,
            "geometries": {"path": str(tmp_path / "points.geojson"), "size": 12},
        },
        chips={"size": 12},
    )
    cfg["time"]["gapfill"] = {"method": "linear", "max_gap": 2}
    store = open_store(build(parse_config(cfg), progress=False).path)
    items = {i.id: i for i in pystac.Catalog.from_file(str(catalog)).get_items(recursive=True)}
    assert store.image.shape == (2, 6, 2, 12, 12)
    for row, point in zip(store.index.sort_values("grid_id").itertuples(), points, strict=True):
        patch = point_geobox(point, "EPSG:32633", 10, 12)
        assert tuple(row.transform)[:6] == pytest.approx(tuple(patch.affine)[:6])
        cx, cy = patch.affine * (6, 6)  # the patch's centre is the point, exactly
        assert (cx, cy) == pytest.approx(utm[int(row.grid_id[1])], abs=1e-6)
        ids = sorted(items)
        obs, missing = odc_stack([items[i] for i in ids], patch)
        steps = np.full((6, 2, 12, 12), np.nan, dtype="float32")
        for t, month in enumerate(MONTHS):
            taken = np.zeros((12, 12), dtype=bool)
            for item_id in month:
                k = ids.index(item_id)
                use = ~missing[k] & ~taken
                steps[t][:, use] = obs[k][:, use]
                taken |= use
        image, _ = store.read(row.index)
        known = ~np.isnan(steps)
        np.testing.assert_array_equal(image[known], steps[known])  # observed values
        assert np.isnan(image[5]).all()  # June: nothing after it
        filled = ~known & ~np.isnan(image)
        assert filled[2].any()  # March, between February and April
        assert (image[filled] > 0).all()


def test_a_target_crs_reprojects_every_scene_like_odc_stac(catalog: Path, tmp_path: Path) -> None:
    import pystac

    cfg = config(
        catalog,
        tmp_path / "ds",
        grid={"crs": "EPSG:3035", "resolution": 20},
        chips={"size": 16, "edge": "pad"},
    )
    del cfg["time"]
    store = open_store(build(parse_config(cfg), progress=False).path)
    items = {i.id: i for i in pystac.Catalog.from_file(str(catalog)).get_items(recursive=True)}
    assert store.image.shape[1:] == (2, 16, 16)
    assert {str(c) for c in store.index["crs"]} == {"EPSG:3035"}
    for row in store.index[store.index["grid_id"] == MONTHS[0][0]].itertuples():
        from affine import Affine
        from odc.geo.geobox import GeoBox

        chip = GeoBox((16, 16), Affine(*row.transform[:6]), "EPSG:3035")
        obs, missing = odc_stack([items[row.grid_id]], chip)
        expected = np.where(missing[0], 0, obs[0])
        image, _ = store.read(row.index)
        np.testing.assert_array_equal(image, expected, row.chip_id)


# --------------------------------------------------------------------------- the examples,
# on a generated multi-date catalog (the sample has one date per scene)

EXAMPLES = Path(__file__).parents[1] / "examples"


def example(name: str, catalog: Path, out: Path, **sections: Any) -> Any:
    import yaml

    raw = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    raw.update(
        sources={"kind": "catalog", "path": str(catalog)},
        bands=["red", "nir"],
        masks={"kind": "scl", "band": "scl"},
        output={"path": str(out)},
        **sections,
    )
    return parse_config(raw, base=EXAMPLES)


def test_the_landcovernet_example_on_a_multi_date_catalog(catalog: Path, tmp_path: Path) -> None:
    import geopandas as gpd

    from geochip.select.table import load_selection

    gpd.GeoDataFrame(
        {"id": ["A"], "class": ["water"]},
        geometry=[utm_box(500_105, 4_999_455, 500_455, 4_999_805)],
        crs=4326,
    ).to_file(tmp_path / "tiles.geojson")
    cfg = example(
        "landcovernet",
        catalog,
        tmp_path / "ds",
        selection={
            "labels": str(tmp_path / "tiles.geojson"),
            "cloud_band": "scl:scl",  # clouds counted over the tile from SCL
            "cloud_over": "footprint",
            "max_cloud": 10,
            "relax_step": 5,
            "cloud_limit": 50,
        },
        time={"start": "2024-01-01", "end": "2024-06-30", "periods": 3},
        scale={"clip": [0, 1]},  # raster:scale / raster:offset of the items
        labels={"path": str(tmp_path / "tiles.geojson"), "classes": {"water": 1}},
        chips={"size": 16},
    )
    store = open_store(build(cfg, progress=False).path)
    table = load_selection(store.path / "selection.parquet").table
    assert set(table["cloud_method"].map(tuple)) == {("scl",)}
    chosen = [list(ids) for ids in table.sort_values("period")["item_ids"]]
    assert sum(bool(ids) for ids in chosen) == 3  # every period filled
    assert store.image.shape[1:] == (3, 2, 16, 16)
    for row in store.index.itertuples():
        assert json.loads(row.steps) == chosen
        col, rowpx = (row.transform[2] - 500_000) / 10, (5_000_000 - row.transform[5]) / 10
        ys, xs = slice(int(rowpx), int(rowpx) + 16), slice(int(col), int(col) + 16)
        image, mask = store.read(row.index)
        for t, ids in enumerate(chosen):
            raw = first_valid(catalog, ids)[:, ys, xs].astype("float32")
            expected = np.clip(raw * np.float32(1e-4) + np.float32(-0.1), 0, 1)
            expected[:, (raw == 0).any(axis=0)] = np.nan
            np.testing.assert_allclose(image[t], expected, rtol=1e-6, equal_nan=True)
        assert set(np.unique(mask)) <= {0, 1, MASK_IGNORE} and (mask == 1).mean() > 0.5


def test_the_sits_example_on_a_multi_date_catalog_fills_the_gaps(
    catalog: Path, tmp_path: Path
) -> None:
    import geopandas as gpd
    from shapely.geometry import Point

    points = gpd.GeoSeries([Point(500_203, 4_999_611)], crs=32633).to_crs(4326)
    gpd.GeoDataFrame({"id": ["p0"]}, geometry=list(points), crs=4326).to_file(
        tmp_path / "points.geojson"
    )
    cfg = example(
        "sits",
        catalog,
        tmp_path / "ds",
        grid={
            "crs": "EPSG:32633",
            "resolution": 10,
            "geometries": {"path": str(tmp_path / "points.geojson"), "size": 16},
        },
        time={
            "start": "2024-01-01",
            "end": "2024-06-30",
            "periods": "monthly",
            "gapfill": {"method": "linear", "max_gap": 2},
        },
    )
    store = open_store(build(cfg, progress=False).path)
    assert store.image.shape == (1, 6, 2, 16, 16)
    assert json.loads(store.index["steps"].iloc[0]) == MONTHS
    image, _ = store.read(0)
    march = image[2]
    assert np.isfinite(march).mean() > 0.5  # the empty month, filled from Feb and Apr
    lo, hi = np.fmin(image[1], image[3]), np.fmax(image[1], image[3])
    ok = np.isfinite(march)
    assert ((march[ok] >= lo[ok] - 1e-3) & (march[ok] <= hi[ok] + 1e-3)).all()
    assert np.isnan(image[5]).all()


def test_k_scenes_per_period_are_composited_best_first(catalog: Path, tmp_path: Path) -> None:
    import geopandas as gpd

    gpd.GeoDataFrame(
        {"id": ["A"]}, geometry=[utm_box(500_105, 4_999_455, 500_455, 4_999_805)], crs=4326
    ).to_file(tmp_path / "tiles.geojson")
    cfg = selection_config(catalog, tmp_path, str(tmp_path / "tiles.geojson"))
    cfg["selection"].update(cloud_limit=40, k=2)
    store = open_store(build(parse_config(cfg), progress=False).path)
    # p0: 02-10 (5 %), then 01-05 (30 %); 02-20 (50 %) is over the limit
    chosen = [MONTHS[1][:1] + MONTHS[0], MONTHS[3], MONTHS[4]]
    steps = [first_valid(catalog, ids) for ids in chosen]
    for row in store.index.itertuples():
        assert json.loads(row.steps) == chosen
        col, rowpx = (row.transform[2] - 500_000) / 10, (5_000_000 - row.transform[5]) / 10
        ys, xs = slice(int(rowpx), int(rowpx) + 16), slice(int(col), int(col) + 16)
        image, _ = store.read(row.index)
        for t in range(3):
            np.testing.assert_array_equal(image[t], steps[t][:, ys, xs])


def test_strict_selection_refuses_an_empty_period(catalog: Path, tmp_path: Path) -> None:
    import geopandas as gpd

    from geochip.builder.plan import plan_build
    from geochip.errors import EmptyPeriodError

    gpd.GeoDataFrame(
        {"id": ["A"]}, geometry=[utm_box(500_105, 4_999_455, 500_455, 4_999_805)], crs=4326
    ).to_file(tmp_path / "tiles.geojson")
    cfg = selection_config(catalog, tmp_path, str(tmp_path / "tiles.geojson"))
    cfg["selection"]["strict"] = True
    with pytest.raises(EmptyPeriodError, match=r"label 'A', period 1 \(p1"):
        plan_build(parse_config(cfg))


def test_polygons_become_their_buffered_boxes_on_the_resolution_lattice(
    catalog: Path, tmp_path: Path
) -> None:
    import geopandas as gpd
    from odc.geo.geom import Geometry

    from geochip.core.grid import geometry_geobox

    field = utm_box(500_153, 4_999_402, 500_361, 4_999_555)
    gpd.GeoDataFrame({"name": ["field-1"]}, geometry=[field], crs=4326).to_file(
        tmp_path / "fields.geojson"
    )
    geometries = {
        "path": str(tmp_path / "fields.geojson"),
        "id_column": "name",
        "mode": "box",
        "buffer": 20,
        "buffer_unit": "m",
    }
    cfg = config(
        catalog,
        tmp_path / "ds",
        grid={"crs": "EPSG:32633", "resolution": 10, "geometries": geometries},
        chips={"size": 16, "edge": "pad"},
    )
    store = open_store(build(parse_config(cfg), progress=False).path)
    grid = geometry_geobox(Geometry(field, "EPSG:4326"), "EPSG:32633", 10, buffer=20)
    assert grid.affine.c % 10 == 0 and grid.affine.f % 10 == 0  # edges on the 10 m lattice
    first = store.index.sort_values(["row", "col"]).iloc[0]
    assert first["grid_id"] == "field-1"
    assert tuple(first["transform"])[:6] == pytest.approx(tuple(grid.affine)[:6])
    h, w = grid.shape.yx
    assert len(store) == -(-h // 16) * -(-w // 16)
