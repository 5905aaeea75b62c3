"""Grouped selection (one search per group of labels, one cloud-band read per candidate)
chooses exactly what one search per label chooses - same ties, same relaxation - against a
real pgstac server, with the SCL bands served over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pystac
import pytest
import shapely.geometry

from geochip.errors import InputError
from geochip.select.cloud import cloud_cover, cloud_covers
from geochip.select.search import select_scenes
from geochip.select.table import Selection
from geochip.sources.open import open_catalog
from geochip.testing.http import RangeServer
from geochip.testing.landcover import LandcoverWorld, landcover_world
from geochip.testing.pgstac import PgstacServer
from geochip.testing.proxy import FaultProxy

COLUMNS = ["label_id", "period", "item_ids", "cloud_cover", "threshold", "relax_steps", "empty"]


@pytest.fixture(scope="module")
def world(
    pgstac: PgstacServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LandcoverWorld, str]]:
    root = tmp_path_factory.mktemp("lcn")
    with RangeServer(root) as files:
        made = landcover_world(
            root,
            files.url(""),
            tiles=2,
            labels_per_tile=6,
            dates=18,
            decoy_tiles=1,
            patterns=5,
            qa_pixels=256,
            label_degrees=0.05,
        )
        pgstac.load([], made.items)
        yield made, files.url("")


def _rows(selection: Selection) -> list[tuple]:
    table = selection.table[COLUMNS]
    return [
        (r.label_id, r.period, list(r.item_ids), [round(c, 9) for c in r.cloud_cover],
         r.threshold, r.relax_steps, r.empty)
        for r in table.itertuples()
    ]  # fmt: skip


@pytest.mark.parametrize("cloud_over", ["footprint", "scene"])
def test_grouped_equals_per_label(
    pgstac: PgstacServer, world: tuple[LandcoverWorld, str], cloud_over: str
) -> None:
    made, _ = world
    common = {
        "start": "2024-01-01",
        "end": "2024-12-31",
        "periods": 6,
        "max_cloud": 20.0,
        "relax_step": 15.0,
        "cloud_limit": 80.0,
        "collections": made.collection,
        "cloud_over": cloud_over,
        "min_pixels": 64,
    }
    with FaultProxy(pgstac.url) as proxy:
        per_label = select_scenes(open_catalog(proxy.url), made.labels, **common)
        one_each = len(proxy.searches)
        proxy.clear()
        progress: list[int] = []
        grouped = select_scenes(
            open_catalog(proxy.url), made.labels, group_cell=1.0, on_label=progress.append, **common
        )
        grouped_searches = len(proxy.searches)
    assert _rows(grouped) == _rows(per_label)
    assert grouped.items.keys() == per_label.items.keys()
    table = per_label.table
    assert table["relaxed"].any()  # the relaxation ladder was climbed somewhere
    assert (~table["empty"]).sum() >= len(table) // 2
    chosen = [tuple(c) for c in table["cloud_cover"] if len(c)]
    assert len(set(chosen)) < len(chosen)  # equal covers: the tie rules decided
    assert one_each == len(made.labels)
    assert grouped_searches == 2  # one per MGRS-like tile holding labels
    assert progress[-1] == len(made.labels)
    assert progress == sorted(progress)


def test_grouped_splits_a_group_over_the_search_limit(
    pgstac: PgstacServer, world: tuple[LandcoverWorld, str]
) -> None:
    made, _ = world
    common = {
        "start": "2024-01-01",
        "end": "2024-12-31",
        "periods": 3,
        "collections": made.collection,
        "cloud_over": "scene",
    }
    cat = open_catalog(pgstac.url, max_items=20)  # 18 items per tile: one label fits
    per_label = select_scenes(cat, made.labels, **common)
    grouped = select_scenes(cat, made.labels, group_cell=5.0, **common)
    assert _rows(grouped) == _rows(per_label)


def test_cloud_covers_reads_once_and_equals_cloud_cover(
    world: tuple[LandcoverWorld, str],
) -> None:
    """One opening and one window read per overview level give each footprint exactly what
    a read per footprint gives."""
    made, _ = world
    item = pystac.Item.from_dict(made.items[0])
    scene = shapely.geometry.shape(item.geometry)
    labels = [g for g in made.labels.geometry if g.intersects(scene)]
    together = cloud_covers(item, labels, min_pixels=64)
    alone = [cloud_cover(item, footprint=g, min_pixels=64) for g in labels]
    assert together == alone
    assert len(labels) == 6


class _Killed(Exception):
    """Stands for the kill (Ctrl-C, OOM) that stops a selection part way."""


@pytest.mark.parametrize("group_cell", [None, 1.0])
def test_a_killed_selection_resumes_with_only_the_missing_labels(
    pgstac: PgstacServer,
    world: tuple[LandcoverWorld, str],
    tmp_path: Path,
    group_cell: float | None,
) -> None:
    made, _ = world
    common: dict[str, Any] = {
        "start": "2024-01-01",
        "end": "2024-12-31",
        "periods": 4,
        "collections": made.collection,
        "cloud_over": "footprint",
        "min_pixels": 64,
        "workers": 1,
        "group_cell": group_cell,
    }
    journal = tmp_path / ".sel.parquet.journal.jsonl"
    whole = select_scenes(open_catalog(pgstac.url), made.labels, **common)

    def kill_after_7(n: int) -> None:
        if n >= 7:
            raise _Killed

    labels = made.labels if group_cell is None else made.labels.iloc[:9]  # one group of 6 + 3
    with FaultProxy(pgstac.url) as proxy:
        with pytest.raises(_Killed):
            select_scenes(
                open_catalog(proxy.url), labels, on_label=kill_after_7, checkpoint=journal, **common
            )
        labels = made.labels
        done_before = len(journal.read_text().splitlines()) - 1
        assert 6 <= done_before < len(made.labels)
        proxy.clear()
        progress: list[int] = []
        resumed = select_scenes(
            open_catalog(proxy.url), labels, checkpoint=journal, on_label=progress.append, **common
        )
        searches = proxy.searches
    assert _rows(resumed) == _rows(whole)
    assert resumed.items.keys() == whole.items.keys()
    searched = {json.dumps(r.body["intersects"]) for r in searches}
    if group_cell is None:
        assert len(searches) == len(made.labels) - done_before
    else:
        assert len(searches) == 1  # only the second tile's group
        assert len(searched) == 1
    assert progress[0] == done_before
    assert progress[-1] == len(made.labels)


def test_a_journal_of_other_settings_is_refused(
    pgstac: PgstacServer, world: tuple[LandcoverWorld, str], tmp_path: Path
) -> None:
    made, _ = world
    journal = tmp_path / "j.jsonl"
    common: dict[str, Any] = {
        "start": "2024-01-01",
        "end": "2024-12-31",
        "periods": 2,
        "collections": made.collection,
    }
    labels = made.labels.iloc[:1]
    select_scenes(open_catalog(pgstac.url), labels, checkpoint=journal, **common)
    with pytest.raises(InputError, match="made with other settings"):
        select_scenes(open_catalog(pgstac.url), labels, checkpoint=journal, max_cloud=5.0, **common)
