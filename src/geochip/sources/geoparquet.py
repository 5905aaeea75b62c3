"""stac-geoparquet files (:class:`GeoParquetCatalog`): rows are filtered with pyarrow
(collection, ids, datetime, bbox, cloud cover) before items are built from the few that may
match, with the reference reader of the encoding (the ``stac-geoparquet`` package).

pyarrow and stac-geoparquet are imported when such a file is read (~0.7 s together):
:func:`geochip.open_catalog` imports this module for every kind of catalog.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pystac
import shapely.geometry

from ..core.geometry import lon_intervals
from ..core.security import redact
from ..errors import InputError, SearchLimitError
from .catalog import Catalog
from .items import item_from_dict, normalize_item
from .query import SearchQuery

__all__ = [
    "GeoParquetCatalog",
]

log = logging.getLogger(__name__)


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
        from stac_geoparquet.arrow import stac_table_to_items  # lazy: see the module doc

        for d in stac_table_to_items(table):
            props = d.get("properties", {})
            for key in [k for k, v in props.items() if v is None and k != "datetime"]:
                del props[key]  # null in a column = absent in the item
            d["assets"] = {
                k: _drop_nulls(v) for k, v in (d.get("assets") or {}).items() if v is not None
            }
            yield normalize_item(item_from_dict(d))

    def _candidates(self, query: SearchQuery, max_items: int) -> list[pystac.Item]:
        import pyarrow as pa  # lazy: see the module doc
        import pyarrow.compute as pc  # lazy

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
            region = (
                shapely.geometry.box(*query.bbox)
                if query.bbox is not None
                else shapely.geometry.shape(query.intersects)
            )
            bbox = table["bbox"]
            xmin, xmax = pc.struct_field(bbox, "xmin"), pc.struct_field(bbox, "xmax")
            crosses = pc.greater(xmin, xmax)  # an item over 180 (RFC 7946: west > east)
            lon = pa.array([False] * table.num_rows)
            for west, east in lon_intervals(region):
                west_ok, east_ok = pc.less_equal(xmin, east), pc.greater_equal(xmax, west)
                lon = pc.or_kleene(lon, pc.and_kleene(west_ok, east_ok))
                lon = pc.or_kleene(lon, pc.and_kleene(crosses, pc.or_kleene(west_ok, east_ok)))
            _, south, _, north = region.bounds
            both(lon)
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


GEOPARQUET_SUFFIXES = (".parquet", ".geoparquet", ".stac-geoparquet")


def read_geoparquet(source: Any, href: str) -> Any:
    """A stac-geoparquet file as a pyarrow table, or an InputError naming it."""
    import pyarrow.parquet as pq  # lazy: see the module doc

    try:
        return pq.read_table(source)
    except (OSError, ValueError) as err:
        raise InputError(f"{redact(href)} is not a readable stac-geoparquet file: {err}") from None
