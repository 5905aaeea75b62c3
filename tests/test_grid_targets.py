"""Target grids: from a label raster, a geometry (+ buffer), a point (patch)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from odc.geo.geobox import GeoBox
from odc.geo.geom import point
from shapely.geometry import Polygon

from geochip.core.geometry import buffer_geometry
from geochip.core.grid import geometry_geobox, label_geobox, point_geobox
from geochip.errors import InputError
from geochip.testing import make_cog, make_item

# (lon, lat, UTM EPSG) in four zones, both hemispheres
POINTS = [
    (9.19, 45.46, 32632),
    (15.2, 52.1, 32633),
    (-75.3, 40.1, 32618),
    (151.21, -33.87, 32756),
]


@pytest.mark.parametrize(("lon", "lat", "epsg"), POINTS)
@pytest.mark.parametrize(("dimx", "dimy"), [(10, 10), (7, 4), (1, 1)])
def test_point_patch_has_its_size_and_is_centred(
    lon: float, lat: float, epsg: int, dimx: int, dimy: int
) -> None:
    gbox = point_geobox((lon, lat), f"EPSG:{epsg}", 20, {"y": dimy, "x": dimx})
    assert gbox.shape.yx == (dimy, dimx)
    x, y = point(lon, lat, "EPSG:4326").to_crs(f"EPSG:{epsg}").coords[0]
    cx, cy = gbox.extent.centroid.coords[0]
    assert (cx, cy) == pytest.approx((x, y), abs=1e-6)
    assert gbox.crs.epsg == epsg
    assert (gbox.affine.a, gbox.affine.e) == (20, -20)


@pytest.mark.parametrize(("lon", "lat", "epsg"), POINTS)
def test_snapped_patch_is_on_the_lattice_within_half_a_pixel(
    lon: float, lat: float, epsg: int
) -> None:
    gbox = point_geobox((lon, lat), f"EPSG:{epsg}", 10, 9, snap=True)
    assert gbox.affine.c % 10 == 0 and gbox.affine.f % 10 == 0
    x, y = point(lon, lat, "EPSG:4326").to_crs(f"EPSG:{epsg}").coords[0]
    cx, cy = gbox.extent.centroid.coords[0]
    assert abs(cx - x) <= 5 and abs(cy - y) <= 5


def test_odd_patch_puts_the_point_in_the_central_pixel() -> None:
    gbox = point_geobox((500_003.0, 4_000_007.0), "EPSG:32633", 10, 3, point_crs="EPSG:32633")
    col, row = ~gbox.affine * (500_003.0, 4_000_007.0)
    assert (math.floor(row), math.floor(col)) == (1, 1)
    assert (row, col) == pytest.approx((1.5, 1.5))


@settings(max_examples=40, deadline=None)
@given(
    x0=st.floats(400_000, 600_000),
    y0=st.floats(4_000_000, 5_000_000),
    w=st.floats(1, 3_000),
    h=st.floats(1, 3_000),
    res=st.sampled_from([10, 20, 30, 60]),
)
def test_geometry_grid_covers_the_geometry_on_the_resolution_lattice(
    x0: float, y0: float, w: float, h: float, res: int
) -> None:
    poly = Polygon([(x0, y0), (x0 + w, y0), (x0 + w / 2, y0 + h)])
    gbox = geometry_geobox(poly, "EPSG:32633", res, geometry_crs="EPSG:32633")
    left, bottom, right, top = gbox.extent.boundingbox
    assert left % res == 0 and top % res == 0  # pixel edges on whole multiples
    tol = 0.01 * res  # a side within 1 % of a pixel of an edge is not grown
    assert left <= x0 + tol and right >= x0 + w - tol
    assert bottom <= y0 + tol and top >= y0 + h - tol
    assert right - left < w + 2 * res and top - bottom < h + 2 * res  # no more than needed


def test_geometry_grid_reprojects_a_lonlat_polygon() -> None:
    poly = Polygon([(15.0, 52.0), (15.1, 52.0), (15.1, 52.05), (15.0, 52.05)])
    gbox = geometry_geobox(poly, "EPSG:3035", 20)
    footprint = gbox.extent.to_crs("EPSG:4326")
    assert footprint.contains(point(15.05, 52.025, "EPSG:4326"))
    assert gbox.crs.epsg == 3035 and gbox.affine.c % 20 == 0


def test_buffer_in_degrees_and_in_metres() -> None:
    pt = point(10.0, 50.0, "EPSG:4326")
    deg = buffer_geometry(pt, 0.01, "deg").boundingbox
    assert (deg.left, deg.right) == pytest.approx((9.99, 10.01))
    metres = buffer_geometry(pt, 250, "m").to_crs("EPSG:32632").boundingbox
    assert metres.right - metres.left == pytest.approx(500, rel=1e-3)
    gbox = geometry_geobox(pt, "EPSG:32632", 10, buffer=250, buffer_unit="m")
    assert gbox.shape.x in (50, 51) and gbox.shape.y in (50, 51)


def test_unknown_buffer_unit_is_refused() -> None:
    with pytest.raises(InputError, match=r"'m' \(metres\) or 'deg' \(degrees\), got 'km'"):
        geometry_geobox(point(10, 50, "EPSG:4326"), "EPSG:32632", 10, buffer=1, buffer_unit="km")


@pytest.mark.parametrize("bad", [0, -10, float("nan")])
def test_bad_resolution_is_refused(bad: float) -> None:
    with pytest.raises(InputError, match="resolution must be a positive number"):
        point_geobox((0.0, 0.0), "EPSG:32633", bad, 4)


def test_label_grid_is_the_file_grid_exactly(tmp_path: Path) -> None:
    # an origin off the resolution lattice: nothing may snap it
    gbox = GeoBox((33, 47), Affine(10, 0, 500_003.5, 0, -10, 4_000_007.25), "EPSG:32633")
    path = make_cog(tmp_path / "label.tif", gbox, dtype="uint8", pattern="constant")
    assert label_geobox(path) == gbox
    item = make_item("label", {"labels": path})
    assert label_geobox(item) == gbox
    assert label_geobox(item, "labels") == gbox


def test_label_grid_of_an_item_with_many_assets_needs_the_asset_name(tmp_path: Path) -> None:
    gbox = GeoBox.from_bbox((0, 0, 100, 100), "EPSG:32633", resolution=10)
    a = make_cog(tmp_path / "a.tif", gbox, dtype="uint8")
    item = make_item("label", {"a": a, "b": a})
    with pytest.raises(InputError, match=r"assets \['a', 'b'\]; say which one"):
        label_geobox(item)


def test_label_grid_from_an_array() -> None:
    from odc.geo.xr import xr_zeros

    gbox = GeoBox.from_bbox((0, 0, 100, 60), "EPSG:32633", resolution=10)
    assert label_geobox(xr_zeros(gbox, dtype="uint8")) == gbox
    assert np.asarray(xr_zeros(gbox, dtype="uint8")).shape == (6, 10)
