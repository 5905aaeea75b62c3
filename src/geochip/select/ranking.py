"""Ranking scenes by cloud cover, and choosing the best of a period with a bounded
relaxation of the cloud threshold.

**Ranking** (:func:`choose`): in a period, candidates are ranked by cloud cover; ties go to
the scene nearest the period's middle, then to the smaller item id. The best ``k`` are kept.
When fewer than ``k`` are at or under ``max_cloud``, the threshold is raised by
``relax_step`` up to ``cloud_limit`` (the ladder :func:`thresholds`, never longer than ``1 +
ceil((cloud_limit - max_cloud) / relax_step)`` steps) and the threshold finally used is
recorded. A period with nothing under ``cloud_limit`` is recorded as empty, or raises
:class:`~geochip.errors.EmptyPeriodError` with ``strict=True``
(:func:`geochip.select.search.select_scenes`).

Example:
    >>> thresholds(10, 15, 50)
    [10.0, 25.0, 40.0, 50.0]
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import pystac

from ..errors import InputError, NoCloudInfoError
from ..sources.items import eo_cloud_cover
from .cloud import CloudCover
from .periods import Period

__all__ = [
    "Candidate",
    "PeriodChoice",
    "choose",
    "least_cloudy",
    "rank_by_cloud",
    "thresholds",
]


def rank_by_cloud(
    items: Iterable[pystac.Item], middle: dt.datetime | None = None
) -> list[pystac.Item]:
    """Items sorted least cloudy first; ties go to the one nearest ``middle`` (when given),
    then to the smaller id. Items without cloud cover come last.

    >>> t = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    >>> items = [pystac.Item(i, None, None, t, {"eo:cloud_cover": c}) for i, c in
    ...          [("b", 5.0), ("a", 5.0), ("c", 1.0), ("d", None)]]
    >>> [i.id for i in rank_by_cloud(items)]
    ['c', 'a', 'b', 'd']
    """

    def key(item: pystac.Item) -> tuple[int, float, float, str]:
        cover = eo_cloud_cover(item)
        distance = 0.0
        if middle is not None and item.datetime is not None:
            distance = abs((item.datetime - middle).total_seconds())
        return (cover is None, cover if cover is not None else math.inf, distance, item.id)

    return sorted(items, key=key)


def least_cloudy(items: Sequence[pystac.Item]) -> pystac.Item:
    """The least cloudy item (see :func:`rank_by_cloud`)."""
    if not items:
        raise InputError("no items to choose from")
    best = rank_by_cloud(items)[0]
    if eo_cloud_cover(best) is None:
        raise NoCloudInfoError(
            f"none of the items {[i.id for i in items][:10]} has eo:cloud_cover; compute it "
            "from a cloud or QA band first (geochip.select.cloud.cloud_cover)"
        )
    return best


def thresholds(max_cloud: float, relax_step: float, cloud_limit: float) -> list[float]:
    """The thresholds tried in order: ``max_cloud``, raised by ``relax_step`` while under
    ``cloud_limit``, ending at ``cloud_limit``. Always finite.

    >>> thresholds(10, 5, 10)
    [10.0]
    """
    for name, value in (("max_cloud", max_cloud), ("cloud_limit", cloud_limit)):
        if not 0 <= value <= 100:
            raise InputError(f"{name} is a percentage (0..100), got {value}")
    if cloud_limit < max_cloud:
        raise InputError(
            f"cloud_limit ({cloud_limit}) is below max_cloud ({max_cloud}); the limit is "
            "the highest threshold relaxation may reach"
        )
    if cloud_limit == max_cloud:
        return [float(max_cloud)]
    if not relax_step > 0 or math.isnan(relax_step):
        raise InputError(
            f"relax_step must be positive to relax from {max_cloud} to {cloud_limit}, got "
            f"{relax_step}; set cloud_limit=max_cloud to never relax"
        )
    steps = math.ceil(round((cloud_limit - max_cloud) / relax_step, 9))
    ladder = [float(max_cloud)] + [round(max_cloud + i * relax_step, 9) for i in range(1, steps)]
    return [float(v) for v in ladder if v < cloud_limit] + [float(cloud_limit)]


@dataclass(frozen=True)
class Candidate:
    """A scene considered for a period: the item, when it was taken, its cloud cover."""

    item: pystac.Item
    when: dt.datetime
    cloud: CloudCover


@dataclass(frozen=True)
class PeriodChoice:
    """What :func:`choose` decided for one period."""

    period: Period
    chosen: tuple[Candidate, ...]
    threshold: float
    relax_steps: int
    empty: bool
    candidates: int

    @property
    def relaxed(self) -> bool:
        """Whether the threshold had to be raised."""
        return self.relax_steps > 0


def rank_key(period: Period) -> Callable[[Candidate], tuple[float, float, str]]:
    """The sort key of candidates in ``period``: cloud cover, distance to its middle, id."""
    middle = period.middle

    def key(c: Candidate) -> tuple[float, float, str]:
        value = c.cloud.value
        return (
            math.inf if math.isnan(value) else value,
            abs((c.when - middle).total_seconds()),
            c.item.id,
        )

    return key


def choose(
    candidates: Iterable[Candidate],
    period: Period,
    *,
    max_cloud: float = 10.0,
    relax_step: float = 5.0,
    cloud_limit: float = 50.0,
    k: int = 1,
) -> PeriodChoice:
    """The best ``k`` candidates of ``period`` (see the module doc for ranking and
    relaxation). Candidates outside the period are ignored; a NaN cloud cover never
    passes a threshold."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError(f"k (scenes per period) must be a positive integer, got {k!r}")
    ladder = thresholds(max_cloud, relax_step, cloud_limit)
    ranked = sorted((c for c in candidates if period.contains(c.when)), key=rank_key(period))
    under: list[Candidate] = []
    for step, threshold in enumerate(ladder):
        under = [c for c in ranked if c.cloud.value <= threshold]
        if len(under) >= k:
            return PeriodChoice(period, tuple(under[:k]), threshold, step, False, len(ranked))
    if under:  # fewer than k at the limit: keep what there is
        return PeriodChoice(period, tuple(under), ladder[-1], len(ladder) - 1, False, len(ranked))
    return PeriodChoice(period, (), ladder[-1], len(ladder) - 1, True, len(ranked))
