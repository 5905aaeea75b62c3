"""Grids and chip windows: the one grid type (a GeoBox) and everything computed on it.

A grid is an :class:`odc.geo.geobox.GeoBox` (CRS + affine + shape). A chip is a window of a
grid: ``geobox[row:row + height, col:col + width]``, whose transform is the grid's transform
shifted by the window offset, so chip edges align exactly with grid pixels. Pixel is area.

Spatial pairs are named: sizes and strides are given as an ``int`` (square) or as a mapping
``{"y": ..., "x": ...}`` (the xbatcher/zen3geo convention), never as a bare tuple.

Example:
    >>> from odc.geo.geobox import GeoBox
    >>> gbox = GeoBox.from_bbox((0, 0, 10_000, 6_000), "EPSG:32633", resolution=10)
    >>> gbox.shape.yx
    (600, 1000)
    >>> [(w.row, w.col) for w in chip_windows(gbox.shape.yx, 256, edge="drop")]
    [(0, 0), (0, 256), (0, 512), (256, 0), (256, 256), (256, 512)]
    >>> [count_windows((600, 1000), 256, edge=e) for e in ("drop", "shift", "pad")]
    [6, 12, 12]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pystac
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox
from odc.geo.geom import BoundingBox, Geometry, point

from ..errors import (
    BandNotFoundError,
    GeochipError,
    InputError,
    MissingGeoreferenceError,
    NoChipsError,
    RasterReadError,
)
from .env import GdalEnv
from .geometry import BufferUnit, buffer_geometry, check_buffer, project
from .retry import call_with_retries
from .security import Signer, redact, sign_href
from .storage import gdal_path

__all__ = [
    "EDGE_POLICIES",
    "YX",
    "Edge",
    "SizeLike",
    "Window",
    "array_window",
    "asset_geobox",
    "chip_windows",
    "count_windows",
    "geometry_geobox",
    "grid_offset",
    "grid_text",
    "label_geobox",
    "lattice_offset",
    "point_geobox",
    "same_grid",
    "target_geobox",
    "yx",
]


Edge = Literal["drop", "shift", "pad"]

EDGE_POLICIES: tuple[str, ...] = ("drop", "shift", "pad")


@dataclass(frozen=True, order=True)
class YX:
    """A named (y, x) pair of integers."""

    y: int
    x: int


@dataclass(frozen=True, order=True)
class Window:
    """A chip window in grid pixels; may reach past the grid's edge with ``edge="pad"``."""

    row: int
    col: int
    height: int
    width: int

    def slices(self) -> tuple[slice, slice]:
        """(rows, cols) slices of the grid."""
        return slice(self.row, self.row + self.height), slice(self.col, self.col + self.width)


SizeLike = int | Mapping[str, int] | YX


def yx(value: SizeLike | Any, name: str = "size") -> YX:
    """Normalise an int, ``{"y": .., "x": ..}``, a :class:`YX` or an odc-geo ``Shape2d``."""
    if isinstance(value, YX):
        out = value
    elif isinstance(value, bool):
        raise InputError(f"{name} must be an int or {{'y': int, 'x': int}}, got {value!r}")
    elif isinstance(value, int):
        out = YX(value, value)
    elif isinstance(value, Mapping):
        if set(value) != {"y", "x"}:
            raise InputError(f"{name} must have exactly the keys 'y' and 'x', got {sorted(value)}")
        out = YX(int(value["y"]), int(value["x"]))
    elif hasattr(value, "y") and hasattr(value, "x"):
        out = YX(int(value.y), int(value.x))
    else:
        raise InputError(f"{name} must be an int or {{'y': int, 'x': int}}, got {value!r}")
    if out.y <= 0 or out.x <= 0:
        raise InputError(f"{name} must be positive, got y={out.y}, x={out.x}")
    return out


def _starts(n: int, size: int, stride: int, edge: str) -> list[int]:
    if edge == "pad":
        # windows until one reaches the edge, none starting past it
        count = min(1 + math.ceil(max(0, n - size) / stride), math.ceil(n / stride))
        return [i * stride for i in range(count)]
    if n < size:
        return []
    starts = list(range(0, n - size + 1, stride))
    if edge == "shift" and starts[-1] + size < n:
        starts.append(n - size)
    return starts


def _check_edge(edge: str) -> None:
    if edge not in EDGE_POLICIES:
        raise InputError(f"edge must be one of {', '.join(EDGE_POLICIES)}; got {edge!r}")


def count_windows(
    shape: tuple[int, int] | Any,
    size: SizeLike,
    stride: SizeLike | None = None,
    edge: Edge | str = "drop",
) -> int:
    """Number of windows :func:`chip_windows` returns, without building them."""
    _check_edge(edge)
    height, width = (int(v) for v in shape)
    size_ = yx(size)
    stride_ = yx(stride, "stride") if stride is not None else size_
    return len(_starts(height, size_.y, stride_.y, edge)) * len(
        _starts(width, size_.x, stride_.x, edge)
    )


def chip_windows(
    shape: tuple[int, int] | Any,
    size: SizeLike,
    stride: SizeLike | None = None,
    edge: Edge | str = "drop",
    *,
    source: str = "grid",
) -> list[Window]:
    """Sliding windows over a grid of ``shape`` (height, width), row-major.

    ``edge``: ``"drop"`` keeps only windows that fit (the zen3geo/xbatcher behaviour),
    ``"shift"`` adds a last window moved inward so the edge is covered, ``"pad"`` lets the
    last window reach past the edge (its pixels are filled with nodata when read). Raises
    :class:`~geochip.errors.NoChipsError` when no window fits.
    """
    _check_edge(edge)
    height, width = (int(v) for v in shape)
    size_ = yx(size)
    stride_ = yx(stride, "stride") if stride is not None else size_
    rows = _starts(height, size_.y, stride_.y, edge)
    cols = _starts(width, size_.x, stride_.x, edge)
    if not rows or not cols:
        raise NoChipsError(
            f"{source}: no {size_.y}x{size_.x} chip fits a {height}x{width} grid with "
            f"edge={edge!r}; use a smaller size or edge='pad'"
        )
    return [Window(r, c, size_.y, size_.x) for r in rows for c in cols]


def asset_geobox(item: pystac.Item, asset: str, sign: Signer | None = None) -> GeoBox:
    """The native grid of one asset, from its projection fields (no I/O).

    Reads ``proj:shape``/``proj:transform`` from the asset (or the item) and the CRS from
    ``proj:code``, ``proj:wkt2``, ``proj:projjson`` or the old ``proj:epsg``. When the fields
    are missing the file's header is read instead, signed with ``sign`` just before the read
    (the catalog's signer: a signed catalog refuses unsigned reads) and with GDAL's retries.
    """
    head, _, number = asset.rpartition(".")
    if asset not in item.assets and number.isdigit() and head in item.assets:
        asset = head  # "<asset>.<n>": band n of a multi-band asset shares the asset's grid
    if asset not in item.assets:
        raise BandNotFoundError(item.id, asset, sorted(item.assets))
    fields = {**item.properties, **item.assets[asset].extra_fields}
    crs = (
        fields.get("proj:code")
        or fields.get("proj:wkt2")
        or fields.get("proj:projjson")
        or (f"EPSG:{fields['proj:epsg']}" if fields.get("proj:epsg") else None)
    )
    shape = fields.get("proj:shape")
    transform = fields.get("proj:transform")
    if crs is not None and shape is not None and transform is not None:
        return GeoBox(tuple(shape), Affine(*transform[:6]), crs)

    href = item.assets[asset].get_absolute_href() or item.assets[asset].href
    env = GdalEnv.default()
    path = sign_href(href, sign)

    def probe() -> tuple[Any, Affine, int, int]:
        with env.activate(), rasterio.open(path) as ds:
            return ds.crs, ds.transform, ds.height, ds.width

    try:
        crs_, transform_, height, width = call_with_retries(probe, path, env)
    except GeochipError:
        raise
    except Exception as err:
        raise RasterReadError(
            f"{redact(href)}: the item gives no proj:shape/proj:transform for {asset!r} and "
            f"the raster's header could not be read ({redact(str(err))}); check the href and "
            "the catalog's signing"
        ) from err
    if crs_ is None or transform_.is_identity:
        raise MissingGeoreferenceError(
            f"{redact(href)}: the raster has no CRS or no geotransform; pass assume_crs= or "
            "fix the file (gdal_edit.py -a_srs / -a_ullr)"
        )
    return GeoBox((height, width), transform_, crs_)


def target_geobox(base: GeoBox, resolution: float | None = None) -> GeoBox:
    """``base`` itself, or the same extent at another square ``resolution``.

    The extent is kept exactly when it is a whole number of target pixels (e.g. a 30 m grid
    at 15 m); otherwise the grid grows by less than one pixel at the right and bottom edges
    so that pixel edges stay anchored at ``base``'s top-left corner.
    """
    if resolution is None:
        return base
    if resolution <= 0:
        raise InputError(f"resolution must be positive, got {resolution}")
    res_x = abs(base.affine.a)
    res_y = abs(base.affine.e)
    if not base.axis_aligned:
        raise InputError("target_geobox needs an axis-aligned grid (no rotation)")
    height = math.ceil(round(base.height * res_y / resolution, 6))
    width = math.ceil(round(base.width * res_x / resolution, 6))

    affine = Affine(
        math.copysign(resolution, base.affine.a),
        0.0,
        base.affine.c,
        0.0,
        math.copysign(resolution, base.affine.e),
        base.affine.f,
    )
    return GeoBox((height, width), affine, base.crs)


def label_geobox(label: Any, asset: str | None = None) -> GeoBox:
    """The exact grid of a label raster: CRS, transform and shape, unchanged.

    ``label`` is a path or URL of a raster, a ``pystac.Item`` (with ``asset``, or its only
    raster asset), an xarray object carrying a grid (``.odc.geobox``), or a GeoBox. Nothing
    is snapped or rounded: images loaded onto this grid line up with the label pixel for pixel.

    Example:
        >>> import tempfile, pathlib
        >>> from odc.geo.geobox import GeoBox
        >>> from geochip.testing import make_cog
        >>> gbox = GeoBox.from_bbox((500_005, 0, 500_645, 320), "EPSG:32633", resolution=10)
        >>> path = make_cog(pathlib.Path(tempfile.mkdtemp()) / "l.tif", gbox, dtype="uint8")
        >>> label_geobox(path) == gbox
        True
    """
    if isinstance(label, GeoBox):
        return label
    if hasattr(label, "odc") and hasattr(label, "dims"):
        gbox = label.odc.geobox
        if gbox is None:
            raise MissingGeoreferenceError(
                "the label array carries no grid (no spatial_ref/CRS coordinate); assign one "
                "with odc.geo.xr.assign_crs or read it with rioxarray"
            )
        return gbox  # type: ignore[no-any-return]
    if hasattr(label, "assets") and hasattr(label, "id"):
        if asset is None:
            keys = list(label.assets)
            if len(keys) != 1:
                raise InputError(
                    f"label item {label.id} has assets {keys}; say which one holds the label "
                    "raster with asset="
                )
            asset = keys[0]
        return asset_geobox(label, asset)

    href = str(label)
    with GdalEnv.default().activate():
        try:
            ds = rasterio.open(gdal_path(href))
        except rasterio.errors.RasterioIOError as err:
            raise InputError(f"cannot open label raster {redact(href)}: {err}") from err
    with ds:
        if ds.crs is None or ds.transform.is_identity:
            raise MissingGeoreferenceError(
                f"{href}: the label raster has no CRS or no geotransform; fix the file "
                "(gdal_edit.py -a_srs / -a_ullr)"
            )
        return GeoBox((ds.height, ds.width), ds.transform, ds.crs)


def _as_geometry(geometry: Any, crs: Any) -> Any:
    if isinstance(geometry, Geometry):
        return geometry
    if crs is None:
        raise MissingGeoreferenceError(
            "the geometry has no CRS; pass geometry_crs= (e.g. 'EPSG:4326')"
        )
    if hasattr(geometry, "__geo_interface__"):
        geometry = geometry.__geo_interface__
    return Geometry(geometry, crs)


def _resolution(resolution: float) -> float:
    if isinstance(resolution, bool) or not resolution > 0:
        raise InputError(f"resolution must be a positive number, got {resolution!r}")
    return float(resolution)


def geometry_geobox(
    geometry: Any,
    crs: Any,
    resolution: float,
    *,
    buffer: float = 0.0,
    buffer_unit: BufferUnit | str = "m",
    geometry_crs: Any = "EPSG:4326",
) -> GeoBox:
    """The smallest grid in ``crs`` at ``resolution`` that covers ``geometry`` (+ ``buffer``).

    Pixel convention: pixels are areas (``AREA_OR_POINT=Area``), square, north-up; pixel
    *edges* lie on whole multiples of ``resolution`` in ``crs`` (``x = k * resolution``), so
    every grid made this way for the same CRS and resolution shares one lattice and lines up
    with e.g. Sentinel-2 tiles at 10/20/60 m. The box grows outwards to the next edge; a
    side already within 1 % of a pixel of an edge is not grown. ``geometry`` is an odc-geo
    Geometry, a shapely geometry or GeoJSON (then in ``geometry_crs``).

    Example:
        >>> from shapely.geometry import box
        >>> g = geometry_geobox(box(500_003, 0, 500_995, 405), "EPSG:32633", 10,
        ...                     geometry_crs="EPSG:32633")
        >>> g.shape.yx, g.affine.c, g.affine.f
        ((41, 100), 500000.0, 410.0)
    """
    res = _resolution(resolution)
    geom = _as_geometry(geometry, geometry_crs)
    if buffer:
        target = buffer_geometry(geom, buffer, buffer_unit, to=crs)
    else:
        check_buffer(0, buffer_unit)  # the unit alone
        target = project(geom, crs)
    if target.is_empty:
        raise InputError("the geometry is empty; nothing to build a grid around")
    bbox = target.boundingbox
    if bbox.span_x == 0 or bbox.span_y == 0:
        # a point or a line along an axis: one pixel across on that side

        half = res / 2
        bbox = BoundingBox(
            bbox.left - (half if bbox.span_x == 0 else 0),
            bbox.bottom - (half if bbox.span_y == 0 else 0),
            bbox.right + (half if bbox.span_x == 0 else 0),
            bbox.top + (half if bbox.span_y == 0 else 0),
            bbox.crs,
        )
    return GeoBox.from_bbox(bbox, resolution=res, anchor="edge", tol=0.01)


def point_geobox(
    point: Any,
    crs: Any,
    resolution: float,
    size: SizeLike,
    *,
    point_crs: Any = "EPSG:4326",
    snap: bool = False,
) -> GeoBox:
    """A grid of exactly ``size`` pixels in ``crs`` centred on ``point`` (the SITS "patch").

    ``size`` is an int or ``{"y": dimy, "x": dimx}``. ``point`` is an odc-geo point, a
    shapely point, an ``(x, y)`` pair or GeoJSON, in ``point_crs`` unless it carries a CRS.
    With ``snap=False`` (default) the grid's centre is the point itself, exactly; pixel
    edges then lie wherever that puts them. With ``snap=True`` the pixel edges lie on whole
    multiples of ``resolution`` (the lattice of :func:`geometry_geobox`) and the centre is
    within half a pixel of the point. For an odd size the point falls inside the central
    pixel; for an even size it falls on the corner shared by the four central pixels.

    Example:
        >>> g = point_geobox((500_000.0, 4_000_000.0), "EPSG:32633", 10, {"y": 3, "x": 4},
        ...                  point_crs="EPSG:32633")
        >>> g.shape.yx, g.affine.c, g.affine.f
        ((3, 4), 499980.0, 4000015.0)
    """
    res = _resolution(resolution)
    shape = yx(size)
    if isinstance(point, tuple | list) and len(point) == 2:
        point = {"type": "Point", "coordinates": [float(point[0]), float(point[1])]}
    geom = _as_geometry(point, point_crs)
    if not isinstance(geom, Geometry) or geom.geom_type != "Point":
        raise InputError(f"point_geobox needs a point, got a {geom.geom_type}")
    x, y = geom.to_crs(crs).coords[0]
    left = x - shape.x * res / 2
    top = y + shape.y * res / 2
    if snap:
        left = round(left / res) * res
        top = round(top / res) * res
    return GeoBox((shape.y, shape.x), Affine(res, 0.0, left, 0.0, -res, top), crs)


def grid_text(gbox: GeoBox) -> str:
    """A grid in one line for error messages: CRS, size, origin and pixel size."""
    a = gbox.affine
    crs = gbox.crs
    crs_text = (f"EPSG:{crs.epsg}" if crs is not None and crs.epsg else str(crs))[:60]
    return (
        f"{crs_text}, {gbox.height}x{gbox.width} px, origin ({a.c:.12g}, {a.f:.12g}), "
        f"pixel ({a.a:g}, {a.e:g})"
    )


def grid_offset(source: GeoBox, target: GeoBox) -> tuple[float, float]:
    """(rows, cols): where ``source``'s top-left corner falls on ``target``, in target pixels.

    ``(0.0, 0.0)`` means the two grids share their origin; ``(0.5, -0.5)`` is half a pixel
    down and half a pixel left. Works across CRSs (the corner is reprojected).

    >>> from affine import Affine
    >>> from odc.geo.geobox import GeoBox
    >>> a = GeoBox((10, 10), Affine(10, 0, 0, 0, -10, 100), "EPSG:32633")
    >>> b = GeoBox((10, 10), Affine(10, 0, 5, 0, -10, 95), "EPSG:32633")
    >>> grid_offset(b, a)
    (0.5, 0.5)
    """
    corner = point(source.affine.c, source.affine.f, source.crs)
    if source.crs != target.crs and target.crs is not None:
        corner = corner.to_crs(target.crs)
    x, y = corner.coords[0]
    col, row = ~target.affine * (x, y)
    return (round(float(row), 6), round(float(col), 6))


def same_grid(a: GeoBox, b: GeoBox, tol: float = 1e-6) -> bool:
    """Whether two grids are the same: CRS, shape, and transform to ``tol`` of a pixel.

    >>> from affine import Affine
    >>> from odc.geo.geobox import GeoBox
    >>> a = GeoBox((10, 10), Affine(10, 0, 0, 0, -10, 100), "EPSG:32633")
    >>> same_grid(a, GeoBox((10, 10), Affine(10, 0, 1e-6, 0, -10, 100), "EPSG:32633"))
    True
    >>> same_grid(a, GeoBox((10, 10), Affine(10, 0, 5, 0, -10, 100), "EPSG:32633"))
    False
    """
    if a.shape != b.shape or a.crs != b.crs:
        return False
    res = max(abs(b.affine.a), abs(b.affine.e))
    return all(abs(p - q) <= tol * res for p, q in zip(a.affine[:6], b.affine[:6], strict=True))


def lattice_offset(source: GeoBox, target: GeoBox) -> tuple[int, int] | None:
    """(row, col) of ``target``'s top-left pixel on ``source``'s grid when ``target`` lies on
    ``source``'s pixel lattice (same CRS, same pixel size, whole-pixel offset); else None."""
    a, b = source.affine, target.affine
    if source.crs != target.crs or a.b or a.d or b.b or b.d:
        return None
    tol = 1e-9 * max(abs(a.a), abs(a.e))
    if abs(a.a - b.a) > tol or abs(a.e - b.e) > tol:
        return None
    row, col = grid_offset(target, source)
    if abs(row - round(row)) > 1e-6 or abs(col - round(col)) > 1e-6:
        return None
    return round(row), round(col)


def array_window(
    array: Any,
    win: Window,
    fill: float | int,
) -> npt.NDArray[Any]:
    """Read ``win`` (over the last two axes) of ``array`` as numpy, padding past the edges.

    ``array`` may be numpy, dask or xarray; only the window is computed.
    """
    height, width = array.shape[-2:]
    r0, c0 = max(win.row, 0), max(win.col, 0)
    r1, c1 = min(win.row + win.height, height), min(win.col + win.width, width)
    part = array[..., r0:r1, c0:c1]
    values = np.asarray(part.values if hasattr(part, "values") else part)
    if (r0, c0, r1, c1) == (win.row, win.col, win.row + win.height, win.col + win.width):
        return values
    out = np.full((*values.shape[:-2], win.height, win.width), fill, dtype=values.dtype)
    if r1 > r0 and c1 > c0:
        out[..., r0 - win.row : r1 - win.row, c0 - win.col : c1 - win.col] = values
    return out
