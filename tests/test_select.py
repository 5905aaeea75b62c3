"""Periods, ranking and bounded relaxation, checked against answers computed by hand."""

from __future__ import annotations

import datetime as dt
import itertools
import math

import pystac
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geochip.errors import InputError
from geochip.select.cloud import CloudCover
from geochip.select.periods import (
    Period,
    equal_periods,
    make_periods,
    monthly_periods,
    seasonal_periods,
)
from geochip.select.ranking import Candidate, choose, thresholds

UTC = dt.UTC


def t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def cand(item_id: str, when: str, cloud: float) -> Candidate:
    item = pystac.Item(item_id, None, None, t(when), {})
    return Candidate(item, t(when), CloudCover(cloud, "property", "scene"))


# --- periods ----------------------------------------------------------------------------


def test_equal_periods_of_a_leap_year() -> None:
    periods = equal_periods("2024-01-01", "2024-12-31", 4)  # 366 days: 91.5 days each
    assert [p.start for p in periods] == [
        t("2024-01-01"),
        t("2024-04-01T12:00"),
        t("2024-07-02"),
        t("2024-10-01T12:00"),
    ]
    assert periods[-1].end == t("2025-01-01")
    assert periods[0].middle == t("2024-02-15T18:00")


def test_a_datetime_end_is_exclusive_and_a_date_end_inclusive() -> None:
    assert equal_periods("2024-01-01", "2024-01-02", 1)[0].end == t("2024-01-03")
    assert equal_periods(t("2024-01-01"), t("2024-01-02"), 1)[0].end == t("2024-01-02")


def test_a_scene_on_a_boundary_belongs_to_the_later_period() -> None:
    first, second = equal_periods("2024-01-01", "2024-01-04", 2)
    assert not first.contains(t("2024-01-03")) and second.contains(t("2024-01-03"))


def test_monthly_and_seasonal_periods() -> None:
    months = monthly_periods("2024-02-10", "2024-04-05")
    assert [(p.name, p.start, p.end) for p in months] == [
        ("2024-02", t("2024-02-10"), t("2024-03-01")),
        ("2024-03", t("2024-03-01"), t("2024-04-01")),
        ("2024-04", t("2024-04-01"), t("2024-04-06")),
    ]
    seasons = seasonal_periods("2023-12-15", "2024-06-10")
    assert [(p.name, p.start) for p in seasons] == [
        ("2024-DJF", t("2023-12-15")),
        ("2024-MAM", t("2024-03-01")),
        ("2024-JJA", t("2024-06-01")),
    ]


def test_explicit_periods_must_not_overlap() -> None:
    periods = make_periods([("2024-01-01", "2024-01-31"), ("2024-03", "2024-03")])
    assert [(p.start, p.end) for p in periods] == [
        (t("2024-01-01"), t("2024-02-01")),
        (t("2024-03-01"), t("2024-04-01")),
    ]
    with pytest.raises(InputError, match="period 1 starts .* before period 0 ends"):
        make_periods([("2024-01-01", "2024-02-10"), ("2024-02-01", "2024-03-01")])


def test_bad_period_specs_are_named() -> None:
    with pytest.raises(InputError, match="positive integer"):
        make_periods(0, "2024-01-01", "2024-12-31")
    with pytest.raises(InputError, match="need start and end"):
        make_periods(3)
    with pytest.raises(InputError, match="ends .* before it starts"):
        equal_periods("2024-05-01", "2024-01-01", 2)
    with pytest.raises(InputError, match="'weekly'"):
        make_periods("weekly", "2024-01-01", "2024-12-31")


@settings(max_examples=200, deadline=None)
@given(
    start=st.datetimes(min_value=dt.datetime(1980, 1, 1), max_value=dt.datetime(2090, 1, 1)),
    span=st.timedeltas(min_value=dt.timedelta(seconds=1), max_value=dt.timedelta(days=20_000)),
    n=st.integers(1, 60),
)
def test_property_equal_periods_tile_the_range(
    start: dt.datetime, span: dt.timedelta, n: int
) -> None:
    first = start.replace(tzinfo=UTC)
    periods = equal_periods(first, first + span, n)
    assert len(periods) == n
    assert periods[0].start == first and periods[-1].end == first + span
    for a, b in itertools.pairwise(periods):
        assert a.end == b.start
    lengths = [p.end - p.start for p in periods]
    assert max(lengths) - min(lengths) <= dt.timedelta(microseconds=1)


@settings(max_examples=100, deadline=None)
@given(
    start=st.dates(min_value=dt.date(1990, 1, 1), max_value=dt.date(2080, 1, 1)),
    days=st.integers(0, 2000),
    kind=st.sampled_from(["monthly", "seasonal"]),
)
def test_property_calendar_periods_tile_the_range(start: dt.date, days: int, kind: str) -> None:
    end = start + dt.timedelta(days=days)
    periods = make_periods(kind, start.isoformat(), end.isoformat())
    assert periods[0].start == t(start.isoformat())
    assert periods[-1].end == t(end.isoformat()) + dt.timedelta(days=1)
    for a, b in itertools.pairwise(periods):
        assert a.end == b.start
    assert [p.index for p in periods] == list(range(len(periods)))


# --- thresholds and choice --------------------------------------------------------------


def test_the_threshold_ladder() -> None:
    assert thresholds(10, 5, 50) == [10, 15, 20, 25, 30, 35, 40, 45, 50]
    assert thresholds(10, 15, 50) == [10, 25, 40, 50]
    assert thresholds(0.1, 0.1, 0.3) == [0.1, 0.2, 0.3]
    with pytest.raises(InputError, match="relax_step must be positive"):
        thresholds(10, 0, 50)
    with pytest.raises(InputError, match=r"cloud_limit \(5\) is below max_cloud \(10\)"):
        thresholds(10, 5, 5)


@settings(max_examples=300, deadline=None)
@given(
    start=st.floats(0, 100),
    step=st.floats(1e-3, 100),
    extra=st.floats(0, 100),
)
def test_property_the_ladder_is_bounded_and_ends_at_the_limit(
    start: float, step: float, extra: float
) -> None:
    limit = min(100.0, start + extra)
    ladder = thresholds(start, step, limit)
    assert ladder[0] == pytest.approx(start) and ladder[-1] == limit
    assert all(a < b for a, b in itertools.pairwise(ladder))
    assert len(ladder) <= 2 + math.ceil((limit - start) / step)


P = Period(0, t("2024-01-01"), t("2024-01-31"), "p0")  # middle: 2024-01-16


def test_the_least_cloudy_wins() -> None:
    got = choose([cand("a", "2024-01-02", 9), cand("b", "2024-01-20", 3)], P)
    assert [c.item.id for c in got.chosen] == ["b"]
    assert (got.threshold, got.relax_steps, got.empty) == (10, 0, False)


def test_ties_go_to_the_middle_then_to_the_id() -> None:
    got = choose([cand("a", "2024-01-02", 5), cand("b", "2024-01-15", 5)], P)
    assert got.chosen[0].item.id == "b"
    same_time = choose([cand("z", "2024-01-14", 5), cand("y", "2024-01-18", 5)], P)
    assert same_time.chosen[0].item.id == "y"


def test_relaxation_records_the_threshold_used() -> None:
    got = choose([cand("a", "2024-01-02", 22), cand("b", "2024-01-20", 40)], P)
    assert [c.item.id for c in got.chosen] == ["a"]
    assert (got.threshold, got.relax_steps, got.relaxed) == (25, 3, True)


def test_nothing_up_to_the_limit_is_an_empty_period() -> None:
    got = choose([cand("a", "2024-01-02", 70)], P, cloud_limit=50)
    assert got.empty and got.chosen == () and got.threshold == 50 and got.candidates == 1


def test_best_k_relaxes_until_k_are_under_the_threshold() -> None:
    cands = [cand("a", "2024-01-02", 4), cand("b", "2024-01-20", 18), cand("c", "2024-01-25", 9)]
    got = choose(cands, P, k=2)
    assert [c.item.id for c in got.chosen] == ["a", "c"] and got.threshold == 10
    got = choose(cands, P, k=3)
    assert [c.item.id for c in got.chosen] == ["a", "c", "b"] and got.threshold == 20
    got = choose(cands, P, k=4, cloud_limit=30)
    assert len(got.chosen) == 3 and got.threshold == 30 and not got.empty


def test_candidates_outside_the_period_and_nan_covers_are_never_chosen() -> None:
    got = choose([cand("a", "2024-02-01", 1), cand("b", "2024-01-10", float("nan"))], P)
    assert got.empty and got.candidates == 1
