"""zen3geo's STAC readers: ``read_to_pystac_item``, ``search_for_pystac_item``,
``list_pystac_items_by_search``, ``stack_stac_items``, ``mosaic_dataarray`` and
``read_from_xpystac``.

The first three are pystac and pystac-client, as in zen3geo. geochip does not depend on
stackstac or xpystac: ``stack_stac_items`` stacks with odc-stac (through
:func:`geochip.read.load.load_stack`) on the grid stackstac would choose (the union of the
items' bounds in ``epsg``, snapped outward to ``resolution``), with pixel-centre coordinates
where stackstac gives top-left corners, the source dtype where stackstac gives float64, and
no rescaling; ``mosaic_dataarray`` is stackstac's mosaic in xarray; ``read_from_xpystac``
opens an asset's href with xarray for any ``engine`` but xpystac's ``"stac"``, which is
refused by name.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pystac
import pystac_client
import xarray as xr
from odc.geo import resxy_
from odc.geo.geobox import GeoBox
from odc.geo.geom import BoundingBox

from ..core.grid import asset_geobox
from ..errors import InputError
from ..read.load import load_stack
from .pipes import IterDataPipe, functional_datapipe

__all__ = [
    "PySTACAPIItemLister",
    "PySTACAPISearcher",
    "PySTACItemReader",
    "StackSTACMosaicker",
    "StackSTACStacker",
    "XpySTACAssetReader",
]

#: the media types stackstac stacks by default (its ``assets`` default).
RASTER_MEDIA_TYPES = ("image/tiff", "image/x.geotiff", "image/vnd.stac.geotiff", "image/jp2")


@functional_datapipe("read_to_pystac_item")
class PySTACItemReader(IterDataPipe):
    """``pystac.Item.from_file`` of every path or URL (``kwargs`` go to it)."""

    def __init__(self, source_datapipe: Any, **kwargs: Any) -> None:
        self.source_datapipe = source_datapipe
        self.kwargs = kwargs

    def __iter__(self) -> Iterator[pystac.Item]:
        for href in self.source_datapipe:
            yield pystac.Item.from_file(href=str(href), **self.kwargs)

    def __len__(self) -> int:
        return len(self.source_datapipe)


@functional_datapipe("search_for_pystac_item")
class PySTACAPISearcher(IterDataPipe):
    """A ``pystac_client.ItemSearch`` for every query (a dict of ``Client.search``
    parameters) against the STAC API at ``catalog_url`` (``kwargs`` go to ``Client.open``:
    ``headers``, ``parameters``, ``modifier``)."""

    def __init__(self, source_datapipe: Any, catalog_url: str, **kwargs: Any) -> None:
        self.source_datapipe = source_datapipe
        self.catalog_url = catalog_url
        self.kwargs = kwargs

    def __iter__(self) -> Iterator[Any]:
        catalog = pystac_client.Client.open(url=self.catalog_url, **self.kwargs)
        for query in self.source_datapipe:
            yield catalog.search(**query)

    def __len__(self) -> int:
        return len(self.source_datapipe)


@functional_datapipe("list_pystac_items_by_search")
class PySTACAPIItemLister(IterDataPipe):
    """The ``pystac.Item``s every ``ItemSearch`` matches; ``len()`` asks the API how many
    (``matched()``)."""

    def __init__(self, source_datapipe: Any) -> None:
        self.source_datapipe = source_datapipe

    def __iter__(self) -> Iterator[pystac.Item]:
        for search in self.source_datapipe:
            yield from search.items()

    def __len__(self) -> int:
        return sum(int(search.matched() or 0) for search in self.source_datapipe)


def _as_items(obj: Any) -> list[pystac.Item]:
    if isinstance(obj, pystac.Item):
        return [obj]
    items = list(obj)
    if not items or not all(isinstance(i, pystac.Item) for i in items):
        raise InputError(
            "stack_stac_items takes a pystac.Item, a list of them or an ItemCollection per "
            f"element; got {type(obj).__name__}"
        )
    return items


def _raster_assets(item: pystac.Item) -> list[str]:
    keys = []
    for key, asset in item.assets.items():
        kind = (asset.media_type or "").split(";")[0].strip()
        href = asset.href.split("?", 1)[0].lower()
        if kind in RASTER_MEDIA_TYPES or (not kind and href.endswith((".tif", ".tiff", ".jp2"))):
            keys.append(key)
    return keys


def stack_geobox(
    items: Sequence[pystac.Item],
    assets: Sequence[str],
    epsg: int | None = None,
    resolution: float | tuple[float, float] | None = None,
    bounds: tuple[float, float, float, float] | None = None,
) -> GeoBox:
    """The grid stackstac stacks ``items`` on: ``epsg`` (default: the items' one),
    ``resolution`` (default: the assets' one) and the union of the items' bounds in that
    CRS (or ``bounds``), snapped outward to multiples of the resolution."""
    grids = [asset_geobox(item, key) for item in items for key in assets]
    crs = f"EPSG:{epsg}" if epsg is not None else None
    if crs is None:
        found = {str(g.crs) for g in grids}
        if len(found) != 1:
            raise InputError(
                f"the items are in {len(found)} CRSs ({', '.join(sorted(found))}); give epsg="
            )
        crs = found.pop()
    if resolution is None:
        found_res = {(abs(g.resolution.x), abs(g.resolution.y)) for g in grids}
        if len(found_res) != 1:
            raise InputError(f"the assets have several resolutions {found_res}; give resolution=")
        resolution = found_res.pop()
    res_x, res_y = resolution if isinstance(resolution, tuple) else (resolution, resolution)
    if bounds is None:
        boxes = [g.boundingbox.to_crs(crs) for g in grids]
        bounds = (
            min(b.left for b in boxes),
            min(b.bottom for b in boxes),
            max(b.right for b in boxes),
            max(b.top for b in boxes),
        )
    left, bottom, right, top = bounds
    snapped = BoundingBox(
        float(np.floor(left / res_x) * res_x),
        float(np.floor(bottom / res_y) * res_y),
        float(np.ceil(right / res_x) * res_x),
        float(np.ceil(top / res_y) * res_y),
        crs,
    )
    return GeoBox.from_bbox(snapped, crs, resolution=resxy_(res_x, -res_y))


@functional_datapipe("stack_stac_items")
class StackSTACStacker(IterDataPipe):
    """Every element (an Item, a list of Items or an ItemCollection) stacked into a lazy
    (time, band, y, x) DataArray, one time step per item in time order, with an ``id``
    coordinate along time, on the grid of :func:`stack_geobox`.

    stackstac's ``assets``, ``epsg``, ``resolution``, ``bounds`` and ``chunksize`` are taken;
    its other options are refused by name (see the module doc for what differs).
    """

    def __init__(self, source_datapipe: Any, **kwargs: Any) -> None:
        allowed = {"assets", "epsg", "resolution", "bounds", "chunksize"}
        extra = sorted(set(kwargs) - allowed)
        if extra:
            raise InputError(
                f"stack_stac_items does not take {', '.join(extra)} here (geochip stacks "
                f"with odc-stac, not stackstac); it takes {', '.join(sorted(allowed))}. "
                "For the others, pip install stackstac and call stackstac.stack in a .map()"
            )
        self.source_datapipe = source_datapipe
        self.kwargs = kwargs

    def _stack(self, items: list[pystac.Item]) -> Any:
        items = sorted(items, key=lambda i: (i.datetime is None, i.datetime, i.id))
        assets = self.kwargs.get("assets") or _raster_assets(items[0])
        if not assets:
            raise InputError(f"item {items[0].id} has no raster (GeoTIFF/JP2) asset; give assets=")
        assets = list(assets)
        geobox = stack_geobox(
            items,
            assets,
            self.kwargs.get("epsg"),
            self.kwargs.get("resolution"),
            self.kwargs.get("bounds"),
        )
        chunks = self.kwargs.get("chunksize", 1024)
        cube = load_stack(items, assets, geobox, chunks=chunks, groupby="id")
        order = [item.id for item in items]
        return cube.assign_coords(id=("time", np.array(order, dtype=object)))

    def __iter__(self) -> Iterator[Any]:
        for element in self.source_datapipe:
            yield self._stack(_as_items(element))

    def __len__(self) -> int:
        return len(self.source_datapipe)


def mosaic(arr: Any, dim: str = "time", *, reverse: bool = False, nodata: float = np.nan) -> Any:
    """stackstac's mosaic: ``dim`` flattened by taking, per pixel, the last valid value
    along it (the first with ``reverse``); ``nodata`` (NaN by default) marks invalid."""
    n = arr.sizes[dim]
    order = range(n) if reverse else range(n - 1, -1, -1)
    out: Any = None
    for i in order:
        layer = arr.isel({dim: i})
        if out is None:
            out = layer
            continue
        missing = out.isnull() if np.isnan(nodata) else out == nodata
        out = xr.where(missing, layer, out, keep_attrs=True)  # type: ignore[no-untyped-call]
    return out


@functional_datapipe("mosaic_dataarray")
class StackSTACMosaicker(IterDataPipe):
    """Every DataArray mosaicked along ``dim`` (default ``"time"``) with :func:`mosaic`
    (``kwargs``: ``dim``, ``reverse``, ``nodata``, as stackstac.mosaic takes)."""

    def __init__(self, source_datapipe: Any, **kwargs: Any) -> None:
        extra = sorted(set(kwargs) - {"dim", "reverse", "nodata"})
        if extra:
            raise InputError(
                f"mosaic_dataarray does not take {', '.join(extra)}; it takes dim, reverse "
                "and nodata (stackstac.mosaic's axis is not supported: give dim)"
            )
        self.source_datapipe = source_datapipe
        self.kwargs = kwargs

    def __iter__(self) -> Iterator[Any]:
        for arr in self.source_datapipe:
            yield mosaic(arr, **self.kwargs)

    def __len__(self) -> int:
        return len(self.source_datapipe)


@functional_datapipe("read_from_xpystac")
class XpySTACAssetReader(IterDataPipe):
    """``xarray.open_dataset`` of every asset's href (or path/URL) with ``engine``
    (``kwargs`` go to it). xpystac's ``engine="stac"`` (zen3geo's default) is refused by
    name: geochip does not depend on xpystac; give the engine of the asset's format
    (``"zarr"``, ``"netcdf4"``, ``"h5netcdf"``...), as zen3geo 0.6.1 allows."""

    def __init__(self, source_datapipe: Any, engine: str | None = "stac", **kwargs: Any) -> None:
        if engine == "stac":
            raise InputError(
                "read_from_xpystac(engine='stac') needs xpystac, which geochip does not use; "
                "pass the asset's format as engine= ('zarr', 'netcdf4', 'h5netcdf'...), or "
                "pip install xpystac and call xarray.open_dataset(asset, engine='stac') in a "
                ".map()"
            )
        self.source_datapipe = source_datapipe
        self.engine = engine
        self.kwargs = kwargs

    def __iter__(self) -> Iterator[Any]:
        for asset in self.source_datapipe:
            href, kwargs = asset, dict(self.kwargs)
            if isinstance(asset, pystac.Asset):
                href = asset.get_absolute_href() or asset.href
                kwargs = {**asset.extra_fields.get("xarray:open_kwargs", {}), **kwargs}
            yield xr.open_dataset(href, engine=self.engine, **kwargs)

    def __len__(self) -> int:
        return len(self.source_datapipe)
