"""Choosing scenes: rank candidates by cloud cover, deterministically.

Example:
    >>> import pystac, datetime as dt
    >>> t = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    >>> items = [pystac.Item(i, None, None, t, {"eo:cloud_cover": c}) for i, c in
    ...          [("b", 5.0), ("a", 5.0), ("c", 1.0), ("d", None)]]
    >>> [i.id for i in rank_by_cloud(items)]
    ['c', 'a', 'b', 'd']
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence

import pystac

from .errors import InputError, NoCloudInfoError

__all__ = ["cloud_cover", "least_cloudy", "rank_by_cloud"]


def cloud_cover(item: pystac.Item) -> float | None:
    """The item's ``eo:cloud_cover`` (0..100), or None when it has none."""
    value = item.properties.get("eo:cloud_cover")
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def rank_by_cloud(
    items: Iterable[pystac.Item], middle: dt.datetime | None = None
) -> list[pystac.Item]:
    """Items sorted least cloudy first; ties go to the one nearest ``middle`` (when given),
    then to the smaller id. Items without cloud cover come last."""

    def key(item: pystac.Item) -> tuple[int, float, float, str]:
        cover = cloud_cover(item)
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
    if cloud_cover(best) is None:
        raise NoCloudInfoError(
            f"none of the items {[i.id for i in items][:10]} has eo:cloud_cover; compute it "
            "from a cloud or QA band first"
        )
    return best
