"""A loopback HTTP proxy in front of a real server, adding latency and faults on demand
(:class:`FaultProxy`): what a STAC API or an object store across the world does to a client.

Every request (``GET`` with ``Range``, ``HEAD``, ``PUT``, ``POST``, ``DELETE``) is forwarded
to ``upstream`` (keep-alive, one connection per proxy thread) after ``latency`` seconds,
transparently: the path, query and headers (``Host`` included) reach the upstream as the
client sent them, so an S3 SigV4 signature made for the proxy's ``host:port`` stays valid.
Request bodies sent with ``Transfer-Encoding: chunked`` are de-chunked and forwarded with
their ``Content-Length`` (an ``aws-chunked`` payload inside is forwarded byte for byte).
Faults are rules checked in order; the first that fires for a request is applied
(``count`` times, or for a seeded share ``rate``, on paths matching the glob ``path`` (the
query left out) and the ``method`` if given):

============  =================================================================
``status``    answer with an HTTP error (``status=503``...) without forwarding
``reset``     close the connection abruptly (TCP reset) without answering or forwarding
``lost``      forward, then reset instead of answering (an upload took effect, the
              client cannot know)
``delay``     wait ``seconds``, then forward (a slow answer)
``stall``     forward, send the headers and half of the body, wait ``seconds``, close
``truncate``  download: forward, send the headers and half of the body, close; upload
              (a request with a body): read half of it, reset, forward nothing
``cut``       forward, then send the first half of the body as if it were all of it
``html``      answer 200 with an HTML page (a captive portal, a login page)
``rewrite``   forward, then replace the JSON body by ``rewrite(body)``
============  =================================================================

Every request is recorded (:class:`ProxyRecord`: method, path, JSON body, status, fault,
bytes sent back, request body bytes received) so tests and benchmarks count retries,
pages, requests and bytes.

Example:
    >>> import json, urllib.request
    >>> from geochip.testing.stac_api import StacApiServer
    >>> with StacApiServer([]) as api, FaultProxy(api.url) as proxy:
    ...     _ = proxy.add_fault("status", status=502, count=1)
    ...     try:
    ...         urllib.request.urlopen(proxy.url)
    ...     except urllib.error.HTTPError as err:
    ...         first = err.code
    ...     second = json.load(urllib.request.urlopen(proxy.url))["type"]
    >>> first, second, [r.status for r in proxy.requests]
    (502, 'Catalog', [502, 200])
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import http.client
import json
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import urlsplit

from .http import LoopbackServer, reset_connection

__all__ = [
    "FaultProxy",
    "ProxyFault",
    "ProxyRecord",
]

ProxyFaultKind = Literal[
    "status", "reset", "lost", "delay", "stall", "truncate", "cut", "html", "rewrite"
]

_KINDS = ("status", "reset", "lost", "delay", "stall", "truncate", "cut", "html", "rewrite")

#: Headers of one hop, not forwarded (the proxy frames bodies itself).
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "expect"}
#: Request bodies at most this large are parsed as JSON for :attr:`ProxyRecord.body`.
_JSON_MAX = 1 << 20


@dataclass
class ProxyFault:
    """One fault rule (see the module docstring)."""

    kind: ProxyFaultKind
    status: int = 503
    rate: float | None = None
    count: int | None = None
    path: str = "*"
    method: str | None = None
    seconds: float = 1.0
    rewrite: Callable[[Any], Any] | None = None
    fired: int = 0


@dataclass(frozen=True)
class ProxyRecord:
    """One request the proxy answered."""

    method: str
    path: str
    body: Any
    status: int
    fault: str | None
    sent: int
    received: int = 0


@dataclass
class _State:
    upstream: str
    latency: float
    rules: list[ProxyFault] = field(default_factory=list)
    requests: list[ProxyRecord] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    local: threading.local = field(default_factory=threading.local)

    def pick(self, method: str, path: str) -> ProxyFault | None:
        with self.lock:
            for rule in self.rules:
                if not fnmatch.fnmatch(path, rule.path):
                    continue
                if rule.method is not None and rule.method.upper() != method:
                    continue
                if rule.count is not None:
                    if rule.fired >= rule.count:
                        continue
                    rule.fired += 1
                    return rule
                if rule.rate is not None and self.rng.random() < rule.rate:
                    rule.fired += 1
                    return rule
        return None

    def connection(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            parts = urlsplit(self.upstream)
            conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
            self.local.conn = conn
        return conn


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read :attr:`FaultProxy.requests` instead."""

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _read_body(self, limit: int | None = None) -> bytes:
        """The request body (``Content-Length`` or chunked), at most ``limit`` bytes."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers end with an empty line
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
                if limit is not None and sum(map(len, parts)) >= limit:
                    return b"".join(parts)[:limit]
        length = int(self.headers.get("Content-Length") or 0)
        if limit is not None:
            length = min(length, limit)
        return self.rfile.read(length) if length else b""

    def _forward(self, method: str, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        state = self.server.state
        headers = {
            k: v for k, v in self.headers.items() if k.lower() not in _HOP | {"accept-encoding"}
        }
        if body or method in {"PUT", "POST"}:
            headers["Content-Length"] = str(len(body))
        for attempt in (1, 2):  # a kept-alive upstream connection may have been closed
            conn = state.connection()
            try:
                # skip_host: the client's Host header (signed by S3 clients) goes as it came
                conn.putrequest(method, self.path, skip_host=True, skip_accept_encoding=True)
                for key, value in headers.items():
                    conn.putheader(key, value)
                conn.endheaders(body or None)
                response = conn.getresponse()
                data = response.read()
                return response.status, response.getheaders(), data
            except (http.client.HTTPException, OSError):
                conn.close()
                state.local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _handle(self, method: str) -> None:
        state = self.server.state
        path = self.path.split("?")[0]
        rule = state.pick(method, path)
        kind = rule.kind if rule is not None else None
        length = int(self.headers.get("Content-Length") or 0)
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        if rule is not None and rule.kind == "truncate" and (length or chunked):  # upload cut
            got = len(self._read_body(limit=max(1, length // 2)))
            state_record(state, ProxyRecord(method, self.path, None, 0, kind, 0, got))
            self._reset()
            return
        body = self._read_body()
        parsed: Any = None
        if body and len(body) <= _JSON_MAX and body[:1] in (b"{", b"["):
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
        record = functools.partial(ProxyRecord, method, self.path, parsed, fault=kind)
        if state.latency:
            time.sleep(state.latency)
        if rule is not None and rule.kind == "reset":
            state_record(state, record(0, sent=0, received=len(body)))
            self._reset()
            return
        if rule is not None and rule.kind in {"status", "html"}:
            if rule.kind == "status":
                status, ctype = rule.status, "application/json"
                data = json.dumps({"code": "Injected", "description": f"fault {status}"}).encode()
            else:
                status, ctype = 200, "text/html; charset=utf-8"
                data = b"<!doctype html><html><body><h1>Sign in</h1></body></html>"
            # recorded before answering: a client that got its answer finds its request
            state_record(state, record(status, sent=len(data), received=len(body)))
            self._send(method, status, [("Content-Type", ctype)], data)
            return
        if rule is not None and rule.kind == "delay":
            time.sleep(rule.seconds)
        try:
            status, headers, data = self._forward(method, body)
        except (http.client.HTTPException, OSError) as err:  # upstream gone: a 502
            status, headers = 502, [("Content-Type", "text/plain")]
            data = f"upstream unreachable: {err}".encode()
        if rule is not None and rule.kind == "lost":
            state_record(state, record(status, sent=0, received=len(body)))
            self._reset()
            return
        if rule is not None and rule.kind == "rewrite" and rule.rewrite is not None:
            try:
                data = json.dumps(rule.rewrite(json.loads(data))).encode()
            except Exception as err:  # a broken rewrite shows in the answer, not as a hang-up
                status, headers = 500, [("Content-Type", "text/plain")]
                data = f"rewrite failed: {type(err).__name__}: {err} on {data[:200]!r}".encode()
        if rule is not None and rule.kind == "cut":
            data = data[: len(data) // 2]
        if rule is not None and rule.kind in {"truncate", "stall"}:
            state_record(state, record(status, sent=len(data) // 2, received=len(body)))
            self._send(method, status, headers, data, upto=len(data) // 2)
            if rule.kind == "stall":
                time.sleep(rule.seconds)
            self._end()  # a clean end (FIN): the client reads the half it got, then EOF
            return
        state_record(state, record(status, sent=len(data), received=len(body)))
        self._send(method, status, headers, data)

    def _send(
        self,
        method: str,
        status: int,
        headers: list[tuple[str, str]],
        data: bytes,
        upto: int | None = None,
    ) -> None:
        """Answer ``status`` with ``headers`` and ``data`` (its first ``upto`` bytes only,
        under the full ``Content-Length``); a HEAD answer keeps the upstream's length."""
        self.send_response(status)
        length = str(len(data))
        for key, value in headers:
            if key.lower() == "content-length" and method == "HEAD":
                length = value
            elif key.lower() not in _HOP:
                self.send_header(key, value)
        self.send_header("Content-Length", length)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data if upto is None else data[:upto])
        self.wfile.flush()

    def _reset(self) -> None:
        reset_connection(self)

    def _end(self) -> None:
        """End the connection cleanly after what was sent (a body cut short)."""
        self.close_connection = True
        with contextlib.suppress(OSError):  # the peer went first
            self.connection.shutdown(socket.SHUT_WR)


def state_record(state: _State, record: ProxyRecord) -> None:
    """Append ``record`` to the proxy's log."""
    with state.lock:
        state.requests.append(record)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128
    state: _State

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: a client that gave up (a timeout test) is not an error of the proxy."""


class FaultProxy(LoopbackServer):
    """A loopback proxy to ``upstream`` (a context manager); ``url`` ends with a slash."""

    def __init__(self, upstream: str, *, latency: float = 0.0, seed: int = 0) -> None:
        self._state = _State(upstream.rstrip("/"), latency, rng=random.Random(seed))
        self.url = ""

    @property
    def latency(self) -> float:
        """Seconds added before each request is forwarded."""
        return self._state.latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        self._state.latency = seconds

    def start(self) -> FaultProxy:
        """Listen on 127.0.0.1 at an ephemeral port."""
        server = _Server(("127.0.0.1", 0), _Handler)
        server.state = self._state
        self._serve(server)
        self.url = f"http://127.0.0.1:{server.server_address[1]}/"
        return self

    def add_fault(
        self,
        kind: ProxyFaultKind,
        *,
        status: int = 503,
        rate: float | None = None,
        count: int | None = None,
        path: str = "*",
        method: str | None = None,
        seconds: float = 1.0,
        rewrite: Callable[[Any], Any] | None = None,
    ) -> ProxyFault:
        """Add a fault rule (see the module docstring); give ``rate`` or ``count``."""
        if (rate is None) == (count is None):
            raise ValueError("give exactly one of rate= or count=")
        if kind not in _KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {', '.join(_KINDS)}")
        rule = ProxyFault(kind, status, rate, count, path, method, seconds, rewrite)
        with self._state.lock:
            self._state.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Remove every fault rule and forget the recorded requests."""
        with self._state.lock:
            self._state.rules.clear()
            self._state.requests.clear()

    @property
    def requests(self) -> list[ProxyRecord]:
        """A copy of the requests answered so far, in arrival order."""
        with self._state.lock:
            return list(self._state.requests)

    @property
    def searches(self) -> list[ProxyRecord]:
        """The requests to ``/search``."""
        return [r for r in self.requests if r.path.split("?")[0].rstrip("/").endswith("/search")]
