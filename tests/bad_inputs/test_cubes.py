"""Bad input to cube loads: files that cannot be read whole, and hrefs whose host resolves
somewhere the href policy refuses (issue 11, parts 6 and 7).

No DNS server runs here: the one rebinding case replaces ``socket.getaddrinfo`` with an
answer that changes between lookups (first public, then loopback), and says so."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pystac
import pytest
from odc.geo.geobox import GeoBox

from geochip.core.env import GdalEnv
from geochip.core.hrefs import HrefPolicy, resolve_host
from geochip.errors import HrefPolicyError, RasterReadError
from geochip.read.load import load_cube
from geochip.testing import make_cog, make_item
from geochip.testing.http import RangeServer

FAST = (
    GdalEnv.default()
    .with_options(GDAL_HTTP_RETRY_DELAY=0.01)
    .with_retries(2, backoff=0.01, max_backoff=0.02)
)
REMOTE = HrefPolicy.for_remote("https://stac.example.com/v1")


@pytest.fixture(scope="module")
def cog(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GeoBox]:
    root = tmp_path_factory.mktemp("badcubes")
    grid = GeoBox.from_bbox((500_000, 0, 502_560, 2_560), "EPSG:32633", resolution=10)
    return make_cog(root / "a.tif", grid, pattern="random"), grid


def _with_href(path: Path, href: str) -> pystac.Item:
    item = make_item("a", {"red": path})
    item.assets["red"].href = href
    return item


def test_a_file_cut_short_on_disk(cog: tuple, tmp_path: Path) -> None:
    path, grid = cog
    cut = tmp_path / "cut.tif"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(RasterReadError, match=r"cut\.tif: reading band 1 .*TIFFReadEncodedTile"):
        load_cube([_with_href(path, str(cut))], ["red"], grid, chunks=None)


def test_a_remote_file_whose_bytes_never_arrive_whole(cog: tuple) -> None:
    path, grid = cog
    with RangeServer(path.parent) as server:
        server.add_fault("truncate", rate=1.0, ranged_only=True)
        item = _with_href(path, server.url(path))
        with pytest.raises(RasterReadError, match=r"a\.tif: reading band 1 onto a 256x256 grid"):
            load_cube([item], ["red"], grid, chunks=None, env=FAST)


def test_a_remote_file_that_is_not_there(cog: tuple) -> None:
    path, grid = cog
    with RangeServer(path.parent) as server:
        item = _with_href(path, server.url("gone.tif"))
        with pytest.raises(RasterReadError, match=r"gone\.tif: reading band 1"):
            load_cube([item], ["red"], grid, chunks=None, env=FAST)


def test_an_asset_that_is_not_a_raster(cog: tuple) -> None:
    path, grid = cog
    (path.parent / "meta.json").write_text('{"not": "a raster"}')
    with RangeServer(path.parent) as server:
        item = _with_href(path, server.url("meta.json"))
        with pytest.raises(RasterReadError, match=r"meta\.json: .*not recognized"):
            load_cube([item], ["red"], grid, chunks=None, env=FAST)


def test_a_host_that_does_not_resolve(cog: tuple) -> None:
    path, grid = cog
    item = _with_href(path, "http://tiles.nowhere.invalid/a.tif")
    with pytest.raises(RasterReadError, match=r"nowhere\.invalid/a\.tif: its host does not"):
        load_cube([item], ["red"], grid, chunks=None, env=FAST)


def test_a_harmless_name_that_resolves_to_a_loopback_address(cog: tuple) -> None:
    path, grid = cog
    name = socket.gethostname()  # resolves to a loopback/private address here (/etc/hosts)
    if not all(a.startswith(("127.", "10.", "172.", "192.168.")) for a in resolve_host(name)):
        pytest.skip(f"this machine's name {name!r} resolves to a public address")
    item = _with_href(path, f"http://{name}:8080/a.tif")
    with pytest.raises(HrefPolicyError, match=rf"on host {name}, which resolves to the loopback"):
        load_cube([item], ["red"], grid, chunks=None, href_policy=REMOTE)


def _fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[list[str]]]) -> None:
    """The one fake: ``socket.getaddrinfo`` answers the names in ``answers`` in turn (a DNS
    server with a TTL of 0); other names resolve for real."""
    real = socket.getaddrinfo

    def fake(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in answers:
            return real(host, port, *args, **kwargs)
        turn = answers[host]
        current = turn.pop(0) if len(turn) > 1 else turn[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port or 0)) for a in current]

    monkeypatch.setattr(socket, "getaddrinfo", fake)


def test_a_rebinding_host_whose_second_answer_is_loopback(
    cog: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, grid = cog
    _fake_dns(monkeypatch, {"tiles.rebind.test": [["93.184.216.34"], ["127.0.0.1"]]})
    item = _with_href(path, "http://tiles.rebind.test/a.tif")
    assert REMOTE.resolve_href("http://tiles.rebind.test/a.tif") == ["93.184.216.34"]
    # the read resolves again just before GDAL connects, and sees the rebound answer
    with pytest.raises(HrefPolicyError, match=r"tiles\.rebind\.test, which resolves to .*127"):
        load_cube([item], ["red"], grid, chunks=None, href_policy=REMOTE)


def test_a_host_that_resolves_to_the_cloud_metadata_address(
    cog: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, grid = cog
    _fake_dns(monkeypatch, {"metadata.rebind.test": [["169.254.169.254"]]})
    item = _with_href(path, "http://metadata.rebind.test/latest/a.tif")
    with pytest.raises(HrefPolicyError, match="link-local or cloud-metadata address"):
        load_cube([item], ["red"], grid, chunks=None)  # even under the trusted default
