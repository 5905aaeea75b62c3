"""What every kind of catalog offers (:class:`Catalog`: ``search``, ``items``, ``sign``), and
the catalogs whose items are read once and searched in memory (with an R-tree over their
footprints): items given in memory, an ItemCollection JSON, a folder of rasters.

:meth:`Catalog.search` checks every item against every filter again, whatever the kind
did server-side, checks its hrefs against the catalog's href policy, and sorts by
(datetime, id); kinds implement ``_candidates``, which may return a superset.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import pystac
import shapely.geometry

from ..core.geometry import stac_footprint
from ..core.hrefs import HrefPolicy, check_item_hrefs
from ..core.security import Signer, redact, sign_href
from ..errors import CatalogError, EmptySearchError, GeochipError, InputError, SearchLimitError
from .items import normalize_item
from .query import SearchQuery, item_sort_key, make_query, matches

__all__ = [
    "DEFAULT_MAX_ITEMS",
    "Catalog",
    "ItemCatalog",
]

log = logging.getLogger(__name__)

#: How many items a search may return before it stops with a SearchLimitError.
DEFAULT_MAX_ITEMS = 10_000


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
        query = make_query(
            collections, bbox, intersects, datetime, max_cloud, ids, keep_missing_cloud
        )
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
        base = self.href if is_url(self.href) else None
        for item in found:
            check_item_hrefs(item, self.href_policy, base=base)
        found.sort(key=item_sort_key)
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
        self.items = list(items)
        self.geoms = [
            stac_footprint(i.geometry, i.bbox) if i.geometry else None for i in self.items
        ]
        self.with_geom = [n for n, g in enumerate(self.geoms) if g is not None]
        self.tree = shapely.STRtree([self.geoms[n] for n in self.with_geom])

    def candidates(self, query: SearchQuery) -> list[pystac.Item]:
        if query.bbox is None and query.intersects is None:
            return self.items
        region = (
            shapely.geometry.box(*query.bbox)
            if query.bbox is not None
            else shapely.geometry.shape(query.intersects)
        )
        hits = self.tree.query(region, predicate="intersects")
        return [self.items[self.with_geom[int(n)]] for n in sorted(hits)]


class InMemoryCatalog(Catalog):
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


class ItemCatalog(InMemoryCatalog):
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


def is_url(text: str) -> bool:
    """Whether ``text`` is an http(s) URL."""
    return urlsplit(text).scheme.lower() in {"http", "https"}
