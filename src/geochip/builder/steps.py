"""The time steps of a grid: its periods, each holding its scenes best first.

**A time step** (:class:`StepSpec`) is a period and the scenes in it, best first (the
selection's ranking, else least cloudy first: :func:`geochip.select.ranking.rank_by_cloud`).
A task (:mod:`geochip.builder.pixels`) reads every scene of its grid on the window it needs
(odc-stac, the quality band too), masks clouds per scene
(:func:`geochip.read.cube.mask_cube`), combines the scenes of a step (``time.composite``:
``first`` valid in ranking order, ``best`` least cloudy per pixel, ``median``;
:func:`geochip.read.cube.composite`), leaves an empty step as nodata, then gap-fills along
the steps (:func:`geochip.read.cube.gapfill`) and scales
(:func:`geochip.read.cube.scale_cube`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..select.periods import Period
from ..select.ranking import rank_by_cloud
from ..sources.items import item_time

if TYPE_CHECKING:
    import pystac

__all__ = [
    "StepSpec",
    "period_steps",
]


@dataclass(frozen=True)
class StepSpec:
    """One time step of a grid: a period and its scenes, best first."""

    name: str
    start: str
    end: str
    time: str
    """ISO datetime of the step: the mean of its scenes' datetimes, else the period's middle."""
    item_ids: tuple[str, ...]


def iso(when: dt.datetime) -> str:
    """A datetime as ISO 8601 in UTC."""
    return when.astimezone(dt.UTC).isoformat()


def step_time(items: Sequence[pystac.Item], fallback: dt.datetime) -> str:
    """The time of a step: the mean of its items' times, else ``fallback``."""
    times = [t for t in (item_time(i) for i in items) if t is not None]
    if not times:
        return iso(fallback)
    origin = times[0]
    mean = origin + sum((t - origin for t in times), dt.timedelta()) / len(times)
    return iso(mean)


def period_steps(items: Sequence[pystac.Item], periods: Sequence[Period]) -> tuple[StepSpec, ...]:
    """The items of each period, least cloudy first (ties: nearest the period's middle,
    then id); with no periods, one step holding every item.

    Example:
        >>> import datetime as dt, pystac
        >>> from geochip.select.periods import make_periods
        >>> def item(i, day, cloud):
        ...     when = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)
        ...     return pystac.Item(i, None, None, when, {"eo:cloud_cover": cloud})
        >>> items = [item("a", "2024-01-10", 30.0), item("b", "2024-01-20", 5.0),
        ...          item("c", "2024-03-02", 1.0)]
        >>> months = make_periods("monthly", "2024-01-01", "2024-03-31")
        >>> [(s.name, s.item_ids) for s in period_steps(items, months)]
        [('2024-01', ('b', 'a')), ('2024-02', ()), ('2024-03', ('c',))]
    """
    if not periods:
        ranked = rank_by_cloud(items)
        epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        return (StepSpec("all", "", "", step_time(ranked, epoch), tuple(i.id for i in ranked)),)
    steps = []
    for period in periods:
        inside = [i for i in items if (w := item_time(i)) is not None and period.contains(w)]
        ranked = rank_by_cloud(inside, period.middle)
        steps.append(
            StepSpec(
                period.name,
                iso(period.start),
                iso(period.end),
                step_time(ranked, period.middle),
                tuple(i.id for i in ranked),
            )
        )
    return tuple(steps)
