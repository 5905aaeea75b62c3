"""Grids and chip windows.

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
from typing import TYPE_CHECKING, Any, Literal

from .errors import InputError, MissingGeoreferenceError, NoChipsError

if TYPE_CHECKING:
    import pystac
    from odc.geo.geobox import GeoBox

__all__ = [
    "EDGE_POLICIES",
    "Window",
    "YX",
    "asset_geobox",
    "chip_windows",
    "count_windows",
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


def asset_geobox(item: pystac.Item, asset: str) -> GeoBox:
    """The native grid of one asset, from its projection fields (no I/O).

    Reads ``proj:shape``/``proj:transform`` from the asset (or the item) and the CRS from
    ``proj:code``, ``proj:wkt2``, ``proj:projjson`` or the old ``proj:epsg``. When the fields
    are missing the file's header is read instead.
    """
    from affine import Affine
    from odc.geo.geobox import GeoBox

    if asset not in item.assets:
        from .errors import BandNotFoundError

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
    import rasterio

    href = item.assets[asset].get_absolute_href() or item.assets[asset].href
    with rasterio.open(href) as ds:
        if ds.crs is None or ds.transform.is_identity:
            raise MissingGeoreferenceError(
                f"{href}: the raster has no CRS or no geotransform; pass assume_crs= or fix "
                "the file (gdal_edit.py -a_srs / -a_ullr)"
            )
        return GeoBox((ds.height, ds.width), ds.transform, ds.crs)


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
    from affine import Affine
    from odc.geo.geobox import GeoBox

    affine = Affine(
        math.copysign(resolution, base.affine.a),
        0.0,
        base.affine.c,
        0.0,
        math.copysign(resolution, base.affine.e),
        base.affine.f,
    )
    return GeoBox((height, width), affine, base.crs)
