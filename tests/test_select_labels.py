"""Label-driven selection end to end, against hand-computed answers, on a static catalog,
on rustac's STAC API (assets served over HTTP behind a signature) and on a conforming API.

The scenario (2024 in 4 equal periods; p0 [Jan 1, Apr 1 12:00), p1 [.., Jul 2), p2 [..,
Oct 1 12:00), p3 [.., Jan 1 2025); max_cloud 10, step 5, limit 50):

label A (place W): a1 Jan 10 30 %, a2 Feb 15 8 %, a3 Mar 20 8 % -> p0: a2 (tie at 8 %, a2
  nearer the middle Feb 15 18:00), threshold 10; a4 Apr 10 22 %, a5 May 10 40 % -> p1: a4,
  relaxed 10 -> 25 (3 steps); a6 Aug 1 70 % -> p2 empty (limit 50); a8 Oct 5 15 % and a7
  Nov 15 without eo:cloud_cover, its QA_PIXEL band 15 % cloud (300 of 2000 non-fill pixels)
  -> p3: a7 (tie at 15 %, nearer the middle Nov 16 06:00), relaxed to 15 (1 step).
label B (place E): b1 Jun 1 5 % -> p1 only; p0, p2, p3 empty.
label C (nowhere): every period empty.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pystac
import pytest
from odc.geo.geobox import GeoBox
from shapely.geometry import box

from geochip.errors import EmptyPeriodError, InputError, NoCloudInfoError
from geochip.select.labels import load_labels
from geochip.select.search import select_scenes
from geochip.select.table import SELECTION_COLUMNS, load_selection
from geochip.sources.open import open_catalog
from geochip.testing import make_catalog, make_cog, make_collection, make_item
from geochip.testing.rustac import RustacServer
from geochip.testing.stac_api import StacApiServer

W = GeoBox.from_bbox((500_000, 0, 500_640, 640), "EPSG:32633", resolution=10)
E = GeoBox.from_bbox((600_000, 0, 600_640, 640), "EPSG:32633", resolution=10)
QA_GRID = GeoBox.from_bbox((500_000, 0, 500_640, 640), "EPSG:32633", resolution=12.8)
SIG = "Pl4ntedSelectSasSig"
KEY = "planted-select-api-key-42"

SPEC = [
    ("a1", "2024-01-10", 30.0, "W"),
    ("a2", "2024-02-15", 8.0, "W"),
    ("a3", "2024-03-20", 8.0, "W"),
    ("a4", "2024-04-10", 22.0, "W"),
    ("a5", "2024-05-10", 40.0, "W"),
    ("a6", "2024-08-01", 70.0, "W"),
    ("a7", "2024-11-15", None, "W"),
    ("a8", "2024-10-05", 15.0, "W"),
    ("b1", "2024-06-01", 5.0, "E"),
]
EXPECTED = {  # (label, period): (item ids, cloud covers, threshold, relax steps, empty)
    ("A", 0): (["a2"], [8.0], 10.0, 0, False),
    ("A", 1): (["a4"], [22.0], 25.0, 3, False),
    ("A", 2): ([], [], 50.0, 8, True),
    ("A", 3): (["a7"], [15.0], 15.0, 1, False),
    ("B", 0): ([], [], 50.0, 8, True),
    ("B", 1): (["b1"], [5.0], 10.0, 0, False),
    ("B", 2): ([], [], 50.0, 8, True),
    ("B", 3): ([], [], 50.0, 8, True),
    **{("C", p): ([], [], 50.0, 8, True) for p in range(4)},
}
ARGS: dict[str, Any] = {
    "start": "2024-01-01",
    "end": "2024-12-31",
    "periods": 4,
    "max_cloud": 10,
    "relax_step": 5,
    "cloud_limit": 50,
}


def _inner(gbox: GeoBox) -> Any:
    return gpd.GeoSeries([box(*gbox.boundingbox)], crs=32633).to_crs(4326).iloc[0].buffer(-0.001)


LABELS = gpd.GeoDataFrame(
    {"id": ["A", "B", "C"]},
    geometry=[_inner(W), _inner(E), box(100, 10, 100.01, 10.01)],
    crs=4326,
)


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scenes")
    make_cog(root / "w.tif", W)
    make_cog(root / "e.tif", E)
    qa = np.full((50, 50), 21824, np.uint16)  # clear
    qa[:6] = 22280  # cloud (bit 3): 300 pixels
    qa[40:] = 1  # fill: 500 pixels -> 300 / 2000 = 15 %
    make_cog(root / "qa.tif", QA_GRID, data=qa, overviews=[2])
    return root


@pytest.fixture(scope="module")
def items(scene_dir: Path) -> list[pystac.Item]:
    out = []
    for item_id, when, cloud, place in SPEC:
        assets = {"red": scene_dir / ("w.tif" if place == "W" else "e.tif")}
        if item_id == "a7":
            assets["qa_pixel"] = scene_dir / "qa.tif"
        out.append(
            make_item(item_id, assets, datetime=when, cloud_cover=cloud, collection="scenes")
        )
    return out


def _check(selection: Any) -> None:
    table = selection.table
    assert list(table.columns) == list(SELECTION_COLUMNS)
    assert len(table) == 12
    for row in table.itertuples():
        ids, covers, threshold, steps, empty = EXPECTED[(row.label_id, row.period)]
        assert list(row.item_ids) == ids, (row.label_id, row.period)
        assert list(row.cloud_cover) == pytest.approx(covers)
        assert (row.threshold, row.relax_steps, row.empty) == (threshold, steps, empty)
    a7 = table[(table.label_id == "A") & (table.period == 3)].iloc[0]
    assert list(a7.cloud_method) == ["landsat_qa"] and list(a7.cloud_asset) == ["qa_pixel"]
    a2 = table[(table.label_id == "A") & (table.period == 0)].iloc[0]
    assert list(a2.cloud_method) == ["property"] and list(a2.cloud_scope) == ["scene"]
    assert selection.summary() == {
        "labels": 3,
        "periods_per_label": 4,
        "periods": 12,
        "filled": 2,
        "relaxed": 2,
        "empty": 8,
        "items": 4,
        "skipped_no_cloud": 0,
    }


def test_selection_on_in_memory_items(items: list[pystac.Item]) -> None:
    _check(select_scenes(open_catalog(items), LABELS, **ARGS))


def test_selection_on_a_static_catalog(items: list[pystac.Item], tmp_path: Path) -> None:
    root = make_catalog(tmp_path / "cat", collections=[make_collection("scenes", items)])
    _check(select_scenes(root, LABELS, **ARGS, workers=1))


def test_selection_on_rustac_with_signed_http_assets(
    items: list[pystac.Item],
    scene_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with StacApiServer(files_root=scene_dir, file_token=SIG) as files:
        remote = []
        for item in items:
            clone = item.clone()
            for asset in clone.assets.values():
                asset.href = files.file_url(asset.href)
            remote.append(clone)
        with RustacServer(remote) as api:
            cat = open_catalog(
                api.url, api_key=KEY, page_size=3, sign=lambda h: f"{h}?sv=2024&sp=r&sig={SIG}"
            )
            selection = select_scenes(cat, LABELS, **ARGS, workers=3)
    _check(selection)
    out = selection.save(tmp_path / "sel.parquet")
    written = out.read_bytes() + (tmp_path / "sel.items.json").read_bytes()
    for secret in (SIG, KEY):
        assert secret.encode() not in written
        assert secret not in caplog.text
    hrefs = [
        a["href"]
        for f in json.loads((tmp_path / "sel.items.json").read_text())["features"]
        for a in f["assets"].values()
    ]
    assert hrefs and all(h.startswith(files.url) and "?" not in h for h in hrefs)


def test_selection_survives_429s_and_stays_within_the_request_bound(
    items: list[pystac.Item],
) -> None:
    with StacApiServer(items, conformance=("filter",), delay=0.05) as api:
        cat = open_catalog(api.url, max_requests=2, backoff=0.01)
        api.inject(429, 2, retry_after=0)
        api.inject(503, 1)
        from geochip.core.hrefs import HrefPolicy

        cat.href_policy = HrefPolicy()  # the QA file is local; this API is ours
        selection = select_scenes(cat, LABELS, **ARGS, workers=3)
        assert api.max_in_flight <= 2
        bodies = [r.body for r in api.searches() if r.body]
    _check(selection)
    filtered = [b for b in bodies if "filter" in b]
    assert all(b["filter"]["op"] == "or" for b in filtered)  # cloud <= 50 or missing
    assert len(bodies) - len(filtered) == 1  # label C's empty answer, verified without it


def test_the_table_and_items_round_trip_with_exact_types(
    items: list[pystac.Item], tmp_path: Path
) -> None:
    selection = select_scenes(open_catalog(items), LABELS, **ARGS)
    path = selection.save(tmp_path / "out" / "selection.parquet")
    schema = pq.read_schema(path)
    ts = pa.timestamp("us", tz="UTC")
    assert schema.field("period").type == pa.int32()
    assert schema.field("period_start").type == ts
    assert schema.field("item_ids").type == pa.list_(pa.string())
    assert schema.field("item_datetimes").type == pa.list_(ts)
    assert schema.field("cloud_cover").type == pa.list_(pa.float64())
    assert schema.field("cloud_decimation").type == pa.list_(pa.int32())
    assert b"geo" in schema.metadata
    config = json.loads(schema.metadata[b"geochip:selection"])
    assert config["thresholds"] == [10, 15, 20, 25, 30, 35, 40, 45, 50]
    assert config["items_file"] == "selection.items.json"
    back = load_selection(path)
    assert sorted(back.items) == ["a2", "a4", "a7", "b1"]
    assert back.table.crs.to_epsg() == 4326
    assert [i.id for i in back.items_for("A", 3)] == ["a7"]
    _check(back)
    assert not list(path.parent.glob("*.part*"))


def test_strict_raises_on_the_first_empty_period(items: list[pystac.Item]) -> None:
    with pytest.raises(
        EmptyPeriodError,
        match=r"label 'A', period 2 .*cloud cover <= 50% after relaxing 10 -> 50 in 8 steps; "
        r"the search \(eo:cloud_cover <= 50% or unknown\) returned no scene in it",
    ):
        select_scenes(open_catalog(items), LABELS.iloc[:1], **ARGS, strict=True)
    # a7 has no eo:cloud_cover, so the search keeps it; its QA band says 15 %
    computed = [i for i in items if i.id in {"a7", "a8"}]
    with pytest.raises(EmptyPeriodError, match="least cloudy of its 1 scenes is a7 at 15.00%"):
        select_scenes(
            open_catalog(computed),
            LABELS.iloc[:1],
            **{**ARGS, "max_cloud": 5, "cloud_limit": 10, "periods": 1},
            strict=True,
        )


def test_an_item_without_cloud_information_stops_selection_or_is_skipped(
    items: list[pystac.Item],
) -> None:
    bare = [i.clone() for i in items]
    del bare[6].assets["qa_pixel"]  # a7: no eo:cloud_cover and now no QA band
    with pytest.raises(NoCloudInfoError, match=r"item 'a7' has no eo:cloud_cover.*assets: red"):
        select_scenes(open_catalog(bare), LABELS, **ARGS)
    selection = select_scenes(open_catalog(bare), LABELS, **ARGS, missing_cloud="skip")
    row = selection.table[(selection.table.label_id == "A") & (selection.table.period == 3)]
    assert list(row.iloc[0].item_ids) == ["a8"] and list(selection.skipped) == ["a7"]


def test_cloud_over_the_footprint(scene_dir: Path) -> None:
    # Two scenes with the same QA band: 15 % cloud over the scene, in its top 6 rows.
    # Over the southern half of the scene there is no cloud at all.
    qa_items = [
        make_item(n, {"qa_pixel": scene_dir / "qa.tif"}, datetime=d, collection="q")
        for n, d in (("q1", "2024-03-01"), ("q2", "2024-03-02"))
    ]
    x0, y0, x1, y1 = QA_GRID.boundingbox
    south = gpd.GeoSeries([box(x0 + 1, y0 + 1, x1 - 1, (y0 + y1) / 2)], crs=32633).to_crs(4326)
    labels = gpd.GeoDataFrame({"id": ["S"]}, geometry=list(south), crs=4326)
    args = {**ARGS, "periods": 1, "max_cloud": 5}
    scene = select_scenes(open_catalog(qa_items), labels, **args)
    foot = select_scenes(open_catalog(qa_items), labels, **args, cloud_over="footprint")
    s, f = scene.table.iloc[0], foot.table.iloc[0]
    assert list(s.cloud_cover) == [15.0] and s.threshold == 15.0
    assert list(f.cloud_cover) == [0.0] and f.threshold == 5.0
    # a tie at 0 %: q2 (Mar 2) is nearer the middle of 2024 (Jul 2) than q1 (Mar 1)
    assert list(f.cloud_scope) == ["footprint"] and list(f.item_ids) == ["q2"]


# --- labels -----------------------------------------------------------------------------


def _label_item(item_id: str, geom: Any) -> pystac.Item:
    import datetime as dt

    from shapely.geometry import mapping

    item = pystac.Item(
        item_id,
        mapping(geom),
        list(geom.bounds),
        dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        {"label:type": "raster", "label:properties": None, "label:description": "land cover"},
    )
    item.stac_extensions.append("https://stac-extensions.github.io/label/v1.0.1/schema.json")
    return item


def test_labels_from_a_stac_label_collection(items: list[pystac.Item], tmp_path: Path) -> None:
    label_items = [_label_item(n, g) for n, g in zip("ABC", LABELS.geometry, strict=True)]
    root = make_catalog(tmp_path / "labels", label_items + items[:1])  # a non-label item too
    frame = load_labels(str(root))
    assert list(frame.label_id) == ["A", "B", "C"]
    _check(select_scenes(open_catalog(items), str(root), **ARGS))


def test_labels_from_a_vector_file_in_another_crs(tmp_path: Path) -> None:
    path = tmp_path / "labels.gpkg"
    LABELS.to_crs(32633).rename(columns={"id": "tile"}).to_file(path)
    frame = load_labels(path, id_column="tile")
    assert list(frame.label_id) == ["A", "B", "C"] and frame.crs.to_epsg() == 4326
    assert frame.geometry.iloc[0].equals_exact(LABELS.geometry.iloc[0], 1e-9)


def test_bad_labels_are_named(items: list[pystac.Item], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="none with the label extension"):
        load_labels(items)
    dup = gpd.GeoDataFrame({"id": ["A", "A"]}, geometry=list(LABELS.geometry[:2]), crs=4326)
    with pytest.raises(InputError, match=r"unique.*\['A'\]"):
        load_labels(dup)
    with pytest.raises(InputError, match="have no CRS"):
        load_labels(gpd.GeoDataFrame({"id": ["A"]}, geometry=[box(0, 0, 1, 1)]))
    with pytest.raises(InputError, match="no column 'tile'"):
        load_labels(LABELS, id_column="tile")
