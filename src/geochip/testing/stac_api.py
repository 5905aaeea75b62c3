"""A small conforming STAC API on loopback, for what ``rustac serve`` cannot do.

:class:`StacApiServer` is written here, on the standard library's HTTP server: it conforms
(as asked) to the **query** and **filter** (CQL2 JSON) extensions, records every request
(method, path, headers, body), counts requests in flight, injects faults (429/5xx with
``Retry-After``), can lie about its conformance (ignore filters, or answer them with
nothing), and serves files with HTTP range requests, optionally behind a SAS-like ``sig``
token. The real server, ``rustac serve``, is :class:`geochip.testing.rustac.RustacServer`.

Example:
    >>> import datetime as dt, pystac
    >>> t = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    >>> geom = {"type": "Point", "coordinates": [1.0, 2.0]}
    >>> items = [pystac.Item(f"s{i}", geom, [1, 2, 1, 2], t, {"eo:cloud_cover": 10.0 * i},
    ...                      collection="c") for i in range(3)]
    >>> with StacApiServer(items) as api:
    ...     from geochip.sources.open import open_catalog
    ...     cat = open_catalog(api.url)
    ...     [i.id for i in cat.search(max_cloud=15)], api.requests[-1].body["filter"]["op"]
    (['s0', 's1'], '<=')
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pystac
import shapely.geometry

from .rustac import as_dicts, collection_dicts, wait_until_up

__all__ = [
    "CORE",
    "FILTER",
    "QUERY",
    "RecordedRequest",
    "StacApiServer",
]

CORE = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/collections",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
    "https://api.stacspec.org/v1.0.0/item-search",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
]

QUERY = ["https://api.stacspec.org/v1.0.0/item-search#query"]

FILTER = [
    "https://api.stacspec.org/v1.0.0-rc.2/item-search#filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
]


@dataclass
class RecordedRequest:
    """One request the :class:`StacApiServer` received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


def _parse_time(text: str | None) -> dt.datetime | None:
    if not text or text == "..":
        return None
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _item_times(item: Mapping[str, Any]) -> tuple[dt.datetime | None, dt.datetime | None]:
    props = item.get("properties", {})
    if props.get("datetime"):
        t = _parse_time(props["datetime"])
        return t, t
    return _parse_time(props.get("start_datetime")), _parse_time(props.get("end_datetime"))


def _prop(item: Mapping[str, Any], name: str) -> Any:
    if name == "id":
        return item.get("id")
    if name == "collection":
        return item.get("collection")
    return item.get("properties", {}).get(name)


_COMPARE = {
    "=": lambda a, b: a == b,
    "<>": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _cql2(expr: Any, item: Mapping[str, Any]) -> Any:
    """Evaluate a CQL2 JSON expression (a subset: logic, comparisons, isNull, in,
    s_intersects) on an item; a comparison with a missing property is false."""
    if isinstance(expr, Mapping):
        if "property" in expr:
            return _prop(item, expr["property"])
        op = str(expr.get("op", "")).lower()
        args = expr.get("args", [])
        if op == "and":
            return all(_cql2(a, item) for a in args)
        if op == "or":
            return any(_cql2(a, item) for a in args)
        if op == "not":
            return not _cql2(args[0], item)
        if op == "isnull":
            return _cql2(args[0], item) is None
        if op in _COMPARE:
            left, right = (_cql2(a, item) for a in args)
            if left is None or right is None:
                return False
            return _COMPARE[op](left, right)
        if op == "in":
            left = _cql2(args[0], item)
            return left is not None and left in args[1]
        if op == "s_intersects":
            geom = args[1] if "property" in args[0] else args[0]
            return item.get("geometry") is not None and shapely.geometry.shape(
                item["geometry"]
            ).intersects(shapely.geometry.shape(geom))
        if "type" in expr:  # a geometry literal
            return expr
        raise ValueError(f"unsupported CQL2 op {op!r}")
    return expr


_QUERY_OPS = {"eq": "=", "neq": "<>", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}


def _query_ext(query: Mapping[str, Any], item: Mapping[str, Any]) -> bool:
    for name, ops in query.items():
        value = _prop(item, name)
        for op, target in ops.items():
            if op == "in":
                if value not in target:
                    return False
            elif value is None or not _COMPARE[_QUERY_OPS[op]](value, target):
                return False
    return True


@dataclass
class _Fault:
    status: int
    retry_after: float | None = None


@dataclass
class _State:
    items: list[dict[str, Any]]
    collections: list[dict[str, Any]]
    conforms_to: list[str]
    ignore_filters: bool
    empty_on_filter: bool
    delay: float
    max_page: int
    files_root: Path | None
    file_token: str | None
    require_headers: dict[str, str] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    faults: list[_Fault] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class StacApiServer:
    """A small STAC API on a free loopback port (a context manager); see the module doc.

    Args:
        items: the items to serve.
        conformance: extensions to conform to, among ``"query"`` and ``"filter"``.
        ignore_filters: advertise the extensions but ignore ``query``/``filter``.
        empty_on_filter: advertise the extensions but answer any filter with no item.
        delay: seconds each search request takes (to see concurrency).
        files_root: serve this folder under ``/files/`` (HTTP range requests).
        file_token: when set, ``/files/`` answers 403 unless the query has ``sig=<token>``.
        require_headers: the STAC endpoints answer 401 to a request without these headers
            and values (an API that needs a key); ``/files/`` is behind ``file_token``.
    """

    def __init__(
        self,
        items: Iterable[pystac.Item | Mapping[str, Any]] = (),
        collections: Iterable[pystac.Collection] | None = None,
        *,
        conformance: Sequence[str] = ("query", "filter"),
        ignore_filters: bool = False,
        empty_on_filter: bool = False,
        delay: float = 0.0,
        max_page: int = 1000,
        files_root: str | Path | None = None,
        file_token: str | None = None,
        require_headers: Mapping[str, str] | None = None,
    ) -> None:
        conforms = list(CORE)
        if "query" in conformance:
            conforms += QUERY
        if "filter" in conformance:
            conforms += FILTER
        item_dicts = as_dicts(items)
        self.state = _State(
            items=item_dicts,
            collections=collection_dicts(item_dicts, collections),
            conforms_to=conforms,
            ignore_filters=ignore_filters,
            empty_on_filter=empty_on_filter,
            delay=delay,
            max_page=max_page,
            files_root=Path(files_root) if files_root is not None else None,
            file_token=file_token,
            require_headers=dict(require_headers or {}),
        )
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # test helpers ---------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in order."""
        with self.state.lock:
            return list(self.state.requests)

    @property
    def max_in_flight(self) -> int:
        """The most search requests that were being answered at the same time."""
        return self.state.max_in_flight

    def searches(self) -> list[RecordedRequest]:
        """The requests to ``/search``."""
        return [r for r in self.requests if r.path.rstrip("/").endswith("/search")]

    def inject(self, status: int, count: int = 1, retry_after: float | None = None) -> None:
        """Answer the next ``count`` requests with ``status`` (then behave again)."""
        with self.state.lock:
            self.state.faults.extend(_Fault(status, retry_after) for _ in range(count))

    def file_url(self, path: str | Path) -> str:
        """URL of a file under ``files_root``."""
        if self.state.files_root is None:
            raise ValueError("the server serves no files (files_root=None)")
        rel = Path(path).resolve().relative_to(self.state.files_root.resolve())
        return f"{self.url}files/{rel.as_posix()}"

    # life -----------------------------------------------------------------------------
    def start(self) -> StacApiServer:
        """Start serving on 127.0.0.1 (a daemon thread)."""
        state = self.state

        class Handler(_Handler):
            pass

        Handler.state = state
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        Handler.base = self.url
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        wait_until_up(self.url + "_ping", time.monotonic() + 10, None)
        with state.lock:
            state.requests.clear()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> StacApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    state: _State
    base: str
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    # plumbing -------------------------------------------------------------------------
    def _send(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        ctype = "application/octet-stream" if isinstance(body, bytes) else "application/json"
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _record(self, body: Any) -> RecordedRequest:
        parts = urlsplit(self.path)
        rec = RecordedRequest(
            self.command, parts.path, parse_qs(parts.query), dict(self.headers.items()), body
        )
        with self.state.lock:
            self.state.requests.append(rec)
        return rec

    def _refused(self) -> bool:
        """401 when a required header is missing or wrong (the value is never echoed)."""
        for name, value in self.state.require_headers.items():
            if self.headers.get(name) != value:
                self._send(401, {"code": "Unauthorized", "description": f"{name} required"})
                return True
        return False

    def _fault(self) -> bool:
        with self.state.lock:
            fault = self.state.faults.pop(0) if self.state.faults else None
        if fault is None:
            return False
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = str(fault.retry_after)
        self._send(fault.status, {"code": "Injected", "description": "injected fault"}, headers)
        return True

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path == "/_ping":
            self._send(200, {})
            return
        rec = self._record(None)
        if parts.path.startswith("/files/"):
            self._file(parts)
            return
        if self._refused() or self._fault():
            return
        if parts.path == "/":
            self._send(200, self._landing())
        elif parts.path == "/conformance":
            self._send(200, {"conformsTo": self.state.conforms_to})
        elif parts.path == "/collections":
            self._send(200, {"collections": self.state.collections, "links": []})
        elif parts.path.startswith("/collections/"):
            cid = parts.path.split("/")[2]
            found = [c for c in self.state.collections if c["id"] == cid]
            self._send(200, found[0]) if found else self._send(404, {"code": "NotFound"})
        elif parts.path == "/search":
            params: dict[str, Any] = {}
            for key, values in rec.query.items():
                value = values[0]
                if key in {"collections", "ids"}:
                    params[key] = value.split(",")
                elif key == "bbox":
                    params[key] = [float(v) for v in value.split(",")]
                elif key in {"intersects", "query", "filter"} and value.startswith("{"):
                    params[key] = json.loads(value)
                elif key == "limit":
                    params[key] = int(value)
                else:
                    params[key] = value
            self._search(params, "GET")
        else:
            self._send(404, {"code": "NotFound", "description": parts.path})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._record(raw.decode(errors="replace"))
            self._send(400, {"code": "BadRequest", "description": "body is not JSON"})
            return
        self._record(body)
        if self._refused() or self._fault():
            return
        if urlsplit(self.path).path == "/search":
            self._search(body, "POST")
        else:
            self._send(404, {"code": "NotFound"})

    # STAC -----------------------------------------------------------------------------
    def _landing(self) -> dict[str, Any]:
        links = [
            {"rel": "self", "href": self.base, "type": "application/json"},
            {"rel": "root", "href": self.base, "type": "application/json"},
            {"rel": "conformance", "href": self.base + "conformance"},
            {"rel": "data", "href": self.base + "collections"},
            {
                "rel": "search",
                "href": self.base + "search",
                "method": "GET",
                "type": "application/geo+json",
            },
            {
                "rel": "search",
                "href": self.base + "search",
                "method": "POST",
                "type": "application/geo+json",
            },
        ]
        return {
            "type": "Catalog",
            "stac_version": "1.1.0",
            "id": "geochip-test-api",
            "description": "geochip's small conforming STAC API (tests)",
            "conformsTo": self.state.conforms_to,
            "links": links,
        }

    def _matches(self, item: Mapping[str, Any], params: Mapping[str, Any]) -> bool:
        if params.get("collections") and item.get("collection") not in params["collections"]:
            return False
        if params.get("ids") and item.get("id") not in params["ids"]:
            return False
        geom = item.get("geometry")
        regions = []
        if params.get("bbox") is not None:
            west, south, east, north = (float(v) for v in params["bbox"][:4])
            if west > east:  # RFC 7946 / STAC API: a box over 180 degrees
                regions.append(
                    shapely.geometry.box(west, south, 180, north).union(
                        shapely.geometry.box(-180, south, east, north)
                    )
                )
            else:
                regions.append(shapely.geometry.box(west, south, east, north))
        if params.get("intersects") is not None:
            regions.append(shapely.geometry.shape(params["intersects"]))
        for region in regions:
            if geom is None or not shapely.geometry.shape(geom).intersects(region):
                return False
        if params.get("datetime"):
            text = params["datetime"]
            left, _, right = text.partition("/") if "/" in text else (text, "", text)
            start, end = _parse_time(left), _parse_time(right)
            t0, t1 = _item_times(item)
            if t0 is None and t1 is None:
                return False
            if end is not None and t0 is not None and t0 > end:
                return False
            if start is not None and t1 is not None and t1 < start:
                return False
        if not self.state.ignore_filters:
            if params.get("query") and not _query_ext(params["query"], item):
                return False
            if params.get("filter") and not _cql2(params["filter"], item):
                return False
        return True

    def _search(self, params: dict[str, Any], method: str) -> None:
        state = self.state
        with state.lock:
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            if state.delay:
                time.sleep(state.delay)
            has_query = "query" in params and "query" in " ".join(state.conforms_to)
            has_filter = "filter" in params and "filter" in " ".join(state.conforms_to)
            if ("query" in params or "filter" in params) and not (has_query or has_filter):
                matched: list[dict[str, Any]] = []  # like rustac: an unknown filter -> nothing
            elif state.empty_on_filter and ("query" in params or "filter" in params):
                matched = []
            else:
                try:
                    matched = [i for i in state.items if self._matches(i, params)]
                except (ValueError, KeyError, TypeError) as err:
                    self._send(400, {"code": "BadRequest", "description": str(err)})
                    return
            limit = min(int(params.get("limit", 10)), state.max_page)
            offset = int(params.get("token", "0") or 0)
            page = matched[offset : offset + limit]
            links: list[dict[str, Any]] = [{"rel": "root", "href": self.base}]
            if offset + limit < len(matched):
                nxt = {k: v for k, v in params.items() if k != "token"}
                nxt["token"] = str(offset + limit)
                if method == "POST":
                    links.append(
                        {
                            "rel": "next",
                            "href": self.base + "search",
                            "method": "POST",
                            "body": nxt,
                            "merge": False,
                        }
                    )
                else:
                    flat = {
                        k: (
                            ",".join(map(str, v))
                            if isinstance(v, list)
                            else json.dumps(v)
                            if isinstance(v, dict)
                            else v
                        )
                        for k, v in nxt.items()
                    }
                    links.append(
                        {
                            "rel": "next",
                            "href": self.base + "search?" + urlencode(flat),
                            "method": "GET",
                        }
                    )
            self._send(
                200,
                {
                    "type": "FeatureCollection",
                    "features": page,
                    "links": links,
                    "numberMatched": len(matched),
                    "numberReturned": len(page),
                },
            )
        finally:
            with state.lock:
                state.in_flight -= 1

    # files ----------------------------------------------------------------------------
    def _file(self, parts: Any) -> None:
        root = self.state.files_root
        if root is None:
            self._send(404, {"code": "NotFound"})
            return
        token = self.state.file_token
        if token is not None and parse_qs(parts.query).get("sig", [None])[0] != token:
            self._send(403, {"code": "AuthenticationFailed", "description": "bad or no sig"})
            return
        rel = parts.path[len("/files/") :]
        path = (root / rel).resolve()
        if not path.is_relative_to(root.resolve()) or not path.is_file():
            self._send(404, {"code": "NotFound"})
            return
        data = path.read_bytes()
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            first, _, last = rng[len("bytes=") :].partition("-")
            start = int(first) if first else max(0, len(data) - int(last))
            end = min(int(last), len(data) - 1) if (first and last) else len(data) - 1
            if start >= len(data):
                self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                return
            self._send(
                206,
                data[start : end + 1],
                {"Content-Range": f"bytes {start}-{end}/{len(data)}", "Accept-Ranges": "bytes"},
            )
            return
        self._send(200, data, {"Accept-Ranges": "bytes"})
