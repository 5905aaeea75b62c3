"""Bad input to scene selection: label files, periods, and STAC servers that answer wrong
(a real pgstac server behind a fault proxy). Each is a named error in one line, and nothing
is written under the selection's name."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from geochip.errors import InputError
from geochip.select.periods import make_periods
from geochip.testing.pgstac import PgstacServer
from geochip.testing.proxy import FaultProxy

BOX = [[[4.2, 50.2], [4.3, 50.2], [4.3, 50.3], [4.2, 50.3], [4.2, 50.2]]]


def _labels(path: Path, *geometries: Any) -> Path:
    features = [
        {"type": "Feature", "properties": {"id": f"l{n}"}, "geometry": g}
        for n, g in enumerate(geometries)
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


@pytest.fixture
def proxy(pgstac: PgstacServer) -> Iterator[FaultProxy]:
    with FaultProxy(pgstac.url) as p:
        yield p


def _select(proxy: FaultProxy, labels: Path, out: Path, *extra: str) -> list[str]:
    return [
        "select", "--catalog", proxy.url, "--labels", str(labels), "--start", "2024-01-01",
        "--end", "2024-04-30", "--periods", "2", "--collections", "sentinel-2-l2a",
        "--out", str(out), "--no-progress", *extra,
    ]  # fmt: skip


def _outputs(out: Path) -> list[Path]:
    return [out, out.with_name(out.stem + ".items.json")]


def test_a_label_with_an_invalid_geometry(refuse, proxy: FaultProxy, tmp_path: Path) -> None:
    bowtie = {"type": "Polygon", "coordinates": [[[4, 50], [5, 51], [5, 50], [4, 51], [4, 50]]]}
    labels = _labels(tmp_path / "labels.geojson", {"type": "Polygon", "coordinates": BOX}, bowtie)
    out = tmp_path / "sel.parquet"
    refuse(
        *_select(proxy, labels, out),
        error="InputError",
        message="invalid geometries",
        outputs=_outputs(out),
    )


def test_a_label_with_an_empty_geometry(refuse, proxy: FaultProxy, tmp_path: Path) -> None:
    labels = _labels(tmp_path / "labels.geojson", {"type": "Polygon", "coordinates": BOX}, None)
    out = tmp_path / "sel.parquet"
    refuse(
        *_select(proxy, labels, out),
        error="InputError",
        message="no geometry",
        outputs=_outputs(out),
    )


def test_periods_ending_before_they_start(refuse, proxy: FaultProxy, tmp_path: Path) -> None:
    labels = _labels(tmp_path / "labels.geojson", {"type": "Polygon", "coordinates": BOX})
    out = tmp_path / "sel.parquet"
    args = _select(proxy, labels, out)
    args[args.index("--end") + 1] = "2023-12-01"
    refuse(*args, error="InputError", message="before it starts", outputs=_outputs(out))


def test_more_periods_than_the_range_holds(refuse, proxy: FaultProxy, tmp_path: Path) -> None:
    labels = _labels(tmp_path / "labels.geojson", {"type": "Polygon", "coordinates": BOX})
    out = tmp_path / "sel.parquet"
    args = _select(proxy, labels, out)
    args[args.index("--periods") + 1] = str(10**14)
    refuse(*args, error="InputError", message="periods of at least 1", outputs=_outputs(out))


def test_explicit_periods_outside_the_time_range() -> None:
    with pytest.raises(InputError, match=r"period 1 .* does not fit the time range"):
        make_periods(
            [("2024-01-01", "2024-01-31"), ("2025-01-01", "2025-01-31")], "2024-01-01", "2024-12-31"
        )


def test_a_server_answering_html(refuse, proxy: FaultProxy, tmp_path: Path) -> None:
    labels = _labels(tmp_path / "labels.geojson", {"type": "Polygon", "coordinates": BOX})
    out = tmp_path / "sel.parquet"
    proxy.add_fault("html", rate=1.0)
    refuse(
        *_select(proxy, labels, out),
        error="CatalogError",
        message="did not answer JSON",
        outputs=_outputs(out),
    )


def test_a_search_answering_html(refuse, proxy: FaultProxy, tmp_path: Path) -> None:
    labels = _labels(tmp_path / "labels.geojson", {"type": "Polygon", "coordinates": BOX})
    out = tmp_path / "sel.parquet"
    proxy.add_fault("html", rate=1.0, path="/search")
    refuse(
        *_select(proxy, labels, out),
        error="CatalogError",
        message="not JSON",
        outputs=_outputs(out),
    )


def test_a_search_answering_truncated_json(refuse, proxy: FaultProxy, tmp_path: Path) -> None:
    labels = _labels(tmp_path / "labels.geojson", {"type": "Polygon", "coordinates": BOX})
    out = tmp_path / "sel.parquet"
    proxy.add_fault("cut", rate=1.0, path="/search")
    refuse(
        *_select(proxy, labels, out),
        error="CatalogError",
        message="not JSON",
        outputs=_outputs(out),
    )


def test_a_next_link_that_loops(refuse, proxy: FaultProxy, tmp_path: Path) -> None:
    labels = _labels(tmp_path / "labels.geojson", {"type": "Polygon", "coordinates": BOX})
    out = tmp_path / "sel.parquet"
    first: list[Any] = []

    def same_page(body: Any) -> Any:  # every page is the first one again, with a next link
        if not first:
            nxt = {"rel": "next", "href": proxy.url + "search", "method": "POST",
                   "body": {"limit": 100}, "merge": True}  # fmt: skip
            body["links"] = [lk for lk in body["links"] if lk["rel"] != "next"] + [nxt]
            first.append(body)
        return first[0]

    proxy.add_fault("rewrite", rate=1.0, path="/search", rewrite=same_page)
    refuse(
        *_select(proxy, labels, out),
        error="CatalogError",
        message="next links loop",
        outputs=_outputs(out),
    )
