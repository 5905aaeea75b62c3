"""STAC APIs: conformance, what goes server-side, lying servers, paging, retries, bounds,
unreachable servers and API keys - against real servers on loopback."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import traceback

import pystac
import pytest

from geochip.errors import CatalogError, CatalogUnreachableError, SearchLimitError
from geochip.sources.api import api_capabilities
from geochip.sources.open import open_catalog
from geochip.testing.rustac import RustacServer, free_port
from geochip.testing.stac_api import StacApiServer

KEY = "planted-api-key-5d1e0c7b"
CLOUDS = [3.0, 8.0, 12.0, 20.0, 45.0, None, 9.5]


def _items() -> list[pystac.Item]:
    out = []
    for n, cloud in enumerate(CLOUDS):
        props = {} if cloud is None else {"eo:cloud_cover": cloud}
        out.append(
            pystac.Item(
                f"i{n}",
                {"type": "Point", "coordinates": [10.0 + n * 0.001, 45.0]},
                [10.0 + n * 0.001, 45.0, 10.0 + n * 0.001, 45.0],
                dt.datetime(2024, 1, 1 + n, tzinfo=dt.UTC),
                props,
                collection="c",
            )
        )
    return out


ITEMS = _items()
UNDER_10 = ["i0", "i1", "i6"]


# --- conformance ------------------------------------------------------------------------


def test_conformance_classes_decide_where_the_cloud_filter_goes() -> None:
    base = ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search"]
    cql2 = "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json"
    assert api_capabilities(base).cloud_filter == "client"
    assert api_capabilities([*base, base[1] + "#query"]).cloud_filter == "query"
    filt = "https://api.stacspec.org/v1.0.0-rc.1/item-search#filter"
    assert api_capabilities([*base, filt, cql2]).cloud_filter == "filter"
    assert api_capabilities([*base, filt]).cloud_filter == "client"  # no CQL2 JSON class
    assert not api_capabilities(["https://api.stacspec.org/v1.0.0/core"]).item_search


def test_a_filter_server_gets_cql2_json_in_the_body() -> None:
    with StacApiServer(ITEMS, conformance=("filter", "query")) as api:
        found = open_catalog(api.url).search(max_cloud=10)
        body = api.searches()[-1].body
    assert [i.id for i in found] == UNDER_10
    assert body["filter"] == {"op": "<=", "args": [{"property": "eo:cloud_cover"}, 10]}
    assert body["filter-lang"] == "cql2-json"
    assert "query" not in body


def test_keeping_items_without_cloud_cover_is_said_in_cql2() -> None:
    with StacApiServer(ITEMS, conformance=("filter",)) as api:
        found = open_catalog(api.url).search(max_cloud=10, keep_missing_cloud=True)
        body = api.searches()[-1].body
    assert [i.id for i in found] == ["i0", "i1", "i5", "i6"]
    assert body["filter"]["op"] == "or"
    assert body["filter"]["args"][1] == {"op": "isNull", "args": [{"property": "eo:cloud_cover"}]}


def test_a_query_server_gets_the_query_extension() -> None:
    with StacApiServer(ITEMS, conformance=("query",)) as api:
        found = open_catalog(api.url).search(max_cloud=10)
        body = api.searches()[-1].body
    assert [i.id for i in found] == UNDER_10
    assert body["query"] == {"eo:cloud_cover": {"lte": 10}}
    assert "filter" not in body


def test_a_server_without_extensions_filters_client_side_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="geochip")
    with StacApiServer(ITEMS, conformance=()) as api:
        found = open_catalog(api.url).search(max_cloud=10)
        body = api.searches()[-1].body
    assert [i.id for i in found] == UNDER_10
    assert "filter" not in body and "query" not in body
    assert "applied client-side (it does not conform to the query or filter" in caplog.text


def test_rustac_which_conforms_to_neither_gets_no_filter_and_the_right_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="geochip")
    with RustacServer(ITEMS) as api:
        cat = open_catalog(api.url, page_size=2)
        found = cat.search(max_cloud=10)
    assert cat.capabilities.cloud_filter == "client"
    assert [i.id for i in found] == UNDER_10
    assert "applied client-side" in caplog.text


def test_a_silently_empty_answer_to_a_filter_is_not_trusted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The server claims filter conformance but answers any filter with nothing (as rustac
    # does to a filter it does not know).
    with StacApiServer(ITEMS, conformance=("filter",), empty_on_filter=True) as api:
        cat = open_catalog(api.url)
        found = cat.search(max_cloud=10)
        again = cat.search(max_cloud=10)
        bodies = [r.body for r in api.searches()]
    assert [i.id for i in found] == UNDER_10
    assert [i.id for i in again] == UNDER_10
    assert "filter" in bodies[0] and "filter" not in bodies[1]  # verified without it
    assert "filter" not in bodies[2]  # and not trusted any more
    assert "ignores or mishandles the filter" in caplog.text


def test_a_truly_empty_answer_is_verified_then_reported() -> None:
    from geochip.errors import EmptySearchError

    with StacApiServer(ITEMS, conformance=("filter",)) as api:
        with pytest.raises(EmptySearchError, match="eo:cloud_cover<=1.*via the filter extension"):
            open_catalog(api.url).search(max_cloud=1)
        assert len(api.searches()) == 2


def test_a_server_that_ignores_the_filter_cannot_add_items() -> None:
    with StacApiServer(ITEMS, conformance=("filter",), ignore_filters=True) as api:
        found = open_catalog(api.url).search(max_cloud=10)
    assert [i.id for i in found] == UNDER_10


# --- paging -----------------------------------------------------------------------------


def test_paging_follows_next_links_to_the_end() -> None:
    with StacApiServer(ITEMS, conformance=()) as api:
        found = open_catalog(api.url, page_size=2).search()
        pages = len(api.searches())
    assert [i.id for i in found] == [f"i{n}" for n in range(7)]
    assert pages == 4


def test_paging_is_bounded_by_max_items() -> None:
    with StacApiServer(ITEMS, conformance=()) as api:
        with pytest.raises(SearchLimitError, match="more than 4 items match"):
            open_catalog(api.url, page_size=2, max_items=4).search()
        assert len(api.searches()) == 3  # 5 items fetched at most, then stopped


def test_a_next_link_that_loops_is_stopped() -> None:
    with StacApiServer(ITEMS[:3], conformance=()) as api:
        api.state.max_page = 2
        cat = open_catalog(api.url, page_size=2)
        original = api.state.items
        api.state.items = original + original  # page 2 repeats the first items
        with pytest.raises(CatalogError, match="next links loop"):
            cat.search()


# --- retries, bounds, failures ----------------------------------------------------------


def test_429_and_503_are_retried_with_backoff() -> None:
    with StacApiServer(ITEMS, conformance=()) as api:
        cat = open_catalog(api.url, backoff=0.01)
        api.inject(503, 2)
        api.inject(429, 1, retry_after=0)
        found = cat.search(max_cloud=10)
        assert len(api.searches()) == 4
    assert [i.id for i in found] == UNDER_10


def test_a_404_is_not_retried() -> None:
    with StacApiServer(ITEMS, conformance=()) as api:
        cat = open_catalog(api.url, backoff=0.01)
        api.inject(404, 5)
        with pytest.raises(CatalogError, match="answered HTTP 404"):
            cat.search()
        assert len(api.searches()) == 1


def test_a_persistent_503_fails_after_the_retries() -> None:
    with StacApiServer(ITEMS, conformance=()) as api:
        cat = open_catalog(api.url, retries=2, backoff=0.01)
        api.inject(503, 10)
        with pytest.raises(CatalogError, match="HTTP 503 after 3 attempts"):
            cat.search()
        assert len(api.searches()) == 3


def test_an_unreachable_api_fails_fast_with_a_clear_message() -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    start = time.monotonic()
    with pytest.raises(
        CatalogUnreachableError, match=r"cannot reach http://127.0.0.1:\d+/ after 3"
    ):
        open_catalog(url, retries=2, backoff=0.01, timeout=2)
    assert time.monotonic() - start < 10


def test_open_requests_stay_within_max_requests() -> None:
    with StacApiServer(ITEMS, conformance=(), delay=0.15) as api:
        cat = open_catalog(api.url, max_requests=2)
        threads = [threading.Thread(target=cat.search) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert api.max_in_flight == 2


def test_the_api_key_goes_in_a_header_and_nowhere_else(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with StacApiServer(ITEMS, conformance=("filter",)) as api:
        cat = open_catalog(api.url, api_key=KEY, backoff=0.01)
        found = cat.search(max_cloud=10)
        headers = api.searches()[-1].headers
        api.inject(500, 10)
        with pytest.raises(CatalogError) as info:
            cat.search()
    assert [i.id for i in found] == UNDER_10
    assert headers.get("x-api-key") == KEY
    assert caplog.records  # there was DEBUG logging: pystac-client logs headers there
    assert KEY not in caplog.text
    assert KEY not in repr(cat) and KEY not in "".join(traceback.format_exception(info.value))


def test_a_client_side_cloud_bound_cannot_hide_a_truncated_search() -> None:
    # 7 items, 3 under the bound: fetching 4 and filtering them would silently miss i6
    with (
        StacApiServer(ITEMS, conformance=()) as api,
        pytest.raises(SearchLimitError, match="more than 4 items match .* before the client"),
    ):
        open_catalog(api.url, page_size=2, max_items=4).search(max_cloud=10)
