"""The href policy checks the addresses a host resolves to, not only its name, and geochip's
own HTTP connects only to an address it checked (DNS rebinding; issue 11, part 7).

Real names first: this machine's host name resolves (through /etc/hosts, real resolver
behaviour) to a loopback or private address while it looks like any other host name. No
DNS server runs here, so an answer that changes between lookups (a rebinding DNS: first a
public address, then 127.0.0.1) is simulated by replacing ``socket.getaddrinfo``; those
tests say so."""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from odc.geo.geobox import GeoBox

from geochip.core.hrefs import HrefPolicy, resolve_host
from geochip.errors import CatalogError, HrefPolicyError
from geochip.read.load import load_cube
from geochip.sources.http import HttpSession
from geochip.testing import make_cog, make_item
from geochip.testing.http import RangeServer

PUBLIC = "93.184.216.34"  # a public address (no loopback server listens there)


def _private(address: str) -> bool:
    addr = ipaddress.ip_address(address)
    return addr.is_private or addr.is_loopback


@pytest.fixture(scope="module")
def local_name() -> str:
    """This machine's host name, which resolves to a loopback/private address here."""
    name = socket.gethostname()
    try:
        addresses = resolve_host(name, 80)
    except OSError:
        pytest.skip(f"this machine's name {name!r} does not resolve")
    if not all(_private(a) for a in addresses):
        pytest.skip(f"this machine's name {name!r} resolves to a public address")
    return name


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[str]

    def do_GET(self) -> None:
        type(self).seen.append(self.headers.get("Host", ""))
        body = json.dumps({"type": "Catalog", "host": self.headers.get("Host")}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def echo() -> Iterator[tuple[int, list[str]]]:
    """A loopback server that records the Host header of every request it gets."""
    seen: list[str] = []
    handler = type("Echo", (_Echo,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1]), seen
    server.shutdown()
    server.server_close()


def _session(policy: HrefPolicy) -> HttpSession:
    return HttpSession(
        headers={}, timeout=3, retries=0, backoff=0.01, max_requests=2, policy=policy
    )


def test_a_harmless_name_that_resolves_to_loopback_is_refused(local_name: str, echo: Any) -> None:
    port, seen = echo
    policy = HrefPolicy.for_remote("https://stac.example.com/v1")
    url = f"http://{local_name}:{port}/catalog.json"
    assert policy.check(url) == url  # the name alone looks fine
    with pytest.raises(HrefPolicyError, match=rf"host {local_name}, which resolves to .*private"):
        policy.resolve_href(url)
    with pytest.raises(HrefPolicyError, match=rf"GET {url}: .*resolves to"):
        _session(policy).get_json(url)
    assert seen == []  # refused before connecting


def test_a_pinned_connection_keeps_the_name_in_the_host_header(local_name: str, echo: Any) -> None:
    port, seen = echo
    answer = _session(HrefPolicy.trusted()).get_json(f"http://{local_name}:{port}/x")
    assert answer["host"] == f"{local_name}:{port}"
    assert seen == [f"{local_name}:{port}"]


def test_the_catalog_s_own_host_may_resolve_to_a_private_address(
    local_name: str, echo: Any
) -> None:
    port, seen = echo
    url = f"http://{local_name}:{port}/catalog.json"
    policy = HrefPolicy.for_remote(url)  # the user named this host: it is theirs to reach
    assert _session(policy).get_json(url)["type"] == "Catalog"
    assert seen == [f"{local_name}:{port}"]
    assert not policy.allow_private and policy.own_hosts == {local_name.lower()}


@pytest.fixture
def rebinding(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[list[str]]]:
    """The one fake (no DNS server runs here): ``socket.getaddrinfo`` answers names in
    ``answers`` from their list of answers in turn (the last one repeats), like a rebinding
    DNS server with a TTL of 0; every other name and literal address resolves for real."""
    answers: dict[str, list[list[str]]] = {}
    real = socket.getaddrinfo

    def fake(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in answers:
            return real(host, port, *args, **kwargs)
        turn = answers[host]
        current = turn.pop(0) if len(turn) > 1 else turn[0]
        return [
            (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (a, port or 0))
            for a in current
        ]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return answers


def test_a_rebinding_name_is_connected_only_at_the_address_that_was_checked(
    rebinding: dict, echo: Any
) -> None:
    port, seen = echo
    rebinding["stac.rebind.test"] = [[PUBLIC], ["127.0.0.1"]]
    policy = HrefPolicy.for_remote("https://stac.rebind.test/")
    url = f"http://stac.rebind.test:{port}/catalog.json"
    # the check sees the public answer; a second lookup to connect would get 127.0.0.1.
    # Pinned, the connection goes to the checked public address (which fails or answers
    # with an error here), never to the loopback server.
    with pytest.raises(CatalogError):
        _session(policy).get_json(url)
    assert seen == []
    assert rebinding["stac.rebind.test"] == [["127.0.0.1"]]  # looked up once


def test_a_name_with_one_blocked_address_among_public_ones_is_refused(rebinding: dict) -> None:
    rebinding["mixed.rebind.test"] = [[PUBLIC, "127.0.0.1"]]
    policy = HrefPolicy.for_remote("https://stac.example.com/")
    with pytest.raises(HrefPolicyError, match="resolves to the loopback or private address"):
        policy.resolve("mixed.rebind.test", 443)


def test_an_ipv4_mapped_metadata_address_is_refused_like_the_address(rebinding: dict) -> None:
    rebinding["meta.rebind.test"] = [["::ffff:169.254.169.254"]]
    with pytest.raises(HrefPolicyError, match="link-local or cloud-metadata"):
        HrefPolicy.trusted().resolve("meta.rebind.test", 80)


@pytest.fixture(scope="module")
def cog(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GeoBox]:
    root = tmp_path_factory.mktemp("dns")
    grid = GeoBox.from_bbox((500_000, 0, 502_560, 2_560), "EPSG:32633", resolution=10)
    return make_cog(root / "a.tif", grid, pattern="random"), grid


def test_a_cube_read_checks_the_addresses_of_the_host_before_gdal_connects(
    local_name: str, cog: tuple
) -> None:
    path, grid = cog
    with RangeServer(path.parent) as server:
        href = server.url(path).replace("127.0.0.1", local_name)
        item = make_item("a", {"red": path})
        item.assets["red"].href = href
        # trusted (the default): a private address is fine
        local = load_cube([make_item("a", {"red": path})], ["red"], grid, chunks=None)
        read = load_cube([item], ["red"], grid, chunks=None)
        assert read.red.values.tobytes() == local.red.values.tobytes()
        server.clear_requests()
        remote = HrefPolicy.for_remote("https://stac.example.com/")
        with pytest.raises(HrefPolicyError, match=rf"a\.tif' is on host {local_name}"):
            load_cube([item], ["red"], grid, chunks=None, href_policy=remote).red.values  # noqa: B018
        assert server.requests == []


def test_a_cube_read_from_a_name_resolving_to_a_metadata_address_is_refused(
    rebinding: dict, cog: tuple
) -> None:
    path, grid = cog
    rebinding["tiles.rebind.test"] = [["169.254.169.254"]]
    item = make_item("a", {"red": path})
    item.assets["red"].href = "http://tiles.rebind.test/a.tif"
    with pytest.raises(HrefPolicyError, match="169.254.169.254"):
        load_cube([item], ["red"], grid, chunks=None)


def test_a_build_from_a_network_catalog_refuses_assets_on_a_name_that_resolves_inward(
    local_name: str, rebinding: dict, tmp_path: Path
) -> None:
    from geochip.builder.config import parse_config
    from geochip.builder.run import build
    from geochip.testing import make_catalog
    from geochip.testing.cubes import make_s2_scene

    item = make_s2_scene(tmp_path / "data", "2024-05-01", size=64, tile=64, bands=("red",))
    with RangeServer(tmp_path) as server:
        # the catalog is on this machine's name (its own host: it may be private); its
        # assets name another host, which resolves to loopback only when read
        rebinding["tiles.rebind.test"] = [["127.0.0.1"]]
        for asset in item.assets.values():
            asset.href = server.url(Path(asset.href)).replace("127.0.0.1", "tiles.rebind.test")
        make_catalog(tmp_path / "cat", [item], collection="s2")
        url = server.url(tmp_path / "cat" / "catalog.json").replace("127.0.0.1", local_name)
        config = {
            "sources": {"kind": "catalog", "path": url},
            "bands": ["red"],
            "chips": {"size": 32},
            "split": {"method": "none"},
            "output": {"path": str(tmp_path / "ds")},
            "engine": {"threads": 1, "retry_delay": 0.01},
        }
        result = build(parse_config(config), progress=False)
        tiles = [r for r in server.requests if "data" in r.path and r.method == "GET"]
    assert len(result.failed) == 4
    assert all("HrefPolicyError" in f["error"] for f in result.failed), result.failed
    assert all("tiles.rebind.test, which resolves to" in f["error"] for f in result.failed)
    assert tiles == []  # no pixel was requested from the inward address
