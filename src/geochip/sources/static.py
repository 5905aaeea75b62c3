"""Static STAC catalogs: read (:class:`StaticCatalog`, a catalog or collection on disk or
over HTTP, through pystac) and written (:func:`make_catalog`, a self-contained catalog of
items; :func:`make_collection`, the collection around them: the sample catalog and the
test fixtures use them).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pystac

from ..core.geometry import bbox_union
from .catalog import InMemoryCatalog
from .items import normalize_item

__all__ = [
    "StaticCatalog",
    "make_catalog",
    "make_collection",
]


class StaticCatalog(InMemoryCatalog):
    """A static STAC catalog or collection (a JSON file on disk or over HTTP)."""

    kind = "static"

    def __init__(self, root: pystac.Catalog, href: str, **kwargs: Any) -> None:
        super().__init__(href, **kwargs)
        self.root = root

    def _load(self) -> Iterable[pystac.Item]:
        for item in self.root.get_items(recursive=True):
            yield normalize_item(item)


def make_collection(
    collection_id: str,
    items: Sequence[pystac.Item],
    *,
    description: str | None = None,
    title: str | None = None,
    license: str = "other",
) -> pystac.Collection:
    """An in-memory ``pystac.Collection`` holding clones of ``items``, its extent covering them."""
    bboxes = [item.bbox for item in items if item.bbox]
    times = [item.datetime for item in items if item.datetime]
    if not bboxes or not times:
        raise ValueError("a collection needs items with a bbox and a datetime")
    extent = pystac.Extent(
        pystac.SpatialExtent([list(bbox_union(bboxes))]),
        pystac.TemporalExtent([[min(times), max(times)]]),
    )
    coll = pystac.Collection(
        id=collection_id,
        description=description or collection_id,
        title=title,
        extent=extent,
        license=license,
    )
    for item in items:
        clone = item.clone()
        clone.collection_id = collection_id
        coll.add_item(clone)
    return coll


def make_catalog(
    root: str | Path,
    items: Sequence[pystac.Item] = (),
    *,
    catalog_id: str = "geochip-test",
    collection: str | None = None,
    collections: Sequence[pystac.Collection] = (),
    description: str = "geochip test catalog",
    title: str | None = None,
) -> Path:
    """Write a self-contained static catalog under ``root`` and return its catalog.json.

    ``items`` go straight under the catalog, or into one new collection named
    ``collection``; ``collections`` (see :func:`make_collection`) are added as they are.
    Asset hrefs are made relative where the files lie under ``root``.
    """
    root = Path(root)
    catalog = pystac.Catalog(id=catalog_id, description=description, title=title)
    if collection:
        catalog.add_child(make_collection(collection, items))
    else:
        for item in items:
            catalog.add_item(item.clone())
    for coll in collections:
        catalog.add_child(coll)
    # a trailing slash: pystac takes a last path part with a dot in it for a file name
    catalog.normalize_hrefs(root.resolve().as_posix() + "/")
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json"
