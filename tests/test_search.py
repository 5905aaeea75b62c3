"""One search interface over every kind of catalog, with answers computed by hand.

Six items, two collections, two places (W and E), known dates and cloud covers; every kind
of catalog (static on disk and over HTTP, stac-geoparquet written by rustac, an
ItemCollection JSON, rustac's STAC API, and a small API that conforms to filter, to query,
or to neither) must give exactly the same answer to every query.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pystac
import pytest
from odc.geo.geobox import GeoBox

from geochip.errors import EmptySearchError, InputError, SearchLimitError
from geochip.sources.catalog import Catalog
from geochip.sources.open import open_catalog
from geochip.testing import make_catalog, make_cog, make_collection, make_item
from geochip.testing.rustac import RustacServer
from geochip.testing.stac_api import StacApiServer

W = GeoBox.from_bbox((500_000, 0, 500_160, 160), "EPSG:32633", resolution=10)
E = GeoBox.from_bbox((510_000, 0, 510_160, 160), "EPSG:32633", resolution=10)

# id: (collection, datetime, eo:cloud_cover, place)
SPEC: dict[str, tuple[str, str, float | None, str]] = {
    "s1": ("alpha", "2024-01-10T10:00:00Z", 5.0, "W"),
    "s2": ("alpha", "2024-02-10T10:00:00Z", 25.0, "W"),
    "s3": ("alpha", "2024-03-10T10:00:00Z", None, "W"),
    "s4": ("beta", "2024-01-20T10:00:00Z", 0.0, "E"),
    "s5": ("beta", "2024-06-01T10:00:00Z", 60.0, "E"),
    "s6": ("alpha", "2023-12-31T23:59:59Z", 1.0, "W"),
}


def _footprint(gbox: GeoBox) -> dict[str, Any]:
    return dict(gbox.extent.to_crs("EPSG:4326").json)


QUERIES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "all": ({}, ["s6", "s1", "s4", "s2", "s3", "s5"]),
    "collection": ({"collections": ["beta"]}, ["s4", "s5"]),
    "bbox": ({"bbox": list(W.extent.to_crs("EPSG:4326").boundingbox)}, ["s6", "s1", "s2", "s3"]),
    "intersects": ({"intersects": _footprint(E)}, ["s4", "s5"]),
    "month": ({"datetime": "2024-01"}, ["s1", "s4"]),
    "cloud": ({"max_cloud": 10}, ["s6", "s1", "s4"]),
    "cloud-keep-missing": ({"max_cloud": 10, "keep_missing_cloud": True}, ["s6", "s1", "s4", "s3"]),
    "ids": ({"ids": ["s5", "s2"]}, ["s2", "s5"]),
    "combined": (
        {"collections": "alpha", "datetime": "2024-01-01/2024-12-31", "max_cloud": 30},
        ["s1", "s2"],
    ),
}


@pytest.fixture(scope="module")
def items(tmp_path_factory: pytest.TempPathFactory) -> list[pystac.Item]:
    root = tmp_path_factory.mktemp("scenes")
    paths = {"W": make_cog(root / "w.tif", W), "E": make_cog(root / "e.tif", E)}
    out = []
    for item_id, (coll, when, cloud, place) in SPEC.items():
        style = {"proj_version": 1, "bands_style": "eo:bands"} if item_id == "s5" else {}
        out.append(
            make_item(
                item_id,
                {"red": paths[place]},
                datetime=when,
                cloud_cover=cloud,
                collection=coll,
                **style,
            )  # type: ignore[arg-type]
        )
    return out


@pytest.fixture(scope="module")
def static_root(items: list[pystac.Item], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("static")
    colls = [
        make_collection(c, [i for i in items if i.collection_id == c]) for c in ("alpha", "beta")
    ]
    return make_catalog(root, collections=colls)


@pytest.fixture(scope="module")
def servers(items: list[pystac.Item], static_root: Path) -> Iterator[dict[str, Any]]:
    started: dict[str, Any] = {
        "rustac": RustacServer(items).start(),
        "api-filter": StacApiServer(items, conformance=("filter",)).start(),
        "api-query": StacApiServer(items, conformance=("query",)).start(),
        "api-none": StacApiServer(items, conformance=()).start(),
        "files": StacApiServer(files_root=static_root.parent).start(),
    }
    yield started
    for server in started.values():
        server.stop()


KINDS = [
    "static",
    "static-http",
    "geoparquet",
    "geoparquet-http",
    "items-json",
    "rustac",
    "api-filter",
    "api-query",
    "api-none",
]


@pytest.fixture(scope="module")
def catalogs(
    items: list[pystac.Item],
    static_root: Path,
    servers: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Catalog]:
    import rustac

    tmp = tmp_path_factory.mktemp("files")
    parquet = tmp / "items.parquet"
    rustac.write_sync(str(parquet), [i.to_dict() for i in items])  # an independent writer
    served = static_root.parent / "items.parquet"
    served.write_bytes(parquet.read_bytes())
    ic = tmp / "items.json"
    ic.write_text(json.dumps(pystac.ItemCollection(items).to_dict()))
    return {
        "static": open_catalog(static_root),
        "static-http": open_catalog(servers["files"].file_url(static_root)),
        "geoparquet": open_catalog(parquet),
        "geoparquet-http": open_catalog(servers["files"].file_url(served)),
        "items-json": open_catalog(ic),
        "rustac": open_catalog(servers["rustac"].url, page_size=2),
        "api-filter": open_catalog(servers["api-filter"].url, page_size=2),
        "api-query": open_catalog(servers["api-query"].url, page_size=2),
        "api-none": open_catalog(servers["api-none"].url, page_size=2),
    }


@pytest.mark.parametrize("query", sorted(QUERIES))
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_gives_the_hand_computed_answer(
    catalogs: dict[str, Catalog], kind: str, query: str
) -> None:
    kwargs, expected = QUERIES[query]
    found = catalogs[kind].search(**kwargs)
    assert [i.id for i in found] == expected


@pytest.mark.parametrize("kind", KINDS)
def test_kinds_are_told_apart(catalogs: dict[str, Catalog], kind: str) -> None:
    expected = {
        "static-http": "static",
        "items-json": "items",
        "rustac": "api",
        "geoparquet-http": "geoparquet",
    }.get(kind, "api" if kind.startswith("api") else kind)
    assert catalogs[kind].kind == expected


@pytest.mark.parametrize("kind", KINDS)
def test_items_are_normalised_at_the_boundary(catalogs: dict[str, Catalog], kind: str) -> None:
    (item,) = catalogs[kind].search(ids=["s5"])
    assert item.properties["proj:code"] == "EPSG:32633"
    assert "proj:epsg" not in item.properties
    assert item.assets["red"].extra_fields["bands"][0]["name"] == "red"
    assert "eo:bands" not in item.assets["red"].extra_fields


@pytest.mark.parametrize("kind", KINDS)
def test_an_empty_search_names_every_filter(catalogs: dict[str, Catalog], kind: str) -> None:
    with pytest.raises(EmptySearchError, match=r"collections=\['beta'\].*datetime=2025.*<=5"):
        catalogs[kind].search(collections=["beta"], datetime="2025", max_cloud=5)
    assert len(catalogs[kind].search(datetime="2025", allow_empty=True)) == 0


def test_searching_more_than_max_items_stops_with_a_clear_error(
    catalogs: dict[str, Catalog],
) -> None:
    for kind in ("static", "rustac", "api-filter"):
        with pytest.raises(SearchLimitError, match="more than 3 items match"):
            catalogs[kind].search(max_items=3)
        assert len(catalogs[kind].search(max_items=6)) == 6


def test_bad_search_arguments_are_named(catalogs: dict[str, Catalog]) -> None:
    cat = catalogs["static"]
    with pytest.raises(InputError, match="bbox or intersects, not both"):
        cat.search(bbox=[0, 0, 1, 1], intersects=_footprint(W))
    with pytest.raises(InputError, match=r"west, south, east, north"):
        cat.search(bbox=[1, 0, 0, 1])
    with pytest.raises(InputError, match="percentage"):
        cat.search(max_cloud=150)
    with pytest.raises(InputError, match="GeoJSON geometry"):
        cat.search(intersects="POINT (1 2)")


def test_open_catalog_names_what_it_cannot_open(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no STAC catalog at .*does not exist"):
        open_catalog(tmp_path / "nope.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(InputError, match="not a JSON STAC object"):
        open_catalog(tmp_path / "x.json")
    with pytest.raises(InputError, match="http\\(s\\) URLs and local paths"):
        open_catalog("ftp://example.com/catalog.json")


def test_in_memory_items_and_pystac_objects_open_too(items: list[pystac.Item]) -> None:
    assert [i.id for i in open_catalog(items).search(collections="beta")] == ["s4", "s5"]
    coll = make_collection("alpha", [i for i in items if i.collection_id == "alpha"])
    assert len(open_catalog(coll).search(max_cloud=10)) == 2


def test_duplicate_items_are_refused(items: list[pystac.Item]) -> None:
    with pytest.raises(InputError, match="holds item 's1' of collection 'alpha' twice"):
        open_catalog([items[0], items[0]]).search()
