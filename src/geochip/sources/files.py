"""A folder (or glob) of GeoTIFF/JP2 rasters as STAC items, read from the files' headers.

Everything is a STAC item inside: :func:`folder_items` wraps each raster (or each group of
band files of one scene) into a :class:`pystac.Item` with the projection extension v2
(``proj:code`` or ``proj:wkt2``, per-asset ``proj:shape``/``proj:transform``), STAC 1.1
``bands`` (``name``, ``data_type``, ``nodata``, ``raster:spatial_resolution``) and a
footprint in EPSG:4326. Only headers are read. :func:`raster_fields` is the header reader
that :func:`geochip.testing.make_item` shares.

The item's datetime comes from, in order: the ``datetime`` argument (a regex with groups
``year``/``month``/``day``, or a callable ``path -> datetime``), the file's
``TIFFTAG_DATETIME``, the first date (``YYYYMMDD`` or ``YYYY-MM-DD``) in the file name.
Without any, the item gets the nominal datetime 1970-01-01 and the property
``geochip:nominal_datetime: true``.

Example:
    >>> import tempfile, pathlib
    >>> from odc.geo.geobox import GeoBox
    >>> from geochip.testing import make_cog
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> gbox = GeoBox.from_bbox((500_000, 0, 500_640, 640), "EPSG:32633", resolution=10)
    >>> _ = make_cog(tmp / "S2_20240503_T33.tif", gbox, bands=2)
    >>> [item] = folder_items(tmp)
    >>> item.id, item.datetime.date().isoformat(), item.properties["proj:code"]
    ('S2_20240503_T33', '2024-05-03', 'EPSG:32633')
    >>> [b["name"] for b in item.assets["data"].extra_fields["bands"]]
    ['b1', 'b2']
"""

from __future__ import annotations

import datetime as dt
import glob
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import rasterio
from odc.geo.geom import box

from ..core.env import gdal_env
from ..core.geometry import rfc7946_bbox, wgs84_footprint
from ..core.storage import RASTER_SUFFIXES, gdal_path, is_object_url, raster_files
from ..errors import InputError, MissingGeoreferenceError
from .items import STAC_EXTENSIONS

__all__ = [
    "COG_MEDIA_TYPE",
    "RASTER_SUFFIXES",
    "folder_items",
    "is_raster_file",
    "item_from_rasters",
    "raster_fields",
]

log = logging.getLogger(__name__)


def is_raster_file(path: str | Path) -> bool:
    """Whether ``path`` is named like a raster geochip reads (any case of the suffix).

    >>> is_raster_file("scenes/B04.TIF"), is_raster_file("labels.geojson")
    (True, False)
    """
    return Path(path).suffix.lower() in RASTER_SUFFIXES


#: The media type of a Cloud-Optimized GeoTIFF asset.
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
_MEDIA = {
    "GTiff": "image/tiff; application=geotiff",
    "COG": COG_MEDIA_TYPE,
    "JP2OpenJPEG": "image/jp2",
}

_DATE_IN_NAME = re.compile(
    r"(?<!\d)(?P<year>(?:19|20)\d{2})-?(?P<month>\d{2})-?(?P<day>\d{2})(?!\d)"
)

_NOMINAL = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _json_nodata(value: float) -> float | int | str:
    if np.isnan(value):
        return "nan"
    if np.isinf(value):
        return "inf" if value > 0 else "-inf"
    return int(value) if float(value).is_integer() else float(value)


def raster_fields(path: str | Path) -> dict[str, Any]:
    """Header fields of one raster: ``code`` (``EPSG:n`` or None), ``wkt2`` (when no EPSG
    code fits), ``shape`` [h, w], ``transform`` (6 numbers), ``bounds``, ``crs``, ``bands``
    (STAC 1.1 band dicts), ``resolution``, ``driver``, ``tags``. Pixels are not read."""
    with gdal_env({}), rasterio.open(gdal_path(str(path))) as ds:
        crs = ds.crs
        code = None
        if crs is not None:
            epsg = crs.to_epsg()
            code = f"EPSG:{epsg}" if epsg else None
        return {
            "code": code,
            "wkt2": None if code or crs is None else crs.to_wkt(),
            "shape": [ds.height, ds.width],
            "transform": list(ds.transform)[:6],
            "bounds": ds.bounds,
            "crs": crs,
            "bands": [
                {
                    "name": ds.descriptions[i] or f"b{i + 1}",
                    "data_type": ds.dtypes[i],
                    **({"nodata": _json_nodata(ds.nodata)} if ds.nodata is not None else {}),
                }
                for i in range(ds.count)
            ],
            "resolution": abs(ds.transform.a),
            "driver": ds.driver,
            "tags": ds.tags(),
        }


def _datetime_of(
    path: Path, fields: Mapping[str, Any], how: str | Callable[[Path], dt.datetime] | None
) -> dt.datetime | None:
    if callable(how):
        value = how(path)
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(how, str):
        m = re.search(how, path.name)
        if m is None:
            raise InputError(
                f"the datetime pattern {how!r} does not match the file name {path.name!r}; "
                "it needs named groups year, month, day (and optionally hour, minute)"
            )
        groups = {k: int(v) for k, v in m.groupdict().items() if v is not None}
        return dt.datetime(
            groups["year"],
            groups.get("month", 1),
            groups.get("day", 1),
            groups.get("hour", 0),
            groups.get("minute", 0),
            tzinfo=dt.UTC,
        )
    tag = fields.get("tags", {}).get("TIFFTAG_DATETIME")
    if tag:
        try:
            return dt.datetime.strptime(tag.strip(), "%Y:%m:%d %H:%M:%S").replace(tzinfo=dt.UTC)
        except ValueError:
            log.debug("%s: TIFFTAG_DATETIME %r is not YYYY:MM:DD HH:MM:SS", path, tag)
    for m in _DATE_IN_NAME.finditer(path.stem):
        try:
            return dt.datetime(int(m["year"]), int(m["month"]), int(m["day"]), tzinfo=dt.UTC)
        except ValueError:
            continue
    return None


def item_from_rasters(
    item_id: str,
    assets: Mapping[str, str | Path],
    *,
    datetime: dt.datetime | None = None,
    properties: Mapping[str, Any] | None = None,
    collection: str | None = None,
    fields: Mapping[str, Mapping[str, Any]] | None = None,
    roles: Mapping[str, Sequence[str]] | None = None,
    media_type: str | None = None,
) -> pystac.Item:
    """A STAC 1.1 item for the raster files ``assets`` (asset key -> path), read from their
    headers: the footprint and the item-level ``proj:code`` from the first asset, and per
    asset its ``proj:shape``/``proj:transform`` and STAC 1.1 ``bands`` (name, data type,
    nodata, ``raster:spatial_resolution``). This is the one place items are made from files
    (folders of rasters, registry datasets, the sample catalog, ``geochip.testing``).

    ``datetime`` None gives the nominal 1970-01-01 with ``geochip:nominal_datetime``.
    ``roles`` (default ``["data"]``) and ``media_type`` (default: from the driver) are per
    asset key and for every asset.
    """
    if not assets:
        raise InputError(f"item {item_id!r} needs at least one raster file")
    info = {
        key: dict(fields[key]) if fields and key in fields else raster_fields(path)
        for key, path in assets.items()
    }
    first = next(iter(info.values()))
    first_path = next(iter(assets.values()))
    if first["crs"] is None or first["transform"][:6] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]:
        raise MissingGeoreferenceError(
            f"{first_path}: the raster has no CRS or no geotransform; it cannot be placed on "
            "a map (fix the file with gdal_edit.py -a_srs / -a_ullr)"
        )
    b = first["bounds"]
    footprint = wgs84_footprint(box(b.left, b.bottom, b.right, b.top, first["crs"]))
    props: dict[str, Any] = {"proj:code": first["code"]}
    if first["wkt2"]:
        props["proj:wkt2"] = first["wkt2"]
    if datetime is None:
        datetime = _NOMINAL
        props["geochip:nominal_datetime"] = True
    props.update(properties or {})
    item = pystac.Item(
        id=item_id,
        geometry=footprint.json,
        bbox=list(rfc7946_bbox(footprint)),
        datetime=datetime,
        properties=props,
        collection=collection,
    )
    item.stac_extensions = sorted([STAC_EXTENSIONS["proj"], STAC_EXTENSIONS["raster"]])
    for key, path in assets.items():
        fld = info[key]
        extra: dict[str, Any] = {"proj:shape": fld["shape"], "proj:transform": fld["transform"]}
        if fld["code"] != first["code"]:
            extra["proj:code"] = fld["code"]
            if fld["wkt2"]:
                extra["proj:wkt2"] = fld["wkt2"]
        bands = [dict(band) for band in fld["bands"]]
        for band in bands:
            band["raster:spatial_resolution"] = fld["resolution"]
        extra["bands"] = bands
        item.add_asset(
            key,
            pystac.Asset(
                href=str(path) if is_object_url(path) else str(Path(path).absolute()),
                media_type=media_type or _MEDIA.get(str(fld.get("driver"))),
                roles=list(roles[key]) if roles and key in roles else ["data"],
                extra_fields=extra,
            ),
        )
    return item


def _expand(source: str | Path | Sequence[str | Path], recursive: bool) -> list[str]:
    """The raster files of ``source`` as local paths or object-store URLs, sorted."""
    if isinstance(source, str) and is_object_url(source):
        return raster_files(source, recursive)  # a folder or glob, listed through fsspec
    if isinstance(source, str | Path):
        text = str(source)
        if any(ch in text for ch in "*?["):
            paths = [Path(p) for p in glob.glob(text, recursive=recursive)]
        elif Path(text).is_dir():
            return raster_files(text, recursive)
        elif Path(text).is_file():
            paths = [Path(text)]
        else:
            raise InputError(f"no folder, file or glob match at {text!r}")
        return sorted({str(p) for p in paths if p.is_file()})
    urls = {str(p) for p in source if is_object_url(p)}
    return sorted(urls | {str(p) for p in map(Path, source) if str(p) not in urls and p.is_file()})


def _as_path(file: str) -> Path:
    """``file`` as a Path (for an object-store URL, its path inside the bucket): what
    names, dates and a ``datetime`` callable look at."""
    return Path(file.split("://", 1)[1]) if is_object_url(file) else Path(file)


def folder_items(
    source: str | Path | Sequence[str | Path],
    *,
    recursive: bool = True,
    group: str | None = None,
    datetime: str | Callable[[Path], dt.datetime] | None = None,
    collection: str | None = None,
) -> list[pystac.Item]:
    """Items for a folder, a glob (``"scenes/**/*.tif"``) or a list of raster files; a
    folder or glob on an object store (``"s3://bucket/scenes/"``) is listed through fsspec
    and its files are read through GDAL's network file systems.

    Without ``group``, each file is one item with one asset ``"data"`` holding all its
    bands. With ``group``, a regex with named groups ``scene`` and ``band`` matched against
    the file name, files of one scene become one item with one asset per band (e.g.
    ``r"(?P<scene>LC08_.*)_(?P<band>B\\d+|QA_PIXEL)\\.TIF"``). Items are sorted by id.
    """
    paths = _expand(source, recursive)
    if not paths:
        raise InputError(f"no raster ({', '.join(RASTER_SUFFIXES)}) found in {source!s}")
    groups: dict[str, dict[str, str]] = {}
    if group is None:
        for file in paths:
            path = _as_path(file)
            if path.stem in groups:
                raise InputError(
                    f"two rasters would both be item {path.stem!r}: {groups[path.stem]['data']} "
                    f"and {file}; rename one or pass group="
                )
            groups[path.stem] = {"data": file}
    else:
        pattern = re.compile(group)
        if not {"scene", "band"} <= set(pattern.groupindex):
            raise InputError(f"group pattern {group!r} needs named groups 'scene' and 'band'")
        for file in paths:
            name = _as_path(file).name
            m = pattern.fullmatch(name) or pattern.search(name)
            if m is None:
                log.debug("%s does not match the group pattern; skipped", file)
                continue
            assets = groups.setdefault(m["scene"], {})
            if m["band"] in assets:
                raise InputError(
                    f"scene {m['scene']!r} has two files for band {m['band']!r}: "
                    f"{assets[m['band']]} and {file}"
                )
            assets[m["band"]] = file
        if not groups:
            raise InputError(f"no file in {source!s} matches the group pattern {group!r}")
    items = []
    for item_id in sorted(groups):
        assets = groups[item_id]
        fields = {key: raster_fields(path) for key, path in assets.items()}
        first_key = next(iter(assets))
        when = _datetime_of(_as_path(assets[first_key]), fields[first_key], datetime)
        if when is None:
            log.debug("%s: no date in its tags or name; nominal datetime 1970-01-01", item_id)
        items.append(
            item_from_rasters(
                item_id,
                assets,
                datetime=when,
                collection=collection,
                fields=fields,
                properties={"geochip:source": "files"},
            )
        )
    return items
