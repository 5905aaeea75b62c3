"""Grouped candidate search for :func:`~geochip.select.search.select_scenes`: labels near
each other share one search, and each candidate's cloud band is read once for all the labels
it covers.

Labels are grouped by the cell of a ``cell``-degree grid that holds their centroid
(:func:`group_labels`). One search per group over the whole time range, by ``intersects``
with the union of the group's footprints, serves every label and period of the group; a
group whose search matches more than the catalog's ``max_items`` is split in two and
searched again. Each label's candidates are the items of its group's answer that intersect
its footprint (the same client-side test as every catalog's, :func:`matches`), in the same
order, so choices are those of the one-search-per-label algorithm. Searches run
concurrently (``workers``, within the catalog's bound on open requests); then every item
that needs counting is read once (:func:`~geochip.select.cloud.cloud_covers`: one opening,
one window read per overview level) for all the labels it covers, also concurrently.

Example:
    >>> import shapely.geometry as sg
    >>> group_labels([sg.box(0.1, 0.1, 0.2, 0.2), sg.box(5, 5, 5.1, 5.1),
    ...               sg.box(0.5, 0.5, 0.6, 0.6)], cell=1.0)
    [[0, 2], [1]]
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pystac
import shapely
import shapely.geometry

from ..core.engine import run_tasks
from ..errors import InputError, SearchLimitError
from ..sources.catalog import Catalog
from ..sources.query import make_query, matches

__all__ = [
    "group_labels",
    "grouped_candidates",
]

log = logging.getLogger(__name__)

#: for each label (by position), its candidate items in search order
Found = list[list[pystac.Item]]


def group_labels(geometries: Sequence[Any], cell: float) -> list[list[int]]:
    """Positions of ``geometries`` grouped by the ``cell``-degree grid cell of their
    centroid, groups in order of their first member."""
    if not cell > 0 or math.isinf(cell):
        raise InputError(f"the grouping cell must be a positive number of degrees, got {cell}")
    groups: dict[tuple[int, int], list[int]] = {}
    for n, geom in enumerate(geometries):
        centre = shapely.geometry.shape(geom).centroid
        key = (math.floor(centre.x / cell), math.floor(centre.y / cell))
        groups.setdefault(key, []).append(n)
    return list(groups.values())


def grouped_candidates(
    cat: Catalog,
    geometries: Sequence[Any],
    *,
    cell: float,
    search: dict[str, Any],
    workers: int,
    on_search: Callable[[int], None] | None = None,
) -> tuple[Found, int]:
    """For each label (``geometries``, EPSG:4326) the items a search by its own footprint
    with the keywords ``search`` would return, in the same order; and the number of
    searches sent. ``search`` holds the :meth:`Catalog.search` keywords other than
    ``intersects``."""
    shapes = [shapely.geometry.shape(g) for g in geometries]
    found: Found = [[] for _ in shapes]
    count = 0
    lock = threading.Lock()

    def run(group: list[int]) -> list[tuple[int, list[pystac.Item]]]:
        nonlocal count
        union = shapely.union_all([shapes[n] for n in group])
        with lock:
            count += 1
        try:
            items = cat.search(intersects=union, allow_empty=True, **search)
        except SearchLimitError:
            if len(group) == 1:
                raise
            half = len(group) // 2
            log.debug("a group of %d labels matches too many items: split", len(group))
            return run(group[:half]) + run(group[half:])
        out = []
        for n in group:
            query = make_query(None, None, shapes[n], None, None, None)
            out.append((n, [item for item in items if matches(item, query)]))
        return out

    groups = group_labels(shapes, cell)
    log.info("%d labels in %d groups of %g degrees", len(shapes), len(groups), cell)
    for _, pairs in run_tasks(run, groups, workers=workers, on_done=on_search):
        for n, items in pairs:
            found[n] = items
    return found, count
