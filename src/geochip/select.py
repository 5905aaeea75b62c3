"""Choosing scenes: periods, cloud ranking, bounded threshold relaxation, and label-driven
selection recorded in a selection table.

**Periods** (:class:`Period`) are half-open ``[start, end)`` UTC intervals:
:func:`equal_periods` splits ``[start, end]`` into N equal parts (to the microsecond),
:func:`monthly_periods` and :func:`seasonal_periods` (meteorological seasons DJF, MAM, JJA,
SON) cut at calendar boundaries, and :func:`make_periods` also takes explicit
``(start, end)`` pairs. A scene belongs to the period that holds its ``datetime`` (the
middle of ``start_datetime``/``end_datetime`` when it has a range instead).

**Ranking** (:func:`choose`): in a period, candidates are ranked by cloud cover; ties go
to the scene nearest the period's middle, then to the smaller item id. The best ``k`` are
kept. When fewer than ``k`` are at or under ``max_cloud``, the threshold is raised by
``relax_step`` up to ``cloud_limit`` (the ladder :func:`thresholds`, never longer than
``1 + ceil((cloud_limit - max_cloud) / relax_step)`` steps) and the threshold finally used
is recorded. A period with nothing under ``cloud_limit`` is recorded as empty, or raises
:class:`~geochip.errors.EmptyPeriodError` with ``strict=True``.

**Label-driven selection** (:func:`select_scenes`): for each label footprint (STAC items
with the label extension, or a vector file; see :func:`load_labels`) one search over the
whole time range by ``intersects`` (run concurrently for many labels, with the catalog's
bound on open requests and its retries), cloud cover from ``eo:cloud_cover`` or counted
from a cloud band (:mod:`geochip.cloud`, over the scene or over the label's footprint), then
a choice per period. The result, a :class:`Selection`, saves as a GeoParquet **selection
table** plus the chosen items beside it (``<name>.items.json``, an ItemCollection with
unsigned absolute hrefs) so the next stage loads them without searching again
(:func:`load_selection`).

Selection table: one row per (label, period), sorted by label order then period.

==================  ===========================  ==============================================
column              type                         meaning
==================  ===========================  ==============================================
label_id            string                       the label's id
period              int32                        period index, 0-based, in time order
period_name         string                       ``p<i>``, ``YYYY-MM`` or ``YYYY-DJF`` (the
                                                 year of the season's January)...
period_start        timestamp[us, UTC]           inclusive
period_end          timestamp[us, UTC]           exclusive
item_ids            list<string>                 chosen items, best first (0..k)
collections         list<string>                 their collections
item_datetimes      list<timestamp[us, UTC]>     their datetimes
cloud_cover         list<double>                 their cloud cover, percent
cloud_method        list<string>                 ``property`` (eo:cloud_cover), ``landsat_qa``,
                                                 ``scl`` or ``probability``
cloud_scope         list<string>                 ``scene`` or ``footprint``
cloud_asset         list<string | null>          asset counted (null for ``property``)
cloud_decimation    list<int32 | null>           overview factor read, 1 = full resolution
threshold           double                       cloud threshold finally used (``cloud_limit``
                                                 for an empty period)
relax_steps         int32                        times the threshold was raised (0: none)
relaxed             bool                         ``relax_steps > 0``
empty               bool                         no scene up to ``cloud_limit``
n_candidates        int32                        scenes of the period the search returned
geometry            geometry (EPSG:4326)         the label's footprint
==================  ===========================  ==============================================

The Parquet file's metadata key ``geochip:selection`` holds the configuration (JSON).

Example:
    >>> [(p.name, p.start.date().isoformat(), p.end.date().isoformat())
    ...  for p in make_periods(2, "2024-01-01", "2024-12-31")]
    [('p0', '2024-01-01', '2024-07-02'), ('p1', '2024-07-02', '2025-01-01')]
    >>> thresholds(10, 15, 50)
    [10.0, 25.0, 40.0, 50.0]
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pystac

from .errors import (
    EmptyPeriodError,
    InputError,
    NoCloudInfoError,
)

if TYPE_CHECKING:
    import geopandas as gpd

    from .cloud import CloudBand, CloudCover
    from .sources.stac import Catalog

__all__ = [
    "SELECTION_COLUMNS",
    "Candidate",
    "Period",
    "PeriodChoice",
    "Selection",
    "choose",
    "cloud_cover",
    "equal_periods",
    "least_cloudy",
    "load_labels",
    "load_selection",
    "make_periods",
    "monthly_periods",
    "rank_by_cloud",
    "seasonal_periods",
    "select_scenes",
    "thresholds",
]

log = logging.getLogger(__name__)

_US = dt.timedelta(microseconds=1)

#: The selection table's columns and what they hold (see the module doc).
SELECTION_COLUMNS: dict[str, str] = {
    "label_id": "string: the label's id",
    "period": "int32: period index, 0-based, in time order",
    "period_name": "string: p<i>, YYYY-MM (monthly) or YYYY-DJF/MAM/JJA/SON (seasonal)",
    "period_start": "timestamp[us, UTC]: inclusive",
    "period_end": "timestamp[us, UTC]: exclusive",
    "item_ids": "list<string>: chosen items, best first (0..k)",
    "collections": "list<string>: their collections",
    "item_datetimes": "list<timestamp[us, UTC]>: their datetimes",
    "cloud_cover": "list<double>: their cloud cover in percent",
    "cloud_method": "list<string>: property | landsat_qa | scl | probability",
    "cloud_scope": "list<string>: scene | footprint",
    "cloud_asset": "list<string|null>: asset counted (null for property)",
    "cloud_decimation": "list<int32|null>: overview factor read (1 = full resolution)",
    "threshold": "double: cloud threshold finally used (cloud_limit when empty)",
    "relax_steps": "int32: times the threshold was raised",
    "relaxed": "bool: relax_steps > 0",
    "empty": "bool: no scene up to cloud_limit",
    "n_candidates": "int32: scenes of the period returned by the search",
    "geometry": "geometry: the label's footprint, EPSG:4326",
}


# --------------------------------------------------------------------------------------
# Simple ranking (used by the demo)


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
    then to the smaller id. Items without cloud cover come last.

    >>> t = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    >>> items = [pystac.Item(i, None, None, t, {"eo:cloud_cover": c}) for i, c in
    ...          [("b", 5.0), ("a", 5.0), ("c", 1.0), ("d", None)]]
    >>> [i.id for i in rank_by_cloud(items)]
    ['c', 'a', 'b', 'd']
    """

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
            "from a cloud or QA band first (geochip.cloud.cloud_cover)"
        )
    return best


# --------------------------------------------------------------------------------------
# Periods


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
    from .sources.stac import _parse_instant

    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, dt.date):
        value = value.isoformat()
    parsed = _parse_instant(str(value), end)
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
    explicit ``(start, end)`` pairs (end dates inclusive; in time order, not overlapping).

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
    if start is not None or end is not None:
        log.debug("explicit periods given: start/end are ignored")
    return out


# --------------------------------------------------------------------------------------
# Choosing within a period


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


def _rank_key(period: Period) -> Callable[[Candidate], tuple[float, float, str]]:
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
    ranked = sorted((c for c in candidates if period.contains(c.when)), key=_rank_key(period))
    under: list[Candidate] = []
    for step, threshold in enumerate(ladder):
        under = [c for c in ranked if c.cloud.value <= threshold]
        if len(under) >= k:
            return PeriodChoice(period, tuple(under[:k]), threshold, step, False, len(ranked))
    if under:  # fewer than k at the limit: keep what there is
        return PeriodChoice(period, tuple(under), ladder[-1], len(ladder) - 1, False, len(ranked))
    return PeriodChoice(period, (), ladder[-1], len(ladder) - 1, True, len(ranked))


# --------------------------------------------------------------------------------------
# Labels


def _is_label_item(item: pystac.Item) -> bool:
    return any("/label/" in (uri or "") for uri in item.stac_extensions) or any(
        key.startswith("label:") for key in item.properties
    )


def _labels_from_items(items: Sequence[pystac.Item], source: str) -> gpd.GeoDataFrame:
    import geopandas as gpd
    import shapely.geometry

    labels = [i for i in items if _is_label_item(i)]
    if not labels:
        raise InputError(
            f"{source} holds {len(items)} STAC items but none with the label extension "
            "(label:* properties); give a label collection, or a vector file of footprints"
        )
    ids = [i.id for i in labels]
    dupes = sorted({x for x in ids if ids.count(x) > 1})
    if dupes:
        raise InputError(f"label ids must be unique; {source} repeats {dupes[:10]}")
    missing = [i.id for i in labels if i.geometry is None]
    if missing:
        raise InputError(f"label items without geometry in {source}: {missing[:10]}")
    return gpd.GeoDataFrame(
        {"label_id": ids},
        geometry=[shapely.geometry.shape(i.geometry) for i in labels],
        crs="EPSG:4326",
    )


def load_labels(
    source: Any,
    *,
    id_column: str | None = None,
) -> gpd.GeoDataFrame:
    """Label footprints as a GeoDataFrame with ``label_id`` and ``geometry`` (EPSG:4326).

    ``source``: a GeoDataFrame; a vector file (GeoJSON, GeoPackage, GeoParquet,
    Shapefile...); a STAC label collection - a catalog/collection path or URL, an
    ItemCollection, a :class:`~geochip.sources.stac.Catalog` or a list of items - of which
    the items with the label extension are taken. Ids come from ``id_column``, else a
    column ``id`` or ``label_id``, else the row number. Ids must be unique and geometries
    non-empty and valid.
    """
    import geopandas as gpd

    from .sources.stac import Catalog, open_catalog

    name = str(source) if isinstance(source, str | Path) else type(source).__name__
    if isinstance(source, Catalog):
        return _labels_from_items(list(source.items()), repr(source))
    if isinstance(source, pystac.Catalog | pystac.ItemCollection) or (
        isinstance(source, Sequence)
        and not isinstance(source, str)
        and source
        and isinstance(source[0], pystac.Item)
    ):
        return _labels_from_items(list(open_catalog(source).items()), name)
    if isinstance(source, gpd.GeoDataFrame):
        frame = source.copy()
    else:
        text = str(source)
        is_stac = text.startswith(("http://", "https://"))
        if not is_stac and Path(text).suffix.lower() in {".json", ".geojson"}:
            try:
                head = json.loads(Path(text).read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise InputError(f"cannot read labels from {text}: {err}") from None
            kind = head.get("type") if isinstance(head, dict) else None
            features = head.get("features", []) if isinstance(head, dict) else []
            is_stac = kind in {"Catalog", "Collection"} or (
                kind == "FeatureCollection"
                and bool(features)
                and all("stac_version" in f for f in features)
            )
        if is_stac:
            return _labels_from_items(list(open_catalog(text).items()), text)
        if not Path(text).exists():
            raise InputError(f"no label file at {text}")
        frame = (
            gpd.read_parquet(text)
            if Path(text).suffix.lower() == ".parquet"
            else gpd.read_file(text)
        )
    if frame.crs is None:
        raise InputError(
            f"the labels {name} have no CRS; set one (GeoDataFrame.set_crs) or fix the file"
        )
    if id_column is not None:
        if id_column not in frame.columns:
            raise InputError(
                f"the labels {name} have no column {id_column!r}; columns: "
                f"{', '.join(map(str, frame.columns))}"
            )
        ids = frame[id_column].astype(str)
    elif "label_id" in frame.columns:
        ids = frame["label_id"].astype(str)
    elif "id" in frame.columns:
        ids = frame["id"].astype(str)
    else:
        ids = [str(n) for n in range(len(frame))]
    frame = gpd.GeoDataFrame(
        {"label_id": list(ids)}, geometry=list(frame.geometry), crs=frame.crs
    ).to_crs("EPSG:4326")
    dupes = sorted(set(frame["label_id"][frame["label_id"].duplicated()]))
    if dupes:
        raise InputError(f"label ids must be unique; {name} repeats {dupes[:10]}")
    bad = frame.geometry.isna() | frame.geometry.is_empty
    if bad.any():
        raise InputError(f"labels {list(frame['label_id'][bad])[:10]} of {name} have no geometry")
    invalid = ~frame.geometry.is_valid
    if invalid.any():
        raise InputError(
            f"labels {list(frame['label_id'][invalid])[:10]} of {name} have invalid geometries; "
            "fix them (shapely.make_valid)"
        )
    if frame.empty:
        raise InputError(f"no labels in {name}")
    return frame


# --------------------------------------------------------------------------------------
# Label-driven selection


@dataclass
class Selection:
    """A selection table and the chosen items (see the module doc for the columns)."""

    table: gpd.GeoDataFrame
    items: dict[str, pystac.Item]
    config: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        s = self.summary()
        return (
            f"Selection({s['labels']} labels x {s['periods_per_label']} periods: "
            f"{s['filled']} filled, {s['relaxed']} relaxed, {s['empty']} empty)"
        )

    def summary(self) -> dict[str, int]:
        """Counts: labels, periods (rows), filled (without relaxing), relaxed, empty,
        chosen items, items skipped for lack of cloud information."""
        t = self.table
        n_labels = int(t["label_id"].nunique()) if len(t) else 0
        return {
            "labels": n_labels,
            "periods_per_label": int(len(t) // n_labels) if n_labels else 0,
            "periods": len(t),
            "filled": int((~t["empty"] & ~t["relaxed"]).sum()),
            "relaxed": int((~t["empty"] & t["relaxed"]).sum()),
            "empty": int(t["empty"].sum()),
            "items": len(self.items),
            "skipped_no_cloud": len(self.skipped),
        }

    def items_for(self, label_id: str, period: int) -> list[pystac.Item]:
        """The chosen items of one label and period, best first."""
        rows = self.table[(self.table["label_id"] == label_id) & (self.table["period"] == period)]
        if rows.empty:
            raise InputError(f"no row for label {label_id!r}, period {period}")
        return [self.items[i] for i in rows.iloc[0]["item_ids"]]

    def save(self, path: str | Path) -> Path:
        """Write the table (GeoParquet) and the items (``<stem>.items.json``) atomically;
        return the table's path."""
        return _save_selection(self, Path(path))


def _items_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}.items.json")


def _save_selection(selection: Selection, path: Path) -> Path:
    import pyarrow.parquet as pq

    from .security import redact, unsign_href

    path.parent.mkdir(parents=True, exist_ok=True)
    items_path = _items_path(path)
    features = []
    for item_id in sorted(selection.items):
        item = selection.items[item_id].clone()
        for asset in item.assets.values():
            href = asset.get_absolute_href() or asset.href
            asset.href = unsign_href(href)
        d = item.to_dict(include_self_link=False, transform_hrefs=False)
        d["links"] = [lk for lk in d.get("links", []) if lk.get("rel") not in {"root", "parent"}]
        features.append(d)
    collection = {
        "type": "FeatureCollection",
        "features": features,
        "geochip:selection": selection.config,
    }
    text = json.dumps(collection, indent=1, default=str)
    if redact(text) != text:  # a server put a secret in an item: never write it
        text = redact(text)
    tmp_items = items_path.with_name(items_path.name + ".part")
    tmp_items.write_text(text)
    os.replace(tmp_items, items_path)

    tmp = path.with_name(path.name + ".part")
    selection.table.to_parquet(tmp, index=False)
    table = pq.read_table(tmp)
    meta = dict(table.schema.metadata or {})
    meta.pop(b"pandas", None)  # ArrowDtype names that pandas cannot read back
    meta[b"geochip:selection"] = json.dumps(
        {**selection.config, "items_file": items_path.name, "skipped_no_cloud": selection.skipped},
        default=str,
    ).encode()
    tmp2 = path.with_name(path.name + ".part2")
    pq.write_table(table.replace_schema_metadata(meta), tmp2)
    tmp.unlink()
    os.replace(tmp2, path)
    return path


def load_selection(path: str | Path) -> Selection:
    """Read a selection saved by :meth:`Selection.save`: the table and its items."""
    import geopandas as gpd
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise InputError(f"no selection table at {path}")
    table = gpd.read_parquet(path)
    meta = pq.read_schema(path).metadata or {}
    config = json.loads(meta.get(b"geochip:selection", b"{}"))
    items_path = path.with_name(config.get("items_file") or _items_path(path).name)
    if not items_path.exists():
        raise InputError(f"the selection {path} has no items file {items_path.name} beside it")
    data = json.loads(items_path.read_text())
    items = {f["id"]: pystac.Item.from_dict(f) for f in data.get("features", [])}
    for column in table.columns:
        if column.startswith(("item_", "cloud_")) or column == "collections":
            table[column] = table[column].map(lambda v: list(v) if v is not None else [])
    skipped = config.pop("skipped_no_cloud", {}) if isinstance(config, dict) else {}
    return Selection(table, items, config, dict(skipped))


def _item_when(item: pystac.Item) -> dt.datetime | None:
    if item.datetime is not None:
        return item.datetime
    from .sources.stac import _item_time_range

    start, end = _item_time_range(item)
    if start and end:
        return start + (end - start) / 2
    return start or end


class _CloudCache:
    """Scene-scope cloud covers, shared by the label tasks (thread-safe)."""

    def __init__(self) -> None:
        self.values: dict[tuple[str | None, str], CloudCover] = {}
        self.lock = threading.Lock()

    def get(self, item: pystac.Item, compute: Callable[[], CloudCover]) -> CloudCover:
        key = (item.collection_id, item.id)
        with self.lock:
            if key in self.values:
                return self.values[key]
        value = compute()
        with self.lock:
            return self.values.setdefault(key, value)


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
) -> Selection:
    """Choose the least cloudy scene(s) per period for every label; see the module doc.

    Args:
        catalog: an opened catalog or anything :func:`~geochip.sources.stac.open_catalog`
            opens (its signer, href policy, retries and request bound are used).
        labels: label footprints (see :func:`load_labels`).
        start, end, periods: the periods (see :func:`make_periods`).
        max_cloud, relax_step, cloud_limit: the threshold ladder (:func:`thresholds`).
        k: scenes kept per period, best first.
        collections: collections to search.
        cloud_band: where to count clouds when needed (``"auto"``: recognised from asset
            names, see :func:`geochip.cloud.detect_cloud_band`; None: never count).
        cloud_over: ``"scene"`` uses ``eo:cloud_cover`` when present and counts the whole
            scene otherwise; ``"footprint"`` counts every candidate over the label.
        missing_cloud: ``"raise"`` stops at a scene without any cloud information,
            ``"skip"`` leaves it out (listed in ``Selection.skipped``).
        strict: raise :class:`~geochip.errors.EmptyPeriodError` for an empty period
            instead of recording it.
        workers: labels processed at once (HTTP requests stay within the catalog's
            ``max_requests``).
        on_label: called with the number of labels done (progress).
    """
    import geopandas as gpd
    import pandas as pd
    import pyarrow as pa

    from .cloud import cloud_cover as count_cloud
    from .engine import run_tasks
    from .sources.stac import Catalog, open_catalog

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
    search_range = (period_list[0].start, max(p.end for p in period_list) - _US)
    cache = _CloudCache()
    skipped: dict[str, str] = {}
    skipped_lock = threading.Lock()

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
            with skipped_lock:
                skipped[item.id] = str(err)
            log.debug("skipped %s: %s", item.id, err)
            return None

    def one_label(row: tuple[str, Any]) -> list[PeriodChoice]:
        label_id, geom = row
        found = cat.search(
            intersects=geom,
            datetime=search_range,
            collections=collections,
            max_cloud=None if cloud_over == "footprint" else cloud_limit,
            keep_missing_cloud=True,
            allow_empty=True,
        )
        candidates = []
        for item in found:
            when = _item_when(item)
            if when is None or not any(p.contains(when) for p in period_list):
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
                    (c for c in candidates if period.contains(c.when)), key=_rank_key(period)
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

    rows = list(zip(frame["label_id"], frame.geometry, strict=True))
    results: list[list[PeriodChoice]] = [[] for _ in rows]
    for position, choices in run_tasks(one_label, rows, workers=workers, on_done=on_label):
        results[position] = choices

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
    from . import __version__
    from .security import redact

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
    selection = Selection(table, chosen_items, config, dict(sorted(skipped.items())))
    log.info("selection: %s", selection)
    return selection
