"""Labels on a grid: raster labels aligned exactly, vector layers rasterised with a class map.

:func:`align_label` puts a label raster on a target grid without ever overwriting
coordinates: when the label's grid is the target grid (same CRS, transform and shape, to
1e-6 of a pixel) its pixels are read as they are; otherwise it raises
:class:`~geochip.errors.GridMismatchError` naming both grids and the offset in pixels, or,
when asked (``on_mismatch="reproject"``), resamples it with nearest neighbour so classes
are never blended. :func:`read_vector_labels` reads GeoJSON, GeoPackage, Shapefile,
FlatGeobuf and GeoParquet; :func:`rasterize_vector_labels` reads and burns them in one go.


:func:`rasterize_labels` burns a GeoDataFrame's polygons onto a GeoBox with
:func:`rasterio.features.rasterize`, mapping an attribute to class ids. The vectors' CRS is
checked against the grid's: they are reprojected (default) or refused. Empty geometries are
skipped and invalid ones refused unless asked, and both are counted in a
:class:`LabelReport`.

Example:
    >>> import geopandas as gpd
    >>> from shapely.geometry import box
    >>> from odc.geo.geobox import GeoBox
    >>> gbox = GeoBox.from_bbox((0, 0, 100, 100), "EPSG:32633", resolution=10)
    >>> shapes = gpd.GeoDataFrame({"class": ["water"]}, geometry=[box(0, 0, 50, 100)], crs=32633)
    >>> arr, report = rasterize_labels(shapes, gbox, {"water": 1})
    >>> int(arr.sum()), report.burned
    (50, 1)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
import rasterio
import rasterio.features
import rasterio.warp
from odc.geo.crs import CRS
from odc.geo.geobox import GeoBox

from ..core.env import gdal_env
from ..core.grid import grid_offset, grid_text, label_geobox, same_grid
from ..core.storage import gdal_path
from ..core.vectors import read_vector
from ..errors import CRSMismatchError, GridMismatchError, InputError

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = [
    "AlignReport",
    "LabelReport",
    "align_label",
    "rasterize_labels",
    "rasterize_vector_labels",
    "read_vector_labels",
]


@dataclass(frozen=True)
class LabelReport:
    """What happened to the shapes: how many were burned, empty, invalid or outside."""

    burned: int
    empty: int
    invalid: int
    invalid_ids: tuple[Any, ...] = ()
    reprojected: bool = False


def rasterize_labels(
    shapes: gpd.GeoDataFrame,
    geobox: GeoBox,
    class_map: Mapping[Any, int],
    *,
    attribute: str = "class",
    background: int = 0,
    all_touched: bool = False,
    dtype: str = "uint8",
    on_crs_mismatch: Literal["reproject", "raise"] = "reproject",
    skip_invalid: bool = False,
) -> tuple[npt.NDArray[Any], LabelReport]:
    """Burn ``shapes`` onto ``geobox``: pixel = ``class_map[shape[attribute]]``.

    Later rows are burned over earlier ones. Pixels whose centre is in no shape get
    ``background`` (with ``all_touched``, every pixel a shape touches is burned).
    """
    if attribute not in shapes.columns:
        raise InputError(
            f"labels have no column {attribute!r}; columns: {', '.join(map(str, shapes.columns))}"
        )
    values = shapes[attribute]
    unknown = sorted({str(v) for v in values.unique() if v not in class_map})
    if unknown:
        raise InputError(
            f"label values {unknown} of column {attribute!r} are not in the class map "
            f"{dict(class_map)}; add them or filter the labels"
        )
    if shapes.crs is None:
        raise CRSMismatchError(
            f"the labels have no CRS and the grid is {geobox.crs}; set one with "
            "GeoDataFrame.set_crs(...)"
        )
    if geobox.crs is None:
        raise CRSMismatchError("the grid has no CRS; labels cannot be placed on it")
    reprojected = False
    if CRS(shapes.crs.to_wkt()) != geobox.crs:
        if on_crs_mismatch == "raise":
            raise CRSMismatchError(
                f"labels are in {shapes.crs.to_string()} but the grid is in {geobox.crs}; "
                "reproject them or pass on_crs_mismatch='reproject'"
            )
        shapes = shapes.to_crs(geobox.crs.to_wkt())
        reprojected = True
    geoms = shapes.geometry
    empty = geoms.is_empty | geoms.isna()
    invalid = ~empty & ~geoms.is_valid
    if invalid.any() and not skip_invalid:
        ids = list(shapes.index[invalid][:10])
        raise InputError(
            f"{int(invalid.sum())} label geometries are invalid (index {ids}"
            f"{'...' if invalid.sum() > 10 else ''}); fix them (shapely.make_valid) or pass "
            "skip_invalid=True"
        )
    keep = ~empty & ~invalid
    pairs = [(g, int(class_map[v])) for g, v in zip(geoms[keep], values[keep], strict=False)]
    height, width = geobox.shape.yx
    if pairs:
        out = rasterio.features.rasterize(
            pairs,
            out_shape=(height, width),
            transform=geobox.affine,
            fill=background,
            all_touched=all_touched,
            dtype=dtype,
        )
    else:
        out = np.full((height, width), background, dtype=dtype)
    report = LabelReport(
        burned=len(pairs),
        empty=int(empty.sum()),
        invalid=int(invalid.sum()),
        invalid_ids=tuple(shapes.index[invalid]),
        reprojected=reprojected,
    )
    return out, report


@dataclass(frozen=True)
class AlignReport:
    """How a label raster met the target grid."""

    source_grid: str
    target_grid: str
    offset_px: tuple[float, float]
    reprojected: bool


def align_label(
    label: Any,
    geobox: GeoBox,
    *,
    on_mismatch: Literal["raise", "reproject"] = "raise",
    asset: str | None = None,
    band: int = 1,
    fill: int | float | None = None,
) -> tuple[npt.NDArray[Any], AlignReport]:
    """The label raster's pixels on ``geobox``, exactly, or a clear error.

    ``label`` is a path/URL, a ``pystac.Item`` (``asset`` names the label asset) or an
    xarray DataArray with a grid. When its grid equals ``geobox`` the pixels come back as
    they are. Otherwise ``on_mismatch="raise"`` (default) raises
    :class:`~geochip.errors.GridMismatchError` with both grids and the offset in pixels,
    and ``"reproject"`` resamples the label onto ``geobox`` with nearest neighbour; target
    pixels it does not cover get ``fill`` (default: the label's nodata, else 255, the
    store's "ignore"). Coordinates are never overwritten to make grids "match".

    Example:
        >>> import tempfile, pathlib, numpy as np
        >>> from affine import Affine
        >>> from odc.geo.geobox import GeoBox
        >>> from geochip.testing import make_cog
        >>> grid = GeoBox((4, 4), Affine(10, 0, 0, 0, -10, 40), "EPSG:32633")
        >>> shifted = GeoBox((4, 4), Affine(10, 0, 5, 0, -10, 40), "EPSG:32633")
        >>> path = make_cog(pathlib.Path(tempfile.mkdtemp()) / "l.tif", shifted, dtype="uint8",
        ...                 data=np.arange(16, dtype="uint8").reshape(4, 4))
        >>> align_label(path, grid)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        geochip.errors.GridMismatchError: label grid (... origin (5, 40)...) differs from the \
target grid (... origin (0, 40)...): the label's origin is 0 rows, 0.5 columns off; ...
        >>> arr, report = align_label(path, grid, on_mismatch="reproject")
        >>> arr[0].tolist(), report.offset_px
        ([0, 1, 2, 3], (0.0, 0.5))
    """
    if on_mismatch not in ("raise", "reproject"):
        raise InputError(f"on_mismatch must be 'raise' or 'reproject', got {on_mismatch!r}")
    source = label_geobox(label, asset)
    offset = grid_offset(source, geobox)
    same = same_grid(source, geobox)
    report = AlignReport(grid_text(source), grid_text(geobox), offset, not same)
    if not same and on_mismatch == "raise":
        scale = abs(source.affine.a) / abs(geobox.affine.a)
        res_note = "" if abs(scale - 1) < 1e-9 else f", pixel size x{scale:g}"
        raise GridMismatchError(
            f"label grid ({report.source_grid}) differs from the target grid "
            f"({report.target_grid}): the label's origin is {offset[0]:g} rows, {offset[1]:g} "
            f"columns off{res_note}; pass on_mismatch='reproject' to resample it with nearest, "
            "or build the target grid from the label (geochip.core.grid.label_geobox)"
        )
    if hasattr(label, "dims"):
        return _align_xarray(label, geobox, same, fill), report
    href = _label_href(label, asset)

    with gdal_env({}), rasterio.open(gdal_path(href)) as ds:
        if not 1 <= band <= ds.count:
            raise InputError(f"{href} has {ds.count} band(s); band={band} does not exist")
        if same:
            return ds.read(band), report
        dtype = ds.dtypes[band - 1]
        fill_value = fill if fill is not None else (ds.nodata if ds.nodata is not None else 255)
        out = np.full(geobox.shape.yx, fill_value, dtype=dtype)
        rasterio.warp.reproject(
            rasterio.band(ds, band),
            out,
            src_nodata=ds.nodata,
            dst_transform=geobox.affine,
            dst_crs=geobox.crs.to_wkt() if geobox.crs is not None else None,
            dst_nodata=fill_value,
            resampling=rasterio.warp.Resampling.nearest,
        )
        return out, report


def _label_href(label: Any, asset: str | None) -> str:
    if hasattr(label, "assets") and hasattr(label, "id"):
        key = asset or next(iter(label.assets))
        return str(label.assets[key].get_absolute_href() or label.assets[key].href)
    return str(label)


def _align_xarray(label: Any, geobox: GeoBox, same: bool, fill: Any) -> npt.NDArray[Any]:
    if same:
        return np.asarray(label.values)
    from odc.geo.xr import xr_reproject  # lazy: xarray (~0.7 s), only DataArray labels

    nodata = label.attrs.get("nodata", label.attrs.get("_FillValue"))
    fill_value = fill if fill is not None else (nodata if nodata is not None else 255)
    out = xr_reproject(label, geobox, resampling="nearest", dst_nodata=fill_value)
    return np.asarray(out.values)


def rasterize_vector_labels(
    labels: str | Path | gpd.GeoDataFrame,
    geobox: GeoBox,
    class_map: Mapping[Any, int],
    *,
    layer: str | int | None = None,
    attribute: str = "class",
    background: int = 0,
    all_touched: bool = False,
    dtype: str = "uint8",
    on_crs_mismatch: Literal["reproject", "raise"] = "reproject",
    skip_invalid: bool = False,
) -> tuple[npt.NDArray[Any], LabelReport]:
    """Read a vector label file (or take a GeoDataFrame) and burn it onto ``geobox``.

    See :func:`rasterize_labels` for the class map, ``all_touched``, ``background``, the CRS
    check (``on_crs_mismatch``: reproject the vectors or raise
    :class:`~geochip.errors.CRSMismatchError`) and the counts of invalid and empty
    geometries in the returned :class:`LabelReport`.
    """
    shapes = labels if hasattr(labels, "geometry") else read_vector_labels(labels, layer=layer)
    return rasterize_labels(
        shapes,
        geobox,
        class_map,
        attribute=attribute,
        background=background,
        all_touched=all_touched,
        dtype=dtype,
        on_crs_mismatch=on_crs_mismatch,
        skip_invalid=skip_invalid,
    )


def read_vector_labels(path: str | Path, *, layer: str | int | None = None) -> gpd.GeoDataFrame:
    """Read a vector label file (GeoJSON, GeoPackage, Shapefile, FlatGeobuf, GeoParquet;
    see :func:`geochip.core.vectors.read_vector`); ``layer`` picks a GeoPackage layer."""
    return read_vector(path, layer=layer, what="label file")
