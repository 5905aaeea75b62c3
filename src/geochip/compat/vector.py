"""zen3geo's vector stages: ``read_from_pyogrio``, ``clip_vector_with_rectangle``,
``canvas_from_xarray`` and ``rasterize_with_datashader``.

geochip does not depend on datashader or spatialpandas. :class:`Canvas` stands for
``datashader.Canvas`` (its ``plot_width``, ``plot_height``, ``x_range``, ``y_range`` and a
``crs``), and ``rasterize_with_datashader`` burns geometries with ``rasterio.features``
using datashader's default reductions: points are counted per pixel (``uint32``; a point on
the right or top edge falls in the last pixel), lines and polygons give 1 where they fall
(``uint8``; a polygon covers the pixels whose centre it contains, a line the pixels GDAL's
line drawing visits). The raster is a (y, x) DataArray, north up, with its CRS in a
``spatial_ref`` coordinate, as zen3geo returns it. Other reductions (``agg=``) are refused by
name.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import odc.geo.xr  # noqa: F401 - the .odc accessor on xarray objects
import pyogrio
import rasterio.features
import rasterio.transform
import shapely
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_zeros

from ..errors import InputError
from .pipes import IterDataPipe, functional_datapipe

__all__ = [
    "Canvas",
    "DatashaderRasterizer",
    "GeoPandasRectangleClipper",
    "PyogrioReader",
    "XarrayCanvas",
]


@functional_datapipe("read_from_pyogrio")
class PyogrioReader(IterDataPipe):
    """``pyogrio.read_dataframe`` of every path or URL (``kwargs`` go to it): one
    ``geopandas.GeoDataFrame`` each."""

    def __init__(self, source_datapipe: Any, **kwargs: Any) -> None:
        self.source_datapipe = source_datapipe
        self.kwargs = kwargs

    def __iter__(self) -> Iterator[Any]:
        for filename in self.source_datapipe:
            yield pyogrio.read_dataframe(str(filename), **self.kwargs)

    def __len__(self) -> int:
        return len(self.source_datapipe)


def _grid_of(raster: Any) -> GeoBox:
    geobox = raster.odc.geobox
    if geobox is None or geobox.crs is None:
        raise InputError(
            "the raster has no CRS or x/y coordinates; open it with read_from_rioxarray or "
            "set them (e.g. rioxarray's .rio.write_crs)"
        )
    return geobox  # type: ignore[no-any-return]


@functional_datapipe("clip_vector_with_rectangle")
class GeoPandasRectangleClipper(IterDataPipe):
    """``(clipped vector, raster)`` for every raster of ``mask_datapipe``: the one vector
    of the source, in the raster's CRS, clipped to its bounds with ``GeoDataFrame.clip``
    (``kwargs`` go to it)."""

    def __init__(self, source_datapipe: Any, mask_datapipe: Any, **kwargs: Any) -> None:
        if len(source_datapipe) != 1:
            raise InputError(
                f"clip_vector_with_rectangle takes one vector, got {len(source_datapipe)}; "
                "merge them into one GeoDataFrame first (pandas.concat)"
            )
        self.source_datapipe = source_datapipe
        self.mask_datapipe = mask_datapipe
        self.kwargs = kwargs

    def __iter__(self) -> Iterator[Any]:
        vector = list(self.source_datapipe).pop()
        for raster in self.mask_datapipe:
            grid = _grid_of(raster)
            shapes = vector if vector.crs == grid.crs else vector.to_crs(grid.crs.to_wkt())  # type: ignore[union-attr]
            box = grid.boundingbox  # in the grid's own CRS, as the shapes now are
            yield shapes.clip(mask=tuple(box), **self.kwargs), raster

    def __len__(self) -> int:
        return len(self.mask_datapipe)


@dataclass
class Canvas:
    """A blank raster grid (what ``datashader.Canvas`` described), with a ``crs``."""

    plot_width: int
    plot_height: int
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    crs: Any = field(default=None)

    @property
    def geobox(self) -> GeoBox:
        """The grid as an odc-geo GeoBox (north up)."""
        if self.crs is None:
            raise InputError(
                f"the canvas with x_range {self.x_range} and y_range {self.y_range} has no "
                "crs; set it, e.g. canvas.crs = 'OGC:CRS84'"
            )
        (xmin, xmax), (ymin, ymax) = self.x_range, self.y_range
        transform = rasterio.transform.from_bounds(
            xmin, ymin, xmax, ymax, self.plot_width, self.plot_height
        )
        crs = self.crs.to_wkt() if hasattr(self.crs, "to_wkt") else self.crs
        return GeoBox((self.plot_height, self.plot_width), transform, crs)


def _edges(values: np.ndarray[Any, Any], dim: str) -> tuple[float, float]:
    if len(values) < 2:
        raise InputError(f"the {dim!r} coordinate needs two values or more to give a pixel size")
    step = (values[-1] - values[0]) / (len(values) - 1)
    low, high = sorted((values[0] - step / 2, values[-1] + step / 2))
    return float(low), float(high)


def _coords_canvas(raster: Any) -> Canvas:
    names = {str(d): d for d in raster.dims}
    x = next((names[n] for n in ("x", "lon", "longitude") if n in names), None)
    y = next((names[n] for n in ("y", "lat", "latitude") if n in names), None)
    if x is None or y is None or x not in raster.coords or y not in raster.coords:
        raise InputError(
            f"the raster has dimensions {list(names)}: it needs x and y dimensions with "
            "coordinates (x/y, lon/lat or longitude/latitude)"
        )
    xs, ys = np.asarray(raster[x].values, float), np.asarray(raster[y].values, float)
    return Canvas(len(xs), len(ys), _edges(xs, str(x)), _edges(ys, str(y)), crs=None)


@functional_datapipe("canvas_from_xarray")
class XarrayCanvas(IterDataPipe):
    """A blank :class:`Canvas` on the grid of every DataArray or Dataset (its x/y sizes,
    bounds and CRS)."""

    def __init__(self, source_datapipe: Any, **kwargs: Any) -> None:
        if kwargs:
            raise InputError(
                f"canvas_from_xarray does not take {', '.join(sorted(kwargs))}; those are "
                "datashader.Canvas options, and geochip rasterises without datashader"
            )
        self.source_datapipe = source_datapipe

    def __iter__(self) -> Iterator[Canvas]:
        for raster in self.source_datapipe:
            canvas = _coords_canvas(raster)  # pixel edges from the coordinates, as rioxarray
            grid = raster.odc.geobox
            canvas.crs = None if grid is None else grid.crs
            yield canvas

    def __len__(self) -> int:
        return len(self.source_datapipe)


_FAMILIES = {
    "Point": "points",
    "MultiPoint": "points",
    "LineString": "lines",
    "MultiLineString": "lines",
    "LinearRing": "lines",
    "Polygon": "polygons",
    "MultiPolygon": "polygons",
}


def _count_points(geoms: Any, geobox: GeoBox) -> np.ndarray[Any, Any]:
    height, width = geobox.shape.yx
    out = np.zeros((height, width), dtype="uint32")
    coords = shapely.get_coordinates(geoms)
    if len(coords) == 0:
        return out
    cols, rows = ~geobox.affine * (coords[:, 0], coords[:, 1])
    cols, rows = np.floor(cols).astype(int), np.floor(rows).astype(int)
    xmax, ymax = geobox.boundingbox.right, geobox.boundingbox.top
    cols[(cols == width) & (coords[:, 0] == xmax)] = width - 1  # the right edge is inside
    rows[(rows == -1) & (coords[:, 1] == ymax)] = 0  # the top edge too
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    np.add.at(out, (rows[inside], cols[inside]), 1)
    return out


def _check_agg(agg: Any) -> None:
    if agg is not None:
        raise InputError(
            f"agg={agg!r} needs datashader's reductions, which geochip does not use; the "
            "default (count for points, any for lines and polygons) is supported"
        )


def rasterize_any(vector: Any, canvas: Canvas, agg: Any = None) -> Any:
    """One vector (GeoSeries/GeoDataFrame) burnt onto ``canvas`` (see the module doc)."""
    _check_agg(agg)
    geobox = canvas.geobox
    if vector.crs is None:
        raise InputError(
            f"the vector with bounds {tuple(vector.total_bounds)} has no crs; set it, e.g. "
            "vector = vector.set_crs(crs='OGC:CRS84')"
        )
    if vector.crs != geobox.crs:
        vector = vector.to_crs(geobox.crs.to_wkt())  # type: ignore[union-attr]
    geoms = vector.geometry.values if hasattr(vector, "geometry") else vector.values
    families = {_FAMILIES.get(t, t) for t in vector.geom_type.dropna().unique()}
    if len(families) > 1 or not families <= {"points", "lines", "polygons"}:
        raise InputError(
            f"unsupported geometry type(s) {sorted(set(vector.geom_type.dropna()))}: one of "
            "points, lines or polygons (and their multi-part forms) per vector"
        )
    family = families.pop() if families else "polygons"
    height, width = geobox.shape.yx
    if family == "points":
        data = _count_points(geoms, geobox)
    else:
        shapes = [(g, 1) for g in geoms if g is not None and not g.is_empty]
        data = (
            rasterio.features.rasterize(
                shapes, out_shape=(height, width), transform=geobox.affine, dtype="uint8"
            )
            if shapes
            else np.zeros((height, width), dtype="uint8")
        )
    raster = xr_zeros(geobox, dtype=data.dtype)
    raster.values[:] = data
    rename = {k: v for k, v in (("latitude", "y"), ("longitude", "x")) if k in raster.dims}
    return raster.rename(rename) if rename else raster  # y/x always, as zen3geo names them


@functional_datapipe("rasterize_with_datashader")
class DatashaderRasterizer(IterDataPipe):
    """Every :class:`Canvas` of the source with the vector of ``vector_datapipe`` (one for
    all canvases, or one per canvas) burnt onto it (see the module doc)."""

    def __init__(
        self, source_datapipe: Any, vector_datapipe: Any, agg: Any = None, **kwargs: Any
    ) -> None:
        if kwargs:
            raise InputError(
                f"rasterize_with_datashader does not take {', '.join(sorted(kwargs))}; those "
                "are datashader options, and geochip rasterises without datashader"
            )
        n_vectors, n_canvases = len(vector_datapipe), len(source_datapipe)
        if n_vectors not in (1, n_canvases):
            raise InputError(
                f"the vector datapipe has {n_vectors} items: give 1 (for every canvas) or one "
                f"per canvas ({n_canvases})"
            )
        self.source_datapipe = source_datapipe
        self.vector_datapipe = vector_datapipe
        _check_agg(agg)
        self.agg = agg

    def __iter__(self) -> Iterator[Any]:
        vectors = list(self.vector_datapipe)
        for i, canvas in enumerate(self.source_datapipe):
            vector = vectors[0] if len(vectors) == 1 else vectors[i]
            yield rasterize_any(vector, canvas, self.agg)

    def __len__(self) -> int:
        return len(self.source_datapipe)
