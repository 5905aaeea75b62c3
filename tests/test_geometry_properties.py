"""Property tests (hypothesis) of everything that maps a geometry to grids, boxes and
EPSG:4326 footprints: every UTM zone, both hemispheres, up to the poles, across 180
degrees, tiny and huge sizes and buffers, degrees and metres.

The oracle is pyproj on its own: points of the geometry reprojected with a Transformer,
geodesic areas and forward points with Geod (geographiclib handles 180 degrees and the
poles without any splitting), and minimal longitude arcs computed here with numpy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from hypothesis import example, given, settings
from hypothesis import strategies as st
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry, point
from pyproj import Geod, Transformer

from geochip.core.geometry import (
    bbox_union,
    buffer_geometry,
    check_bbox,
    continuous,
    rfc7946_bbox,
    wgs84_footprint,
)
from geochip.core.grid import geometry_geobox
from geochip.errors import BboxError
from geochip.plan.chips import plan_chips

GEOD = Geod(ellps="WGS84")
EARTH = 4 * math.pi * 6_371_008.8**2
FEW = settings(max_examples=60, deadline=None)


def to_lonlat(epsg: int, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return Transformer.from_crs(epsg, 4326, always_xy=True).transform(x, y)


def ring(bounds: tuple[float, float, float, float], n: int) -> tuple[np.ndarray, np.ndarray]:
    """The boundary of a box, ``n`` points per side, counter-clockwise."""
    x0, y0, x1, y1 = bounds
    t = np.linspace(0, 1, n, endpoint=False)
    xs = np.concatenate([x0 + (x1 - x0) * t, np.full(n, x1), x1 - (x1 - x0) * t, np.full(n, x0)])
    ys = np.concatenate([np.full(n, y0), y0 + (y1 - y0) * t, np.full(n, y1), y1 - (y1 - y0) * t])
    return xs, ys


def arc(lons: np.ndarray) -> float:
    """The shortest longitude arc (degrees) that covers ``lons`` (360: every longitude)."""
    s = np.sort(np.mod(np.asarray(lons) + 180.0, 360.0))
    gaps = np.diff(np.concatenate([s, [s[0] + 360.0]]))
    return float(360.0 - gaps.max())


def span(bbox: tuple[float, float, float, float]) -> float:
    west, _, east, _ = bbox
    return 360.0 if (west, east) == (-180.0, 180.0) else (east - west) % 360.0


def geodesic_area(geom: shapely.Geometry) -> float:
    return sum(abs(GEOD.geometry_area_perimeter(p)[0]) for p in shapely.get_parts(geom))


def ring_area(lons: np.ndarray, lats: np.ndarray) -> float:
    area = abs(GEOD.polygon_area_perimeter(lons, lats)[0])
    return min(area, EARTH - area)  # the smaller side of the ring


def metres_outside(geom: shapely.Geometry, lons: np.ndarray, lats: np.ndarray) -> np.ndarray:
    """How far (geodesic metres) each point lies outside ``geom`` (0 inside)."""
    pts = shapely.points(lons, lats)
    near = shapely.get_coordinates(shapely.shortest_line(pts, geom))[1::2]
    _, _, dist = GEOD.inv(lons, lats, near[:, 0], near[:, 1])
    return np.where(shapely.covers(geom, pts), 0.0, dist)


def utm_epsg(zone: int, north: bool) -> int:
    return (32600 if north else 32700) + zone


log_metres = st.floats(0.0, 6.0).map(lambda e: 10.0**e)  # 1 m .. 1000 km


@FEW
@example(zone=60, lat=63.1, dlon=3.0, half_x=50_000.0, half_y=10_000.0)  # over 180
@example(zone=1, lat=-63.1, dlon=-3.0, half_x=1.0, half_y=1.0)  # a 2 m box on 180
@example(zone=1, lat=84.0, dlon=0.0, half_x=1e6, half_y=1e6)  # the north pole inside
@example(zone=33, lat=-80.0, dlon=0.0, half_x=3e5, half_y=1.2e6)  # the south pole inside
@given(
    zone=st.integers(1, 60),
    lat=st.floats(-80.0, 84.0),
    dlon=st.floats(-3.0, 3.0),
    half_x=log_metres,
    half_y=log_metres,
)
def test_a_utm_box_footprint_is_valid_holds_its_points_and_is_no_wider_than_the_box(
    zone: int, lat: float, dlon: float, half_x: float, half_y: float
) -> None:
    epsg = utm_epsg(zone, lat >= 0)
    lon = -183.0 + 6 * zone + dlon
    cx, cy = Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)
    bounds = (cx - half_x, cy - half_y, cx + half_x, cy + half_y)
    fp = wgs84_footprint(Geometry(shapely.box(*bounds), f"EPSG:{epsg}")).geom
    assert fp.is_valid and fp.geom_type in ("Polygon", "MultiPolygon")
    minx, miny, maxx, maxy = fp.bounds
    assert minx >= -180 and maxx <= 180 and miny >= -90 and maxy <= 90
    # the box's inner points, reprojected by pyproj, lie in the footprint
    fx, fy = np.meshgrid(np.linspace(0.02, 0.98, 7), np.linspace(0.02, 0.98, 7))
    xs = bounds[0] + fx.ravel() * (bounds[2] - bounds[0])
    ys = bounds[1] + fy.ravel() * (bounds[3] - bounds[1])
    lons, lats = to_lonlat(epsg, xs, ys)
    # edges between vertices are chords (<= 5 km) of curves: they may cut a point off by
    # metres (most near the poles, where parallels curve): 1/20 000 of the box's size
    assert metres_outside(fp, lons, lats).max() < 0.5 + 5e-5 * max(half_x, half_y)
    # its area is the box's on the ground: never a band around the world
    blon, blat = to_lonlat(epsg, *ring(bounds, 256))
    assert geodesic_area(fp) == pytest.approx(ring_area(blon, blat), rel=1e-2, abs=1.0)
    # and its bbox is the shortest arc of longitudes that covers the box's edge
    bbox = rfc7946_bbox(fp)
    pole = [
        p
        for p in (90.0, -90.0)
        if shapely.box(*bounds).contains(
            shapely.Point(Transformer.from_crs(4326, epsg, always_xy=True).transform(0, p))
        )
    ]
    if pole:
        assert (bbox[0], bbox[2]) == (-180.0, 180.0) and pole[0] in (bbox[1], bbox[3])
        assert fp.covers(shapely.Point(0.0, pole[0]).buffer(1e-9).centroid)
    else:
        assert span(bbox) <= arc(blon) + 1e-6
        assert span(bbox) >= arc(blon) * 0.98 - 1e-9
        assert span(bbox) < 180.0 or arc(blon) >= 180.0


@FEW
@given(
    zone=st.sampled_from([1, 60]),
    north=st.booleans(),
    lat=st.floats(0.0, 80.0),
    size=st.integers(2, 40),
    res=st.sampled_from([10.0, 100.0, 1000.0]),
)
def test_chips_of_a_grid_over_180_have_valid_narrow_footprints_that_tile_the_grid(
    zone: int, north: bool, lat: float, size: int, res: float
) -> None:
    epsg = utm_epsg(zone, north)
    cx, cy = Transformer.from_crs(4326, epsg, always_xy=True).transform(
        180.0, lat if north else -lat
    )
    cx, cy, half = round(cx / res) * res, round(cy / res) * res, size * 2 * res  # 4x4 chips
    grid = GeoBox.from_bbox(
        (cx - half, cy - half, cx + half, cy + half), f"EPSG:{epsg}", resolution=res
    )
    plan = plan_chips(grid, size, grid_id="g", edge="pad")
    assert plan.geometry.is_valid.all()
    assert (plan.geometry.bounds["minx"] >= -180).all() and (
        plan.geometry.bounds["maxx"] <= 180
    ).all()
    for geom in plan.geometry:
        assert span(rfc7946_bbox(geom)) < 10
    whole = wgs84_footprint(grid.extent).geom
    assert geodesic_area(shapely.union_all(plan.geometry.values)) == pytest.approx(
        geodesic_area(whole), rel=1e-3
    )
    assert span(rfc7946_bbox(whole)) < 180


def circle_points(lon: float, lat: float, distance: float, unit: str) -> np.ndarray:
    """16 points at 0.95 * ``distance`` around (lon, lat): geodesic (m) or in degrees."""
    az = np.linspace(0, 360, 16, endpoint=False)
    if unit == "m":
        plon, plat, _ = GEOD.fwd(
            np.full(16, lon), np.full(16, lat), az, np.full(16, 0.95 * distance)
        )
        return np.column_stack([plon, plat])
    plon = lon + 0.95 * distance * np.sin(np.radians(az))
    plat = np.clip(lat + 0.95 * distance * np.cos(np.radians(az)), -90, 90)
    return np.column_stack([(plon + 180) % 360 - 180, plat])


@FEW
@example(lon=179.99, lat=63.1, unit="m", exponent=0.0)  # 15.8 km over 180
@example(lon=-180.0, lat=89.9, unit="deg", exponent=0.0)  # 1 degree past the pole
@example(lon=10.0, lat=-89.9, unit="m", exponent=1.0)  # 1500 km around the south pole
@example(lon=-179.9999, lat=0.0, unit="deg", exponent=-3.0)  # tiny, on 180
@given(
    lon=st.floats(-180.0, 180.0, exclude_max=True),
    lat=st.floats(-89.9, 89.9),
    unit=st.sampled_from(["m", "deg"]),
    exponent=st.floats(-3.0, 1.0),
)
def test_a_buffered_point_becomes_a_grid_whose_footprint_holds_the_buffer(
    lon: float, lat: float, unit: str, exponent: float
) -> None:
    # metres: 1 km * 10**e (1 m .. 10 000 km is too much for one UTM zone: up to 1500 km)
    distance = min(1000.0 * 10 ** (exponent + 1.2), 1.5e6) if unit == "m" else 10**exponent
    metres = distance if unit == "m" else distance * 111_000
    zone = int((lon + 180) // 6) % 60 + 1
    crs = f"EPSG:{utm_epsg(zone, lat >= 0)}"
    pt = point(lon, lat, "EPSG:4326")
    grid = geometry_geobox(pt, crs, max(metres / 32, 0.01), buffer=distance, buffer_unit=unit)
    assert grid.width <= 80 and grid.height <= 80
    fp = wgs84_footprint(grid.extent).geom
    assert fp.is_valid
    inside = circle_points(lon, lat, distance, unit)
    assert shapely.covers(fp.buffer(1e-9), shapely.points(np.vstack([[lon, lat], inside]))).all()
    to_pole = (90 - abs(lat)) * 111_000 if unit == "m" else 90 - abs(lat)
    if distance < 0.9 * to_pole and metres < 2e6:
        assert span(rfc7946_bbox(fp)) < 180  # not the world
    buffered = buffer_geometry(pt, distance, unit)
    assert buffered.crs == "EPSG:4326" and buffered.geom.is_valid


@FEW
@given(
    parts=st.lists(
        st.tuples(st.floats(-180.0, 180.0), st.floats(0.0, 200.0)), min_size=1, max_size=5
    )
)
def test_the_rfc7946_bbox_is_the_shortest_arc_that_covers_every_part(
    parts: list[tuple[float, float]],
) -> None:
    boxes = [
        ((w + 180) % 360 - 180, 0.0, ((w + width + 180) % 360) - 180, 1.0) for w, width in parts
    ]
    boxes = [b for b in boxes if b[0] != b[2]] or [(-10.0, 0.0, 10.0, 1.0)]
    geom = shapely.union_all(
        [
            shapely.box(w, 0, e, 1)
            if w <= e
            else shapely.MultiPolygon([shapely.box(w, 0, 180, 1), shapely.box(-180, 0, e, 1)])
            for w, _, e, _ in boxes
        ]
    )
    bbox = rfc7946_bbox(geom)
    union = bbox_union(boxes)
    lons = np.concatenate([np.linspace(w, e if w <= e else e + 360, 721) for w, _, e, _ in boxes])
    assert span(bbox) == pytest.approx(arc(lons), abs=1.0)  # sampled every <= 0.5 degree
    assert span(union) == pytest.approx(span(bbox), abs=1e-9)
    west = bbox[0]
    for w, _, e, _ in boxes:  # every part lies inside the bbox, on the circle
        for x in np.linspace(w, e if w <= e else e + 360, 9):
            assert (x - west) % 360 <= span(bbox) + 1e-9
    assert continuous(geom).bounds[2] - continuous(geom).bounds[0] == pytest.approx(span(bbox))


@FEW
@given(st.lists(st.floats(-400, 400) | st.just(math.nan), min_size=4, max_size=4))
def test_a_bbox_is_accepted_exactly_when_it_is_west_south_east_north(values: list[float]) -> None:
    west, south, east, north = values
    ok = (
        all(math.isfinite(v) for v in values)
        and -180 <= west <= east <= 180
        and -90 <= south <= north <= 90
    )
    if ok:
        assert check_bbox(values) == tuple(values)
    else:
        with pytest.raises(BboxError, match=r"\(west, south, east, north\)"):
            check_bbox(values)
