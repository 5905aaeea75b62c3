"""Cube files: NetCDF-4 and Zarr, block by block, CF metadata, atomic."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from geochip.store.cubes import open_cube, write_cube

GRID = GeoBox.from_bbox((600_000, 5_000_000, 600_700, 5_000_500), "EPSG:32633", resolution=10)


def _cube(lazy: bool = True) -> xr.DataArray:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 3000, size=(3, 2, *GRID.shape.yx)).astype("uint16")
    arr = da.from_array(data, chunks=(1, 1, 20, 30)) if lazy else data
    return xr.DataArray(
        arr,
        dims=("time", "band", "y", "x"),
        coords={
            **xr_coords(GRID),
            "time": pd.date_range("2024-01-01", periods=3, freq="7D"),
            "band": ["red", "nir"],
            "nodata": ("band", [0.0, 0.0]),
            "scale": ("band", [1e-4, 1e-4]),
            "offset": ("band", [0.0, 0.0]),
            "masked_fraction": ("time", da.from_array(np.array([0.1, 0.2, 0.3]), chunks=1)),
        },
    )


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_lazy_cube_round_trips_block_by_block(tmp_path: Path, suffix: str) -> None:
    cube = _cube()
    path = write_cube(cube, tmp_path / f"cube{suffix}", workers=2)
    ds = open_cube(path)
    for band in ("red", "nir"):
        np.testing.assert_array_equal(ds[band].values, cube.sel(band=band).values)
        assert ds[band].dtype == np.uint16
        assert ds[band].attrs["geochip_scale"] == 1e-4
    np.testing.assert_allclose(ds["masked_fraction"].values, [0.1, 0.2, 0.3])
    assert ds.odc.geobox == GRID
    assert not list(tmp_path.glob(".*partial"))


def test_netcdf_is_read_by_gdal_with_crs_and_transform(tmp_path: Path) -> None:
    path = write_cube(_cube(), tmp_path / "cube.nc")
    with rasterio.open(f"netcdf:{path}:red") as ds:
        assert ds.crs.to_epsg() == 32633
        assert tuple(ds.transform)[:6] == pytest.approx(tuple(GRID.affine)[:6])
        assert ds.count == 3 and ds.nodata == 0


def test_rioxarray_reads_the_crs(tmp_path: Path) -> None:
    import rioxarray  # noqa: F401

    path = write_cube(_cube(lazy=False), tmp_path / "cube.nc")
    ds = xr.open_dataset(path, decode_coords="all")
    assert ds.rio.crs.to_epsg() == 32633
    assert tuple(ds.rio.transform())[:6] == pytest.approx(tuple(GRID.affine)[:6])
    assert np.isnan(ds.red.values).any() == bool((_cube(lazy=False).values[:, 0] == 0).any())


def test_a_failed_write_leaves_no_file(tmp_path: Path) -> None:
    def boom(block: np.ndarray) -> np.ndarray:
        if block.mean() >= 0:
            raise OSError("disk on fire")
        return block

    cube = _cube()
    cube = cube.copy(data=cube.data.map_blocks(boom, dtype=cube.dtype))
    for suffix in (".nc", ".zarr"):
        with pytest.raises(OSError, match="disk on fire"):
            write_cube(cube, tmp_path / f"cube{suffix}")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_is_kept_unless_overwrite(tmp_path: Path) -> None:
    from geochip.errors import InputError

    path = write_cube(_cube(lazy=False), tmp_path / "cube.nc")
    with pytest.raises(InputError, match="pass overwrite=True"):
        write_cube(_cube(lazy=False), path, overwrite=False)
