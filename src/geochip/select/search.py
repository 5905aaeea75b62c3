"""Label-driven scene selection (LandCoverNet): :func:`select_scenes`.

For each label footprint (STAC items with the label extension, or a vector file; see
:func:`~geochip.select.labels.load_labels`) one search over the whole time range by
``intersects`` (run concurrently for many labels, with the catalog's bound on open requests
and its retries), cloud cover from ``eo:cloud_cover`` or counted from a cloud band
(:mod:`geochip.select.cloud`, over the scene or over the label's footprint), then a choice
per period. The result, a :class:`Selection`, saves as a GeoParquet **selection table** plus
the chosen items beside it (``<name>.items.json``, an ItemCollection with unsigned absolute
hrefs) so the next stage loads them without searching again
(:func:`~geochip.select.table.load_selection`).

Periods are :mod:`geochip.select.periods`, the choice per period
:mod:`geochip.select.ranking`, the table :mod:`geochip.select.table`.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import pandas as pd
import pyarrow as pa
import pystac

from .._version import __version__
from ..core.engine import run_tasks
from ..core.security import redact
from ..errors import EmptyPeriodError, InputError, NoCloudInfoError
from ..sources.catalog import Catalog
from ..sources.items import item_time
from ..sources.open import open_catalog
from .cloud import CloudBand, CloudCover
from .cloud import cloud_cover as count_cloud
from .cloud import cloud_covers as count_clouds
from .groups import grouped_candidates
from .journal import Journal
from .labels import load_labels
from .periods import PeriodSpec, make_periods, periods_span
from .ranking import Candidate, PeriodChoice, choose, rank_key, thresholds
from .table import SELECTION_COLUMNS, Selection

__all__ = [
    "select_scenes",
]

log = logging.getLogger(__name__)


class _CloudCache:
    """Scene-scope cloud covers, shared by the label tasks (thread-safe): an item's cover is
    computed once, while other tasks asking for it meanwhile wait for that result."""

    def __init__(self) -> None:
        self.values: dict[tuple[str | None, str], CloudCover] = {}
        self.pending: dict[tuple[str | None, str], threading.Lock] = {}
        self.lock = threading.Lock()

    def get(self, item: pystac.Item, compute: Callable[[], CloudCover]) -> CloudCover:
        key = (item.collection_id, item.id)
        with self.lock:
            if key in self.values:
                return self.values[key]
            once = self.pending.setdefault(key, threading.Lock())
        with once:
            with self.lock:
                if key in self.values:
                    return self.values[key]
            value = compute()
            with self.lock:
                self.values[key] = value
                self.pending.pop(key, None)
                return value


def _key(item: pystac.Item) -> tuple[str | None, str]:
    return (item.collection_id, item.id)


def _grouped_covers(
    found: list[list[pystac.Item]],
    footprints: list[Any],
    in_periods: Callable[[pystac.Item], dt.datetime | None],
    cover_many: Callable[[pystac.Item, list[Any]], list[CloudCover] | None],
    out: dict[tuple[tuple[str | None, str], int], CloudCover],
    *,
    footprint: bool,
    workers: int,
    on_ready: Callable[[int], None],
    on_label: Callable[[int], None] | None,
) -> None:
    """Cloud cover of every (item, label) pair into ``out``, each item read once for all
    its labels (scene scope: once, shared by its labels); ``on_ready(label)`` is called
    when all of a label's items are done, ``on_label`` with the count of such labels."""
    users: dict[tuple[str | None, str], tuple[pystac.Item, list[int]]] = {}
    for n, items in enumerate(found):
        for item in items:
            if in_periods(item) is not None:
                users.setdefault(_key(item), (item, []))[1].append(n)
    pending = [0] * len(found)
    for _, labels in users.values():
        for n in labels:
            pending[n] += 1
    done = 0
    for n, count in enumerate(pending):
        if count == 0:
            on_ready(n)
            done += 1
    if on_label is not None and done:
        on_label(done)

    def one(entry: tuple[pystac.Item, list[int]]) -> list[CloudCover] | None:
        item, labels = entry
        return cover_many(item, [footprints[n] for n in labels] if footprint else [])

    entries = list(users.values())
    for position, values in run_tasks(one, entries, workers=workers):
        item, labels = entries[position]
        for m, n in enumerate(labels):
            if values is not None:
                out[(_key(item), n)] = values[m if footprint else 0]
            pending[n] -= 1
            if pending[n] == 0:
                on_ready(n)
                done += 1
                if on_label is not None:
                    on_label(done)


def select_scenes(
    catalog: Catalog | str | Path,
    labels: Any,
    *,
    start: str | dt.datetime | None = None,
    end: str | dt.datetime | None = None,
    periods: PeriodSpec = 1,
    max_cloud: float = 10.0,
    relax_step: float = 5.0,
    cloud_limit: float = 50.0,
    k: int = 1,
    collections: Sequence[str] | str | None = None,
    cloud_band: CloudBand | Literal["auto"] | None = "auto",
    cloud_over: Literal["scene", "footprint"] = "scene",
    missing_cloud: Literal["raise", "skip"] = "raise",
    strict: bool = False,
    workers: int = 4,
    id_column: str | None = None,
    min_pixels: int = 4096,
    on_label: Callable[[int], None] | None = None,
    group_cell: float | None = None,
    checkpoint: str | Path | None = None,
) -> Selection:
    """Choose the least cloudy scene(s) per period for every label; see the module doc.

    Args:
        catalog: an opened catalog or anything :func:`~geochip.sources.open.open_catalog`
            opens (its signer, href policy, retries and request bound are used).
        labels: label footprints (see :func:`load_labels`).
        start: the periods' start (see :func:`make_periods`).
        end: the periods' end.
        periods: the periods (a number, ``"monthly"``, ``"seasonal"`` or explicit pairs).
        max_cloud: the threshold ladder's first step (see :func:`thresholds`).
        relax_step: the ladder's step.
        cloud_limit: the ladder's last step.
        k: scenes kept per period, best first.
        collections: collections to search.
        cloud_band: where to count clouds when needed (``"auto"``: recognised from asset
            names, see :func:`geochip.select.cloud.detect_cloud_band`; None: never count).
        cloud_over: ``"scene"`` uses ``eo:cloud_cover`` when present and counts the whole
            scene otherwise; ``"footprint"`` counts every candidate over the label.
        missing_cloud: ``"raise"`` stops at a scene without any cloud information,
            ``"skip"`` leaves it out (listed in ``Selection.skipped``).
        strict: raise :class:`~geochip.errors.EmptyPeriodError` for an empty period
            instead of recording it.
        workers: labels processed at once (HTTP requests stay within the catalog's
            ``max_requests``).
        on_label: called with the number of labels done (progress).
        group_cell: group labels by the cell of this many degrees that holds their
            centroid: one search per group, each candidate's cloud band read once for all
            the labels it covers (:mod:`geochip.select.groups`); the same choices as one
            search per label (None, the default).
        checkpoint: a journal file (:mod:`geochip.select.journal`): each label's choices
            are appended as they are made, and a selection run again with the same
            settings and journal asks only for the labels that are missing. The caller
            removes it once the selection is saved.
    """
    if cloud_over not in {"scene", "footprint"}:
        raise InputError(f"cloud_over must be 'scene' or 'footprint', got {cloud_over!r}")
    if missing_cloud not in {"raise", "skip"}:
        raise InputError(f"missing_cloud must be 'raise' or 'skip', got {missing_cloud!r}")
    cat = catalog if isinstance(catalog, Catalog) else open_catalog(catalog)
    period_list = make_periods(periods, start, end)
    ladder = thresholds(max_cloud, relax_step, cloud_limit)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError(f"k (scenes per period) must be a positive integer, got {k!r}")
    frame = load_labels(labels, id_column=id_column)
    search_range = periods_span(period_list)
    cache = _CloudCache()
    skipped: dict[str, str] = {}
    skipped_lock = threading.Lock()

    config = {
        "geochip_version": __version__,
        "catalog": redact(cat.href),
        "catalog_kind": cat.kind,
        "collections": [collections] if isinstance(collections, str) else list(collections or []),
        "periods": [
            {
                "index": p.index,
                "name": p.name,
                "start": p.start.isoformat(),
                "end": p.end.isoformat(),
            }
            for p in period_list
        ],
        "max_cloud": max_cloud,
        "relax_step": relax_step,
        "cloud_limit": cloud_limit,
        "thresholds": ladder,
        "k": k,
        "cloud_band": cloud_band
        if cloud_band is None or isinstance(cloud_band, str)
        else cloud_band.describe(),
        "cloud_over": cloud_over,
        "missing_cloud": missing_cloud,
        "strict": strict,
    }
    journal = None
    done: dict[str, list[PeriodChoice]] = {}
    if checkpoint is not None:
        settings = {**config, "min_pixels": min_pixels}
        journal = Journal(checkpoint, settings)
        done, earlier = journal.load(period_list)
        skipped.update(earlier)

    def skip(item: pystac.Item, err: Exception) -> None:
        with skipped_lock:
            new = item.id not in skipped
            skipped[item.id] = str(err)
        if new and journal is not None:
            journal.record_skipped(item.id, str(err))
        log.debug("skipped %s: %s", item.id, err)

    def cover(item: pystac.Item, footprint: Any) -> CloudCover | None:
        def compute(fp: Any = None) -> CloudCover:
            return count_cloud(
                item,
                band=cloud_band,
                footprint=fp,
                prefer_property=True,
                signer=cat.signer,
                href_policy=cat.href_policy,
                min_pixels=min_pixels,
            )

        try:
            if cloud_over == "footprint":
                return compute(footprint)
            return cache.get(item, compute)
        except NoCloudInfoError as err:
            if missing_cloud == "raise":
                raise
            skip(item, err)
            return None

    def cover_many(item: pystac.Item, footprints: list[Any]) -> list[CloudCover] | None:
        """Over each footprint, or the scene's (one value) without footprints."""
        if not footprints:
            value = cover(item, None)
            return None if value is None else [value]
        try:
            return count_clouds(
                item,
                footprints,
                band=cloud_band,
                signer=cat.signer,
                href_policy=cat.href_policy,
                min_pixels=min_pixels,
            )
        except NoCloudInfoError as err:
            if missing_cloud == "raise":
                raise
            skip(item, err)
            return None

    def decide(label_id: str, candidates: list[Candidate]) -> list[PeriodChoice]:
        choices = []
        for period in period_list:
            choice = choose(
                candidates,
                period,
                max_cloud=max_cloud,
                relax_step=relax_step,
                cloud_limit=cloud_limit,
                k=k,
            )
            if choice.empty and strict:
                in_period = sorted(
                    (c for c in candidates if period.contains(c.when)), key=rank_key(period)
                )
                best = (
                    f"the least cloudy of its {len(in_period)} scenes is {in_period[0].item.id} "
                    f"at {in_period[0].cloud.value:.2f}%"
                    if in_period
                    else f"the search (eo:cloud_cover <= {cloud_limit}% or unknown) returned "
                    "no scene in it"
                )
                raise EmptyPeriodError(
                    f"label {label_id!r}, period {period.index} ({period.name}, "
                    f"{period.start.isoformat()} to {period.end.isoformat()}): no scene with "
                    f"cloud cover <= {cloud_limit}% after relaxing {max_cloud} -> {cloud_limit} "
                    f"in {len(ladder) - 1} steps; {best}. Raise cloud_limit, widen the "
                    "period, or drop strict to record the period as empty"
                )
            choices.append(choice)
        return choices

    def in_periods(item: pystac.Item) -> dt.datetime | None:
        when = item_time(item)
        if when is None or not any(p.contains(when) for p in period_list):
            return None
        return when

    search_keywords: dict[str, Any] = {
        "datetime": search_range,
        "collections": collections,
        "max_cloud": None if cloud_over == "footprint" else cloud_limit,
        "keep_missing_cloud": True,
    }

    def one_label(row: tuple[str, Any]) -> list[PeriodChoice]:
        label_id, geom = row
        found = cat.search(intersects=geom, allow_empty=True, **search_keywords)
        candidates = []
        for item in found:
            when = in_periods(item)
            if when is None:
                continue
            value = cover(item, geom)
            if value is not None:
                candidates.append(Candidate(item, when, value))
        if not found:
            log.info(
                "label %s: the search found no scene in %s..%s",
                label_id,
                search_range[0].isoformat(),
                search_range[1].isoformat(),
            )
        return decide(label_id, candidates)

    rows = list(zip(frame["label_id"], frame.geometry, strict=True))
    results: list[list[PeriodChoice]] = [done.get(label_id, []) for label_id, _ in rows]
    todo = [n for n, (label_id, _) in enumerate(rows) if label_id not in done]
    if done:
        log.info("resuming: %d of %d labels done before", len(rows) - len(todo), len(rows))
        if on_label is not None:
            on_label(len(rows) - len(todo))

    def progress(n: int) -> None:
        if on_label is not None:
            on_label(len(rows) - len(todo) + n)

    def finish(n: int, choices: list[PeriodChoice]) -> None:
        results[n] = choices
        if journal is not None:
            journal.record(rows[n][0], choices)

    if group_cell is None:
        for position, choices in run_tasks(
            one_label, [rows[n] for n in todo], workers=workers, on_done=progress
        ):
            finish(todo[position], choices)
    elif todo:
        found, _ = grouped_candidates(
            cat,
            [rows[n][1] for n in todo],
            cell=group_cell,
            search=search_keywords,
            workers=workers,
        )
        covers: dict[tuple[tuple[str | None, str], int], CloudCover] = {}

        def ready(m: int) -> None:
            candidates = [
                Candidate(item, when, value)
                for item in found[m]
                if (when := in_periods(item)) is not None
                and (value := covers.get((_key(item), m))) is not None
            ]
            finish(todo[m], decide(rows[todo[m]][0], candidates))

        _grouped_covers(
            found,
            [rows[n][1] for n in todo],
            in_periods,
            cover_many,
            covers,
            footprint=cloud_over == "footprint",
            workers=workers,
            on_ready=ready,
            on_label=progress,
        )

    records: dict[str, list[Any]] = {name: [] for name in SELECTION_COLUMNS}
    chosen_items: dict[str, pystac.Item] = {}
    for (label_id, geom), choices in zip(rows, results, strict=True):
        for c in choices:
            picked = c.chosen
            for cand in picked:
                chosen_items.setdefault(cand.item.id, cand.item)
            records["label_id"].append(label_id)
            records["period"].append(c.period.index)
            records["period_name"].append(c.period.name)
            records["period_start"].append(c.period.start)
            records["period_end"].append(c.period.end)
            records["item_ids"].append([x.item.id for x in picked])
            records["collections"].append([x.item.collection_id for x in picked])
            records["item_datetimes"].append([x.when for x in picked])
            records["cloud_cover"].append([x.cloud.value for x in picked])
            records["cloud_method"].append([x.cloud.method for x in picked])
            records["cloud_scope"].append([x.cloud.scope for x in picked])
            records["cloud_asset"].append([x.cloud.asset for x in picked])
            records["cloud_decimation"].append([x.cloud.decimation for x in picked])
            records["threshold"].append(c.threshold)
            records["relax_steps"].append(c.relax_steps)
            records["relaxed"].append(c.relaxed)
            records["empty"].append(c.empty)
            records["n_candidates"].append(c.candidates)
            records["geometry"].append(geom)
    ts = pa.timestamp("us", tz="UTC")
    types: Mapping[str, Any] = {
        "label_id": pd.ArrowDtype(pa.string()),
        "period": "int32",
        "period_name": pd.ArrowDtype(pa.string()),
        "item_ids": pd.ArrowDtype(pa.list_(pa.string())),
        "collections": pd.ArrowDtype(pa.list_(pa.string())),
        "item_datetimes": pd.ArrowDtype(pa.list_(ts)),
        "cloud_cover": pd.ArrowDtype(pa.list_(pa.float64())),
        "cloud_method": pd.ArrowDtype(pa.list_(pa.string())),
        "cloud_scope": pd.ArrowDtype(pa.list_(pa.string())),
        "cloud_asset": pd.ArrowDtype(pa.list_(pa.string())),
        "cloud_decimation": pd.ArrowDtype(pa.list_(pa.int32())),
        "threshold": "float64",
        "relax_steps": "int32",
        "relaxed": "bool",
        "empty": "bool",
        "n_candidates": "int32",
    }
    data: dict[str, Any] = {}
    for name, values in records.items():
        if name == "geometry":
            continue
        if name in {"period_start", "period_end"}:
            data[name] = pd.Series(pd.to_datetime(values, utc=True), dtype="datetime64[us, UTC]")
        else:
            data[name] = pd.Series(values, dtype=types[name])
    table = gpd.GeoDataFrame(data, geometry=records["geometry"], crs="EPSG:4326")

    selection = Selection(table, chosen_items, config, dict(sorted(skipped.items())))
    log.info("selection: %s", selection)
    return selection
