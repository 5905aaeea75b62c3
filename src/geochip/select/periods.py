"""Periods: the time steps scenes are chosen for.

**Periods** (:class:`Period`) are half-open ``[start, end)`` UTC intervals:
:func:`equal_periods` splits ``[start, end]`` into N equal parts (to the microsecond),
:func:`monthly_periods` and :func:`seasonal_periods` (meteorological seasons DJF, MAM, JJA,
SON) cut at calendar boundaries, and :func:`make_periods` also takes explicit
``(start, end)`` pairs. A scene belongs to the period that holds its ``datetime`` (the
middle of ``start_datetime``/``end_datetime`` when it has a range instead).

Example:
    >>> [(p.name, p.start.date().isoformat(), p.end.date().isoformat())
    ...  for p in make_periods(2, "2024-01-01", "2024-12-31")]
    [('p0', '2024-01-01', '2024-07-02'), ('p1', '2024-07-02', '2025-01-01')]
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from ..sources.query import parse_instant

__all__ = [
    "Period",
    "PeriodSpec",
    "equal_periods",
    "make_periods",
    "monthly_periods",
    "seasonal_periods",
]

log = logging.getLogger(__name__)

_US = dt.timedelta(microseconds=1)


@dataclass(frozen=True, order=True)
class Period:
    """A half-open UTC interval ``[start, end)`` with its position and a name."""

    index: int
    start: dt.datetime
    end: dt.datetime
    name: str = ""

    @property
    def middle(self) -> dt.datetime:
        """The instant halfway between start and end."""
        return self.start + (self.end - self.start) / 2

    def contains(self, when: dt.datetime) -> bool:
        """Whether ``start <= when < end``."""
        return self.start <= when < self.end


def _instant(value: str | dt.datetime, end: bool) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, dt.date):
        value = value.isoformat()
    parsed = parse_instant(str(value), end)
    if parsed is None:
        raise InputError(f"a period needs a start and an end, got {value!r}")
    return parsed


def _bounds(start: str | dt.datetime, end: str | dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """[start, end] as given (an end date is inclusive: the whole day) -> [start, stop)."""
    first = _instant(start, False)
    stop = _instant(end, True)
    if not isinstance(end, dt.datetime):
        stop = stop + _US  # the inclusive end of a day/month/year -> exclusive
    if stop <= first:
        raise InputError(f"the period ends ({end}) before it starts ({start})")
    return first, stop


def equal_periods(start: str | dt.datetime, end: str | dt.datetime, n: int) -> list[Period]:
    """``n`` equal periods covering ``[start, end]`` (an end date covers its whole day).

    >>> [p.start.isoformat() for p in equal_periods("2024-01-01", "2024-01-04", 2)]
    ['2024-01-01T00:00:00+00:00', '2024-01-03T00:00:00+00:00']
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"the number of periods must be a positive integer, got {n!r}")
    first, stop = _bounds(start, end)
    total = (stop - first) // _US
    if total < n:
        raise InputError(f"cannot split {first}..{stop} into {n} periods of at least 1 µs")
    edges = [first + dt.timedelta(microseconds=total * i // n) for i in range(n + 1)]
    return [Period(i, edges[i], edges[i + 1], f"p{i}") for i in range(n)]


def monthly_periods(start: str | dt.datetime, end: str | dt.datetime) -> list[Period]:
    """Calendar months overlapping ``[start, end]``, clipped to it.

    >>> [p.name for p in monthly_periods("2024-01-15", "2024-03-10")]
    ['2024-01', '2024-02', '2024-03']
    """
    first, stop = _bounds(start, end)
    out: list[Period] = []
    cursor = dt.datetime(first.year, first.month, 1, tzinfo=dt.UTC)
    while cursor < stop:
        nxt = dt.datetime(cursor.year + cursor.month // 12, cursor.month % 12 + 1, 1, tzinfo=dt.UTC)
        out.append(Period(len(out), max(cursor, first), min(nxt, stop), f"{cursor:%Y-%m}"))
        cursor = nxt
    return out


_SEASONS = {12: "DJF", 3: "MAM", 6: "JJA", 9: "SON"}


def seasonal_periods(start: str | dt.datetime, end: str | dt.datetime) -> list[Period]:
    """Meteorological seasons (DJF, MAM, JJA, SON) overlapping ``[start, end]``, clipped to
    it. A DJF season is named by the year of its January.

    >>> [p.name for p in seasonal_periods("2024-01-01", "2024-12-31")]
    ['2024-DJF', '2024-MAM', '2024-JJA', '2024-SON', '2025-DJF']
    """
    first, stop = _bounds(start, end)
    month = first.month - (first.month % 3)  # 0 (Dec of last year), 3, 6, 9
    year = first.year
    if month == 0:
        month, year = 12, year - 1
    cursor = dt.datetime(year, month, 1, tzinfo=dt.UTC)
    out: list[Period] = []
    while cursor < stop:
        nxt_month = cursor.month + 3
        nxt = dt.datetime(
            cursor.year + (nxt_month > 12), (nxt_month - 1) % 12 + 1, 1, tzinfo=dt.UTC
        )
        season_year = cursor.year + (cursor.month == 12)
        out.append(
            Period(
                len(out),
                max(cursor, first),
                min(nxt, stop),
                f"{season_year}-{_SEASONS[cursor.month]}",
            )
        )
        cursor = nxt
    return out


PeriodSpec = int | str | Sequence[Any]


def make_periods(
    spec: PeriodSpec,
    start: str | dt.datetime | None = None,
    end: str | dt.datetime | None = None,
) -> list[Period]:
    """Periods from ``spec``: a number N (equal periods), ``"monthly"``, ``"seasonal"``, or
    explicit ``(start, end)`` pairs (end dates inclusive; in time order, not overlapping;
    inside ``start``..``end`` when both are given).

    >>> [p.name for p in make_periods([("2024-01-01", "2024-01-31"), ("2024-06", "2024-06")])]
    ['p0', 'p1']
    """
    if isinstance(spec, str) and spec.isdigit():
        spec = int(spec)
    if isinstance(spec, int | str):
        if start is None or end is None:
            raise InputError(
                "periods given as a number, 'monthly' or 'seasonal' need start and end"
            )
        if isinstance(spec, int):
            return equal_periods(start, end, spec)
        if spec == "monthly":
            return monthly_periods(start, end)
        if spec == "seasonal":
            return seasonal_periods(start, end)
        raise InputError(f"periods must be a number, 'monthly', 'seasonal' or pairs; got {spec!r}")
    out: list[Period] = []
    for n, pair in enumerate(spec):
        if isinstance(pair, Period):
            first, stop = pair.start, pair.end
        else:
            try:
                left, right = pair
            except (TypeError, ValueError):
                raise InputError(f"period {n} must be a (start, end) pair, got {pair!r}") from None
            first, stop = _bounds(left, right)
        if out and first < out[-1].end:
            raise InputError(
                f"period {n} starts ({first.isoformat()}) before period {n - 1} ends "
                f"({out[-1].end.isoformat()}); give periods in time order, not overlapping"
            )
        out.append(Period(n, first, stop, getattr(pair, "name", "") or f"p{n}"))
    if not out:
        raise InputError("no periods given")
    if start is not None and end is not None:
        first, stop = _bounds(start, end)
        outside = [p for p in out if p.start < first or p.end > stop]
        if outside:
            p = outside[0]
            raise InputError(
                f"period {p.index} ({p.start.isoformat()} to {p.end.isoformat()}) does not fit "
                f"the time range {first.isoformat()} to {stop.isoformat()}; give periods "
                "inside start..end, or leave start and end out"
            )
    return out


def periods_span(periods: Sequence[Period]) -> tuple[dt.datetime, dt.datetime]:
    """The inclusive datetime range a search must cover to find the scenes of every period
    (the first start to the last end, less a microsecond: ends are exclusive)."""
    if not periods:
        raise InputError("no periods")
    return min(p.start for p in periods), max(p.end for p in periods) - _US
