"""Leakage-free splits, decided in the plan before any pixel is read.

:func:`assign_splits` deals square blocks of chips to splits (blocks in pixels or chips
anchored at each grid's top-left corner, or in CRS units anchored per CRS, so overlapping
grids share blocks); :func:`assign_regions` takes a split from the polygons a chip
overlaps; :func:`assign_random` is for chips that do not overlap. Chips that straddle two
blocks or regions are dropped, and :func:`drop_buffer` drops chips closer than a buffer to
a chip of another split (the held-out split keeps its chip). :func:`find_leaks` checks a
plan, across CRSs too.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from ..core.grid import SizeLike, yx
from ..errors import InputError

__all__ = [
    "SPLITS",
    "SplitResult",
    "assign_random",
    "assign_regions",
    "assign_splits",
    "drop_buffer",
    "find_leaks",
]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitResult:
    """What :func:`assign_splits` decided: the kept chips, and what it dropped and why."""

    plan: gpd.GeoDataFrame
    dropped_straddling: int
    blocks: dict[str, int] = field(default_factory=dict)
    dropped_buffer: int = 0
    dropped_outside: int = 0

    def summary(self) -> dict[str, Any]:
        """Counts for reports: chips and blocks (or regions) per split, chips dropped."""
        counts = self.plan.groupby("split").size().to_dict() if len(self.plan) else {}
        return {
            "chips": {s: int(counts.get(s, 0)) for s in SPLITS},
            "blocks": dict(self.blocks),
            "dropped_straddling": self.dropped_straddling,
            "dropped_buffer": self.dropped_buffer,
            "dropped_outside": self.dropped_outside,
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


def _check_ratios(ratios: Mapping[str, float] | None) -> dict[str, float]:
    ratios = dict(ratios) if ratios is not None else {"train": 0.7, "val": 0.15, "test": 0.15}
    bad = [s for s in ratios if s not in SPLITS]
    if bad or any(r < 0 for r in ratios.values()) or sum(ratios.values()) <= 0:
        raise InputError(
            f"ratios must map {'/'.join(SPLITS)} to non-negative numbers with a positive sum; "
            f"got {ratios}"
        )
    # a canonical order (train, val, test), whatever order the mapping came in: the deal
    # follows it, and a config read back from a manifest (saved with sorted keys) must deal
    # the same splits
    return {s: ratios[s] for s in SPLITS if s in ratios}


def _deal(
    keys: list[str], ratios: Mapping[str, float], seed: int
) -> tuple[dict[str, str], dict[str, int]]:
    """Shuffle sorted ``keys`` with ``seed`` and deal them to splits by ``ratios`` (in the
    canonical order of :data:`SPLITS`, whatever the mapping's order)."""
    keys = sorted(keys)
    rng = np.random.default_rng(seed)
    order = [keys[i] for i in rng.permutation(len(keys))]
    ratios = {s: ratios[s] for s in SPLITS if s in ratios}
    counts = _allocate(len(order), ratios)
    owner: dict[str, str] = {}
    start = 0
    for split in ratios:
        for key in order[start : start + counts[split]]:
            owner[key] = split
        start += counts[split]
    return owner, {s: counts[s] for s in ratios}


def _crs_key(crs: str) -> str:
    if crs.upper().startswith("EPSG:"):
        return crs.upper()

    return "wkt" + hashlib.sha256(crs.encode()).hexdigest()[:8]


def assign_splits(
    plan: gpd.GeoDataFrame,
    *,
    block_size: SizeLike | float,
    ratios: Mapping[str, float] | None = None,
    seed: int = 0,
    units: str = "px",
) -> SplitResult:
    """Assign every chip to a split by the square block it falls in.

    With ``units="px"`` blocks are ``block_size`` grid pixels, anchored at each grid's
    top-left corner. With ``units="m"`` they are ``block_size`` CRS units (metres for UTM)
    anchored at one origin per CRS (the top-left corner of that CRS's chips), so grids that
    overlap (several dates of one place) share their blocks. A block holds chips of a single
    split, so chips of different splits never share a block. Chips that straddle a block
    border are dropped (counted in the result). Blocks (sorted by id) are shuffled with
    ``seed`` and dealt to the splits by ``ratios`` (default 0.7 / 0.15 / 0.15), so the split
    of every chip is deterministic.

    >>> from odc.geo.geobox import GeoBox
    >>> from geochip.plan.chips import plan_chips
    >>> g = GeoBox.from_bbox((500_000, 0, 500_640, 640), "EPSG:32633", resolution=10)
    >>> result = assign_splits(plan_chips(g, 16), block_size=320, units="m", seed=0)
    >>> result.dropped_straddling, sorted(result.blocks.items())
    (0, [('test', 1), ('train', 2), ('val', 1)])
    """
    ratios = _check_ratios(ratios)
    plan = plan.copy()
    if units == "px":
        block = yx(block_size, "block_size")
        by0 = plan["row"].to_numpy() // block.y
        bx0 = plan["col"].to_numpy() // block.x
        by1 = (plan["row"].to_numpy() + plan["height"].to_numpy() - 1) // block.y
        bx1 = (plan["col"].to_numpy() + plan["width"].to_numpy() - 1) // block.x
        prefix = plan["grid_id"].astype(str).to_numpy()
    elif units == "m":
        size = float(block_size)  # type: ignore[arg-type]
        if not size > 0:
            raise InputError(f"block_size must be positive, got {block_size}")
        by0 = np.zeros(len(plan), dtype=np.int64)
        bx0, by1, bx1 = by0.copy(), by0.copy(), by0.copy()
        prefix = np.empty(len(plan), dtype=object)
        eps = 1e-6
        for crs, rows in plan.groupby("crs", sort=True).indices.items():
            minx, maxx = plan["minx"].to_numpy()[rows], plan["maxx"].to_numpy()[rows]
            miny, maxy = plan["miny"].to_numpy()[rows], plan["maxy"].to_numpy()[rows]
            x0, y0 = minx.min(), maxy.max()
            bx0[rows] = np.floor((minx - x0) / size + eps)
            bx1[rows] = np.floor((maxx - x0) / size - eps)
            by0[rows] = np.floor((y0 - maxy) / size + eps)
            by1[rows] = np.floor((y0 - miny) / size - eps)
            prefix[rows] = _crs_key(str(crs))
    else:
        raise InputError(f"units must be 'px' or 'm', got {units!r}")
    inside = (by0 == by1) & (bx0 == bx1)
    dropped = int((~inside).sum())
    plan = plan[inside].copy()
    plan["block"] = [
        f"{g}-b{y}-{x}" for g, y, x in zip(prefix[inside], by0[inside], bx0[inside], strict=False)
    ]
    owner, counts = _deal(list(set(plan["block"])), ratios, seed)
    plan["split"] = plan["block"].map(owner)
    plan = plan.reset_index(drop=True)
    return SplitResult(plan, dropped, counts)


def assign_random(
    plan: gpd.GeoDataFrame, *, ratios: Mapping[str, float] | None = None, seed: int = 0
) -> SplitResult:
    """Assign chips to splits one by one at random (by ``ratios`` and ``seed``).

    Neighbouring chips land in different splits: fine for chips that do not overlap (and
    with a ``buffer``, see :func:`drop_buffer`), a leak for overlapping ones.
    """
    ratios = _check_ratios(ratios)
    plan = plan.copy()
    owner, counts = _deal(list(plan["chip_id"]), ratios, seed)
    plan["block"] = plan["chip_id"]
    plan["split"] = plan["chip_id"].map(owner)
    return SplitResult(plan.reset_index(drop=True), 0, counts)


def assign_regions(
    plan: gpd.GeoDataFrame,
    regions: gpd.GeoDataFrame,
    *,
    column: str = "split",
    ratios: Mapping[str, float] | None = None,
    seed: int = 0,
) -> SplitResult:
    """Assign chips to splits by the region polygons they overlap.

    When every value of ``column`` is a split name (train/val/test) it is used as it is;
    otherwise the distinct values are region ids, dealt to splits by ``ratios`` and ``seed``
    (a grouped split: one region, one split). A chip that overlaps regions of different
    splits is dropped (``dropped_straddling``); one that overlaps no region is dropped
    (``dropped_outside``).
    """
    ratios = _check_ratios(ratios)
    if column not in regions.columns:
        raise InputError(
            f"regions have no column {column!r}; columns: {', '.join(map(str, regions.columns))}"
        )
    if regions.crs is None:
        raise InputError("the regions have no CRS; set one (GeoDataFrame.set_crs) and retry")
    regions = regions[~(regions.geometry.is_empty | regions.geometry.isna())]
    values = regions[column].astype(str)
    if set(values) <= set(SPLITS):
        owner = {v: v for v in SPLITS}
        counts = {s: int((values == s).sum()) for s in SPLITS}
    else:
        owner, counts = _deal(list(set(values)), ratios, seed)
    region_split = values.map(owner).to_numpy()
    split = np.full(len(plan), None, dtype=object)
    straddle = np.zeros(len(plan), dtype=bool)
    for crs, rows in plan.groupby("crs", sort=True).indices.items():
        local = regions.to_crs(str(crs))
        geoms = local.geometry.to_numpy()
        tree = shapely.STRtree(geoms)
        sub = plan.iloc[rows]
        boxes = shapely.box(sub["minx"], sub["miny"], sub["maxx"], sub["maxy"])
        left, right = tree.query(boxes, predicate="intersects")
        area = shapely.area(shapely.intersection(boxes[left], geoms[right]))
        keep = area > 0
        for i, j in zip(left[keep], right[keep], strict=False):
            k = rows[i]
            s = region_split[j]
            if split[k] is None:
                split[k] = s
            elif split[k] != s:
                straddle[k] = True
    outside = np.array([s is None for s in split]) & ~straddle
    inside = ~outside & ~straddle
    plan = plan[inside].copy()
    plan["split"] = split[inside]
    plan["block"] = ["region-" + str(s) for s in plan["split"]]
    return SplitResult(
        plan.reset_index(drop=True),
        int(straddle.sum()),
        counts,
        dropped_outside=int(outside.sum()),
    )


#: Which chip of a pair closer than the buffer is kept: the held-out split's.
_KEEP_PRIORITY = {"test": 2, "val": 1, "train": 0}


def drop_buffer(result: SplitResult, buffer: float) -> SplitResult:
    """Drop chips that lie within ``buffer`` (CRS units) of a chip of another split.

    Of each such pair the chip of the held-out split is kept (test over val over train),
    so the evaluation sets keep their size and training loses the chips next to them.
    """
    if buffer <= 0 or len(result.plan) == 0:
        return result
    pairs = find_leaks(result.plan, buffer=buffer)
    if len(pairs) == 0:
        return result
    drop = set()
    for a, b, sa, sb in zip(
        pairs["chip_a"], pairs["chip_b"], pairs["split_a"], pairs["split_b"], strict=False
    ):
        drop.add(a if _KEEP_PRIORITY.get(sa, 0) < _KEEP_PRIORITY.get(sb, 0) else b)
    plan = result.plan[~result.plan["chip_id"].isin(drop)].reset_index(drop=True)
    return SplitResult(
        plan,
        result.dropped_straddling,
        result.blocks,
        dropped_buffer=result.dropped_buffer + len(drop),
        dropped_outside=result.dropped_outside,
    )


def _native_boxes(plan: gpd.GeoDataFrame) -> Any:
    return shapely.box(plan["minx"], plan["miny"], plan["maxx"], plan["maxy"])


def find_leaks(plan: gpd.GeoDataFrame, buffer: float = 0.0) -> pd.DataFrame:
    """Pairs of chips in different splits that overlap or lie closer than ``buffer``.

    Distances are measured between the chips' exact bounds in a grid's CRS units; chips of
    grids in different CRSs are compared after reprojecting one side (its outline densified)
    into the other's CRS. Chips that only touch along an edge are not a leak when
    ``buffer`` is 0. Returns a DataFrame with ``chip_a, chip_b, split_a, split_b,
    distance`` (empty when there is no leak).
    """
    columns = ["chip_a", "chip_b", "split_a", "split_b", "distance"]
    if len(plan) == 0:
        return pd.DataFrame([], columns=columns)
    plan = plan.reset_index(drop=True)
    boxes = _native_boxes(plan)
    splits = plan["split"].to_numpy()
    ids = plan["chip_id"].to_numpy()
    crs_of = plan["crs"].to_numpy()
    groups = plan.groupby("crs", sort=True).indices
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for crs, rows in groups.items():
        local = boxes[rows]
        tree = shapely.STRtree(local)
        # the other chips: same CRS as they are, other CRSs reprojected into this one
        others = [rows]
        other_boxes = [local]
        for crs2, rows2 in groups.items():
            if crs2 == crs:
                continue
            width = (plan["maxx"].to_numpy()[rows2] - plan["minx"].to_numpy()[rows2]).max()
            outline = gpd.GeoSeries(
                shapely.segmentize(boxes[rows2], max(width / 16, 1e-9)), crs=str(crs2)
            )
            others.append(rows2)
            other_boxes.append(outline.to_crs(str(crs)).to_numpy())
        candidates = np.concatenate(others)
        geoms = np.concatenate(other_boxes)
        if buffer > 0:
            q_idx, t_idx = tree.query(geoms, predicate="dwithin", distance=buffer)
        else:
            q_idx, t_idx = tree.query(geoms, predicate="intersects")
        i = rows[t_idx]
        j = candidates[q_idx]
        keep = (splits[i] != splits[j]) & (i != j)
        i, j, q, t = i[keep], j[keep], q_idx[keep], t_idx[keep]
        if len(i) == 0:
            continue
        distance = shapely.distance(local[t], geoms[q])
        overlap = shapely.area(shapely.intersection(local[t], geoms[q]))
        leak = (overlap > 0) | ((distance < buffer) if buffer > 0 else False)
        for a, b, d in zip(i[leak], j[leak], distance[leak], strict=False):
            if crs_of[a] == crs_of[b] and a > b:
                continue
            key = (ids[a], ids[b]) if ids[a] < ids[b] else (ids[b], ids[a])
            if key in found:
                continue
            first, second = (a, b) if ids[a] < ids[b] else (b, a)
            found[key] = {
                "chip_a": ids[first],
                "chip_b": ids[second],
                "split_a": splits[first],
                "split_b": splits[second],
                "distance": float(d),
            }
    rows_out = [found[k] for k in sorted(found)]
    return pd.DataFrame(rows_out, columns=columns)
