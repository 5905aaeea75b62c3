"""What a search asks for (:class:`SearchQuery`), read from the keywords every catalog takes,
and whether an item matches it (:func:`matches`, the client-side filter every search
applies last). Datetimes are read as inclusive UTC ranges; a bare year, month or day
covers all of it.

Example:
    >>> [d.isoformat() for d in parse_datetime_range("2024-02")]
    ['2024-02-01T00:00:00+00:00', '2024-02-29T23:59:59.999999+00:00']
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pystac
import shapely.geometry

from ..core.geometry import check_bbox, rfc7946_bbox, stac_footprint
from ..errors import InputError
from .items import eo_cloud_cover, item_time_range

__all__ = [
    "Bbox",
    "SearchQuery",
    "matches",
    "parse_datetime_range",
]

Bbox = tuple[float, float, float, float]


def parse_instant(text: str, end: bool) -> dt.datetime | None:
    """One end of a datetime range (``..`` or empty: open); a year, month or day covers it."""
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
        start = parse_instant(start_raw, False) if isinstance(start_raw, str) else start_raw
        end = parse_instant(end_raw, True) if isinstance(end_raw, str) else end_raw
        start = start.replace(tzinfo=dt.UTC) if start and not start.tzinfo else start
        end = end.replace(tzinfo=dt.UTC) if end and not end.tzinfo else end
    elif "/" in value:
        left, right = value.split("/", 1)
        start, end = parse_instant(left, False), parse_instant(right, True)
    else:
        start, end = parse_instant(value, False), parse_instant(value, True)
    if start is not None and end is not None and start > end:
        raise InputError(f"datetime range {value!r} ends before it starts")
    return start, end


def rfc3339(value: dt.datetime | None) -> str:
    """A datetime as RFC 3339 in UTC (``..`` for an open end)."""
    if value is None:
        return ".."
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class SearchQuery:
    """What to search for; every field is optional.

    ``keep_missing_cloud`` keeps items without ``eo:cloud_cover`` through a ``max_cloud``
    filter (their cloud cover is computed later, see :mod:`geochip.select.cloud`).
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
            shape = shapely.geometry.shape(self.intersects)
            bounds = [round(v, 6) for v in rfc7946_bbox(shape)] if not shape.is_empty else []
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


def matches(item: pystac.Item, query: SearchQuery) -> bool:
    """Whether ``item`` passes every filter of ``query`` (the client-side filter).

    An item without ``eo:cloud_cover`` does not pass a cloud filter (the STAC API query
    semantics: a comparison with a missing property is false), unless
    ``query.keep_missing_cloud``.
    """
    if query.ids and item.id not in query.ids:
        return False
    if query.collections and item.collection_id not in query.collections:
        return False
    if query.bbox or query.intersects:
        if item.geometry is None:
            return False
        geom = stac_footprint(item.geometry, item.bbox)
        if query.bbox and not geom.intersects(shapely.geometry.box(*query.bbox)):
            return False
        if query.intersects and not geom.intersects(shapely.geometry.shape(query.intersects)):
            return False
    start, end = query.datetime
    if start or end:
        item_start, item_end = item_time_range(item)
        if item_start is None and item_end is None:
            return False
        if end is not None and item_start is not None and item_start > end:
            return False
        if start is not None and item_end is not None and item_end < start:
            return False
    if query.max_cloud is not None:
        cloud = eo_cloud_cover(item)
        if cloud is None:
            return query.keep_missing_cloud
        if cloud > query.max_cloud:
            return False
    return True


def make_query(
    collections: Sequence[str] | str | None,
    bbox: Sequence[float] | None,
    intersects: Any,
    datetime: Any,
    max_cloud: float | None,
    ids: Sequence[str] | None,
    keep_missing_cloud: bool = False,
) -> SearchQuery:
    """A :class:`SearchQuery` from the keywords of :meth:`Catalog.search`, checked."""
    if bbox is not None and intersects is not None:
        raise InputError("give bbox or intersects, not both")
    if bbox is not None:
        bbox = check_bbox(bbox)
    if intersects is not None and hasattr(intersects, "__geo_interface__"):
        intersects = intersects.__geo_interface__
    if intersects is not None and not (isinstance(intersects, Mapping) and "type" in intersects):
        raise InputError(
            f"intersects must be a GeoJSON geometry (a dict with 'type' and 'coordinates') or "
            f"a shapely geometry, got {type(intersects).__name__}"
        )
    if intersects is not None:
        # longitudes past 180 are folded back: servers and RFC 7946 know only -180..180
        folded = stac_footprint(intersects)
        if folded is not None and not folded.is_empty:
            bounds = shapely.geometry.shape(intersects).bounds
            if bounds[0] < -180 or bounds[2] > 180:
                intersects = folded.__geo_interface__
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


def item_sort_key(item: pystac.Item) -> tuple[dt.datetime, str]:
    """How search results are ordered: (datetime, id)."""
    start, _ = item_time_range(item)
    return (start or dt.datetime.min.replace(tzinfo=dt.UTC), item.id)
