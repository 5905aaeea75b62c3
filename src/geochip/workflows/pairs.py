"""Image/label pairs for training (the LandCoverNet workflow).

:func:`make_pair` takes the scenes chosen for one label and the label itself, and returns
the (time, band, y, x) image cube *on the label's grid* together with the label array:
ready to be chipped (:func:`geochip.plan.chips.plan_chips` on ``pair.geobox``) and stored
(:func:`geochip.store.writer.write_store` with ``pair.chip_source()``).

* A **raster label** (path/URL, a STAC label ``Item`` or a DataArray) defines the grid
  exactly (:func:`geochip.core.grid.label_geobox`); when a different ``geobox`` is forced, the
  label is aligned or refused (:func:`geochip.read.labels.align_label`): coordinates are never
  overwritten to make grids match.
* A **vector label** (GeoJSON, GeoPackage, Shapefile, GeoParquet, or a GeoDataFrame) has
  no grid, so ``geobox`` is required; it is rasterised with a class map
  (:func:`geochip.read.labels.rasterize_vector_labels`).

How a row of a scene-selection table maps onto it: the row's label (its href, or the label
item) is ``label``; the items it chose, one per period (fetched by id from the catalog:
``catalog.search(ids=row_item_ids)``), are ``items``; the bands, resampling and scaling
are the build's settings. One call per row; rows are independent, so they run in parallel.

Example:
    >>> import tempfile, pathlib, numpy as np
    >>> from odc.geo.geobox import GeoBox
    >>> from geochip.testing import make_cog, make_item
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> grid = GeoBox.from_bbox((500_000, 0, 500_640, 640), "EPSG:32633", resolution=10)
    >>> label = make_cog(tmp / "label.tif", grid, dtype="uint8",
    ...                  data=np.ones((64, 64), "uint8"))
    >>> scene = make_item("s1", {"red": make_cog(tmp / "red.tif", grid)}, datetime="2024-05-01")
    >>> pair = make_pair([scene], label, ["red"])
    >>> pair.image.dims, pair.image.shape, pair.label.shape, pair.geobox == grid
    (('time', 'band', 'y', 'x'), (1, 1, 64, 64), (64, 64), True)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
import pystac
from odc.geo.geobox import GeoBox

from ..core.grid import label_geobox
from ..core.masks import parse_mask
from ..core.vectors import VECTOR_SUFFIXES
from ..errors import InputError
from ..read.cube import mask_cube, scale_cube
from ..read.labels import align_label, rasterize_vector_labels
from ..read.load import load_stack
from ..store.writer import ChipSource

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "Pair",
    "make_pair",
]


@dataclass(frozen=True)
class Pair:
    """An image cube and its label on one grid."""

    image: xr.DataArray
    """(time, band, y, x), lazy, on ``geobox``."""
    label: npt.NDArray[Any]
    """(y, x) class ids on ``geobox``."""
    geobox: GeoBox
    report: Any
    """How the label was placed: an AlignReport (raster) or a LabelReport (vector)."""
    item_ids: tuple[str, ...]

    def chip_source(self) -> ChipSource:
        """The pair as a :class:`geochip.store.writer.ChipSource` for :func:`geochip.write_store`.

        The image keeps its dtype; its nodata is the first band's (NaN for a scaled cube).
        The label must fit the store's uint8 mask (255 is "ignore").
        """
        if self.label.dtype.kind not in "iub" or (
            self.label.size and (int(self.label.min()) < 0 or int(self.label.max()) > 255)
        ):
            raise InputError(
                f"the label ({self.label.dtype}, values {self.label.min()}..{self.label.max()}) "
                "does not fit the store's uint8 mask; map the classes to 0..254"
            )
        nodata_values = self.image["nodata"].values if "nodata" in self.image.coords else [0]
        nodata = float(nodata_values[0])
        if self.image.dtype.kind != "f" and np.isnan(nodata):
            nodata = 0
        times: Any = self.image["time"].values if "time" in self.image.coords else []
        return ChipSource(
            image=self.image.data,
            bands=[str(b) for b in self.image.band.values],
            nodata=nodata if self.image.dtype.kind == "f" else int(nodata),
            mask=self.label,
            item_ids=list(self.item_ids),
            datetimes=[str(np.datetime_as_string(t, unit="s")) for t in times],
        )


def _is_vector(label: Any) -> bool:
    if hasattr(label, "geometry") and hasattr(label, "crs"):
        return True
    if isinstance(label, str | Path):
        return Path(label).suffix.lower() in VECTOR_SUFFIXES
    return False


def make_pair(
    items: Sequence[pystac.Item],
    label: Any,
    bands: Sequence[str],
    *,
    geobox: GeoBox | None = None,
    asset: str | None = None,
    class_map: Mapping[Any, int] | None = None,
    attribute: str = "class",
    background: int = 0,
    all_touched: bool = False,
    on_mismatch: Literal["raise", "reproject"] = "raise",
    on_crs_mismatch: Literal["reproject", "raise"] = "reproject",
    resampling: str | Mapping[str, str] = "bilinear",
    groupby: str = "solar_day",
    chunks: int | str | None = 512,
    mask: str | None = None,
    scale: bool = False,
    clip: tuple[float | None, float | None] | None = None,
) -> Pair:
    """The chosen ``items``' ``bands`` stacked on the label's grid, and the label array.

    ``geobox`` defaults to the raster label's own grid; it is required for vector labels.
    ``mask`` (e.g. ``"scl"``) masks clouds with a quality band, which is loaded and then
    dropped. ``scale=True`` applies the raster extension's scale/offset
    (:func:`geochip.read.cube.scale_cube`, float32, NaN for missing) and then ``clip``.
    """
    items = list(items)
    if not items:
        raise InputError("make_pair needs at least one item for the label")
    report: Any
    if _is_vector(label):
        if geobox is None:
            raise InputError(
                "a vector label has no grid of its own; pass geobox= (e.g. "
                "geochip.core.grid.geometry_geobox(footprint, crs, resolution))"
            )
        if class_map is None:
            raise InputError("a vector label needs class_map= (attribute value -> class id)")
        grid = geobox
        label_array, report = rasterize_vector_labels(
            label,
            grid,
            class_map,
            attribute=attribute,
            background=background,
            all_touched=all_touched,
            on_crs_mismatch=on_crs_mismatch,
        )
    else:
        grid = geobox if geobox is not None else label_geobox(label, asset)
        label_array, report = align_label(label, grid, on_mismatch=on_mismatch, asset=asset)
    load_bands = list(bands)
    spec = parse_mask(mask) if mask else None
    if spec is not None and spec.band not in load_bands:
        load_bands.append(spec.band)
    image = load_stack(
        items, load_bands, grid, resampling=resampling, groupby=groupby, chunks=chunks
    )
    if spec is not None:
        # the quality band is dropped unless the user asked for it as a band too
        image = mask_cube(image, spec, drop=spec.band not in bands)
    if scale:
        image = scale_cube(image, clip=clip)
    elif clip is not None:
        raise InputError("clip applies to scaled values; pass scale=True with clip=")
    return Pair(image, label_array, grid, report, tuple(item.id for item in items))
