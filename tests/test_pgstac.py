"""geochip against a real pgstac STAC API (PostgreSQL + PostGIS + stac-fastapi-pgstac), the
stack the big public catalogs run: CQL2 JSON filters, intersects, sortby, paging through
``next`` links, limits, and its error answers - with a fault proxy in front for 5xx and
slow answers. The oracle is the generated item list filtered with shapely and plain
Python."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import shapely.geometry

from geochip.errors import CatalogError, CatalogUnreachableError, SearchLimitError
from geochip.sources.api import ApiCatalog
from geochip.sources.open import open_catalog
from geochip.testing.eo_items import eo_test_items
from geochip.testing.pgstac import PgstacServer
from geochip.testing.proxy import FaultProxy

ITEMS = eo_test_items()


def _when(item: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(item["properties"]["datetime"].replace("Z", "+00:00"))


def _ids(found: Any) -> set[str]:
    return {i.id for i in found}


def _expected(
    geometry: Any = None,
    start: str | None = None,
    end: str | None = None,
    max_cloud: float | None = None,
    collection: str | None = None,
) -> set[str]:
    """The oracle: the generated items filtered with shapely and plain Python."""
    out = set()
    shape = shapely.geometry.shape(geometry) if geometry is not None else None
    for item in ITEMS:
        if collection and item["collection"] != collection:
            continue
        if shape is not None and not shape.intersects(shapely.geometry.shape(item["geometry"])):
            continue
        when = _when(item)
        if start and when < dt.datetime.fromisoformat(start):
            continue
        if end and when > dt.datetime.fromisoformat(end):
            continue
        cloud = item["properties"].get("eo:cloud_cover")
        if max_cloud is not None and cloud is not None and cloud > max_cloud:
            continue
        out.add(item["id"])
    return out


@pytest.fixture
def proxy(pgstac: PgstacServer) -> Iterator[FaultProxy]:
    with FaultProxy(pgstac.url) as p:
        yield p


BELGIUM = {
    "type": "Polygon",
    "coordinates": [[[4.2, 50.2], [5.0, 50.3], [4.6, 50.9], [4.2, 50.2]]],
}


def test_capabilities_read_from_pgstac(pgstac: PgstacServer) -> None:
    cat = open_catalog(pgstac.url)
    assert isinstance(cat, ApiCatalog)
    assert cat.capabilities.cloud_filter == "filter"
    assert cat.capabilities.sort
    assert cat.method == "POST"


def test_cql2_cloud_and_datetime_filter_server_side(proxy: FaultProxy) -> None:
    cat = open_catalog(proxy.url)
    found = cat.search(
        intersects=BELGIUM,
        datetime="2024-01-20T00:00:00+00:00/2024-03-31T00:00:00+00:00",
        max_cloud=30.0,
        keep_missing_cloud=True,
    )
    expected = _expected(BELGIUM, "2024-01-20T00:00:00+00:00", "2024-03-31T00:00:00+00:00", 30.0)
    assert _ids(found) == expected
    assert len(expected) >= 4
    bodies = [r.body for r in proxy.searches]
    assert bodies[0]["filter-lang"] == "cql2-json" or bodies[0].get("filter_lang") == "cql2-json"
    assert bodies[0]["filter"]["op"] == "or"  # <= 30 or isNull, sent to the server
    # the server applied it: nothing above the bound came back over the wire
    assert all(r.status == 200 for r in proxy.requests)


def test_raw_cql2_datetime_filter_matches_the_oracle(pgstac: PgstacServer) -> None:
    instant = {"timestamp": "2024-03-01T00:00:00Z"}
    after = {"op": "t_after", "args": [{"property": "datetime"}, instant]}
    body = {
        "collections": ["sentinel-2-l2a"],
        "filter-lang": "cql2-json",
        "filter": {
            "op": "and",
            "args": [
                after,
                {"op": "<", "args": [{"property": "eo:cloud_cover"}, 50]},
            ],
        },
        "limit": 1000,
    }
    answer = requests.post(pgstac.url + "search", json=body, timeout=30).json()
    got = {f["id"] for f in answer["features"]}
    expected = {
        i["id"]
        for i in ITEMS
        if i["collection"] == "sentinel-2-l2a"
        and _when(i) > dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
        and i["properties"].get("eo:cloud_cover") is not None
        and i["properties"]["eo:cloud_cover"] < 50
    }
    assert got == expected
    assert expected


def test_intersects_polygon(pgstac: PgstacServer) -> None:
    cat = open_catalog(pgstac.url)
    found = cat.search(intersects=BELGIUM, collections="landsat-c2-l2")
    assert _ids(found) == _expected(BELGIUM, collection="landsat-c2-l2")
    east = {
        "type": "Polygon",
        "coordinates": [[[5.6, 50.1], [5.9, 50.1], [5.9, 50.4], [5.6, 50.1]]],
    }
    # east of the Sentinel-2 tile (it ends at 5.5) but inside the Landsat scene
    assert {i.collection_id for i in cat.search(intersects=east)} == {"landsat-c2-l2"}


def test_intersects_across_the_antimeridian(pgstac: PgstacServer) -> None:
    """A label over Fiji crossing 180 degrees, as RFC 7946 writes it (a MultiPolygon cut at
    the antimeridian): the scenes of both MGRS tiles come back, none from elsewhere."""
    fiji = {
        "type": "MultiPolygon",
        "coordinates": [
            [[[179.6, -16.6], [180.0, -16.6], [180.0, -16.3], [179.6, -16.3], [179.6, -16.6]]],
            [[[-180.0, -16.6], [-179.7, -16.6], [-179.7, -16.3], [-180.0, -16.3], [-180.0, -16.6]]],
        ],
    }
    cat = open_catalog(pgstac.url)
    found = cat.search(intersects=fiji, datetime="2024-01-01/2024-02-15")
    tiles = {i.properties["s2:mgrs_tile"] for i in found}
    assert tiles == {"60KXF", "01KAB"}
    assert _ids(found) == _expected(fiji, "2024-01-01T00:00:00+00:00", "2024-02-15T23:59:59+00:00")


def test_sortby_cloud_cover(pgstac: PgstacServer) -> None:
    body = {
        "collections": ["sentinel-2-l2a"],
        "intersects": BELGIUM,
        "sortby": [{"field": "properties.eo:cloud_cover", "direction": "asc"}],
        "limit": 100,
    }
    features = requests.post(pgstac.url + "search", json=body, timeout=30).json()["features"]
    clouds = [f["properties"].get("eo:cloud_cover") for f in features]
    known = [c for c in clouds if c is not None]
    assert known == sorted(known)
    assert len(features) == len(_expected(BELGIUM, collection="sentinel-2-l2a"))
    body["sortby"] = [{"field": "properties.eo:cloud_cover", "direction": "desc"}]
    features = requests.post(pgstac.url + "search", json=body, timeout=30).json()["features"]
    known = [
        f["properties"]["eo:cloud_cover"] for f in features if "eo:cloud_cover" in f["properties"]
    ]
    assert known == sorted(known, reverse=True)


def test_paging_follows_next_links_with_merged_bodies(proxy: FaultProxy) -> None:
    cat = open_catalog(proxy.url, page_size=7)
    found = cat.search(max_cloud=60.0, keep_missing_cloud=True, collections="sentinel-2-l2a")
    expected = _expected(max_cloud=60.0, collection="sentinel-2-l2a")
    assert _ids(found) == expected
    pages = proxy.searches
    assert len(pages) == -(-len(expected) // 7)  # every page asked once, no more
    assert all(r.method == "POST" for r in pages)
    for page in pages:  # each next body keeps the original filters (merged with the token)
        assert page.body["filter"]["op"] == "or"
        assert page.body["collections"] == ["sentinel-2-l2a"]
        assert page.body["limit"] == 7
    assert all("token" in page.body for page in pages[1:])
    assert len({page.body["token"] for page in pages[1:]}) == len(pages) - 1


def test_limit_caps(proxy: FaultProxy) -> None:
    # the server caps a page at what was asked ...
    cat = open_catalog(proxy.url, page_size=5)
    found = cat.search(collections="landsat-c2-l2")
    assert len(found) == len(_expected(collection="landsat-c2-l2"))
    assert all(r.sent > 0 for r in proxy.searches)
    # ... and geochip's max_items cap stops paging early with a named error
    proxy.clear()
    with pytest.raises(SearchLimitError, match="more than 10 items match"):
        open_catalog(proxy.url, page_size=5).search(max_items=10)
    assert len(proxy.searches) <= 3
    # a limit above stac-fastapi's cap (10000) is clamped by the server, not refused
    answer = requests.post(proxy.url + "search", json={"limit": 50_000}, timeout=30)
    assert answer.status_code == 200
    assert len(answer.json()["features"]) == len(ITEMS)


def test_bad_filter_is_a_named_error_without_retry(proxy: FaultProxy) -> None:
    cat = open_catalog(proxy.url, retries=3, backoff=0.01)
    assert isinstance(cat, ApiCatalog)
    # CQL2 text sent as CQL2 JSON: stac-fastapi answers 422/400. (pgstac answers an unknown
    # CQL2 JSON op with a 500, which a client cannot tell from an outage: retried.)
    bad = {"filter-lang": "cql2-json", "filter": "eo:cloud_cover < 10"}
    with pytest.raises(CatalogError, match=r"answered HTTP 4\d\d: .*valid dictionary") as err:
        cat.http.send("POST", proxy.url + "search", json_body=bad)
    assert "after" not in str(err.value)  # a 4xx is not retried
    assert len(proxy.searches) == 1
    assert 400 <= proxy.searches[0].status < 500


def test_5xx_is_retried_then_succeeds(proxy: FaultProxy) -> None:
    proxy.add_fault("status", status=503, count=2, path="*/search")
    cat = open_catalog(proxy.url, retries=3, backoff=0.01)
    found = cat.search(collections="landsat-c2-l2")
    assert _ids(found) == _expected(collection="landsat-c2-l2")
    assert [r.status for r in proxy.searches] == [503, 503, 200]


def test_5xx_retries_are_bounded(proxy: FaultProxy) -> None:
    proxy.add_fault("status", status=502, rate=1.0, path="*/search")
    cat = open_catalog(proxy.url, retries=2, backoff=0.01)
    began = time.monotonic()
    with pytest.raises(CatalogError, match=r"HTTP 502 after 3 attempts"):
        cat.search(collections="landsat-c2-l2")
    assert len(proxy.searches) == 3
    assert time.monotonic() - began < 10


def test_slow_answer_is_retried_then_succeeds(proxy: FaultProxy) -> None:
    proxy.add_fault("delay", seconds=2.0, count=1, path="*/search")
    cat = open_catalog(proxy.url, timeout=0.5, retries=2, backoff=0.01)
    found = cat.search(collections="landsat-c2-l2")
    assert _ids(found) == _expected(collection="landsat-c2-l2")
    assert len([r for r in proxy.searches if r.fault is None]) >= 1


def test_slow_answers_give_up_bounded(proxy: FaultProxy) -> None:
    proxy.add_fault("delay", seconds=1.5, rate=1.0, path="*/search")
    cat = open_catalog(proxy.url, timeout=0.3, retries=1, backoff=0.01)
    began = time.monotonic()
    with pytest.raises(CatalogUnreachableError, match="after 2 attempts"):
        cat.search(collections="landsat-c2-l2")
    assert time.monotonic() - began < 5
