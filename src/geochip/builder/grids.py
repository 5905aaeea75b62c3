"""The grids of a build: planned from metadata (no pixel is read), shipped to the tasks.

A build cuts chips out of **grids** (:class:`GridSpec`, plain data that travels to the
workers). Where a grid comes from depends on the config:

============================  ==============================================================
config                        grids
============================  ==============================================================
(default)                     one per item: its reference band's grid, or the same extent
                              at ``grid.resolution`` / in ``grid.crs``; chips (C, H, W)
``time``                      items whose grids are equal (a tile's dates) are one grid;
                              its time steps are the periods of ``time``; chips (T, C, H, W)
``selection``                 one per label (LandCoverNet): a raster label's exact grid,
                              else the footprint (see below); its steps are the periods,
                              each holding the scenes the selection chose
``grid.geometries``           one per point (a patch of ``size`` pixels) or polygon (its
                              buffered box), in ``grid.crs``; scenes searched per grid
============================  ==============================================================

**The footprint rule (selection without a label raster).** With ``grid.crs`` (and
``grid.resolution``) the label's footprint becomes a grid in that CRS with pixel edges on
multiples of the resolution (:func:`geochip.core.grid.geometry_geobox`). Without it, the grid
is the footprint on the pixel lattice of the reference band of the label's first chosen
scene (in period order): the same CRS and pixels as that scene, so it is read without
resampling (``GeoBox.enclosing``); ``grid.resolution`` alone keeps that CRS at another
pixel size. A label for which no period has a scene gets no grid (it is listed in the
manifest and the selection table).

Each grid's time steps are :mod:`geochip.builder.steps`; tasks read it with
:mod:`geochip.builder.pixels`. Hrefs in a GridSpec are absolute and unsigned; a signer
given as an import path is loaded in the task and applied just before each read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pystac
from affine import Affine
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry

from ..core.bands import complete_item, resolve_asset, resolve_bands
from ..core.engine import run_tasks
from ..core.geometry import project, wgs84_footprint
from ..core.grid import (
    asset_geobox,
    geometry_geobox,
    label_geobox,
    point_geobox,
    same_grid,
    target_geobox,
)
from ..core.security import Signer, redact, unsign_href
from ..core.vectors import read_vector, with_ids
from ..errors import ConfigError, EmptyInputError, InputError, NoOverlapError
from ..read.labels import align_label
from ..read.load import band_scaling, load_cube
from ..select.cloud import CloudBand
from ..select.labels import load_labels
from ..select.periods import Period, periods_span
from ..select.search import select_scenes
from ..select.table import Selection
from ..sources.catalog import Catalog
from ..sources.open import open_catalog
from .catalog import open_source_catalog, resolve_items
from .config.model import BuildConfig
from .steps import StepSpec, iso, period_steps, step_time

__all__ = [
    "GridPlan",
    "GridSpec",
    "item_geobox",
    "plan_grids",
]


@dataclass(frozen=True)
class GridSpec:
    """Everything a worker needs to read chips of one grid (plain data, cheap to ship)."""

    grid_id: str
    items: tuple[dict[str, Any], ...]
    bands: tuple[str, ...]
    mask_band: str | None
    crs: str
    affine: tuple[float, ...]
    shape: tuple[int, int]
    resampling: str
    nodata: float | int
    dtype: str
    steps: tuple[StepSpec, ...] | None = None
    """None: one scene, no time axis; else the time steps, in time order."""
    scaling: tuple[tuple[float, float], ...] = ()
    """(raster:scale, raster:offset) per band (NaN when the items do not say)."""
    label_href: str | None = None
    """A label raster for this grid (unsigned), when labels are rasters."""
    label_same_grid: bool = True

    @property
    def item(self) -> dict[str, Any]:
        """The first (or only) item, as a STAC dict."""
        return self.items[0]

    def geobox(self) -> GeoBox:
        """The grid as a GeoBox."""
        return GeoBox(self.shape, Affine(*self.affine), self.crs)

    def hrefs(self) -> list[str]:
        """The files read for this grid: every item's bands and quality band."""
        out = []
        names = [*self.bands, *([self.mask_band] if self.mask_band else [])]
        for data in self.items:
            item = pystac.Item.from_dict(data)
            out += [b.href for b in resolve_bands(item, names, headers=False)]
        return out


@dataclass
class GridPlan:
    """The grids of a build and what was decided on the way."""

    items: list[pystac.Item]
    grids: dict[str, GridSpec]
    periods: list[Period] = field(default_factory=list)
    selection: Selection | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    """Labels or geometries without any scene: id -> why."""
    bands: tuple[str, ...] = ()
    """The image's channels: ``bands.names`` with each asset of N bands asked for by its
    key as its N bands (``<asset>.1`` ..), resolved on the first item."""
    asked: dict[str, str] = field(default_factory=dict)
    """Channel -> the name in ``bands.names`` it comes from."""


def _reference(config: BuildConfig) -> str:
    return config.grid.reference_band or config.bands.names[0]


def item_geobox(item: pystac.Item, config: BuildConfig, sign: Signer | None = None) -> GeoBox:
    """An item's grid: its reference band's grid, at ``grid.resolution``, in ``grid.crs``
    (``sign``: the catalog's signer, for items whose header has to be read)."""
    base = asset_geobox(item, resolve_asset(item, _reference(config)), sign)
    if config.grid.crs is not None:
        assert config.grid.resolution is not None
        return geometry_geobox(base.extent, config.grid.crs, config.grid.resolution)
    return target_geobox(base, config.grid.resolution)


def _grid_key(geobox: GeoBox) -> tuple[str, tuple[float, ...], tuple[int, int]]:
    return (
        str(geobox.crs.to_wkt()) if geobox.crs is not None else "",
        tuple(round(v, 6) for v in tuple(geobox.affine)[:6]),
        (int(geobox.shape.y), int(geobox.shape.x)),
    )


def _tile_id(geobox: GeoBox) -> str:
    crs = geobox.crs
    tag = f"EPSG{crs.epsg}" if crs is not None and crs.epsg else "crs"
    a = geobox.affine
    return f"{tag}-{a.c:.0f}-{a.f:.0f}-{geobox.shape.y}x{geobox.shape.x}"


@dataclass
class _Grid:
    """A grid while it is being planned."""

    grid_id: str
    geobox: GeoBox
    items: list[pystac.Item]
    steps: tuple[StepSpec, ...] | None
    label: Any = None  # a label raster: href, or (label item, asset)


def _item_grids(config: BuildConfig, catalog: Catalog) -> tuple[list[_Grid], list[Period]]:
    items = resolve_items(config, catalog)
    if not items:
        raise EmptyInputError("the sources yield no item; check sources (ids, datetime, bbox)")
    if config.time is None:
        return [_Grid(i.id, item_geobox(i, config, catalog.sign), [i], None) for i in items], []
    periods = config.time.make_periods()
    groups: dict[Any, _Grid] = {}
    for item in items:
        geobox = item_geobox(item, config, catalog.sign)
        key = _grid_key(geobox)
        if key not in groups:
            groups[key] = _Grid(_tile_id(geobox), geobox, [], None)
        groups[key].items.append(item)
    grids = []
    seen: set[str] = set()
    for grid in groups.values():
        if grid.grid_id in seen:  # two grids with the same corner and size, other CRS
            grid.grid_id = f"{grid.grid_id}-{len(seen)}"
        seen.add(grid.grid_id)
        grid.steps = period_steps(grid.items, periods)
        used = {i for s in grid.steps for i in s.item_ids}
        grid.items = [i for i in grid.items if i.id in used]
        if grid.items:
            grids.append(grid)
    if not grids:
        raise InputError(
            f"no item falls in the periods of time ({periods[0].start.date()} .. "
            f"{periods[-1].end.date()}); check time.start/end against the items' dates"
        )
    return grids, periods


def _selection_grids(
    config: BuildConfig, catalog: Catalog
) -> tuple[list[_Grid], list[Period], Selection, dict[str, str]]:
    sel = config.selection
    assert sel is not None
    assert config.time is not None
    periods = config.time.make_periods()
    band: Any = sel.cloud_band
    if band not in (None, "auto"):
        band = CloudBand.parse(band)
    label_items: dict[str, pystac.Item] = {}
    labels_source: Any = sel.labels
    if config.labels is not None and config.labels.kind == "raster" and config.labels.asset:
        try:
            label_cat = open_catalog(sel.labels)
            label_items = {i.id: i for i in label_cat.items()}
        except Exception as err:
            raise InputError(
                f"labels.asset: the label rasters come from STAC label items, but "
                f"selection.labels {sel.labels!r} is not a STAC catalog ({err})"
            ) from err
        labels_source = load_labels(list(label_items.values()), id_column=sel.id_column)
    selection = select_scenes(
        catalog,
        labels_source,
        start=config.time.start,
        end=config.time.end,
        periods=config.time.periods if config.time.periods is not None else 1,
        max_cloud=sel.max_cloud,
        relax_step=sel.relax_step,
        cloud_limit=sel.cloud_limit,
        k=sel.k,
        collections=config.sources.collections,
        cloud_band=band,
        cloud_over=sel.cloud_over,
        missing_cloud=sel.missing_cloud,
        strict=sel.strict,
        workers=sel.workers,
        id_column=sel.id_column,
    )
    table = selection.table
    grids: list[_Grid] = []
    skipped: dict[str, str] = {}
    for label_id in dict.fromkeys(table["label_id"]):
        rows = table[table["label_id"] == label_id].sort_values("period")
        steps = []
        chosen: list[pystac.Item] = []
        for row, period in zip(rows.itertuples(), periods, strict=True):
            step_items = [selection.items[i] for i in row.item_ids]
            chosen += [i for i in step_items if i not in chosen]
            steps.append(
                StepSpec(
                    str(row.period_name),
                    iso(period.start),
                    iso(period.end),
                    step_time(step_items, period.middle),
                    tuple(str(i) for i in row.item_ids),
                )
            )
        if not chosen:
            skipped[str(label_id)] = f"no scene in any period up to cloud_limit {sel.cloud_limit}%"
            continue
        footprint = Geometry(rows.geometry.iloc[0], "EPSG:4326")
        label: Any = None
        if label_items:
            item = label_items[str(label_id)]
            assert config.labels is not None
            assert config.labels.asset is not None
            geobox = label_geobox(item, config.labels.asset)
            label = (item, config.labels.asset)
        elif config.grid.crs is not None:
            assert config.grid.resolution is not None
            geobox = geometry_geobox(footprint, config.grid.crs, config.grid.resolution)
        else:
            base = asset_geobox(
                chosen[0], resolve_asset(chosen[0], _reference(config)), catalog.sign
            )
            if config.grid.resolution is not None:
                geobox = geometry_geobox(footprint, base.crs, config.grid.resolution)
            else:
                assert base.crs is not None
                geobox = target_geobox(base.enclosing(footprint.to_crs(base.crs)), None)
        grids.append(_Grid(str(label_id), geobox, chosen, tuple(steps), label))
    if not grids:
        raise NoOverlapError(
            f"the selection chose no scene for any of its {len(skipped)} labels; raise "
            "selection.cloud_limit, widen time.start..end, or check the collections"
        )
    return grids, periods, selection, skipped


def _geometry_grids(
    config: BuildConfig, catalog: Catalog
) -> tuple[list[_Grid], list[Period], dict[str, str]]:
    cfg = config.grid.geometries
    assert cfg is not None
    assert config.grid.crs is not None
    assert config.grid.resolution is not None
    crs, res = config.grid.crs, config.grid.resolution
    frame = with_ids(
        read_vector(cfg.path, layer=cfg.layer, what="geometry file"),
        id_column=cfg.id_column,
        source=cfg.path,
        what="grid.geometries",
    )
    periods = config.time.make_periods() if config.time is not None else []
    src = config.sources
    when: Any = src.datetime
    if when is None and periods:
        when = periods_span(periods)

    def one(row: tuple[str, Any]) -> _Grid:
        gid, shape = row
        geom = Geometry(shape, "EPSG:4326")
        if cfg.mode == "patch":
            assert cfg.size is not None
            size = cfg.size
            centre = project(geom, crs).centroid
            geobox = point_geobox(centre, crs, res, size, snap=cfg.snap)
        else:
            geobox = geometry_geobox(geom, crs, res, buffer=cfg.buffer, buffer_unit=cfg.buffer_unit)
        found = catalog.search(
            intersects=wgs84_footprint(geobox.extent).geom,  # split at 180, never a box
            datetime=when,
            collections=src.collections,
            max_cloud=src.max_cloud,
            ids=src.ids,
            allow_empty=True,
        )
        items = list(found)[: src.max_items] if src.max_items else list(found)
        steps = period_steps(items, periods)
        used = {i for s in steps for i in s.item_ids}
        return _Grid(gid, geobox, [i for i in items if i.id in used], steps)

    rows = list(zip(frame["id"], frame.geometry, strict=True))
    grids: list[_Grid | None] = [None] * len(rows)
    for n, grid in run_tasks(one, rows, workers=4):
        grids[n] = grid
    kept, skipped = [], {}
    for maybe in grids:
        assert maybe is not None
        grid = maybe
        if grid.items:
            kept.append(grid)
        else:
            skipped[grid.grid_id] = "no scene over it in the time range"
    if not kept:
        raise NoOverlapError(
            f"no scene covers any of the {len(rows)} geometries of {cfg.path} in the time "
            "range; check sources.datetime / time.start..end and the collections"
        )
    return kept, periods, skipped


def _source_meta(
    item: pystac.Item, config: BuildConfig, grid: GeoBox, catalog: Catalog
) -> tuple[str, float | int]:
    """(dtype, nodata) of the image bands of ``item``, from metadata (else the rasters'
    headers; no pixel is read)."""
    extra = [config.masks.band] if config.masks is not None else []
    cube = load_cube(
        [item],
        [*config.bands.names, *extra],
        grid,
        chunks=min(512, *grid.shape.yx),
        patch_url=catalog.sign,
    )
    bands = [b for b in map(str, cube.data_vars) if b not in extra]
    dtypes = {np.dtype(cube[b].dtype) for b in bands}
    if len(dtypes) > 1:
        raise InputError(
            f"item {item.id}: bands {bands} have different dtypes "
            f"{sorted(d.name for d in dtypes)}; one store holds one dtype, choose bands "
            "that share it"
        )
    dtype = dtypes.pop()
    nodata: Any
    if config.bands.nodata is not None:
        nodata = config.bands.nodata
    else:
        values = {cube[b].attrs.get("nodata") for b in bands}
        values = {v for v in values if v is not None}
        clean = {("nan" if isinstance(v, float) and np.isnan(v) else v) for v in values}
        if len(clean) > 1:
            raise ConfigError(
                f"bands.nodata: the bands of item {item.id} have different nodata values "
                f"{sorted(map(str, clean))}; set bands.nodata to the one to use"
            )
        nodata = values.pop() if values else (float("nan") if dtype.kind == "f" else 0)
    nodata = np.asarray(nodata, dtype=dtype).item()
    return dtype.name, nodata


def _item_dict(item: pystac.Item) -> dict[str, Any]:
    data = item.to_dict(include_self_link=False, transform_hrefs=False)
    for key, asset in item.assets.items():
        # absolute (workers may run elsewhere), unsigned, and never a secret
        href = asset.get_absolute_href() or asset.href
        data["assets"][key]["href"] = redact(unsign_href(href))
    data.pop("links", None)
    return data


def _label_raster(
    config: BuildConfig, grid: _Grid, catalog: Catalog
) -> tuple[str | None, bool, bool]:
    """(href, same grid, overlaps) of a grid's label raster; a different grid is refused
    here when labels.on_mismatch is 'raise'."""
    labels = config.labels
    if labels is None or labels.kind != "raster":
        return None, True, True

    if grid.label is not None:
        item, asset = grid.label
        href = resolve_bands(item, [asset], headers=False)[0].href
    elif labels.path is not None:
        href = labels.path
    else:
        assert labels.asset is not None
        item = grid.items[0]
        if labels.asset not in item.assets:
            raise InputError(
                f"labels.asset: item {item.id} has no asset {labels.asset!r}; its assets: "
                f"{', '.join(sorted(item.assets))}"
            )
        href = resolve_bands(item, [labels.asset], headers=False)[0].href
    href = unsign_href(href)
    readable = catalog.sign(href)
    source = label_geobox(readable)
    same = same_grid(source, grid.geobox)
    if not same and labels.on_mismatch == "raise":
        try:
            align_label(readable, grid.geobox, on_mismatch="raise")
        except Exception as err:
            raise type(err)(f"labels (grid {grid.grid_id}, {redact(href)}): {err}") from None
    target = grid.geobox.extent
    overlaps = target.crs is None or bool(source.extent.to_crs(target.crs).intersects(target))
    return href, same, overlaps


def plan_grids(config: BuildConfig) -> GridPlan:
    """Every grid of the build with its items and time steps; reads no pixel (only
    metadata, and the selection's cloud bands where it counts clouds)."""
    catalog = open_source_catalog(config)
    selection = None
    skipped: dict[str, str] = {}
    if config.selection is not None:
        grids, periods, selection, skipped = _selection_grids(config, catalog)
    elif config.grid.geometries is not None:
        grids, periods, skipped = _geometry_grids(config, catalog)
    else:
        grids, periods = _item_grids(config, catalog)
    meta: dict[str, tuple[str, float | int]] = {}
    specs: dict[str, GridSpec] = {}
    used: dict[str, pystac.Item] = {}
    first_dtype: str | None = None
    outside: list[str] = []  # grids that their label raster does not overlap
    found = resolve_bands(grids[0].items[0], config.bands.names, sign=catalog.sign)
    channels = tuple(b.name for b in found)
    asked = {b.name: b.asked for b in found}
    names = [*config.bands.names, *([config.masks.band] if config.masks is not None else [])]
    completed: dict[str, dict[str, Any]] = {}
    for grid in grids:
        for item in grid.items:
            if item.id not in meta:
                meta[item.id] = _source_meta(item, config, grid.geobox, catalog)
            dtype, _ = meta[item.id]
            if first_dtype is None:
                first_dtype = dtype
            elif dtype != first_dtype:
                raise InputError(
                    f"item {item.id} has dtype {dtype}, the earlier items {first_dtype}; one "
                    "store holds one dtype"
                )
            used.setdefault(item.id, item)
            if item.id not in completed:  # tasks then need no header read of their own
                completed[item.id] = _item_dict(complete_item(item, names, sign=catalog.sign))
        dtype, nodata = meta[grid.items[0].id]
        scaling: tuple[tuple[float, float], ...] = ()
        if config.scale is not None:  # items that disagree on raster:scale are refused here
            scaling = tuple(band_scaling(grid.items, b) for b in channels)
            _check_scaling(config, grid, scaling, asked)
        label_href, same, overlaps = _label_raster(config, grid, catalog)
        if not overlaps:
            outside.append(grid.grid_id)
        geobox = grid.geobox
        specs[grid.grid_id] = GridSpec(
            grid_id=grid.grid_id,
            items=tuple(completed[i.id] for i in grid.items),
            bands=channels,
            mask_band=config.masks.band if config.masks is not None else None,
            crs=str(geobox.crs.to_wkt()) if geobox.crs is not None else "",
            affine=tuple(geobox.affine)[:6],
            shape=(int(geobox.shape.y), int(geobox.shape.x)),
            resampling=config.grid.resampling,
            nodata=nodata,
            dtype=dtype,
            steps=grid.steps,
            scaling=scaling,
            label_href=label_href,
            label_same_grid=same,
        )
    if specs and len(outside) == len(specs):
        raise NoOverlapError(
            f"labels: the label raster overlaps none of the {len(specs)} grids "
            f"({', '.join(outside[:5])}{'...' if len(outside) > 5 else ''}); every mask would "
            "be 255 (ignore). Check labels.path / labels.asset and the sources' area"
        )
    items = sorted(used.values(), key=lambda i: (i.datetime or dt.datetime.min, i.id))
    return GridPlan(items, specs, periods, selection, skipped, channels, asked)


def _check_scaling(
    config: BuildConfig,
    grid: _Grid,
    scaling: Sequence[tuple[float, float]],
    asked: dict[str, str],
) -> None:
    sc = config.scale
    assert sc is not None

    def given(value: Any, band: str) -> bool:
        return value is not None and (
            not isinstance(value, dict) or band in value or asked.get(band) in value
        )

    missing = [
        band
        for band, (s, o) in zip(asked, scaling, strict=True)
        if np.isnan(s) and np.isnan(o) and not given(sc.scale, band) and not given(sc.offset, band)
    ]
    if missing:
        raise ConfigError(
            f"scale.scale: bands {missing} of grid {grid.grid_id} have no raster:scale or "
            "raster:offset in their items; give scale.scale (and scale.offset) for them "
            "(scale 1 keeps the raw values)"
        )
