"""The chip index ("plan"): one row per chip, decided before any pixel is read.

A plan is a :class:`geopandas.GeoDataFrame` in EPSG:4326 with at least these columns:

=============  ==============================================================
chip_id        unique, deterministic: ``{grid_id}-r{row}-c{col}``
grid_id        which grid the chip is a window of
row, col       the window's offset in grid pixels
height, width  the window's size in pixels
crs            the grid's CRS (``EPSG:xxxx`` or WKT)
transform      the chip's affine (6 numbers, GDAL order a, b, c, d, e, f)
minx .. maxy   the chip's bounds in the grid's CRS (exact)
geometry       the chip's footprint in EPSG:4326
=============  ==============================================================

:func:`~geochip.plan.splits.assign_splits` adds ``block`` and ``split``;
:func:`~geochip.plan.splits.find_leaks` checks them.
Planning does no I/O and is deterministic for a given grid, size, stride and seed.

Example:
    >>> from odc.geo.geobox import GeoBox
    >>> from geochip.plan.splits import assign_splits, find_leaks
    >>> gbox = GeoBox.from_bbox((500_000, 0, 505_120, 5_120), "EPSG:32633", resolution=10)
    >>> plan = plan_chips(gbox, 128, grid_id="g")
    >>> len(plan), plan.chip_id.iloc[1], plan.crs.to_epsg()
    (16, 'g-r0-c128', 4326)
    >>> ratios = {"train": 0.5, "val": 0.25, "test": 0.25}
    >>> result = assign_splits(plan, block_size=256, ratios=ratios)
    >>> result.plan.groupby("split").size().to_dict()
    {'test': 4, 'train': 8, 'val': 4}
    >>> len(find_leaks(result.plan))
    0
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine
from odc.geo.geobox import GeoBox

from ..core.files import output_file
from ..core.geometry import wgs84_footprints
from ..core.grid import Edge, SizeLike, Window, chip_windows, yx
from ..core.storage import is_url, local_path, read_bytes
from ..errors import InputError, StoreError

__all__ = [
    "PLAN_COLUMNS",
    "chip_geobox",
    "load_plan",
    "plan_chips",
    "save_plan",
]

PLAN_COLUMNS = (
    "chip_id",
    "grid_id",
    "row",
    "col",
    "height",
    "width",
    "crs",
    "transform",
    "minx",
    "miny",
    "maxx",
    "maxy",
)


def _crs_string(crs: Any) -> str:
    epsg = crs.epsg
    return f"EPSG:{epsg}" if epsg else str(crs.to_wkt())


def plan_chips(
    geobox: GeoBox,
    size: SizeLike,
    *,
    stride: SizeLike | None = None,
    overlap: SizeLike | None = None,
    edge: Edge | str = "drop",
    grid_id: str = "grid",
    windows: list[Window] | None = None,
) -> gpd.GeoDataFrame:
    """Plan sliding-window chips over ``geobox`` (see :func:`geochip.core.grid.chip_windows`).

    Give ``stride`` or ``overlap`` (``stride = size - overlap``), not both. ``windows``
    replaces the sliding windows by an explicit list (e.g. from a sampler).
    """
    size_ = yx(size)
    if stride is not None and overlap is not None:
        raise InputError("give stride or overlap, not both")
    if overlap is not None:
        ov = yx(overlap, "overlap") if overlap != 0 else None
        oy, ox = (ov.y, ov.x) if ov else (0, 0)
        if oy >= size_.y or ox >= size_.x:
            raise InputError(
                f"overlap ({oy}, {ox}) must be smaller than size ({size_.y}, {size_.x})"
            )
        stride = {"y": size_.y - oy, "x": size_.x - ox}
    if windows is None:
        windows = chip_windows(geobox.shape.yx, size_, stride, edge, source=grid_id)
    aff = geobox.affine
    if not geobox.axis_aligned:
        raise InputError(f"grid {grid_id!r} is rotated; geochip plans chips on axis-aligned grids")
    rows = np.array([w.row for w in windows], dtype=np.int64)
    cols = np.array([w.col for w in windows], dtype=np.int64)
    heights = np.array([w.height for w in windows], dtype=np.int64)
    widths = np.array([w.width for w in windows], dtype=np.int64)
    x0 = aff.c + cols * aff.a
    y0 = aff.f + rows * aff.e
    x1 = x0 + widths * aff.a
    y1 = y0 + heights * aff.e
    minx, maxx = np.minimum(x0, x1), np.maximum(x0, x1)
    miny, maxy = np.minimum(y0, y1), np.maximum(y0, y1)
    if geobox.crs is None:
        raise InputError(f"grid {grid_id!r} has no CRS; chips need georeferencing")
    crs = _crs_string(geobox.crs)
    transforms = [
        [aff.a, aff.b, float(x), aff.d, aff.e, float(y)] for x, y in zip(x0, y0, strict=False)
    ]
    # footprints split at 180 degrees (RFC 7946), from the chips' corners
    geometry = wgs84_footprints(shapely.box(minx, miny, maxx, maxy), geobox.crs, points=1)
    data = {
        "chip_id": [f"{grid_id}-r{r}-c{c}" for r, c in zip(rows, cols, strict=False)],
        "grid_id": grid_id,
        "row": rows,
        "col": cols,
        "height": heights,
        "width": widths,
        "crs": crs,
        "transform": transforms,
        "minx": minx,
        "miny": miny,
        "maxx": maxx,
        "maxy": maxy,
    }
    return gpd.GeoDataFrame(data, geometry=geometry, crs="EPSG:4326")


def chip_geobox(row: Mapping[str, Any] | Any) -> GeoBox:
    """The GeoBox of one plan row (its own CRS, transform and size)."""
    return GeoBox((int(row["height"]), int(row["width"])), Affine(*row["transform"]), row["crs"])


def save_plan(plan: gpd.GeoDataFrame, path: str | Path) -> str | Path:
    """Write a plan as GeoParquet to a path (atomically: temporary file, then rename) or
    a URL (one upload); return it (a local one as a :class:`~pathlib.Path`)."""
    with output_file(path) as tmp:
        plan.to_parquet(tmp, index=False, write_covering_bbox=False)
    return path if is_url(path) else local_path(path)


def load_plan(path: str | Path) -> gpd.GeoDataFrame:
    """Read a plan written by :func:`save_plan` (a path or URL) and check its columns."""
    try:
        data = read_bytes(path)
    except FileNotFoundError:
        raise StoreError(f"{path}: no such plan file") from None
    plan = gpd.read_parquet(io.BytesIO(data))
    missing = [c for c in PLAN_COLUMNS if c not in plan.columns]
    if missing:
        raise StoreError(f"{path}: not a geochip plan; missing columns {missing}")
    plan["transform"] = plan["transform"].map(lambda t: [float(v) for v in t])
    return plan
