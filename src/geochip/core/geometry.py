"""Geometries in EPSG:4326 the RFC 7946 way: footprints split at 180 degrees, bboxes whose
west exceeds east when they cross it, and the one check of a bbox a user gives.

Every footprint geochip computes (a grid's extent to search with, an item made from raster
headers, a chip in the index) is made here, by the same steps:

1. densified in its own CRS (``points`` vertices per side, and in metric CRSs at least
   one every 5 km), so that edges which curve on the globe keep their shape;
2. reprojected to longitude/latitude with pyproj;
3. made continuous: in a projected CRS no edge is half the world long, so consecutive
   longitudes never jump by more than 180 degrees (the edge takes the short way);
4. a ring that winds once around a pole closes over that pole (a polar cap);
5. folded into -180..180: what lies east of 180 (or west of -180) moves by 360 degrees, so
   a geometry that crosses the antimeridian becomes a MultiPolygon split at 180
   (RFC 7946 section 3.1.9), valid, its polygons counter-clockwise.

A geometry already in a geographic CRS is read literally, as shapely and RFC 7946 read it
(an edge from -170 to 170 is 340 degrees long); only longitudes past 180 are folded.

:func:`rfc7946_bbox` is the smallest box that covers a footprint: ``west > east`` when it
crosses 180 (RFC 7946 section 5.2), ``-180..180`` when it goes around the globe. A bbox a
user gives must be ``(west, south, east, north)`` with ``west <= east`` (:func:`check_bbox`):
one that crosses 180 is refused, with the two boxes to give instead.

Example:
    >>> from odc.geo.geobox import GeoBox
    >>> grid = GeoBox.from_bbox((600_000, 7_000_000, 700_000, 7_020_000), "EPSG:32660",
    ...                         resolution=100)
    >>> fp = wgs84_footprint(grid.extent)
    >>> fp.geom.geom_type, fp.geom.is_valid
    ('MultiPolygon', True)
    >>> [round(v, 2) for v in rfc7946_bbox(fp)]
    [178.98, 63.07, -179.02, 63.29]
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import shapely
import shapely.geometry
from odc.geo.crs import CRS
from odc.geo.geom import Geometry
from pyproj import Transformer
from pyproj.exceptions import ProjError
from shapely.geometry import box as box_

from ..errors import BboxError, InputError, MissingGeoreferenceError

__all__ = [
    "BUFFER_UNITS",
    "WGS84",
    "BufferUnit",
    "buffer_geometry",
    "check_buffer",
    "bbox_union",
    "check_bbox",
    "continuous",
    "lon_intervals",
    "project",
    "rfc7946_bbox",
    "stac_footprint",
    "wgs84_centroid",
    "wgs84_footprint",
    "wgs84_footprints",
]

WGS84 = "EPSG:4326"

Bbox = tuple[float, float, float, float]

BufferUnit = Literal["m", "deg"]
#: units of a buffer distance: metres on the ground, or degrees (the SITS convention)
BUFFER_UNITS: tuple[str, ...] = ("m", "deg")

_local = threading.local()


def _transformer(crs: CRS) -> Transformer:
    """A pyproj Transformer from ``crs`` to lon/lat (one per thread and CRS)."""
    cache: dict[str, Transformer] = _local.__dict__.setdefault("transformers", {})
    key = crs.to_wkt()
    if key not in cache:
        cache[key] = Transformer.from_crs(key, WGS84, always_xy=True)
    return cache[key]


def _poles(crs: CRS) -> list[tuple[float, Any]]:
    """(latitude, point in ``crs``) of each pole that ``crs`` can represent."""
    out = []
    to_crs = Transformer.from_crs(WGS84, crs.to_wkt(), always_xy=True)
    for lat in (90.0, -90.0):
        try:
            x, y = to_crs.transform(0.0, lat, errcheck=True)
        except ProjError:
            continue
        if math.isfinite(x) and math.isfinite(y):
            out.append((lat, shapely.Point(x, y)))
    return out


def _fold(geoms: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Move what lies past +-180 degrees of longitude back by 360 (splitting at 180)."""
    bounds = shapely.bounds(geoms)
    out = geoms.copy()
    todo = np.flatnonzero((bounds[:, 0] < -180) | (bounds[:, 2] > 180))
    if not len(todo):
        return out
    lo = math.floor((np.nanmin(bounds[todo, 0]) + 180) / 360)
    hi = math.floor((np.nanmax(bounds[todo, 2]) + 180) / 360)
    merged = np.array([shapely.Polygon()] * len(todo), dtype=object)
    for k in range(lo, hi + 1):
        window = shapely.box(-180 + 360 * k, -90, 180 + 360 * k, 90)
        piece = shapely.intersection(geoms[todo], window)
        if k:
            piece = shapely.transform(piece, lambda c, k=k: c - [360.0 * k, 0.0])
        merged = shapely.union(merged, piece)
    out[todo] = merged
    return out


def _polygonal(geom: Any) -> Any:
    """The polygons of ``geom`` (lines and points left by a cut along a seam dropped)."""
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [p for p in shapely.get_parts(geom) if p.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def _unwrap(lon: npt.NDArray[np.float64], starts: npt.NDArray[np.intp]) -> npt.NDArray[Any]:
    """Longitudes without jumps over 180 degrees, each run from ``starts`` on its own."""
    steps = np.zeros_like(lon)
    steps[1:] = -360.0 * np.round(np.diff(lon) / 360.0)
    steps[starts] = 0.0
    total = np.cumsum(steps)
    run = np.searchsorted(starts, np.arange(len(lon)), side="right") - 1
    return lon + total - total[starts][run]


def _lonlat(coords: npt.NDArray[Any], crs: CRS) -> npt.NDArray[Any]:
    lon, lat = _transformer(crs).transform(coords[:, 0], coords[:, 1])
    out = np.column_stack([lon, lat])
    if not np.isfinite(out).all():
        raise InputError(
            f"a geometry in {crs} reaches outside that projection's area of use: it cannot "
            "be placed in EPSG:4326; use a smaller geometry or a CRS that covers it"
        )
    return out


def _cap(ring: Any, crs: CRS, poles: list[tuple[float, Any]], polygon: Any) -> Any:
    """One ring as a lon/lat region; a ring around a pole closes over that pole."""
    lonlat = _lonlat(shapely.get_coordinates(ring), crs)
    lonlat[:, 0] = _unwrap(lonlat[:, 0], np.array([0]))
    turns = round((lonlat[-1, 0] - lonlat[0, 0]) / 360.0)
    coords = [tuple(c) for c in lonlat]
    if turns:
        inside = [lat for lat, pt in poles if shapely.Polygon(ring).contains(pt)]
        pole = inside[0] if inside else (90.0 if lonlat[:, 1].mean() > 0 else -90.0)
        coords += [(lonlat[-1, 0], pole), (lonlat[0, 0], pole), coords[0]]
    return shapely.make_valid(shapely.Polygon(coords))


def _polar(geom: Any, crs: CRS, poles: list[tuple[float, Any]]) -> Any:
    """The footprint of a polygonal geometry that may wind around a pole, ring by ring."""
    regions = []
    for poly in shapely.get_parts(geom):
        shell = _fold(np.array([_cap(poly.exterior, crs, poles, poly)]))[0]
        for hole in poly.interiors:
            shell = shell.difference(_fold(np.array([_cap(hole, crs, poles, poly)]))[0])
        regions.append(shell)
    # a cap is closed along the meridian where its ring starts; once folded, the two sides
    # of that seam differ in the last bits: snap them together (to 1e-11 degrees, ~1 um)
    return shapely.union_all(
        shapely.get_parts(shapely.set_precision(shapely.union_all(regions), 1e-11))
    )


def wgs84_footprints(geoms: Any, crs: Any, *, points: int = 16) -> npt.NDArray[Any]:
    """The EPSG:4326 footprints (RFC 7946: split at 180) of shapely geometries in ``crs``.

    Vectorised for many geometries (a plan's chips); see the module doc for the steps.
    ``points`` is the number of vertices per side after densifying (1: the vertices only).
    A geometry that is only reprojected keeps its rings' direction; one that had to be
    split, capped or repaired gets counter-clockwise exteriors (RFC 7946).
    """
    crs = CRS(crs)
    arr = np.asarray(geoms, dtype=object).ravel()
    if not len(arr):
        return arr
    literal = crs.geographic
    if points > 1 and not literal:
        b = shapely.bounds(arr)
        step = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) / points
        if crs.units[0] in ("metre", "m", "meter"):  # long edges: chords of <= 5 km
            step = np.minimum(step, 5_000.0)
        arr = shapely.segmentize(arr, np.where(step > 0, step, np.inf))
    polygonal = np.isin(shapely.get_type_id(arr), [3, 6])
    polar = np.zeros(len(arr), dtype=bool)
    poles = [] if literal or not polygonal.any() else _poles(crs)
    if poles:
        box = shapely.bounds(arr)
    for _, pole in poles:
        px, py = pole.x, pole.y
        inside = (box[:, 0] <= px) & (px <= box[:, 2]) & (box[:, 1] <= py) & (py <= box[:, 3])
        polar |= polygonal & inside
    coords, which = shapely.get_coordinates(arr, return_index=True)
    lonlat = _lonlat(coords, crs)
    if not literal:
        starts = np.flatnonzero(np.r_[True, which[1:] != which[:-1]])
        unwrapped = _unwrap(lonlat[:, 0], starts)
        # rings around a pole do not close once unwrapped: those are done ring by ring
        lonlat[:, 0] = np.where(polar[which], lonlat[:, 0], unwrapped)
    moved = shapely.set_coordinates(arr.copy(), lonlat)
    b = shapely.bounds(moved)
    rebuilt = polar | (b[:, 0] < -180) | (b[:, 2] > 180)
    out = _fold(moved)
    for n in np.flatnonzero(polar):
        out[n] = _polar(arr[n], crs, poles)
    odd = polygonal & ~np.isin(shapely.get_type_id(out), [3, 6])
    odd |= polygonal & ~shapely.is_valid(out)
    for n in np.flatnonzero(odd):
        geom = _polygonal(out[n])
        out[n] = geom if geom.is_valid else _polygonal(shapely.make_valid(geom))
    redo = polygonal & (rebuilt | odd)
    out[redo] = shapely.orient_polygons(out[redo])
    return out


def _as_geometry(geometry: Any, crs: Any) -> Geometry:
    if isinstance(geometry, Geometry):
        return geometry
    if crs is None:
        raise MissingGeoreferenceError("the geometry has no CRS; pass crs= (e.g. 'EPSG:4326')")
    if hasattr(geometry, "__geo_interface__"):
        geometry = geometry.__geo_interface__
    return Geometry(geometry, crs)


def wgs84_footprint(geometry: Any, crs: Any = None, *, points: int = 16) -> Geometry:
    """The EPSG:4326 footprint of one geometry (an odc-geo Geometry, or shapely/GeoJSON in
    ``crs``): valid, split at 180 degrees, a polar cap where it covers a pole."""
    geom = _as_geometry(geometry, crs)
    if geom.crs is None:
        raise MissingGeoreferenceError("the geometry has no CRS; give it one first")
    return Geometry(wgs84_footprints([geom.geom], geom.crs, points=points)[0], WGS84)


def _shapely(geom: Any) -> Any:
    if isinstance(geom, Geometry):
        return geom.geom
    if isinstance(geom, Mapping):
        return shapely.geometry.shape(geom)
    return geom


def lon_intervals(geom: Any) -> list[tuple[float, float]]:
    """Longitude intervals of the parts of a folded geometry, merged, west to east.

    >>> from shapely.geometry import MultiPolygon, box
    >>> lon_intervals(MultiPolygon([box(179, 0, 180, 1), box(-180, 0, -179, 1)]))
    [(-180.0, -179.0), (179.0, 180.0)]
    """
    bounds = sorted(
        (float(b[0]), float(b[2])) for b in shapely.bounds(shapely.get_parts(_shapely(geom)))
    )
    merged: list[tuple[float, float]] = []
    for west, east in bounds:
        if merged and west <= merged[-1][1] + 1e-9:  # parts that touch, to rounding
            merged[-1] = (merged[-1][0], max(merged[-1][1], east))
        else:
            merged.append((west, east))
    return merged


def _circle_bbox(intervals: Sequence[tuple[float, float]], south: float, north: float) -> Bbox:
    """The smallest longitude range covering ``intervals`` (in -180..180) on the circle."""
    if not intervals:
        raise InputError("an empty geometry has no bbox")
    gaps = [(intervals[0][0] + 360 - intervals[-1][1], len(intervals) - 1)]
    gaps += [(intervals[n + 1][0] - intervals[n][1], n) for n in range(len(intervals) - 1)]
    widest, after = max(gaps, key=lambda g: (g[0], g[1] == len(intervals) - 1))
    if widest <= 0:
        return (-180.0, south, 180.0, north)
    west = intervals[(after + 1) % len(intervals)][0]
    east = intervals[after][1]
    if west > east and (west, east) == (180.0, -180.0):
        return (-180.0, south, 180.0, north)
    return (west, south, east, north)


def rfc7946_bbox(geometry: Any) -> Bbox:
    """``(west, south, east, north)`` of an EPSG:4326 footprint per RFC 7946: the smallest
    longitude range that covers it, ``west > east`` when that range crosses 180.

    >>> from shapely.geometry import MultiPolygon, box
    >>> rfc7946_bbox(MultiPolygon([box(179, 0, 180, 1), box(-180, 0, -179, 1)]))
    (179.0, 0.0, -179.0, 1.0)
    >>> rfc7946_bbox(box(-170, 0, 170, 1))
    (-170.0, 0.0, 170.0, 1.0)
    """
    geom = _shapely(geometry)
    if geom.is_empty:
        raise InputError("an empty geometry has no bbox")
    _, south, _, north = (float(v) for v in geom.bounds)
    return _circle_bbox(lon_intervals(geom), south, north)


def bbox_union(bboxes: Iterable[Sequence[float]]) -> Bbox:
    """The smallest RFC 7946 bbox covering ``bboxes`` (each may cross 180: west > east).

    >>> bbox_union([(179, 0, -179, 1), (178, -1, 179.5, 0)])
    (178.0, -1.0, -179.0, 1.0)
    """
    intervals, south, north = [], math.inf, -math.inf
    for west, s, east, n in (tuple(float(v) for v in b[:4]) for b in bboxes):
        south, north = min(south, s), max(north, n)
        intervals += [(west, 180.0), (-180.0, east)] if west > east else [(west, east)]
    merged: list[tuple[float, float]] = []
    for west, east in sorted(intervals):
        if merged and west <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], east))
        else:
            merged.append((west, east))
    return _circle_bbox(merged, south, north)


def check_bbox(bbox: Any, what: str = "bbox") -> Bbox:
    """``bbox`` as four floats ``(west, south, east, north)`` in degrees, or a
    :class:`~geochip.errors.BboxError` saying what is wrong with it.

    A bbox with ``west > east`` (RFC 7946's way to cross 180 degrees) is refused: searched
    as it is, it would be read as a box around the rest of the world.
    """
    try:
        values = tuple(float(v) for v in bbox)
    except (TypeError, ValueError):
        raise BboxError(
            f"{what} must be four numbers (west, south, east, north), got {bbox!r}"
        ) from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise BboxError(
            f"{what} must be four finite numbers (west, south, east, north), got {bbox!r}"
        )
    west, south, east, north = values
    if south > north:
        raise BboxError(
            f"{what} {list(values)} has south {south} > north {north}: the order is (west, "
            f"south, east, north); did you mean {[west, north, east, south]}?"
        )
    if not (-90 <= south <= 90 and -90 <= north <= 90):
        raise BboxError(
            f"{what} {list(values)}: latitudes must be within -90..90 (the order is "
            "(west, south, east, north), in EPSG:4326 degrees)"
        )
    if not (-180 <= west <= 180 and -180 <= east <= 180):
        raise BboxError(
            f"{what} {list(values)}: longitudes must be within -180..180 (the order is "
            "(west, south, east, north), in EPSG:4326 degrees)"
        )
    if west > east:
        raise BboxError(
            f"{what} {list(values)} has west {west} > east {east}: the order is (west, south, "
            f"east, north) with west <= east. If the box crosses 180 degrees, search twice, "
            f"with {[west, south, 180.0, north]} and {[-180.0, south, east, north]}, or "
            "search with a geometry split at 180 (intersects)"
        )
    return values


def continuous(geometry: Any) -> Any:
    """A shapely geometry in EPSG:4326 without the seam at 180: the parts west of it move
    east by 360 degrees when the geometry crosses it (longitudes then go past 180).

    >>> from shapely.geometry import MultiPolygon, box
    >>> continuous(MultiPolygon([box(179, 0, 180, 1), box(-180, 0, -179, 1)])).bounds
    (179.0, 0.0, 181.0, 1.0)
    """
    geom = _shapely(geometry)
    if geom.is_empty:
        return geom
    west, _, east, _ = rfc7946_bbox(geom)
    if west <= east:
        return geom
    parts = [
        shapely.transform(p, lambda c: c + np.array([360.0, 0.0])) if p.bounds[2] <= east else p
        for p in shapely.get_parts(geom)
    ]
    return shapely.union_all(parts)


def wgs84_centroid(geometry: Geometry) -> tuple[float, float]:
    """(lon, lat) of the centre of ``geometry`` on the globe's longitudes (-180..180),
    taken on its footprint without the seam at 180."""
    point = continuous(wgs84_footprint(geometry).geom).centroid
    lon = (point.x + 180.0) % 360.0 - 180.0
    return float(lon), float(point.y)


def project(geometry: Geometry, crs: Any) -> Geometry:
    """``geometry`` in ``crs``; in a geographic CRS without the seam at 180 (see
    :func:`continuous`), so that its box and centre are where the geometry is."""
    target = CRS(crs)
    if not target.geographic:
        if geometry.crs is not None and geometry.crs.geographic and not geometry.is_empty:
            # edges along parallels curve in a projection: densify them first
            b = geometry.boundingbox
            return geometry.to_crs(target, resolution=max(b.span_x, b.span_y) / 64 or None)
        return geometry.to_crs(target)
    out = Geometry(continuous(wgs84_footprint(geometry).geom), WGS84)
    return out if target == CRS(WGS84) else out.to_crs(target)


def stac_footprint(geometry: Mapping[str, Any] | None, bbox: Sequence[float] | None = None) -> Any:
    """The shapely footprint of a STAC item (GeoJSON in EPSG:4326), folded into -180..180.

    An item whose ``bbox`` crosses 180 (west > east) but whose geometry is one polygon more
    than 180 degrees wide was written without the RFC 7946 split: its edges are read the
    short way and it is split at 180. Returns None for an item without geometry.
    """
    if geometry is None:
        return None
    geom = shapely.geometry.shape(geometry)
    if geom.is_empty:
        return geom
    minx, _, maxx, _ = geom.bounds
    crossing = bbox is not None and len(bbox) >= 4 and float(bbox[0]) > float(bbox[-2])
    if crossing and maxx - minx > 180:
        coords = shapely.get_coordinates(geom)
        coords[:, 0] = _unwrap(coords[:, 0], np.array([0]))
        geom = shapely.set_coordinates(np.array([geom], dtype=object), coords)[0]
    if minx < -180 or maxx > 180 or crossing:
        fixed = _fold(np.array([geom], dtype=object))[0]
        return _polygonal(fixed) if geom.geom_type.endswith("Polygon") else fixed
    return geom


def _check_unit(unit: str) -> None:
    if unit not in BUFFER_UNITS:
        raise InputError(f"buffer unit must be 'm' (metres) or 'deg' (degrees), got {unit!r}")


def check_buffer(buffer: float, unit: str | None, *, option: str = "buffer") -> None:
    """Refuse a buffer that cannot be what the user meant, before any work starts: negative,
    not a number, without a unit (``unit`` None with ``buffer`` > 0), or absurd for its
    unit (more than 5 degrees, ~500 km; a fraction of a metre, i.e. degrees given as metres).

    >>> check_buffer(0.01, "deg"), check_buffer(200, "m"), check_buffer(0, None)
    (None, None, None)
    >>> check_buffer(0.01, "m")
    Traceback (most recent call last):
    geochip.errors.InputError: buffer 0.01 m is less than a metre; for degrees give the unit deg
    """
    if isinstance(buffer, bool) or not isinstance(buffer, int | float) or math.isnan(buffer):
        raise InputError(f"{option} must be a number >= 0, got {buffer!r}")
    if buffer < 0:
        raise InputError(f"{option} must be >= 0 (a distance around each geometry), got {buffer}")
    if buffer == 0:
        if unit is not None:
            _check_unit(unit)
        return
    if unit is None:
        raise InputError(
            f"{option} {buffer} has no unit: say whether it is metres (m) or degrees (deg)"
        )
    _check_unit(unit)
    if unit == "deg" and buffer > 5:
        raise InputError(
            f"{option} {buffer} degrees is more than 500 km; for metres give the unit m"
        )
    if unit == "m" and buffer < 1:
        raise InputError(f"{option} {buffer} m is less than a metre; for degrees give the unit deg")


def buffer_geometry(
    geometry: Any, distance: float, unit: BufferUnit | str = "m", *, to: Any = None
) -> Any:
    """Buffer an :class:`odc.geo.geom.Geometry` by ``distance`` metres or degrees.

    Degrees buffer the geometry in EPSG:4326 (the SITS convention: ``--buffer 0.01`` is
    about 1.1 km north-south), across 180 degrees where the geometry lies on both sides
    of it, and never past a pole. Metres buffer it in its own CRS when that is metric,
    else in the UTM zone of its centre, so a metre is a metre on the ground. The result
    is in ``to`` (default: the geometry's CRS; EPSG:4326 results are footprints split at
    180 degrees, see :mod:`geochip.core.geometry`). ``distance`` 0 returns the geometry
    unchanged.

    Example:
        >>> from odc.geo.geom import point
        >>> pt = point(10.0, 50.0, "EPSG:4326")
        >>> round(buffer_geometry(pt, 0.01, "deg").boundingbox.right, 6)
        10.01
        >>> b = buffer_geometry(pt, 100, "m").to_crs("EPSG:32632").boundingbox
        >>> round(b.right - b.left)
        200
    """
    _check_unit(unit)
    if distance < 0:
        raise InputError(f"buffer must be >= 0, got {distance}")
    if distance == 0:
        return geometry
    crs = geometry.crs
    if crs is None:
        raise MissingGeoreferenceError("the geometry has no CRS; give it one before buffering")
    if unit == "deg":
        work = project(geometry, WGS84)
        grown = work.geom.buffer(distance, quad_segs=32)
        # a degree buffer stops at the poles: past them, latitudes mean nothing
        grown = grown.intersection(box_(-540.0, -90.0, 540.0, 90.0))
    else:
        if crs.geographic or crs.units[0] not in ("metre", "m", "meter"):
            lon, lat = wgs84_centroid(geometry)
            zone = int((lon + 180) // 6) % 60 + 1
            work = project(geometry, CRS(f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"))
        else:
            work = geometry
        # enough segments that a buffered point is round to well under a pixel
        grown = work.geom.buffer(distance, quad_segs=32)
    out = Geometry(grown, work.crs)
    target = CRS(to) if to is not None else crs
    if target.geographic:
        return project(wgs84_footprint(out), target)
    return out.to_crs(target)
