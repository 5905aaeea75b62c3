"""Seeded builders for rasters and STAC objects, shared by tests, benchmarks and users.

Everything here is deterministic for a given ``seed``. The ``"rowcol"`` pattern writes pixel
values that encode where they came from, so a test can check the origin of every pixel of a
chip::

    value = (band + 1) * 10_000_000 + row * 10_000 + col      (uint32/int64/float64)
    value = ((row % 256) << 8 | (col % 256)) + band            (uint16, wraps every 256 px)

Example:
    >>> import tempfile, pathlib
    >>> from odc.geo.geobox import GeoBox
    >>> from geochip.testing import make_cog, make_item
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> gbox = GeoBox.from_bbox((500_000, 0, 505_120, 5_120), "EPSG:32633", resolution=10)
    >>> path = make_cog(tmp / "a.tif", gbox, bands=2, dtype="uint16", pattern="rowcol")
    >>> item = make_item("a", {"b1": path}, datetime="2024-05-01")
    >>> item.properties["proj:code"]
    'EPSG:32633'
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pystac
import rasterio
import rasterio.shutil
from odc.geo.geobox import GeoBox
from rasterio.enums import Resampling

from ..sources.files import COG_MEDIA_TYPE, item_from_rasters
from ..sources.items import STAC_EXTENSIONS
from ..sources.static import make_catalog, make_collection

__all__ = [
    "BuildStopped",
    "make_catalog",
    "make_cog",
    "make_collection",
    "make_item",
    "pixel_pattern",
    "stop_after",
    "texture",
]

Pattern = Literal["rowcol", "random", "texture", "constant"]


class BuildStopped(Exception):
    """Raised by :func:`stop_after`'s callback to interrupt a build between batches."""


def stop_after(batches: int) -> Callable[[int, int], None]:
    """A build's ``on_batch(done, total)`` that raises :class:`BuildStopped` once
    ``batches`` batches are done: an interruption at a known point, in this process.

    >>> stop = stop_after(2)
    >>> stop(1, 5)
    >>> stop(2, 5)
    Traceback (most recent call last):
    ...
    geochip.testing.BuildStopped: stopped after 2 of 5 batches
    """

    def on_batch(done: int, total: int) -> None:
        if done >= batches:
            raise BuildStopped(f"stopped after {done} of {total} batches")

    return on_batch


def texture(shape: tuple[int, int], seed: int = 0, scale: float = 1.0) -> npt.NDArray[np.float32]:
    """Smooth, land-cover-like noise in [0, 1]: a few octaves of bilinearly upsampled noise.

    Compresses like real imagery (neither constant nor white noise), which matters for
    benchmarks of decode speed.
    """
    rng = np.random.default_rng(seed)
    height, width = shape
    out = np.zeros(shape, dtype=np.float32)
    weight = 1.0
    total = 0.0
    for cells in (4, 16, 64, 256):
        ny = max(2, int(height * scale / max(height, width) * cells) + 2)
        nx = max(2, int(width * scale / max(height, width) * cells) + 2)
        coarse = rng.random((ny, nx), dtype=np.float32)
        yi = np.linspace(0, ny - 1.001, height, dtype=np.float32)
        xi = np.linspace(0, nx - 1.001, width, dtype=np.float32)
        y0 = yi.astype(np.int64)
        x0 = xi.astype(np.int64)
        fy = (yi - y0)[:, None]
        fx = (xi - x0)[None, :]
        top = coarse[y0][:, x0] * (1 - fx) + coarse[y0][:, x0 + 1] * fx
        bottom = coarse[y0 + 1][:, x0] * (1 - fx) + coarse[y0 + 1][:, x0 + 1] * fx
        out += weight * (top * (1 - fy) + bottom * fy)
        total += weight
        weight *= 0.5
    out /= total
    out += rng.normal(0, 0.01, size=shape).astype(np.float32)
    return np.clip(out, 0, 1)


def pixel_pattern(
    shape: tuple[int, int],
    band: int,
    dtype: npt.DTypeLike,
    pattern: Pattern = "rowcol",
    seed: int = 0,
    row_offset: int = 0,
    col_offset: int = 0,
) -> npt.NDArray[Any]:
    """Pixel values of one band of a generated raster (see the module docstring)."""
    dtype = np.dtype(dtype)
    height, width = shape
    if pattern == "rowcol":
        rows = np.arange(row_offset, row_offset + height, dtype=np.int64)[:, None]
        cols = np.arange(col_offset, col_offset + width, dtype=np.int64)[None, :]
        if dtype.itemsize >= 4:
            values = (band + 1) * 10_000_000 + rows * 10_000 + cols
        else:
            values = (((rows % 256) << 8) | (cols % 256)) + band
        info_max = np.iinfo(dtype).max if dtype.kind in "iu" else np.inf
        return np.asarray(
            np.mod(values, int(info_max) + 1) if dtype.kind in "iu" else values
        ).astype(dtype)
    if pattern == "constant":
        return np.full(shape, band + 1, dtype=dtype)
    if pattern == "random":
        rng = np.random.default_rng([seed, band])
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            return rng.integers(max(info.min, 0), min(info.max, 10_000), size=shape, dtype=dtype)
        return rng.random(shape).astype(dtype)
    if pattern == "texture":
        base = texture(shape, seed=seed * 101 + band)
        if dtype.kind in "iu":
            return (base * 9000 + 500).astype(dtype)
        return base.astype(dtype)
    raise ValueError(f"unknown pattern {pattern!r}; use rowcol, random, texture or constant")


def make_cog(
    path: str | Path,
    geobox: GeoBox,
    *,
    bands: int = 1,
    dtype: npt.DTypeLike = "uint16",
    pattern: Pattern = "rowcol",
    seed: int = 0,
    nodata: float | None = None,
    nodata_box: tuple[slice, slice] | None = None,
    tile: int = 256,
    overviews: Sequence[int] = (),
    compress: str = "deflate",
    resampling: str = "nearest",
    descriptions: Sequence[str] | None = None,
    data: npt.NDArray[Any] | None = None,
) -> Path:
    """Write a Cloud-Optimized GeoTIFF on ``geobox`` and return its path.

    ``data`` (bands, y, x) overrides ``pattern``. ``nodata_box`` = (rows, cols) fills a region
    with ``nodata``. ``overviews`` are decimation factors (2, 4, ...). The file is written
    band-interleaved-by-pixel tiles exactly as GDAL's COG driver lays them out.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = geobox.shape.yx
    if data is None:
        data = np.stack(
            [pixel_pattern((height, width), b, dtype, pattern, seed) for b in range(bands)]
        )
    else:
        data = np.asarray(data)
        if data.ndim == 2:
            data = data[None]
        bands = data.shape[0]
        dtype = data.dtype
    if nodata_box is not None:
        if nodata is None:
            raise ValueError("nodata_box needs a nodata value")
        data = data.copy()
        data[:, nodata_box[0], nodata_box[1]] = nodata
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": bands,
        "dtype": np.dtype(dtype).name,
        "crs": geobox.crs.to_wkt() if geobox.crs is not None else None,
        "transform": geobox.affine,
        "nodata": nodata,
    }
    # Write a plain GeoTIFF in memory, add overviews, then copy with the COG driver so the
    # layout (IFDs first, tiles in order, overviews after) is the real one.
    with rasterio.MemoryFile() as mem:
        with mem.open(**profile) as tmp:
            tmp.write(data)
            if descriptions:
                for i, name in enumerate(descriptions, start=1):
                    tmp.set_band_description(i, name)
            if overviews:
                tmp.build_overviews(list(overviews), Resampling[resampling])
        with mem.open() as src:
            options: dict[str, Any] = {
                "driver": "COG",
                "blocksize": tile,
                "compress": compress,
                "overviews": "FORCE_USE_EXISTING" if overviews else "NONE",
                "BIGTIFF": "IF_SAFER",
            }
            if compress.lower() in {"deflate", "lzw", "zstd"} and np.dtype(dtype).kind in "iu":
                options["predictor"] = 2
            tmp_path = path.with_name(path.name + ".part")
            rasterio.shutil.copy(src, tmp_path, **options)
    tmp_path.replace(path)
    return path


def make_item(
    item_id: str,
    assets: Mapping[str, str | Path],
    *,
    datetime: str | dt.datetime = "2024-01-01T00:00:00Z",
    cloud_cover: float | None = None,
    collection: str | None = None,
    properties: Mapping[str, Any] | None = None,
    roles: Mapping[str, Sequence[str]] | None = None,
    common_names: Mapping[str, str] | None = None,
    proj_version: Literal[1, 2] = 2,
    bands_style: Literal["bands", "eo:bands"] = "bands",
) -> pystac.Item:
    """Build a ``pystac.Item`` whose geometry, ``proj`` and band fields are read from files
    (:func:`geochip.sources.files.item_from_rasters`), as a COG catalog publishes it.

    ``assets`` maps asset keys to raster paths (headers only are read); a single-band
    asset's band is named after its key. ``proj_version=1`` writes the old ``proj:epsg``
    form and ``bands_style="eo:bands"`` the pre-STAC-1.1 ``eo:bands``/``raster:bands``
    form, for testing normalisation.
    """
    if isinstance(datetime, str):
        datetime = dt.datetime.fromisoformat(datetime.replace("Z", "+00:00"))
        if datetime.tzinfo is None:
            datetime = datetime.replace(tzinfo=dt.UTC)
    if not assets:
        raise ValueError("make_item needs at least one asset")
    props: dict[str, Any] = {}
    if cloud_cover is not None:
        props["eo:cloud_cover"] = float(cloud_cover)
    props.update(properties or {})
    item = item_from_rasters(
        item_id,
        assets,
        datetime=datetime,
        properties=props,
        collection=collection,
        roles=roles,
        media_type=COG_MEDIA_TYPE,
    )
    for key, asset in item.assets.items():
        asset.href = str(assets[key])
        bands = asset.extra_fields["bands"]
        if common_names and key in common_names:
            for band in bands:
                band["eo:common_name"] = common_names[key]
        if len(bands) == 1:
            bands[0]["name"] = key
    extensions = [STAC_EXTENSIONS["proj"], STAC_EXTENSIONS["raster"]]
    if bands_style == "eo:bands" or cloud_cover is not None or common_names:
        extensions.append(STAC_EXTENSIONS["eo"])
    if proj_version == 1:
        extensions[0] = "https://stac-extensions.github.io/projection/v1.1.0/schema.json"
        for fields in [item.properties, *(a.extra_fields for a in item.assets.values())]:
            code = fields.pop("proj:code", None)
            fields.pop("proj:wkt2", None)
            if code is not None or fields is item.properties:
                fields["proj:epsg"] = int(code.split(":")[1]) if code else None
    if bands_style == "eo:bands":
        extensions[1] = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
        extensions[2] = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
        for asset in item.assets.values():
            bands = asset.extra_fields.pop("bands")
            asset.extra_fields["raster:bands"] = [
                {k: v for k, v in b.items() if k in {"data_type", "nodata"}}
                | {"spatial_resolution": b["raster:spatial_resolution"]}
                for b in bands
            ]
            asset.extra_fields["eo:bands"] = [
                {"name": b["name"]}
                | ({"common_name": b["eo:common_name"]} if "eo:common_name" in b else {})
                for b in bands
            ]
    item.stac_extensions = sorted(set(extensions))
    return item
