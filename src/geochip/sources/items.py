"""Items in the one form geochip uses inside, and the item properties every stage reads.

* :func:`normalize_item`: projection v1 (``proj:epsg``) becomes v2 (``proj:code``),
  ``eo:bands``/``raster:bands`` become STAC 1.1 ``bands``;
* :func:`item_time_range` and :func:`item_time` (a range's middle) read ``datetime`` or
  ``start_datetime``/``end_datetime``;
* :func:`eo_cloud_cover` reads ``eo:cloud_cover`` (None when missing or not a number).

Example:
    >>> import datetime as dt, pystac
    >>> item = pystac.Item("a", None, None, None, {
    ...     "start_datetime": "2024-01-01T00:00:00Z", "end_datetime": "2024-01-03T00:00:00Z",
    ...     "eo:cloud_cover": "n/a"})
    >>> item_time(item).isoformat(), eo_cloud_cover(item)
    ('2024-01-02T00:00:00+00:00', None)
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from typing import Any

import pystac
from pystac.stac_io import DefaultStacIO

from ..core.bands import asset_band_fields
from ..core.stacjson import check_item_dict, item_from_dict
from ..core.storage import filesystem, is_object_url

__all__ = [
    "STAC_EXTENSIONS",
    "CheckedStacIO",
    "ObjectStacIO",
    "check_item_dict",
    "item_from_dict",
    "eo_cloud_cover",
    "item_time",
    "item_time_range",
    "normalize_item",
]

log = logging.getLogger(__name__)

#: The STAC extension versions geochip writes and upgrades older items to.
STAC_EXTENSIONS = {
    "proj": "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "eo": "https://stac-extensions.github.io/eo/v2.0.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v2.0.0/schema.json",
}
_EXTENSION_NAMES = {"proj": "projection", "eo": "eo", "raster": "raster"}


class CheckedStacIO(DefaultStacIO):
    """pystac's StacIO that checks every item it reads with :func:`check_item_dict`."""

    def stac_object_from_dict(
        self,
        d: dict[str, Any],
        href: Any = None,
        root: Any = None,
        preserve_dict: bool = True,
    ) -> Any:
        if d.get("type") == "Feature":
            check_item_dict(d, str(href) if href else "")
        return super().stac_object_from_dict(d, href, root, preserve_dict)


class ObjectStacIO(CheckedStacIO):
    """:class:`CheckedStacIO` that reads object-store hrefs (``s3://``, ``gs://``,
    ``az://``) through fsspec, with the environment's credentials; other hrefs as pystac
    does. A static catalog on a bucket and its relative links resolve under the bucket."""

    def read_text_from_href(self, href: str) -> str:
        if is_object_url(href):
            fs, path = filesystem(href)
            return bytes(fs.cat_file(path)).decode("utf-8")
        return str(super().read_text_from_href(href))


def item_time_range(item: pystac.Item) -> tuple[dt.datetime | None, dt.datetime | None]:
    """(start, end) of the item: its ``datetime`` twice, else ``start_datetime`` and
    ``end_datetime`` (either may be None)."""
    if item.datetime is not None:
        return item.datetime, item.datetime
    props = item.properties
    start = props.get("start_datetime")
    end = props.get("end_datetime")
    return (
        dt.datetime.fromisoformat(start.replace("Z", "+00:00")) if start else None,
        dt.datetime.fromisoformat(end.replace("Z", "+00:00")) if end else None,
    )


def item_time(item: pystac.Item) -> dt.datetime | None:
    """When the item was taken: its ``datetime``, else the middle of its range (or the one
    end it has); None when it has no time at all."""
    start, end = item_time_range(item)
    if start is not None and end is not None:
        return start + (end - start) / 2
    return start or end


def eo_cloud_cover(item: pystac.Item) -> float | None:
    """The item's ``eo:cloud_cover`` (percent), or None when it is missing, NaN or not a
    number (said at DEBUG level): such an item is treated as having no cloud information
    (counted from a cloud band, skipped or refused, as the caller's policy says)."""
    value = item.properties.get("eo:cloud_cover")
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        log.debug("item %s: eo:cloud_cover %r is not a number; taken as missing", item.id, value)
        return None
    return None if math.isnan(number) else number


def normalize_item(item: pystac.Item) -> pystac.Item:
    """Return a copy of ``item`` in the one form geochip uses inside.

    * ``proj:epsg`` (projection v1) becomes ``proj:code = "EPSG:<n>"`` (projection v2), on
      the item and on its assets;
    * ``eo:bands`` and ``raster:bands`` are merged into STAC 1.1 ``bands``
      (``common_name`` becomes ``eo:common_name``, raster fields keep their ``raster:``
      prefix, ``nodata``/``data_type``/``unit`` become common metadata), and the band
      fields given once on the asset or the item are written into each band
      (:func:`geochip.core.bands.asset_band_fields`, the one reading of them).
    """
    item = item.clone()
    for fields in [item.properties, *(a.extra_fields for a in item.assets.values())]:
        epsg = fields.pop("proj:epsg", None)
        if epsg is not None and "proj:code" not in fields:
            fields["proj:code"] = f"EPSG:{int(epsg)}"
    for key, asset in item.assets.items():
        bands, _ = asset_band_fields(item, key)
        asset.extra_fields.pop("eo:bands", None)
        asset.extra_fields.pop("raster:bands", None)
        if bands is not None:
            asset.extra_fields["bands"] = bands
    item.properties.pop("eo:bands", None)
    item.stac_extensions = [
        _upgrade_extension(uri) for uri in item.stac_extensions if uri is not None
    ]
    return item


def _upgrade_extension(uri: str) -> str:
    for key, name in _EXTENSION_NAMES.items():
        if uri.startswith(f"https://stac-extensions.github.io/{name}/v1."):
            return STAC_EXTENSIONS[key]
    return uri
