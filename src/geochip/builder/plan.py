""":class:`BuildPlan`: everything a build decides before any pixel is read: items, grids,
chips, splits (and the buffer), vector labels checked once, the store's dtype and nodata.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pystac
import shapely

from ..core.geometry import rfc7946_bbox, wgs84_footprints
from ..core.vectors import read_vector
from ..errors import EmptyInputError, InputError, NoOverlapError
from ..plan.chips import plan_chips
from ..plan.splits import SplitResult, assign_random, assign_regions, assign_splits, drop_buffer
from ..read.labels import rasterize_labels
from ..select.periods import Period
from ..select.table import Selection
from ..sources.sample import sample_labels_path
from .catalog import apply_registry
from .config.model import BuildConfig
from .grids import GridSpec, plan_grids
from .pixels import ReadOptions, output_dtype, read_options

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = [
    "BuildPlan",
    "plan_build",
]


@dataclass
class BuildPlan:
    """What a build will do, decided before any pixel is read."""

    items: list[pystac.Item]
    grids: dict[str, GridSpec]
    split: SplitResult
    planned: int
    labels: gpd.GeoDataFrame | None
    label_report: dict[str, int] = field(default_factory=dict)
    dtype: str = ""
    nodata: float | int = 0
    read: ReadOptions | None = None
    periods: list[Period] = field(default_factory=list)
    selection: Selection | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    bands: tuple[str, ...] = ()
    """The image's channels (an asset of N bands asked for by its key gives N)."""

    @property
    def plan(self) -> gpd.GeoDataFrame:
        """The chips kept, in array order."""
        return self.split.plan

    @property
    def steps(self) -> int | None:
        """Time steps per chip (None: no time axis)."""
        first = next(iter(self.grids.values()))
        return None if first.steps is None else len(first.steps)

    def fingerprint(self) -> str:
        """A hash of the chips, their splits, their sources' hrefs and time steps."""
        digest = hashlib.sha256()
        for chip, split in zip(self.plan["chip_id"], self.plan["split"], strict=False):
            digest.update(f"{chip}:{split};".encode())
        for gid in sorted(self.grids):
            spec = self.grids[gid]
            steps = [[s.name, s.time, list(s.item_ids)] for s in spec.steps or ()]
            digest.update(
                json.dumps(
                    [gid, spec.hrefs(), spec.dtype, str(spec.nodata), steps, spec.label_href]
                ).encode()
            )
        digest.update(json.dumps([self.dtype, str(self.nodata)]).encode())
        return digest.hexdigest()


def plan_build(config: BuildConfig) -> BuildPlan:
    """Items, grids, time steps, chips and splits for ``config``; reads no pixel."""
    config = apply_registry(config)

    gp = plan_grids(config)
    grids = gp.grids
    plans = []
    size = config.chips.size
    for gid, spec in grids.items():
        plans.append(
            plan_chips(
                spec.geobox(),
                size,
                stride=config.chips.stride,
                overlap=config.chips.overlap,
                edge=config.chips.edge,
                grid_id=gid,
            )
        )
    chips = pd.concat(plans, ignore_index=True) if len(plans) > 1 else plans[0]
    planned = len(chips)
    sp = config.split
    ratios: dict[str, float] = {str(k): v for k, v in sp.ratios.items()}
    if sp.method == "blocks":
        if sp.block_units == "m":
            split = assign_splits(
                chips, block_size=sp.block_size, ratios=ratios, seed=sp.seed, units="m"
            )
        else:
            block = int(sp.block_size)
            if sp.block_units == "chips":
                step = config.chips.step()
                size_y, size_x = (size, size) if isinstance(size, int) else (size["y"], size["x"])
                # a block of k chips spans (k - 1) strides plus one chip
                block_px: Any = {
                    "y": (block - 1) * step[0] + size_y,
                    "x": (block - 1) * step[1] + size_x,
                }
            else:
                block_px = block
            split = assign_splits(chips, block_size=block_px, ratios=ratios, seed=sp.seed)
    elif sp.method == "regions":
        assert sp.regions is not None
        regions = read_vector(sp.regions.path, layer=sp.regions.layer, what="regions file")
        split = assign_regions(
            chips, regions, column=sp.regions.column, ratios=ratios, seed=sp.seed
        )
    elif sp.method == "random":
        split = assign_random(chips, ratios=ratios, seed=sp.seed)
    else:
        none = chips.copy()
        none["block"] = none["grid_id"]
        none["split"] = "train"
        split = SplitResult(none, 0, {"train": len(none)})
    split = drop_buffer(split, sp.buffer)
    if len(split.plan) == 0:
        raise InputError(
            f"no chip is left after the split ({planned} planned, "
            f"{split.dropped_straddling} straddled blocks or regions, {split.dropped_outside} "
            f"outside every region, {split.dropped_buffer} within the buffer); use larger "
            "blocks, a smaller buffer or other regions"
        )
    labels, report = _prepare_labels(config, grids, split.plan)
    first = next(iter(grids.values()))
    dtype, nodata = output_dtype(config, first.dtype, first.nodata)
    return BuildPlan(
        gp.items,
        grids,
        split,
        planned,
        labels,
        report,
        dtype=dtype,
        nodata=nodata,
        read=read_options(config, dtype, nodata, gp.asked),
        periods=gp.periods,
        selection=gp.selection,
        skipped=gp.skipped,
        bands=gp.bands,
    )


def _prepare_labels(
    config: BuildConfig, grids: Mapping[str, GridSpec], chips: gpd.GeoDataFrame
) -> tuple[gpd.GeoDataFrame | None, dict[str, int]]:
    """Read and check vector labels once; class ids replace the attribute values.

    Labels that cover nothing are refused before any pixel is read: a file without shapes,
    or only null/empty ones (:class:`~geochip.errors.EmptyInputError`), and shapes none of
    which overlaps a chip of the plan (:class:`~geochip.errors.NoOverlapError`; the masks
    would be background everywhere). Shapes outside every chip are counted (``outside``).
    """
    if config.labels is None or config.labels.kind != "vector":
        return None, {}

    cfg = config.labels
    assert cfg.path is not None
    assert cfg.classes is not None
    path = str(sample_labels_path()) if cfg.path == "sample" else cfg.path
    shapes = read_vector(path, layer=cfg.layer, what="label file")
    if len(shapes) == 0:
        raise EmptyInputError(f"labels: the label file {path} holds no shape")
    if bool((shapes.geometry.isna() | shapes.geometry.is_empty).all()):
        raise EmptyInputError(
            f"labels: the {len(shapes)} shapes of {path} are all null or empty geometries"
        )
    # YAML keys are strings; an integer attribute column matches them by value too
    classes: dict[Any, int] = dict(cfg.classes)
    for key, value in cfg.classes.items():
        if key.lstrip("-").isdigit():
            classes.setdefault(int(key), value)
    first = next(iter(grids.values())).geobox()
    # rasterize_labels checks the column, the class map, the CRS and invalid geometries;
    # a one-pixel grid makes that check cheap.
    _, report = rasterize_labels(
        shapes,
        first[0:1, 0:1],
        classes,
        attribute=cfg.attribute,
        background=cfg.background,
        all_touched=cfg.all_touched,
        skip_invalid=cfg.skip_invalid,
    )
    geoms = shapes.geometry
    keep = ~(geoms.is_empty | geoms.isna())
    if cfg.skip_invalid:
        keep &= geoms.is_valid
    shapes = shapes[keep].copy()
    shapes["_class"] = [int(classes[v]) for v in shapes[cfg.attribute]]
    inside = _shapes_on_chips(shapes, chips)
    if len(shapes) and not inside.any():
        raise NoOverlapError(
            f"labels: none of the {len(shapes)} shapes of {path} (bounds "
            f"{_bounds_4326(shapes.geometry)} in EPSG:4326) overlaps any of the "
            f"{len(chips)} chips planned (bounds {_bounds_4326(chips.geometry)}); every mask "
            "would be background. Check the label file, its CRS, and the sources' area"
        )
    return shapes[["_class", "geometry"]].reset_index(drop=True), {
        "shapes": len(shapes),
        "empty": report.empty,
        "invalid": report.invalid,
        "outside": int((~inside).sum()),
    }


def _shapes_on_chips(shapes: gpd.GeoDataFrame, chips: gpd.GeoDataFrame) -> np.ndarray:
    """Booleans: which shapes overlap at least one chip (compared in each chip's CRS)."""
    inside = np.zeros(len(shapes), dtype=bool)
    for crs, rows in chips.groupby("crs", sort=False):
        boxes = shapely.box(
            rows["minx"].to_numpy(), rows["miny"].to_numpy(),
            rows["maxx"].to_numpy(), rows["maxy"].to_numpy(),
        )  # fmt: skip
        local = shapes.geometry.to_crs(crs).to_numpy()
        hits = shapely.STRtree(boxes).query(local, predicate="intersects")
        inside[np.unique(hits[0])] = True
    return inside


def _bounds_4326(geoms: gpd.GeoSeries) -> list[float]:
    """RFC 7946 bounds (west > east across 180) of ``geoms``, for messages."""
    footprint = shapely.union_all(wgs84_footprints(geoms.values, geoms.crs, points=1))
    return [round(float(v), 5) for v in rfc7946_bbox(footprint)]


def lead_dims(plan: BuildPlan, config: BuildConfig) -> tuple[int, ...]:
    """The image's dimensions before (y, x): (C,) or (T, C)."""
    steps = plan.steps
    bands = len(plan.bands or config.bands.names)
    return (bands,) if steps is None else (steps, bands)
