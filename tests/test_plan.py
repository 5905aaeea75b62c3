"""The plan: chip rows from a grid, spatial splits by block, leakage checks, persistence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from odc.geo.geobox import GeoBox

from geochip.errors import InputError, StoreError
from geochip.plan.chips import chip_geobox, load_plan, plan_chips, save_plan
from geochip.plan.splits import assign_splits, find_leaks

GRID = GeoBox.from_bbox((500_000, 4_000_000, 520_480, 4_020_480), "EPSG:32633", resolution=10)


def test_plan_rows_match_geobox_slices() -> None:
    plan = plan_chips(GRID, 256, stride=128, grid_id="g")
    for _, row in plan.sample(10, random_state=0).iterrows():
        expected = GRID[row["row"] : row["row"] + 256, row["col"] : row["col"] + 256]
        assert chip_geobox(row) == expected
        assert (row["minx"], row["miny"], row["maxx"], row["maxy"]) == tuple(
            expected.extent.boundingbox
        )


def test_plan_footprints_are_in_wgs84_and_cover_the_chip() -> None:
    plan = plan_chips(GRID, 512, grid_id="g")
    assert plan.crs.to_epsg() == 4326
    native = plan.to_crs(32633)
    centre = native.geometry.centroid
    assert np.allclose(centre.x, (plan["minx"] + plan["maxx"]) / 2, atol=0.5)
    assert np.allclose(centre.y, (plan["miny"] + plan["maxy"]) / 2, atol=0.5)


def test_plan_needs_no_pixels_and_is_deterministic() -> None:
    first = plan_chips(GRID, 256, overlap=64, grid_id="g")
    again = plan_chips(GRID, 256, overlap=64, grid_id="g")
    assert first.equals(again)
    assert first["chip_id"].is_unique
    assert (first["col"].iloc[1] - first["col"].iloc[0]) == 192


def test_stride_and_overlap_are_exclusive() -> None:
    with pytest.raises(InputError, match="stride or overlap"):
        plan_chips(GRID, 256, stride=128, overlap=64)


def test_each_block_holds_one_split_and_no_chip_straddles() -> None:
    plan = plan_chips(GRID, 256, grid_id="g")
    result = assign_splits(plan, block_size=1024, seed=3)
    block_px = 1024
    blocks = (
        (result.plan["row"] // block_px).astype(str)
        + "-"
        + (result.plan["col"] // block_px).astype(str)
    )
    assert result.plan.groupby(blocks)["split"].nunique().max() == 1
    assert result.dropped_straddling == 0
    assert set(result.plan["split"]) == {"train", "val", "test"}


def test_chips_straddling_block_borders_are_dropped_and_counted() -> None:
    plan = plan_chips(GRID, 256, stride=128, grid_id="g")  # overlapping chips
    result = assign_splits(plan, block_size=512, seed=0)
    assert result.dropped_straddling > 0
    assert len(result.plan) + result.dropped_straddling == len(plan)
    assert len(find_leaks(result.plan)) == 0


def test_splits_are_deterministic_for_a_seed_and_change_with_it() -> None:
    plan = plan_chips(GRID, 256, grid_id="g")
    a = assign_splits(plan, block_size=512, seed=1).plan["split"].tolist()
    b = assign_splits(plan, block_size=512, seed=1).plan["split"].tolist()
    c = assign_splits(plan, block_size=512, seed=2).plan["split"].tolist()
    assert a == b
    assert a != c


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=60),
    train=st.floats(0, 1),
    val=st.floats(0, 1),
    test=st.floats(0.01, 1),
)
def test_block_allocation_follows_ratios(n: int, train: float, val: float, test: float) -> None:
    from geochip.plan.splits import _allocate

    counts = _allocate(n, {"train": train, "val": val, "test": test})
    assert sum(counts.values()) == n
    total = train + val + test
    for name, ratio in (("train", train), ("val", val), ("test", test)):
        if ratio == 0:
            assert counts[name] == 0
        elif n >= 3:
            assert counts[name] >= 1
            # largest remainder is within one block of the exact share; guaranteeing a
            # block to each of the other non-empty splits can take one more each
            others = sum(1 for r in (train, val, test) if r > 0) - 1
            assert abs(counts[name] - n * ratio / total) < 1 + others


def test_find_leaks_reports_a_planted_leak() -> None:
    plan = assign_splits(plan_chips(GRID, 256, grid_id="g"), block_size=512, seed=0).plan
    leaky = plan.copy()
    # move a chip of one split on top of a chip of another split
    a = leaky.index[leaky["split"] == "train"][0]
    b = leaky.index[leaky["split"] == "test"][0]
    for col in ("minx", "miny", "maxx", "maxy"):
        leaky.loc[a, col] = leaky.loc[b, col] + 100
    leaks = find_leaks(leaky)
    assert len(leaks) >= 1
    assert {leaks.iloc[0]["split_a"], leaks.iloc[0]["split_b"]} == {"train", "test"}


def test_find_leaks_with_a_buffer_reports_neighbours() -> None:
    plan = assign_splits(plan_chips(GRID, 256, grid_id="g"), block_size=256, seed=0).plan
    assert len(find_leaks(plan)) == 0  # touching is not overlapping
    assert len(find_leaks(plan, buffer=5.0)) > 0  # but neighbours of other splits are near


def test_bad_ratios_are_refused() -> None:
    plan = plan_chips(GRID, 256)
    with pytest.raises(InputError, match="ratios"):
        assign_splits(plan, block_size=512, ratios={"train": 1.0, "holdout": 0.1})


def test_plan_roundtrips_through_geoparquet(tmp_path: Path) -> None:
    plan = assign_splits(plan_chips(GRID, 256, grid_id="g"), block_size=512).plan
    path = save_plan(plan, tmp_path / "plan.parquet")
    back = load_plan(path)
    assert back["chip_id"].tolist() == plan["chip_id"].tolist()
    assert back["transform"].iloc[3] == plan["transform"].iloc[3]
    assert chip_geobox(back.iloc[3]) == chip_geobox(plan.iloc[3])
    assert back.crs.to_epsg() == 4326
    assert not list(tmp_path.glob(".*partial"))


def test_load_plan_refuses_other_parquet(tmp_path: Path) -> None:
    import geopandas as gpd
    from shapely.geometry import Point

    gpd.GeoDataFrame({"a": [1]}, geometry=[Point(0, 0)], crs=4326).to_parquet(
        tmp_path / "x.parquet"
    )
    with pytest.raises(StoreError, match="missing columns"):
        load_plan(tmp_path / "x.parquet")


def test_the_deal_does_not_depend_on_the_order_of_the_ratios() -> None:
    # a manifest saves its config with sorted keys (test, train, val): read back, the same
    # config must deal the same splits
    plan = plan_chips(GRID, 256, grid_id="g")
    written = {"train": 0.6, "val": 0.25, "test": 0.15}
    resorted = dict(sorted(written.items()))
    assert list(resorted) == ["test", "train", "val"]
    for seed in (0, 1, 5):
        a = assign_splits(plan, block_size=512, ratios=written, seed=seed)
        b = assign_splits(plan, block_size=512, ratios=resorted, seed=seed)
        assert a.plan["split"].tolist() == b.plan["split"].tolist()
        assert a.blocks == b.blocks
