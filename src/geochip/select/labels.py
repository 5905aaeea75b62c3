"""Label footprints for a selection: STAC label items (the label extension) or a vector file,
as ``label_id`` + geometry in EPSG:4326."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import geopandas as gpd
import pystac

from ..core.geometry import stac_footprint
from ..core.vectors import VECTOR_SUFFIXES, read_vector, with_ids
from ..errors import InputError
from ..sources.catalog import Catalog
from ..sources.items import ObjectStacIO
from ..sources.open import open_catalog

__all__ = [
    "load_labels",
]


def _is_label_item(item: pystac.Item) -> bool:
    return any("/label/" in (uri or "") for uri in item.stac_extensions) or any(
        key.startswith("label:") for key in item.properties
    )


def _label_items(items: Sequence[pystac.Item], source: str) -> gpd.GeoDataFrame:
    """The items with the label extension as a GeoDataFrame (``id``, geometry)."""
    labels = [i for i in items if _is_label_item(i)]
    if not labels:
        raise InputError(
            f"{source} holds {len(items)} STAC items but none with the label extension "
            "(label:* properties); give a label collection, or a vector file of footprints"
        )
    return gpd.GeoDataFrame(
        {"id": [i.id for i in labels]},
        # an unsplit polygon over 180 (bbox west > east) is split, as items are (RFC 7946)
        geometry=[stac_footprint(i.geometry, i.bbox) if i.geometry else None for i in labels],
        crs="EPSG:4326",
    )


def _is_stac_file(text: str) -> bool:
    """Whether a path or URL of labels is a STAC catalog rather than a vector file: a
    ``.json``/``.geojson`` (local, object store, ``http(s)://``) holding a catalog,
    collection or ItemCollection, or an ``http(s)://`` URL of no vector file type (an API's
    collection)."""
    suffix = PurePosixPath(text.split("?", 1)[0]).suffix.lower()
    if suffix not in {".json", ".geojson"}:
        return text.startswith(("http://", "https://")) and suffix not in VECTOR_SUFFIXES
    try:
        head = json.loads(ObjectStacIO().read_text_from_href(text))
    except (OSError, ValueError) as err:  # missing, unreachable (urllib's are OSError), not JSON
        raise InputError(f"cannot read labels from {text}: {err}") from None
    kind = head.get("type") if isinstance(head, dict) else None
    features = head.get("features", []) if isinstance(head, dict) else []
    return kind in {"Catalog", "Collection"} or (
        kind == "FeatureCollection"
        and bool(features)
        and all("stac_version" in f for f in features)
    )


def load_labels(
    source: Any,
    *,
    id_column: str | None = None,
) -> gpd.GeoDataFrame:
    """Label footprints as a GeoDataFrame with ``label_id`` and ``geometry`` (EPSG:4326).

    ``source``: a GeoDataFrame; a vector file (GeoJSON, GeoPackage, GeoParquet,
    Shapefile...); a STAC label collection - a catalog/collection path or URL, an
    ItemCollection, a :class:`~geochip.sources.catalog.Catalog` or a list of items - of
    which the items with the label extension are taken, named by their ids. Vector ids
    and all geometries follow :func:`geochip.core.vectors.with_ids` (``id_column``, else
    ``id``/``label_id``, else ``g0``, ``g1``...; unique ids, valid geometries).
    """
    name = str(source) if isinstance(source, str | Path) else type(source).__name__
    items = True  # STAC label items are named by their item ids (id_column does not apply)
    if isinstance(source, Catalog):
        name = repr(source)
        frame = _label_items(list(source.items()), name)
    elif isinstance(source, pystac.Catalog | pystac.ItemCollection) or (
        isinstance(source, Sequence)
        and not isinstance(source, str)
        and source
        and isinstance(source[0], pystac.Item)
    ):
        frame = _label_items(list(open_catalog(source).items()), name)
    elif isinstance(source, gpd.GeoDataFrame):
        frame, items = source, False
    elif _is_stac_file(str(source)):
        frame = _label_items(list(open_catalog(str(source)).items()), name)
    else:
        frame, items = read_vector(str(source), what="label file"), False
    labels = with_ids(frame, id_column=None if items else id_column, source=name, what="labels")
    return labels.rename(columns={"id": "label_id"})
