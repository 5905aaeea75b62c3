"""A loopback HTTP file server with Range requests and faults injected on demand.

Serves the files under a folder on ``127.0.0.1`` (an ephemeral port) the way object stores
serve COGs: ``HEAD``, ``GET`` and single ``Range: bytes=a-b`` requests (``206 Partial
Content``), HTTP/1.1 keep-alive. Faults are rules added at run time; each request is
checked against them in order and the first that fires is applied:

=============  ================================================================
``status``     answer with an HTTP error (``status=503``, 500, 502, 504, 429, 404...)
``reset``      close the connection abruptly (TCP reset) before answering
``truncate``   send the headers and part of the body, then close the connection
``stall``      send the headers and part of the body, then wait ``seconds``
``delay``      wait ``seconds``, then answer normally
=============  ================================================================

URLs carry a per-server random prefix (``http://127.0.0.1:PORT/<prefix>/a.tif``) so that
GDAL's per-URL cache never carries over between servers that reuse a port. A rule fires
for the next ``count`` matching requests, or for a share ``rate`` of them
(seeded), on paths matching ``path`` (a glob), optionally only on ranged requests (data, not
the header probe), after letting the first ``skip`` matching requests through (to hit one
request of a known sequence, e.g. the one that loads a COG's tile index). Every request is
recorded (method, path, range, status, fault), so tests can count retries.

Example:
    >>> import tempfile, pathlib, urllib.request
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (root / "a.bin").write_bytes(bytes(range(100)))
    >>> with RangeServer(root) as server:
    ...     req = urllib.request.Request(server.url("a.bin"), headers={"Range": "bytes=10-14"})
    ...     body = urllib.request.urlopen(req).read()
    ...     _ = server.add_fault("status", status=503, count=1)
    ...     try:
    ...         urllib.request.urlopen(server.url("a.bin"))
    ...     except urllib.error.HTTPError as err:
    ...         code = err.code
    >>> list(body), code, [r.status for r in server.requests]
    ([10, 11, 12, 13, 14], 503, [206, 503])
"""

from __future__ import annotations

import fnmatch
import random
import re
import socket
import struct
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import unquote, urlsplit

__all__ = [
    "FaultKind",
    "FaultRule",
    "LoopbackServer",
    "RangeServer",
    "RequestRecord",
    "reset_connection",
]

FaultKind = Literal["status", "reset", "truncate", "stall", "delay"]

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass
class FaultRule:
    """One fault to inject (see the module docstring)."""

    kind: FaultKind
    status: int = 503
    rate: float | None = None
    count: int | None = None
    path: str = "*"
    ranged_only: bool = False
    seconds: float = 5.0
    fired: int = 0
    skip: int = 0
    seen: int = 0

    def matches(self, path: str, ranged: bool) -> bool:
        """Whether this rule applies to a request for ``path`` (counts it against
        ``skip``)."""
        if self.ranged_only and not ranged:
            return False
        if not fnmatch.fnmatch(path, self.path):
            return False
        self.seen += 1
        return self.seen > self.skip


@dataclass(frozen=True)
class RequestRecord:
    """One request the server answered (or failed on purpose)."""

    method: str
    path: str
    range: str | None
    status: int
    fault: str | None


@dataclass
class _State:
    root: Path
    rules: list[FaultRule] = field(default_factory=list)
    requests: list[RequestRecord] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    stop: threading.Event = field(default_factory=threading.Event)
    # every server has its own URL prefix: GDAL caches per URL for the life of the process,
    # and ports are reused, so a later server must not inherit an earlier one's cache
    prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def pick(self, path: str, ranged: bool) -> FaultRule | None:
        with self.lock:
            for rule in self.rules:
                if not rule.matches(path, ranged):
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

    def record(self, record: RequestRecord) -> None:
        with self.lock:
            self.requests.append(record)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read :attr:`RangeServer.requests` instead."""

    def do_HEAD(self) -> None:
        """Answer a HEAD request."""
        self._serve(head=True)

    def do_GET(self) -> None:
        """Answer a GET request (whole file or one byte range)."""
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        state = self.server.state
        path = unquote(urlsplit(self.path).path).lstrip("/")
        prefix = f"{state.prefix}/"
        path = path[len(prefix) :] if path.startswith(prefix) else f"\0{path}"
        range_header = self.headers.get("Range")
        fault = state.pick(path, ranged=range_header is not None)
        method = "HEAD" if head else "GET"
        if fault is not None and fault.kind == "reset":
            state.record(RequestRecord(method, path, range_header, 0, "reset"))
            self._reset()
            return
        if fault is not None and fault.kind == "status":
            state.record(RequestRecord(method, path, range_header, fault.status, "status"))
            self._error(fault.status, head)
            return
        if fault is not None and fault.kind == "delay":
            state.stop.wait(fault.seconds)
        file = (state.root / path.replace("\0", "")).resolve()
        if "\0" in path or state.root not in file.parents or not file.is_file():
            state.record(RequestRecord(method, path, range_header, 404, None))
            self._error(404, head)
            return
        size = file.stat().st_size
        start, end = 0, size - 1
        status = 200
        if range_header is not None:
            match = _RANGE.match(range_header.strip())
            if match is None or (match.group(1) == "" and match.group(2) == ""):
                state.record(RequestRecord(method, path, range_header, 416, None))
                self._error(416, head, extra={"Content-Range": f"bytes */{size}"})
                return
            if match.group(1) == "":
                start, end = max(0, size - int(match.group(2))), size - 1
            else:
                start = int(match.group(1))
                end = min(int(match.group(2)) if match.group(2) else size - 1, size - 1)
            if start >= size or start > end:
                state.record(RequestRecord(method, path, range_header, 416, None))
                self._error(416, head, extra={"Content-Range": f"bytes */{size}"})
                return
            status = 206
        with open(file, "rb") as f:
            f.seek(start)
            body = f.read(end - start + 1)
        self.send_response(status)
        self.send_header("Content-Type", "image/tiff")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        kind = fault.kind if fault is not None and fault.kind != "delay" else None
        state.record(
            RequestRecord(method, path, range_header, status, fault.kind if fault else None)
        )
        if head:
            return
        if kind == "truncate":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self._reset()
            return
        if kind == "stall" and fault is not None:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            state.stop.wait(fault.seconds)
            self._reset()
            return
        self.wfile.write(body)

    def _error(self, status: int, head: bool, extra: dict[str, str] | None = None) -> None:
        body = f"error {status}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        if status == 429:
            self.send_header("Retry-After", "0")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _reset(self) -> None:
        reset_connection(self)


def reset_connection(handler: BaseHTTPRequestHandler) -> None:
    """Close a handler's connection with a TCP reset (SO_LINGER 0), not a clean FIN."""
    handler.close_connection = True
    try:
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        handler.connection.close()
    except OSError:  # pragma: no cover - the peer went first
        pass


class LoopbackServer:
    """An ``http.server`` served from a daemon thread, stopped on exit of a ``with`` block:
    what :class:`RangeServer` and :class:`~geochip.testing.proxy.FaultProxy` share."""

    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def start(self) -> Self:
        raise NotImplementedError

    def _serve(self, server: ThreadingHTTPServer) -> None:
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    state: _State


class RangeServer(LoopbackServer):
    """Serve ``root`` on loopback with Range support and injectable faults.

    Use as a context manager (or :meth:`start` / :meth:`stop`). :meth:`url` gives the URL of
    a file; :meth:`add_fault` adds a :class:`FaultRule`; :attr:`requests` lists what was
    served.
    """

    def __init__(self, root: str | Path, *, seed: int = 0) -> None:
        self.root = Path(root).resolve()
        self._state = _State(self.root, rng=random.Random(seed))

    def start(self) -> RangeServer:
        """Start serving on 127.0.0.1 at an ephemeral port."""
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", 0), _Handler)
        server.state = self._state
        self._serve(server)
        return self

    def stop(self) -> None:
        """Stop serving; stalled handlers are released at once."""
        self._state.stop.set()
        super().stop()

    @property
    def port(self) -> int:
        """The port the server listens on."""
        if self._server is None:
            raise RuntimeError("the server is not running; call start() first")
        return int(self._server.server_address[1])

    def url(self, path: str | Path = "") -> str:
        """The http:// URL of ``path`` (relative to the root, or a file under it)."""
        rel = Path(path)
        if rel.is_absolute():
            rel = rel.resolve().relative_to(self.root)
        return f"http://127.0.0.1:{self.port}/{self._state.prefix}/{rel.as_posix()}".rstrip("/")

    def add_fault(
        self,
        kind: FaultKind,
        *,
        status: int = 503,
        rate: float | None = None,
        count: int | None = None,
        path: str = "*",
        ranged_only: bool = False,
        seconds: float = 5.0,
        skip: int = 0,
    ) -> FaultRule:
        """Inject a fault (see the module docstring); give ``rate`` or ``count``."""
        if (rate is None) == (count is None):
            raise ValueError("give exactly one of rate= or count=")
        if kind not in ("status", "reset", "truncate", "stall", "delay"):
            raise ValueError(f"unknown fault kind {kind!r}")
        rule = FaultRule(kind, status, rate, count, path, ranged_only, seconds, skip=skip)
        with self._state.lock:
            self._state.rules.append(rule)
        return rule

    def clear_faults(self) -> None:
        """Remove every fault rule."""
        with self._state.lock:
            self._state.rules.clear()

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the requests served so far, in arrival order."""
        with self._state.lock:
            return list(self._state.requests)

    def clear_requests(self) -> None:
        """Forget the recorded requests."""
        with self._state.lock:
            self._state.requests.clear()
