"""Labels on a grid: vector layers rasterised with a class map.

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
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from .errors import CRSMismatchError, InputError

if TYPE_CHECKING:
    import geopandas as gpd
    from odc.geo.geobox import GeoBox

__all__ = ["LabelReport", "rasterize_labels"]


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
    import rasterio.features
    from odc.geo.crs import CRS

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
