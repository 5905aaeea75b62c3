"""The STAC item of a prediction, written last (``<stem>.json`` beside the output).

It carries the projection (``proj:code`` or ``proj:wkt2``, ``proj:shape``,
``proj:transform``), STAC 1.1 ``bands`` of each asset (``data_type``, ``nodata``,
``scale``; the class map's classes with the classification extension), the model
file's sha256 (or its parameters' for a Module), the input items and their hrefs
(unsigned, as read) and the options. Nothing in it depends on when it was written, so a
resumed run writes the same bytes.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import posixpath
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pystac
from shapely.geometry import mapping

from ..core.files import atomic_write_text
from ..core.geometry import rfc7946_bbox, wgs84_footprint
from ..core.storage import exists, is_url, join, parent, read_bytes
from ..sources.files import COG_MEDIA_TYPE
from ..sources.items import STAC_EXTENSIONS
from .sources import WindowSource
from .writer import Layer, crs_wkt

__all__ = ["CLASSIFICATION", "finished", "item_location", "item_path", "write_item"]

CLASSIFICATION = "https://stac-extensions.github.io/classification/v2.0.0/schema.json"
_NOMINAL = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def item_path(out: Path) -> Path:
    """Where the item of output ``out`` goes: ``<stem>.json`` beside it."""
    return out.with_suffix(".json")


def item_location(out: str | Path) -> str:
    """:func:`item_path` for a path or a URL.

    >>> item_location("s3://bucket/pred/scene.tif")
    's3://bucket/pred/scene.json'
    """
    if not is_url(out):
        return str(item_path(Path(out)))
    return f"{posixpath.splitext(str(out))[0]}.json"


def finished(out: str | Path, fingerprint: str) -> bool:
    """Whether the item of ``out`` (a path or URL) records a finished prediction of
    ``fingerprint`` (its assets all there): the item is written last, after every output
    file."""
    try:
        item = json.loads(read_bytes(item_location(out)))
    except (OSError, ValueError):
        return False
    if item.get("properties", {}).get("geochip:fingerprint") != fingerprint:
        return False
    assets = item.get("assets", {}).values()
    folder = parent(out)
    return bool(assets) and all(exists(join(folder, a["href"].removeprefix("./"))) for a in assets)


def _nodata(value: float) -> float | int | str:
    if math.isnan(value):
        return "nan"
    return int(value) if float(value).is_integer() else value


def write_item(
    out: Path,
    source: WindowSource,
    layers: Sequence[Layer],
    classes: Sequence[str] | None,
    options: dict[str, Any],
    checksum: str | None,
    model_href: str | None,
    fingerprint: str,
) -> Path:
    """Write the item of a finished prediction; returns its path. ``fingerprint`` (of the
    source, options and model) lets a rerun of the same job see that it is done."""
    geobox = source.geobox
    footprint = wgs84_footprint(geobox.extent).geom  # RFC 7946: split at 180 degrees
    when = source.datetime or _NOMINAL
    props: dict[str, Any] = {
        "proj:shape": [int(v) for v in geobox.shape.yx],
        "proj:transform": [float(v) for v in list(geobox.affine)[:6]],
        "geochip:model": {"sha256": checksum, "href": model_href},
        "geochip:inputs": [dict(i) for i in source.inputs],
        "geochip:options": options,
        "geochip:fingerprint": fingerprint,
    }
    epsg = geobox.crs.epsg if geobox.crs is not None else None
    if epsg is not None:
        props["proj:code"] = f"EPSG:{epsg}"
    else:
        props["proj:wkt2"] = crs_wkt(geobox)
    if source.datetime is None:
        props["geochip:nominal_datetime"] = True
    item = pystac.Item(
        id=out.stem,
        geometry=mapping(footprint),
        bbox=list(rfc7946_bbox(footprint)),
        datetime=when,
        properties=props,
        stac_extensions=sorted(
            [STAC_EXTENSIONS["proj"], STAC_EXTENSIONS["raster"], CLASSIFICATION]
        ),
    )
    for layer in layers:
        bands: list[dict[str, Any]] = []
        for i, name in enumerate(layer.bands):
            band: dict[str, Any] = {
                "name": name,
                "data_type": layer.dtype,
                "nodata": _nodata(layer.nodata),
            }
            if layer.scale != 1.0:
                band["raster:scale"] = layer.scale
            if layer.kind == "classes":
                names = list(classes) if classes is not None else []
                if names:
                    band["classification:classes"] = [
                        {"value": v, "name": n} for v, n in enumerate(names)
                    ]
            else:
                band["description"] = f"probability of class {i}"
            bands.append(band)
        item.add_asset(
            layer.kind,
            pystac.Asset(
                href=f"./{layer.path.name}",
                media_type=COG_MEDIA_TYPE,
                roles=["data"],
                extra_fields={"bands": bands},
            ),
        )
    path = item_path(out)
    atomic_write_text(path, json.dumps(item.to_dict(include_self_link=False), indent=1) + "\n")
    return path
