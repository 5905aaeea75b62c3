"""A LandCoverNet-like world for selection tests and benchmarks (:func:`landcover_world`):
label tiles over a few MGRS-like tiles, Sentinel-2 L2A items every few days with their SCL
band as a small COG (4 = vegetation, 9 = cloud high probability, 0 = no data), and decoy
tiles that hold items but no label (the catalog is bigger than the area of interest).

SCL files are a pool of seeded patterns per tile; every item links its own URL to one of
them (``?item=<id>`` keeps GDAL's per-URL cache from sharing reads between items). Covers
repeat across items, so ties (then broken by the distance to the period's middle, then the
id) happen. ``eo:cloud_cover`` is the whole-scene share of the pattern, missing on a seeded
share of the items (then counted from the SCL band).

Example:
    >>> import tempfile
    >>> world = landcover_world(tempfile.mkdtemp(), "http://127.0.0.1:1/x", tiles=1,
    ...                         labels_per_tile=3, dates=4, patterns=2, qa_pixels=64)
    >>> len(world.items), len(world.labels), world.items[0]["collection"]
    (4, 3, 'sentinel-2-l2a-lcn')
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely.geometry
from odc.geo.geobox import GeoBox

from . import make_cog, texture
from .eo_items import sentinel2_l2a_item

__all__ = [
    "LandcoverWorld",
    "landcover_world",
]


@dataclass
class LandcoverWorld:
    """Items (dicts), labels (``id`` + geometry, EPSG:4326) and the folder of SCL COGs."""

    items: list[dict[str, Any]]
    labels: gpd.GeoDataFrame
    root: Path
    collection: str


def _pattern(size: int, seed: int, share: float) -> np.ndarray[Any, Any]:
    noise = texture((size, size), seed=seed)
    cut = float(np.quantile(noise, 1 - share)) if share > 0 else 2.0
    scl = np.where(noise >= cut, 9, 4).astype("uint8")
    scl[: size // 16, :] = 0  # a strip of no data along the top edge
    return scl


def landcover_world(
    root: str | Path,
    base_url: str,
    *,
    tiles: int = 2,
    labels_per_tile: int = 8,
    dates: int = 24,
    start: str = "2024-01-01",
    days: int = 365,
    decoy_tiles: int = 0,
    patterns: int = 6,
    missing_cloud: float = 0.3,
    qa_pixels: int = 512,
    label_degrees: float = 0.03,
    collection: str = "sentinel-2-l2a-lcn",
    seed: int = 0,
) -> LandcoverWorld:
    """Write the SCL COGs under ``root`` (served at ``base_url``) and return the world."""
    rng = random.Random(seed)
    root = Path(root)
    first = dt.datetime.fromisoformat(start).replace(hour=10, minute=30, tzinfo=dt.UTC)
    step = dt.timedelta(days=days / dates)
    items: list[dict[str, Any]] = []
    label_ids: list[str] = []
    label_geoms: list[Any] = []
    for t in range(tiles + decoy_tiles):
        decoy = t >= tiles
        tile = f"{31 + t % 29:02d}U{chr(65 + t // 26 % 26)}{chr(65 + t % 26)}"
        west, south = (4.0 + t, 50.0) if not decoy else (-60.0 + (t - tiles) % 100, -30.0)
        bounds = (west, south, west + 1.0, south + 1.0)
        files = []
        for p in range(patterns):
            path = root / tile / f"scl-{p}.tif"
            if not decoy:
                share = (p + 0.5) / patterns
                data = _pattern(qa_pixels, seed * 1000 + t * 50 + p, share)
                geobox = GeoBox.from_bbox(bounds, "EPSG:4326", shape=(qa_pixels, qa_pixels))
                make_cog(
                    path,
                    geobox,
                    dtype="uint8",
                    data=data[None],
                    overviews=(2, 4, 8),
                    tile=256,
                    nodata=None,
                )
                valid = data != 0
                files.append((path, round(100.0 * float((data[valid] == 9).mean()), 2)))
            else:
                files.append((path, round(100.0 * (p + 0.5) / patterns, 2)))
        for d in range(dates):
            path, cover = files[rng.randrange(len(files))]
            cloud = None if rng.random() < missing_cloud else cover
            item = sentinel2_l2a_item(
                tile, bounds, first + d * step + dt.timedelta(minutes=t), cloud
            )
            item["collection"] = collection
            rel = path.relative_to(root).as_posix()
            item["assets"]["SCL"]["href"] = f"{base_url.rstrip('/')}/{rel}?item={item['id']}"
            items.append(item)
        if decoy:
            continue
        for n in range(labels_per_tile):
            x = west + rng.uniform(0.02, 1.0 - label_degrees - 0.02)
            y = south + rng.uniform(0.1, 1.0 - label_degrees - 0.02)
            label_ids.append(f"{tile}-{n:04d}")
            label_geoms.append(shapely.geometry.box(x, y, x + label_degrees, y + label_degrees))
    labels = gpd.GeoDataFrame({"id": label_ids}, geometry=label_geoms, crs="EPSG:4326")
    return LandcoverWorld(items, labels, root, collection)
