"""STAC items and collections shaped like the real ones: Sentinel-2 L2A (as the Planetary
Computer and Earth Search publish them: ``s2:mgrs_tile``, ``mgrs:*``, ``SCL`` and band
assets, ``proj:code``) and Landsat Collection 2 Level-2 (``landsat:wrs_path``/``row``,
``landsat:collection_number`` ``02``, ``qa_pixel``), for loading into a STAC server.

Footprints are lon/lat boxes (``bounds``); asset hrefs are given or made up under
``https://example.com``.

Example:
    >>> item = sentinel2_l2a_item("31UFU", (4.0, 50.0, 5.5, 51.0), "2024-01-05T10:33:29Z", 12.5)
    >>> item["id"], item["collection"], item["properties"]["s2:mgrs_tile"]
    ('S2B_MSIL2A_20240105T103329_R108_T31UFU_20240105T122145', 'sentinel-2-l2a', '31UFU')
    >>> sorted(landsat_c2_l2_item(198, 24, (4.0, 50.0, 6.0, 51.5), "2024-01-10", 40.0)["assets"])
    ['blue', 'green', 'nir08', 'qa_pixel', 'red']
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "LANDSAT_COLLECTION",
    "S2_COLLECTION",
    "collection_dict",
    "eo_test_items",
    "landsat_c2_l2_item",
    "sentinel2_l2a_item",
]

S2_COLLECTION = "sentinel-2-l2a"
LANDSAT_COLLECTION = "landsat-c2-l2"

_S2_BANDS = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir"}
_LANDSAT_BANDS = {"blue": "blue", "green": "green", "red": "red", "nir08": "nir08"}


def _when(value: str | dt.datetime) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    text = value if "T" in value else f"{value}T10:30:00Z"
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _box(bounds: Sequence[float]) -> dict[str, Any]:
    w, s, e, n = bounds
    return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}


def _utm_epsg(bounds: Sequence[float]) -> int:
    lon = (bounds[0] + bounds[2]) / 2
    zone = int((lon + 180) // 6) % 60 + 1
    return (32600 if bounds[1] + bounds[3] >= 0 else 32700) + zone


def sentinel2_l2a_item(
    tile: str,
    bounds: Sequence[float],
    when: str | dt.datetime,
    cloud: float | None,
    *,
    hrefs: Mapping[str, str] | None = None,
    platform: str = "sentinel-2b",
    orbit: int = 108,
) -> dict[str, Any]:
    """A Sentinel-2 L2A item (dict) of MGRS ``tile`` over ``bounds`` (lon/lat)."""
    t = _when(when)
    stamp = t.strftime("%Y%m%dT%H%M%S")
    letter = "A" if platform.endswith("a") else "B"
    item_id = f"S2{letter}_MSIL2A_{stamp}_R{orbit:03d}_T{tile}_{t:%Y%m%d}T122145"
    given = dict(hrefs or {})
    base = f"https://example.com/s2/{tile}/{t:%Y/%m/%d}/{item_id}"
    assets: dict[str, Any] = {}
    for key, common in _S2_BANDS.items():
        assets[key] = {
            "href": given.get(key, f"{base}/{key}_10m.tif"),
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data"],
            "eo:bands": [{"name": key, "common_name": common}],
            "gsd": 10.0,
        }
    assets["SCL"] = {
        "href": given.get("SCL", f"{base}/SCL_20m.tif"),
        "type": "image/tiff; application=geotiff; profile=cloud-optimized",
        "roles": ["data"],
        "title": "Scene classfication map (SCL)",
        "gsd": 20.0,
    }
    properties: dict[str, Any] = {
        "datetime": t.isoformat().replace("+00:00", "Z"),
        "platform": f"Sentinel-2{letter}",
        "constellation": "Sentinel 2",
        "instruments": ["msi"],
        "s2:mgrs_tile": tile,
        "mgrs:utm_zone": int(tile[:2]),
        "mgrs:latitude_band": tile[2],
        "mgrs:grid_square": tile[3:],
        "sat:relative_orbit": orbit,
        "sat:orbit_state": "descending",
        "s2:processing_baseline": "05.10",
        "s2:product_type": "S2MSI2A",
        "proj:code": f"EPSG:{_utm_epsg(bounds)}",
        "view:sun_elevation": 35.2,
    }
    if cloud is not None:
        properties["eo:cloud_cover"] = float(cloud)
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [
            "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
            "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
            "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
            "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
        ],
        "id": item_id,
        "collection": S2_COLLECTION,
        "geometry": _box(bounds),
        "bbox": list(bounds),
        "properties": properties,
        "assets": assets,
        "links": [],
    }


def landsat_c2_l2_item(
    path: int,
    row: int,
    bounds: Sequence[float],
    when: str | dt.datetime,
    cloud: float | None,
    *,
    hrefs: Mapping[str, str] | None = None,
    platform: str = "landsat-9",
) -> dict[str, Any]:
    """A Landsat Collection 2 Level-2 item (dict) of WRS-2 ``path``/``row`` over ``bounds``."""
    t = _when(when)
    sensor = "LC09" if platform.endswith("9") else "LC08"
    item_id = f"{sensor}_L2SP_{path:03d}{row:03d}_{t:%Y%m%d}_02_T1"
    given = dict(hrefs or {})
    base = f"https://example.com/landsat/{path:03d}/{row:03d}/{item_id}"
    assets: dict[str, Any] = {
        key: {
            "href": given.get(key, f"{base}/{item_id}_SR_{key.upper()}.TIF"),
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data", "reflectance"],
            "eo:bands": [{"name": key, "common_name": common}],
            "gsd": 30.0,
        }
        for key, common in _LANDSAT_BANDS.items()
    }
    assets["qa_pixel"] = {
        "href": given.get("qa_pixel", f"{base}/{item_id}_QA_PIXEL.TIF"),
        "type": "image/tiff; application=geotiff; profile=cloud-optimized",
        "roles": ["cloud", "cloud-shadow", "snow-ice", "water-mask"],
        "title": "Pixel Quality Assessment Band",
    }
    properties: dict[str, Any] = {
        "datetime": t.isoformat().replace("+00:00", "Z"),
        "platform": platform,
        "instruments": ["oli", "tirs"],
        "landsat:wrs_path": f"{path:03d}",
        "landsat:wrs_row": f"{row:03d}",
        "landsat:collection_number": "02",
        "landsat:collection_category": "T1",
        "landsat:correction": "L2SP",
        "proj:code": f"EPSG:{_utm_epsg(bounds)}",
        "view:sun_elevation": 30.1,
    }
    if cloud is not None:
        properties["eo:cloud_cover"] = float(cloud)
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [
            "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
            "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
            "https://landsat.usgs.gov/stac/landsat-extension/v1.1.1/schema.json",
        ],
        "id": item_id,
        "collection": LANDSAT_COLLECTION,
        "geometry": _box(bounds),
        "bbox": list(bounds),
        "properties": properties,
        "assets": assets,
        "links": [],
    }


def collection_dict(collection_id: str, description: str = "") -> dict[str, Any]:
    """A collection dict (world extent, open interval) with ``eo:cloud_cover`` queryable."""
    return {
        "type": "Collection",
        "stac_version": "1.1.0",
        "id": collection_id,
        "description": description or collection_id,
        "license": "proprietary",
        "extent": {
            "spatial": {"bbox": [[-180, -90, 180, 90]]},
            "temporal": {"interval": [["2013-01-01T00:00:00Z", None]]},
        },
        "summaries": {"eo:cloud_cover": {"minimum": 0, "maximum": 100}},
        "links": [],
    }


def eo_test_items() -> list[dict[str, Any]]:
    """The items the tests' ``pgstac`` fixture serves: Sentinel-2 L2A over three MGRS tiles (one
    each side of the antimeridian) and Landsat C2 L2 over one WRS-2 path/row, every 5 days
    for 120 days of 2024, seeded cloud covers (a few without eo:cloud_cover)."""
    rng = random.Random(15)
    s2_tiles = {
        "31UFU": (4.0, 50.0, 5.5, 51.0),
        "60KXF": (179.0, -17.0, 180.0, -16.0),
        "01KAB": (-180.0, -17.0, -179.0, -16.0),
    }
    items = []
    start = dt.datetime(2024, 1, 1, 10, 30, tzinfo=dt.UTC)
    for day in range(0, 120, 5):
        when = start + dt.timedelta(days=day)
        for n, (tile, bounds) in enumerate(s2_tiles.items()):
            cloud = None if day == 60 and n == 0 else round(rng.uniform(0, 100), 2)
            items.append(sentinel2_l2a_item(tile, bounds, when + dt.timedelta(minutes=n), cloud))
        if day % 10 == 0:
            cloud = round(rng.uniform(0, 100), 2)
            items.append(landsat_c2_l2_item(198, 24, (4.0, 50.0, 6.0, 51.5), when, cloud))
    return items
