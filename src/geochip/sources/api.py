"""STAC APIs: pystac-client behind one HTTP session with retries, a bound on open
requests, the href policy and redaction (used by :func:`geochip.sources.open.open_catalog`).

What a server can do is read from its conformance classes (:func:`api_capabilities`): the
cloud-cover bound goes server-side with the ``filter`` extension (CQL2 JSON) or the
``query`` extension where the server conforms, and client-side where it does not (said at
DEBUG level). Items that come back are checked against every filter again, and an empty
answer to a server-side filter is verified by asking again without it.

Example:
    >>> caps = api_capabilities(["https://api.stacspec.org/v1.0.0/item-search",
    ...                          "https://api.stacspec.org/v1.0.0/item-search#query"])
    >>> caps.item_search, caps.cloud_filter
    (True, 'query')
"""

from __future__ import annotations

import json
import logging
import math
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import pystac
from pystac_client import Client
from pystac_client.stac_api_io import StacApiIO

from ..core.hrefs import HrefPolicy
from ..core.security import redact
from ..errors import CatalogError, GeochipError, HrefPolicyError, SearchLimitError
from .catalog import Catalog
from .http import HttpSession
from .items import item_from_dict, normalize_item
from .query import SearchQuery, matches, rfc3339

__all__ = [
    "ApiCapabilities",
    "ApiCatalog",
    "api_capabilities",
]

log = logging.getLogger(__name__)

_CQL2_JSON = "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json"

_CQL2_TEXT = "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text"


@dataclass(frozen=True)
class ApiCapabilities:
    """What a STAC API says it can do (from its conformance classes)."""

    item_search: bool = False
    query: bool = False
    filter: bool = False
    cql2_json: bool = False
    cql2_text: bool = False
    sort: bool = False

    @property
    def cloud_filter(self) -> Literal["filter", "query", "client"]:
        """Where a cloud-cover bound goes: ``filter`` (CQL2 JSON), ``query``, ``client``."""
        if self.filter and self.cql2_json:
            return "filter"
        if self.query:
            return "query"
        return "client"


def api_capabilities(conforms_to: Iterable[str]) -> ApiCapabilities:
    """Parse conformance class URIs.

    The STAC API filter extension is used with CQL2 JSON only: its conformance class
    (``.../item-search#filter``) and the CQL2 JSON class must both be listed.

    >>> api_capabilities([
    ...     "https://api.stacspec.org/v1.0.0/item-search",
    ...     "https://api.stacspec.org/v1.0.0-rc.2/item-search#filter",
    ...     "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    ... ]).cloud_filter
    'filter'
    >>> api_capabilities(["https://api.stacspec.org/v1.0.0/item-search"]).cloud_filter
    'client'
    """
    uris = [str(u).rstrip("/") for u in conforms_to]

    def has(suffix: str) -> bool:
        pattern = re.compile(
            r"^https://api\.stacspec\.org/v1\.\d+\.\d+[^/]*" + re.escape(suffix) + "$"
        )
        return any(pattern.match(u) for u in uris)

    return ApiCapabilities(
        item_search=has("/item-search"),
        query=has("/item-search#query"),
        filter=has("/item-search#filter"),
        cql2_json=any(u.startswith(_CQL2_JSON) for u in uris),
        cql2_text=any(u.startswith(_CQL2_TEXT) for u in uris),
        sort=has("/item-search#sort"),
    )


def _api_io(http: HttpSession) -> Any:
    class GeochipStacApiIO(StacApiIO):
        """pystac-client's IO, sending through geochip's session (policy, bound, retries,
        redacted logs and errors)."""

        def __init__(self) -> None:
            super().__init__(max_retries=None)
            self.session = http.session

        def read_text(self, source: Any, *args: Any, **kwargs: Any) -> str:
            href = str(source.to_dict()["href"] if isinstance(source, pystac.Link) else source)
            if urlsplit(http.policy.check(href)).scheme not in {"http", "https"}:
                raise HrefPolicyError(
                    f"a STAC API may only link to http(s) URLs, not {redact(href)!r}"
                )
            return str(super().read_text(source, *args, **kwargs))

        def request(
            self,
            href: str,
            method: str | None = None,
            headers: dict[str, str] | None = None,
            parameters: dict[str, Any] | None = None,
        ) -> str:
            method = (method or "GET").upper()
            if method in {"POST", "PUT", "PATCH"}:
                response = http.send(method, href, json_body=parameters)
            else:
                response = http.send(method, href, params=parameters or None)
            text = response.content.decode("utf-8", errors="replace")
            try:
                json.loads(text)
            except ValueError as err:
                raise CatalogError(
                    f"{method} {redact(href)} answered something that is not JSON "
                    f"(content-type {response.headers.get('content-type')!r}, "
                    f"{len(response.content)} bytes; {err}); a login page or a proxy in the "
                    "way, or a cut-off answer: check the URL and try again"
                ) from None
            return text

    return GeochipStacApiIO()


def _unwrapped(pages: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Pages, with geochip's own errors (policy, HTTP, unreachable) unwrapped from the
    pystac errors that may carry them."""
    try:
        yield from pages
    except pystac.STACError as err:
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, GeochipError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise cause from None
        raise CatalogError(redact(str(err))) from None


class ApiCatalog(Catalog):
    """A STAC API, searched with pystac-client through geochip's HTTP session."""

    kind = "api"

    def __init__(
        self,
        client: Any,
        href: str,
        http: HttpSession,
        capabilities: ApiCapabilities,
        *,
        page_size: int = 100,
        method: str = "POST",
        **kwargs: Any,
    ) -> None:
        super().__init__(href, **kwargs)
        self.client = client
        self.http = http
        self.capabilities = capabilities
        self.page_size = page_size
        self.method = method
        self._server_filter_trusted = True

    def _filters_note(self, query: SearchQuery) -> str:
        where = self._cloud_mode(query)
        server = ["collections", "bbox/intersects", "datetime", "ids"]
        if query.max_cloud is not None and where != "client":
            server.append(f"eo:cloud_cover via the {where} extension")
        note = f"server-side: {', '.join(server)}"
        if query.max_cloud is not None and where == "client":
            note += "; client-side: eo:cloud_cover (the API does not conform to query/filter)"
        return note

    def _cloud_mode(self, query: SearchQuery) -> Literal["filter", "query", "client"]:
        if query.max_cloud is None or not self._server_filter_trusted:
            return "client"
        mode = self.capabilities.cloud_filter
        if mode == "query" and query.keep_missing_cloud:
            return "client"  # the query extension cannot say "or missing"
        return mode

    def _parameters(self, query: SearchQuery, mode: str) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if query.collections:
            params["collections"] = list(query.collections)
        if query.bbox:
            params["bbox"] = list(query.bbox)
        if query.intersects:
            params["intersects"] = query.intersects
        start, end = query.datetime
        if start or end:
            params["datetime"] = f"{rfc3339(start)}/{rfc3339(end)}"
        if query.ids:
            params["ids"] = list(query.ids)
        if mode == "filter":
            prop = {"property": "eo:cloud_cover"}
            cond: dict[str, Any] = {"op": "<=", "args": [prop, query.max_cloud]}
            if query.keep_missing_cloud:
                cond = {"op": "or", "args": [cond, {"op": "isNull", "args": [prop]}]}
            params["filter"] = cond
            params["filter_lang"] = "cql2-json"
        elif mode == "query":
            params["query"] = {"eo:cloud_cover": {"lte": query.max_cloud}}
        return params

    def _fetch(self, query: SearchQuery, mode: str, max_items: int) -> list[pystac.Item]:
        params = self._parameters(query, mode)
        search = self.client.search(
            method=self.method, limit=self.page_size, max_items=max_items + 1, **params
        )
        max_pages = math.ceil((max_items + 1) / self.page_size) + 2
        items: list[pystac.Item] = []
        seen: set[tuple[str | None, str]] = set()
        for pages, page in enumerate(_unwrapped(search.pages_as_dicts()), start=1):
            if pages > max_pages:
                raise CatalogError(
                    f"{self!r} sent more than {max_pages} pages of at most {self.page_size} "
                    "items; its paging does not end"
                )
            new = 0
            for feature in page.get("features", []):
                item = normalize_item(item_from_dict(feature, redact(self.href)))
                key = (item.collection_id, item.id)
                if key in seen:
                    continue
                seen.add(key)
                items.append(item)
                new += 1
            if page.get("features") and new == 0:
                raise CatalogError(
                    f"{self!r} sent page {pages} again (no new item): its next links loop; "
                    "paging stopped"
                )
        if len(items) > max_items:
            client = " before the client-side cloud bound" if mode == "client" else ""
            raise SearchLimitError(
                f"{self!r}: more than {max_items} items match {query.describe()}{client} "
                "(paging stopped there); narrow the bbox, datetime or collections, or raise "
                "max_items"
            )
        return items

    def _candidates(self, query: SearchQuery, max_items: int) -> list[pystac.Item]:
        mode = self._cloud_mode(query)
        if query.max_cloud is not None and mode == "client":
            log.debug(
                "%s: eo:cloud_cover<=%s is applied client-side (%s)",
                self,
                query.max_cloud,
                "its answers to a server-side filter were wrong before"
                if not self._server_filter_trusted
                else "it does not conform to the query or filter extension"
                if self.capabilities.cloud_filter == "client"
                else "the query extension cannot keep items without eo:cloud_cover",
            )
        elif query.max_cloud is not None:
            log.debug(
                "%s: eo:cloud_cover<=%s sent with the %s extension", self, query.max_cloud, mode
            )
        items = self._fetch(query, mode, max_items)
        if mode != "client" and not any(matches(i, query) for i in items):
            # Never trust a silent empty answer to a server-side filter: ask again
            # without it and filter here.
            unfiltered = self._fetch(query, "client", max_items)
            really = [i for i in unfiltered if matches(i, query)]
            if really:
                log.warning(
                    "%s answered no item to the %s filter eo:cloud_cover<=%s, but %d items "
                    "match it client-side: it ignores or mishandles the filter; geochip "
                    "filters client-side for this catalog from now on",
                    self,
                    mode,
                    query.max_cloud,
                    len(really),
                )
                self._server_filter_trusted = False
            else:
                log.debug("%s: empty answer to the %s filter verified without it", self, mode)
            return unfiltered
        return items


def open_api(
    href: str,
    root: Mapping[str, Any],
    http: HttpSession,
    policy: HrefPolicy,
    page_size: int,
    common: Mapping[str, Any],
) -> ApiCatalog:
    """An :class:`ApiCatalog` for the STAC API whose landing page is ``root``."""
    conforms = list(root.get("conformsTo") or [])
    if not conforms:
        link = next(
            (
                lk
                for lk in root.get("links", [])
                if isinstance(lk, dict) and lk.get("rel") == "conformance"
            ),
            None,
        )
        if link is not None:
            try:
                conforms = list(http.get_json(link["href"]).get("conformsTo") or [])
            except GeochipError as err:
                log.debug("%s: no /conformance answer (%s)", redact(href), err)
    caps = api_capabilities(conforms)
    if not caps.item_search:
        raise CatalogError(
            f"{redact(href)} does not conform to STAC API item-search (its conformance "
            f"classes: {conforms or 'none'}); open it as a static catalog with kind='static'"
        )
    io = _api_io(http)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NoConformsTo: we read /conformance ourselves
        client = Client.from_dict(dict(root), href=href, migrate=False)
    client._stac_io = io
    client.set_root(client)  # the landing page is the root: no second GET of it
    client.set_conforms_to(conforms)
    search_links = [
        lk for lk in root.get("links", []) if isinstance(lk, dict) and lk.get("rel") == "search"
    ]
    methods = {str(lk.get("method", "GET")).upper() for lk in search_links}
    method = "POST" if "POST" in methods or not search_links else "GET"
    log.debug(
        "%s: STAC API, cloud filter by %s, search by %s (conformance: %s)",
        redact(href),
        caps.cloud_filter,
        method,
        ", ".join(conforms),
    )
    return ApiCatalog(
        client,
        href,
        http,
        caps,
        page_size=page_size,
        method=method,
        href_policy=policy,
        **common,
    )
