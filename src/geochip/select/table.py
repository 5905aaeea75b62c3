"""The selection table: what a selection chose, saved as GeoParquet with the chosen items
beside it.

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
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import pyarrow.parquet as pq
import pystac

from ..core.security import redact, unsign_href
from ..core.storage import (
    exists,
    is_url,
    join,
    local_path,
    output_file,
    parent,
    read_bytes,
    write_text,
)
from ..errors import InputError
from ..sources.items import item_from_dict

__all__ = [
    "SELECTION_COLUMNS",
    "Selection",
    "items_location",
    "load_selection",
]

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
        return the table's path. ``path`` may be a URL (``s3://bucket/sel.parquet``):
        each file is then one upload, the items first and the table (which names them)
        last. For a URL the path returned is ``Path(url)``: use :func:`items_location`."""
        _save_selection(self, path)
        return local_path(path)


def items_location(path: str | Path) -> str:
    """Where the items of the selection table ``path`` (a path or URL) are written:
    ``<stem>.items.json`` beside it.

    >>> items_location("s3://bucket/runs/selection.parquet")
    's3://bucket/runs/selection.items.json'
    """
    if is_url(path):
        folder, name = str(path).rstrip("/").rsplit("/", 1)
        return f"{folder}/{Path(name).stem}.items.json"
    return str(_items_path(local_path(path)))


def _items_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}.items.json")


def _save_selection(selection: Selection, path: str | Path) -> None:
    items_path = items_location(path)
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
    write_text(items_path, text)
    with output_file(path) as tmp:
        selection.table.to_parquet(tmp, index=False)
        table = pq.read_table(tmp)
        meta = dict(table.schema.metadata or {})
        meta.pop(b"pandas", None)  # ArrowDtype names that pandas cannot read back
        meta[b"geochip:selection"] = json.dumps(
            {
                **selection.config,
                "items_file": items_path.rsplit("/", 1)[-1],
                "skipped_no_cloud": selection.skipped,
            },
            default=str,
        ).encode()
        pq.write_table(table.replace_schema_metadata(meta), tmp)


def load_selection(path: str | Path) -> Selection:
    """Read a selection saved by :meth:`Selection.save` (a path or URL): the table and its
    items."""
    if not exists(path):
        raise InputError(f"no selection table at {path}")
    data = read_bytes(path)
    table = gpd.read_parquet(io.BytesIO(data))
    meta = pq.read_schema(io.BytesIO(data)).metadata or {}
    config = json.loads(meta.get(b"geochip:selection", b"{}"))
    name = config.get("items_file") or items_location(path).rsplit("/", 1)[-1]
    items_path = join(parent(path), name)
    if not exists(items_path):
        raise InputError(
            f"the selection {path} has no items file {items_path.rsplit('/', 1)[-1]} beside it"
        )
    features = json.loads(read_bytes(items_path)).get("features", [])
    items = {f["id"]: item_from_dict(f, items_path) for f in features}
    for column in table.columns:
        if column.startswith(("item_", "cloud_")) or column == "collections":
            table[column] = table[column].map(lambda v: list(v) if v is not None else [])
    skipped = config.pop("skipped_no_cloud", {}) if isinstance(config, dict) else {}
    return Selection(table, items, config, dict(skipped))
