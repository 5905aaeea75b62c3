"""Raster labels on a target grid: exact, refused with the offset, or reprojected (nearest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.warp
from affine import Affine
from odc.geo.geobox import GeoBox

from geochip.core.grid import grid_offset
from geochip.errors import GridMismatchError
from geochip.read.labels import align_label
from geochip.testing import make_cog, make_item

GRID = GeoBox((40, 50), Affine(10, 0, 500_000, 0, -10, 4_000_400), "EPSG:32633")


def _classes(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 6, size=shape).astype("uint8")


def _label(tmp_path: Path, gbox: GeoBox, name: str = "label.tif") -> tuple[Path, np.ndarray]:
    data = _classes(gbox.shape.yx)
    return make_cog(tmp_path / name, gbox, data=data, nodata=0), data


def test_identical_grid_returns_the_pixels_untouched(tmp_path: Path) -> None:
    path, data = _label(tmp_path, GRID)
    got, report = align_label(path, GRID)
    np.testing.assert_array_equal(got, data)
    assert not report.reprojected and report.offset_px == (0.0, 0.0)


def test_half_pixel_shift_raises_with_both_grids_and_the_offset(tmp_path: Path) -> None:
    shifted = GeoBox((40, 50), Affine(10, 0, 500_005, 0, -10, 4_000_395), "EPSG:32633")
    path, _ = _label(tmp_path, shifted)
    with pytest.raises(
        GridMismatchError,
        match=(
            r"label grid \(EPSG:32633, 40x50 px, origin \(500005, 4000395\).*\) differs from the "
            r"target grid \(EPSG:32633, 40x50 px, origin \(500000, 4000400\).*0\.5 rows, "
            r"0\.5 columns off"
        ),
    ):
        align_label(path, GRID)


def test_half_pixel_shift_is_reprojected_with_nearest_when_asked(tmp_path: Path) -> None:
    shifted = GeoBox((40, 50), Affine(10, 0, 500_005, 0, -10, 4_000_395), "EPSG:32633")
    path, data = _label(tmp_path, shifted)
    got, report = align_label(path, GRID, on_mismatch="reproject")
    assert report.reprojected and report.offset_px == (0.5, 0.5)
    # independent: rasterio's own nearest warp of the same file onto the same grid
    want = np.zeros(GRID.shape.yx, "uint8")
    with rasterio.open(path) as ds:
        rasterio.warp.reproject(
            ds.read(1),
            want,
            src_transform=ds.transform,
            src_crs=ds.crs,
            src_nodata=0,
            dst_transform=GRID.affine,
            dst_crs=GRID.crs.to_wkt(),
            dst_nodata=0,
            resampling=rasterio.warp.Resampling.nearest,
        )
    np.testing.assert_array_equal(got, want)
    assert set(np.unique(got)) <= set(np.unique(data)) | {0}  # classes are never blended


def test_coarser_label_grid_is_refused_with_its_pixel_size(tmp_path: Path) -> None:
    coarse = GeoBox((20, 25), Affine(20, 0, 500_000, 0, -20, 4_000_400), "EPSG:32633")
    path, data = _label(tmp_path, coarse)
    with pytest.raises(GridMismatchError, match=r"pixel size x2"):
        align_label(path, GRID)
    got, _ = align_label(path, GRID, on_mismatch="reproject")
    np.testing.assert_array_equal(got, np.repeat(np.repeat(data, 2, axis=0), 2, axis=1))


def test_label_in_another_crs_names_both_crs(tmp_path: Path) -> None:
    other = GeoBox((40, 50), Affine(10, 0, 200_000, 0, -10, 4_000_400), "EPSG:32634")
    path, _ = _label(tmp_path, other)
    with pytest.raises(
        GridMismatchError, match=r"label grid \(EPSG:32634.*target grid \(EPSG:32633"
    ):
        align_label(path, GRID)


def test_label_item_and_array_inputs(tmp_path: Path) -> None:
    from odc.geo.xr import wrap_xr

    path, data = _label(tmp_path, GRID)
    item = make_item("label", {"labels": path})
    np.testing.assert_array_equal(align_label(item, GRID)[0], data)
    array = wrap_xr(data, GRID)
    np.testing.assert_array_equal(align_label(array, GRID)[0], data)


def test_grid_offset_across_crs() -> None:
    from odc.geo.geom import point

    x, y = point(500_000, 4_000_400, "EPSG:32633").to_crs("EPSG:3857").coords[0]
    other = GeoBox((10, 10), Affine(10, 0, x, 0, -10, y), "EPSG:3857")
    assert grid_offset(other, GRID) == pytest.approx((0.0, 0.0), abs=1e-6)
