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

:func:`assign_splits` adds ``block`` and ``split``; :func:`find_leaks` checks them.
Planning does no I/O and is deterministic for a given grid, size, stride and seed.

Example:
    >>> from odc.geo.geobox import GeoBox
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

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InputError, StoreError
from .grid import Edge, SizeLike, Window, chip_windows, yx

if TYPE_CHECKING:
    import geopandas as gpd
    import pandas as pd
    from odc.geo.geobox import GeoBox

__all__ = [
    "PLAN_COLUMNS",
    "SPLITS",
    "SplitResult",
    "assign_splits",
    "chip_geobox",
    "find_leaks",
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
SPLITS = ("train", "val", "test")


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
    """Plan sliding-window chips over ``geobox`` (see :func:`geochip.grid.chip_windows`).

    Give ``stride`` or ``overlap`` (``stride = size - overlap``), not both. ``windows``
    replaces the sliding windows by an explicit list (e.g. from a sampler).
    """
    import geopandas as gpd
    import shapely

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
    native = gpd.GeoSeries(shapely.box(minx, miny, maxx, maxy), crs=geobox.crs.to_wkt())
    geometry = native.to_crs("EPSG:4326")
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
    return gpd.GeoDataFrame(data, geometry=geometry.values, crs="EPSG:4326")


def chip_geobox(row: Mapping[str, Any] | Any) -> GeoBox:
    """The GeoBox of one plan row (its own CRS, transform and size)."""
    from affine import Affine
    from odc.geo.geobox import GeoBox

    return GeoBox((int(row["height"]), int(row["width"])), Affine(*row["transform"]), row["crs"])


@dataclass(frozen=True)
class SplitResult:
    """What :func:`assign_splits` decided: the kept chips, and what it dropped and why."""

    plan: gpd.GeoDataFrame
    dropped_straddling: int
    blocks: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Counts for reports: chips and blocks per split, chips dropped."""
        counts = self.plan.groupby("split").size().to_dict() if len(self.plan) else {}
        return {
            "chips": {s: int(counts.get(s, 0)) for s in SPLITS},
            "blocks": dict(self.blocks),
            "dropped_straddling": self.dropped_straddling,
        }


def _allocate(n: int, ratios: Mapping[str, float]) -> dict[str, int]:
    """Largest-remainder allocation of ``n`` blocks; every split with a ratio > 0 gets at
    least one block when there are enough blocks."""
    names = [s for s in ratios if ratios[s] > 0]
    total = sum(ratios[s] for s in names)
    exact = {s: n * ratios[s] / total for s in names}
    counts = {s: math.floor(exact[s]) for s in names}
    order = sorted(names, key=lambda s: (-(exact[s] - counts[s]), names.index(s)))
    for s in order[: n - sum(counts.values())]:
        counts[s] += 1
    if n >= len(names):
        for s in names:
            if counts[s] == 0:
                donor = max(names, key=lambda d: (counts[d], -names.index(d)))
                counts[donor] -= 1
                counts[s] += 1
    return {s: counts.get(s, 0) for s in ratios}


def assign_splits(
    plan: gpd.GeoDataFrame,
    *,
    block_size: SizeLike,
    ratios: Mapping[str, float] | None = None,
    seed: int = 0,
) -> SplitResult:
    """Assign every chip to a split by the square block of its grid it falls in.

    Blocks are ``block_size`` grid pixels, anchored at each grid's top-left corner; a block
    holds chips of a single split, so chips of different splits never share a block. Chips
    that straddle a block border are dropped (counted in the result). Blocks (over all grids,
    sorted by id) are shuffled with ``seed`` and dealt to the splits by ``ratios`` (default
    0.7 / 0.15 / 0.15), so the split of every chip is deterministic.
    """
    ratios = dict(ratios) if ratios is not None else {"train": 0.7, "val": 0.15, "test": 0.15}
    bad = [s for s in ratios if s not in SPLITS]
    if bad or any(r < 0 for r in ratios.values()) or sum(ratios.values()) <= 0:
        raise InputError(
            f"ratios must map {'/'.join(SPLITS)} to non-negative numbers with a positive sum; "
            f"got {ratios}"
        )
    block = yx(block_size, "block_size")
    plan = plan.copy()
    by0 = plan["row"].to_numpy() // block.y
    bx0 = plan["col"].to_numpy() // block.x
    by1 = (plan["row"].to_numpy() + plan["height"].to_numpy() - 1) // block.y
    bx1 = (plan["col"].to_numpy() + plan["width"].to_numpy() - 1) // block.x
    inside = (by0 == by1) & (bx0 == bx1)
    dropped = int((~inside).sum())
    plan = plan[inside].copy()
    plan["block"] = [
        f"{g}-b{y}-{x}" for g, y, x in zip(plan["grid_id"], by0[inside], bx0[inside], strict=False)
    ]
    blocks = sorted(set(plan["block"]))
    rng = np.random.default_rng(seed)
    order = [blocks[i] for i in rng.permutation(len(blocks))]
    counts = _allocate(len(order), ratios)
    owner: dict[str, str] = {}
    start = 0
    for split in ratios:
        for b in order[start : start + counts[split]]:
            owner[b] = split
        start += counts[split]
    plan["split"] = plan["block"].map(owner)
    plan = plan.reset_index(drop=True)
    return SplitResult(plan, dropped, {s: counts[s] for s in ratios})


def find_leaks(plan: gpd.GeoDataFrame, buffer: float = 0.0) -> pd.DataFrame:
    """Pairs of chips in different splits that overlap or lie closer than ``buffer``.

    Distances are measured in each grid's CRS units between the chips' exact bounds; chips
    that only touch along an edge are not a leak when ``buffer`` is 0. Returns a DataFrame
    with ``chip_a, chip_b, split_a, split_b, distance`` (empty when there is no leak).
    """
    import pandas as pd
    import shapely

    pairs: list[dict[str, Any]] = []
    for _, group in plan.groupby("crs", sort=True):
        boxes = shapely.box(group["minx"], group["miny"], group["maxx"], group["maxy"])
        tree = shapely.STRtree(boxes)
        if buffer > 0:
            left, right = tree.query(boxes, predicate="dwithin", distance=buffer)
        else:
            left, right = tree.query(boxes, predicate="intersects")
        splits = group["split"].to_numpy()
        ids = group["chip_id"].to_numpy()
        for i, j in zip(left, right, strict=False):
            if i >= j or splits[i] == splits[j]:
                continue
            distance = float(shapely.distance(boxes[i], boxes[j]))
            overlap = float(shapely.area(shapely.intersection(boxes[i], boxes[j])))
            if buffer > 0 and distance >= buffer and overlap == 0:
                continue
            if buffer == 0 and overlap == 0:
                continue
            pairs.append(
                {
                    "chip_a": ids[i],
                    "chip_b": ids[j],
                    "split_a": splits[i],
                    "split_b": splits[j],
                    "distance": distance,
                }
            )
    return pd.DataFrame(pairs, columns=["chip_a", "chip_b", "split_a", "split_b", "distance"])


def save_plan(plan: gpd.GeoDataFrame, path: str | Path) -> Path:
    """Write a plan as GeoParquet, atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    plan.to_parquet(tmp, index=False, write_covering_bbox=False)
    tmp.replace(path)
    return path


def load_plan(path: str | Path) -> gpd.GeoDataFrame:
    """Read a plan written by :func:`save_plan` and check its columns."""
    import geopandas as gpd

    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such plan file")
    plan = gpd.read_parquet(path)
    missing = [c for c in PLAN_COLUMNS if c not in plan.columns]
    if missing:
        raise StoreError(f"{path}: not a geochip plan; missing columns {missing}")
    plan["transform"] = plan["transform"].map(lambda t: [float(v) for v in t])
    return plan
