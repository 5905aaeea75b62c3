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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pystac
import rasterio
import rasterio.shutil
from odc.geo.geobox import GeoBox
from rasterio.enums import Resampling

from ..sources.files import raster_fields as _raster_fields

__all__ = [
    "make_catalog",
    "make_cog",
    "make_collection",
    "make_item",
    "pixel_pattern",
    "texture",
]

Pattern = Literal["rowcol", "random", "texture", "constant"]

STAC_EXTENSIONS = {
    "proj": "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "eo": "https://stac-extensions.github.io/eo/v2.0.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v2.0.0/schema.json",
}
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


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
    """Build a ``pystac.Item`` whose geometry, ``proj`` and band fields are read from files.

    ``assets`` maps asset keys to raster paths (headers only are read). ``proj_version=1``
    writes the old ``proj:epsg`` form and ``bands_style="eo:bands"`` the pre-STAC-1.1
    ``eo:bands``/``raster:bands`` form, for testing normalisation.
    """
    from odc.geo.geom import box

    if isinstance(datetime, str):
        datetime = dt.datetime.fromisoformat(datetime.replace("Z", "+00:00"))
        if datetime.tzinfo is None:
            datetime = datetime.replace(tzinfo=dt.UTC)
    fields = {key: _raster_fields(Path(path)) for key, path in assets.items()}
    if not fields:
        raise ValueError("make_item needs at least one asset")
    first = next(iter(fields.values()))
    bounds = first["bounds"]
    footprint = box(bounds.left, bounds.bottom, bounds.right, bounds.top, first["crs"])
    footprint = footprint.to_crs("EPSG:4326")
    props: dict[str, Any] = {}
    if cloud_cover is not None:
        props["eo:cloud_cover"] = float(cloud_cover)
    if proj_version == 2:
        props["proj:code"] = first["code"]
        if first["wkt2"]:
            props["proj:wkt2"] = first["wkt2"]
    else:
        props["proj:epsg"] = int(first["code"].split(":")[1]) if first["code"] else None
    props.update(properties or {})
    item = pystac.Item(
        id=item_id,
        geometry=footprint.json,
        bbox=list(footprint.boundingbox),
        datetime=datetime,
        properties=props,
        collection=collection,
    )
    extensions = [STAC_EXTENSIONS["proj"], STAC_EXTENSIONS["raster"]]
    if proj_version == 1:
        extensions[0] = "https://stac-extensions.github.io/projection/v1.1.0/schema.json"
    if bands_style == "eo:bands" or cloud_cover is not None or common_names:
        extensions.append(
            "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
            if bands_style == "eo:bands"
            else STAC_EXTENSIONS["eo"]
        )
    if bands_style == "eo:bands":
        extensions[1] = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
    item.stac_extensions = sorted(set(extensions))
    for key, path in assets.items():
        info = fields[key]
        extra: dict[str, Any] = {"proj:shape": info["shape"], "proj:transform": info["transform"]}
        if info["code"] != first["code"]:
            extra["proj:code" if proj_version == 2 else "proj:epsg"] = (
                info["code"] if proj_version == 2 else int(info["code"].split(":")[1])
            )
        bands = [dict(b) for b in info["bands"]]
        if common_names and key in common_names:
            for band in bands:
                band["eo:common_name"] = common_names[key]
        if len(bands) == 1:
            bands[0]["name"] = key
        if bands_style == "bands":
            for band in bands:
                band["raster:spatial_resolution"] = info["resolution"]
            extra["bands"] = bands
        else:
            extra["raster:bands"] = [
                {k: v for k, v in b.items() if k in {"data_type", "nodata"}}
                | {"spatial_resolution": info["resolution"]}
                for b in bands
            ]
            extra["eo:bands"] = [
                {"name": b["name"]}
                | ({"common_name": b["eo:common_name"]} if "eo:common_name" in b else {})
                for b in bands
            ]
        item.add_asset(
            key,
            pystac.Asset(
                href=str(path),
                media_type=COG_MEDIA_TYPE,
                roles=list(roles[key]) if roles and key in roles else ["data"],
                extra_fields=extra,
            ),
        )
    return item


def make_collection(
    collection_id: str,
    items: Sequence[pystac.Item],
    *,
    description: str | None = None,
    title: str | None = None,
    license: str = "other",
) -> pystac.Collection:
    """An in-memory ``pystac.Collection`` holding clones of ``items``, its extent covering them."""
    bboxes = [item.bbox for item in items if item.bbox]
    times = [item.datetime for item in items if item.datetime]
    if not bboxes or not times:
        raise ValueError("a collection needs items with a bbox and a datetime")
    extent = pystac.Extent(
        pystac.SpatialExtent(
            [
                [
                    min(b[0] for b in bboxes),
                    min(b[1] for b in bboxes),
                    max(b[2] for b in bboxes),
                    max(b[3] for b in bboxes),
                ]
            ]
        ),
        pystac.TemporalExtent([[min(times), max(times)]]),
    )
    coll = pystac.Collection(
        id=collection_id,
        description=description or collection_id,
        title=title,
        extent=extent,
        license=license,
    )
    for item in items:
        clone = item.clone()
        clone.collection_id = collection_id
        coll.add_item(clone)
    return coll


def make_catalog(
    root: str | Path,
    items: Sequence[pystac.Item] = (),
    *,
    catalog_id: str = "geochip-test",
    collection: str | None = None,
    collections: Sequence[pystac.Collection] = (),
    description: str = "geochip test catalog",
    title: str | None = None,
) -> Path:
    """Write a self-contained static catalog under ``root`` and return its catalog.json.

    ``items`` go straight under the catalog, or into one new collection named
    ``collection``; ``collections`` (see :func:`make_collection`) are added as they are.
    Asset hrefs are made relative where the files lie under ``root``.
    """
    root = Path(root)
    catalog = pystac.Catalog(id=catalog_id, description=description, title=title)
    if collection:
        catalog.add_child(make_collection(collection, items))
    else:
        for item in items:
            catalog.add_item(item.clone())
    for coll in collections:
        catalog.add_child(coll)
    # a trailing slash: pystac takes a last path part with a dot in it for a file name
    catalog.normalize_hrefs(root.resolve().as_posix() + "/")
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json"
