"""Satellite image time series per geometry (SITS): one cube file per point or polygon.

For every geometry (a point or a polygon with an id):

1. the target grid: ``mode="image"`` covers the geometry plus ``buffer`` (in
   ``buffer_unit``, metres or degrees: a buffer needs its unit) on the lattice of
   ``resolution`` in ``crs``
   (:func:`geochip.core.grid.geometry_geobox`); ``mode="patch"`` is exactly ``size`` =
   (dimx, dimy) pixels centred on the geometry's centroid
   (:func:`geochip.core.grid.point_geobox`);
2. the search: the grid's footprint in EPSG:4326 (``intersects``, split at 180 degrees:
   :func:`geochip.core.geometry.wgs84_footprint`), with ``datetime``,
   ``max_cloud`` and ``collections``, through
   ``geochip.sources.open.open_catalog(href).search(...)`` (static catalogs and STAC APIs;
   requests bounded by ``timeout`` and ``retries``; ``headers`` sent as given, and
   ``headers_env``, header name -> NAME of an environment variable, read where the catalog
   is opened: an API key never enters the config, a Dask task or an output file);
3. the cube: :func:`geochip.read.load.load_stack` on the grid (nearest for SCL/QA), cloud mask
   (:func:`geochip.read.cube.mask_cube`), optional gap-filling (:func:`geochip.read.cube.gapfill`);
4. the file: ``<out>/<id>.nc`` or ``<out>/<id>.zarr`` with CF/CRS metadata
   (:func:`geochip.store.cubes.write_cube`), written atomically.

A geometry's cube is computed in memory before it is written (SITS boxes and patches are
small; that is what lets an all-masked geometry be reported "empty" without a file). For a
large box, build it with :func:`geochip.read.load.load_stack` and
:func:`geochip.store.cubes.write_cube`, which writes block by block.

A geometry whose file already exists is skipped (files appear complete or not at all), so a
re-run after a crash only does what is left. Every geometry ends in one of four states:
``done``, ``skipped`` (already there), ``empty`` (no scene, or every pixel masked: no
file is written) or ``failed`` (with the reason). One geometry is one task: on threads, or
one Dask task each on a ``distributed`` cluster. ``summary.json`` in ``out`` records them.
``out`` may be an object-store URL (``s3://bucket/series``, :mod:`geochip.core.storage`):
each file is made locally and uploaded (a NetCDF file in one upload; a Zarr folder one
object per file, its consolidated ``.zmetadata`` last, which then marks it complete), and
``summary.json`` last of all; a destination that cannot be written is refused first.

Input that would produce nothing is refused before any file or folder is made: no
geometries, only null or empty ones, a negative or unit-less buffer, a bad search filter,
``max_gap`` or ``chunks``, an environment variable of ``headers_env`` that is not set.

The catalog is opened once, before any geometry, and shared by the geometries run on
threads (a Dask task opens its own). When it cannot be reached (a STAC API that is down:
``retries`` + 1 attempts of at most ``timeout`` seconds), every geometry is ``failed`` with
that reason, so the time lost does not grow with the number of geometries.

Example:
    >>> cfg = TimeseriesConfig(catalog="catalog.json", bands=("red", "nir"), crs="EPSG:3035",
    ...                        resolution=20, mode="patch", size=(10, 10), mask="scl")
    >>> cfg.all_bands
    ('red', 'nir', 'scl')
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry
from shapely.errors import GEOSException

from .._version import __version__
from ..core.engine import run_tasks, synchronous_dask
from ..core.geometry import check_buffer, project, rfc7946_bbox, wgs84_footprint
from ..core.grid import geometry_geobox, point_geobox, yx
from ..core.masks import parse_mask
from ..core.security import check_headers, headers_from_env, redact
from ..core.storage import (
    check_writable,
    exists,
    is_url,
    join,
    local_path,
    output_file,
    output_folder,
    write_text,
)
from ..core.vectors import read_vector, with_ids
from ..errors import CatalogError, ConfigError, EmptySearchError, InputError
from ..read.cube import check_max_gap, count_missing, gapfill, mask_cube
from ..read.load import load_stack
from ..sources.catalog import Catalog
from ..sources.open import open_catalog
from ..sources.query import make_query
from ..store.cubes import CUBE_FORMATS, cube_dataset, write_cube

__all__ = [
    "MODES",
    "GeometryResult",
    "TimeseriesConfig",
    "TimeseriesSummary",
    "geometry_grid",
    "open_timeseries_catalog",
    "process_geometry",
    "read_geometries",
    "run_timeseries",
]

MODES = ("image", "patch")

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class TimeseriesConfig:
    """What to build for every geometry (the CLI's options, one field each)."""

    catalog: str
    """Path or URL of the STAC catalog (static catalog.json or STAC API)."""
    bands: tuple[str, ...]
    """Bands (asset keys) to load, in output order."""
    crs: str
    """Target CRS of the cubes, e.g. EPSG:3035."""
    resolution: float
    """Pixel size in units of ``crs``."""
    datetime: str | None = None
    """Search interval, e.g. 2023-01-01/2023-12-31."""
    collections: tuple[str, ...] | None = None
    """Collections to search (all when None)."""
    max_cloud: float | None = None
    """Keep scenes with eo:cloud_cover <= this (percent)."""
    buffer: float = 0.0
    """Buffer around each geometry (mode image), in ``buffer_unit``."""
    buffer_unit: str | None = None
    """'deg' (degrees, in EPSG:4326, the SITS convention) or 'm' (metres, on the ground);
    required when ``buffer`` > 0 (a buffer without its unit is refused)."""
    mode: str = "image"
    """'image': the buffered geometry's box; 'patch': size pixels centred on it."""
    size: tuple[int, int] | None = None
    """(dimx, dimy) pixels of a patch (mode patch)."""
    mask: str | None = None
    """Cloud mask spec (geochip.core.masks.parse_mask), e.g. scl:0,1,3,8,9,10."""
    gapfill: str | None = None
    """Gap-filling along time: 'linear' or 'nearest' (None: no filling)."""
    max_gap: int | None = None
    """Longest run of missing time steps that gap-filling fills."""
    format: str = "nc"
    """Output format: 'nc' (NetCDF-4) or 'zarr'."""
    resampling: str = "bilinear"
    """Resampling of continuous bands (categorical bands always use nearest)."""
    groupby: str = "solar_day"
    """How scenes become time steps (see geochip.read.load.load_cube)."""
    chunks: int = 512
    """Spatial chunk of the load (pixels); bounds one read task's memory."""
    timeout: float = 30.0
    """Seconds to wait for each catalog request (STAC API or catalog over HTTP)."""
    retries: int = 3
    """Retries of a catalog request that failed transiently (429, 5xx, reset, timeout)."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Non-secret headers sent with every catalog request (secret ones are refused here)."""
    headers_env: Mapping[str, str] = field(default_factory=dict)
    """Headers whose values come from the environment: header name -> NAME of the variable
    (e.g. ``{"x-api-key": "MY_API_KEY"}``), read where the catalog is opened."""

    def __post_init__(self) -> None:
        if not self.bands:
            raise ConfigError("bands: give at least one band")
        if self.mode not in MODES:
            raise ConfigError(f"mode must be 'image' or 'patch', got {self.mode!r}")
        if self.mode == "patch" and (
            self.size is None or len(self.size) != 2 or min(self.size) < 1
        ):
            raise ConfigError(
                f"size: mode 'patch' needs (dimx, dimy) positive pixel counts, got {self.size}"
            )
        # negative, unit-less, or in the wrong unit (off by five orders of magnitude)
        try:
            check_buffer(self.buffer, self.buffer_unit)
        except InputError as err:
            raise ConfigError(f"{err} (--buffer-unit m|deg)") from None
        if self.mode == "patch" and self.buffer:
            raise ConfigError(
                f"buffer {self.buffer}: mode 'patch' has a fixed size in pixels; a buffer is "
                "for mode 'image'"
            )
        if self.format not in CUBE_FORMATS:
            raise ConfigError(f"format must be 'nc' or 'zarr', got {self.format!r}")
        if self.gapfill not in (None, "linear", "nearest"):
            raise ConfigError(f"gapfill must be 'linear' or 'nearest', got {self.gapfill!r}")
        if not self.resolution > 0:
            raise ConfigError(f"resolution must be positive, got {self.resolution}")
        if not self.timeout > 0:
            raise ConfigError(f"timeout must be a positive number of seconds, got {self.timeout}")
        if isinstance(self.retries, bool) or not 0 <= self.retries <= 10:
            raise ConfigError(f"retries must be 0..10, got {self.retries!r}")
        if self.mask is not None:
            parse_mask(self.mask)
        # what every geometry would refuse, refused once before any work starts
        try:
            make_query(self.collections, None, None, self.datetime, self.max_cloud, None)
            check_max_gap(self.max_gap)
            yx(self.chunks, "chunks")
        except ConfigError:
            raise
        except InputError as err:
            raise ConfigError(str(err)) from None
        check_headers(self.headers, self.headers_env, option="headers")

    @property
    def all_bands(self) -> tuple[str, ...]:
        """The bands to load: ``bands`` plus the mask's quality band."""
        if self.mask is None:
            return self.bands

        band = parse_mask(self.mask).band
        return self.bands if band in self.bands else (*self.bands, band)


@dataclass(frozen=True)
class GeometryResult:
    """What happened to one geometry."""

    id: str
    status: str  # done | skipped | empty | failed
    path: str | None = None
    reason: str = ""
    times: int = 0
    seconds: float = 0.0


@dataclass
class TimeseriesSummary:
    """Every geometry's result, and counts per status."""

    results: list[GeometryResult] = field(default_factory=list)

    def ids(self, status: str) -> list[str]:
        """Ids of the geometries that ended in ``status``."""
        return [r.id for r in self.results if r.status == status]

    @property
    def counts(self) -> dict[str, int]:
        """Geometries per status (done, skipped, empty, failed)."""
        out = dict.fromkeys(("done", "skipped", "empty", "failed"), 0)
        for r in self.results:
            out[r.status] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain data for summary.json."""
        return {"counts": self.counts, "results": [asdict(r) for r in self.results]}


def read_geometries(
    geometries: str | Path | gpd.GeoDataFrame, id_column: str | None = None
) -> gpd.GeoDataFrame:
    """Geometries with a unique, file-name-safe ``id`` column, in EPSG:4326.

    Reads a vector file or takes a GeoDataFrame (ids and geometries by the one rule of
    :func:`geochip.core.vectors.with_ids`: ``id_column``, else ``id``/``label_id``, else
    ``g0``, ``g1``...), or WKT in EPSG:4326 given as text (a ``MULTIPOINT``/
    ``GEOMETRYCOLLECTION`` gives one geometry per part, ids ``g0``, ``g1``..). Ids become
    file names, so they must also be made of letters, digits, ``.``, ``_`` and ``-``.

    >>> read_geometries("MULTIPOINT ((10 50), (11 51))")["id"].tolist()
    ['g0', 'g1']
    """
    if isinstance(geometries, str) and _WKT.match(geometries) and not Path(geometries).exists():
        frame, source = _from_wkt(geometries), "the WKT"
    elif isinstance(geometries, str | Path):
        frame = read_vector(geometries, what="geometry file")
        source = str(geometries)
    else:
        frame, source = geometries, "GeoDataFrame"
    gdf = with_ids(frame, id_column=id_column, source=source, what="geometries")
    bad = [i for i in gdf["id"] if not _SAFE_ID.match(i)]
    if bad:
        raise InputError(
            f"geometry ids {bad[:5]} cannot be file names; use letters, digits, '.', '_', '-'"
        )
    return gdf


_WKT = re.compile(r"^\s*((MULTI)?(POINT|POLYGON|LINESTRING)|GEOMETRYCOLLECTION)", re.IGNORECASE)


def _from_wkt(text: str) -> gpd.GeoDataFrame:
    try:
        geom = shapely.from_wkt(text)
    except GEOSException as err:
        raise InputError(f"cannot read the geometries {text[:80]!r} as WKT: {err}") from err
    multi = geom.geom_type.startswith(("Multi", "GeometryCollection"))
    parts = list(geom.geoms) if multi else [geom]
    return gpd.GeoDataFrame(geometry=parts, crs="EPSG:4326")


def geometry_grid(geometry: Any, config: TimeseriesConfig) -> GeoBox:
    """The target grid of one geometry (GeoJSON or shapely, in EPSG:4326)."""
    if not isinstance(geometry, Geometry):
        if hasattr(geometry, "__geo_interface__"):
            geometry = geometry.__geo_interface__
        geometry = Geometry(geometry, "EPSG:4326")
    if config.mode == "patch":
        assert config.size is not None
        dimx, dimy = config.size
        centre = project(geometry, config.crs).centroid
        return point_geobox(centre, config.crs, config.resolution, {"y": dimy, "x": dimx})
    return geometry_geobox(
        geometry,
        config.crs,
        config.resolution,
        buffer=config.buffer,
        buffer_unit=config.buffer_unit or "m",
    )


def _output_path(out: str | Path, gid: str, config: TimeseriesConfig) -> str:
    """Where geometry ``gid``'s file goes (a path, or a URL when ``out`` is one)."""
    return join(out, f"{gid}.{config.format}")


#: A Zarr output on an object store is uploaded one object per file with these last: its
#: consolidated metadata, which a reader opens first, marks it complete.
_ZARR_LAST = (".zgroup", ".zattrs", ".zmetadata")


def _written(path: str, config: TimeseriesConfig) -> bool:
    """Whether geometry's file ``path`` is complete (files appear whole or not at all; a
    Zarr folder on an object store is complete once its ``.zmetadata`` is there)."""
    if is_url(path) and config.format == "zarr":
        return exists(join(path, _ZARR_LAST[-1]))
    return exists(path)


def _write(ds: Any, path: str, config: TimeseriesConfig) -> None:
    """Write one geometry's cube: in place on disk, or made locally and uploaded."""
    if not is_url(path):
        write_cube(ds, path, format=config.format)
    elif config.format == "zarr":
        with output_folder(path, last=_ZARR_LAST) as tmp:
            write_cube(ds, tmp, format="zarr")
    else:
        with output_file(path) as tmp:
            write_cube(ds, tmp, format=config.format)


def open_timeseries_catalog(config: TimeseriesConfig) -> Catalog:
    """The catalog of ``config``, opened with its ``timeout`` and ``retries``.

    Raises :class:`~geochip.errors.CatalogUnreachableError` (after the retries) when a STAC
    API or a catalog over HTTP cannot be reached, :class:`~geochip.errors.InputError` when
    a local path does not exist.
    """
    headers = {**config.headers, **headers_from_env(config.headers_env, option="headers_env")}
    return open_catalog(
        config.catalog, headers=headers, timeout=config.timeout, retries=config.retries
    )


def process_geometry(
    gid: str,
    geometry: Mapping[str, Any],
    config: TimeseriesConfig,
    out: str | Path,
    *,
    catalog: Catalog | None = None,
) -> GeometryResult:
    """Build and write one geometry's time series; never raises (failures are results).

    ``catalog`` is the opened ``config.catalog`` to search (shared by the geometries run on
    threads); None opens it here (one Dask task per geometry).
    """
    start = time.perf_counter()
    path = _output_path(out, gid, config)
    if _written(path, config):
        return GeometryResult(gid, "skipped", path, "already written")
    try:
        with synchronous_dask():
            try:
                status, reason, times = _build(gid, geometry, config, path, catalog)
            except EmptySearchError as err:
                status, reason, times = "empty", f"no scene: {err}", 0
    except Exception as err:
        return GeometryResult(
            gid,
            "failed",
            None,
            redact(f"{type(err).__name__}: {err}"),
            0,
            time.perf_counter() - start,
        )
    return GeometryResult(
        gid,
        status,
        path if status == "done" else None,
        reason,
        times,
        time.perf_counter() - start,
    )


def _build(
    gid: str,
    geometry: Mapping[str, Any],
    config: TimeseriesConfig,
    path: str,
    catalog: Catalog | None = None,
) -> tuple[str, str, int]:
    grid = geometry_grid(geometry, config)
    footprint = wgs84_footprint(grid.extent)  # split at 180 degrees: never a 360-degree box
    if catalog is None:
        catalog = open_timeseries_catalog(config)
    items = list(
        catalog.search(
            intersects=footprint.geom,
            datetime=config.datetime,
            max_cloud=config.max_cloud,
            collections=list(config.collections) if config.collections else None,
        )
    )
    if not items:
        bbox = [round(v, 6) for v in rfc7946_bbox(footprint)]
        return "empty", f"no scene over the grid (bbox {bbox}) for datetime {config.datetime}", 0
    cube = load_stack(
        items,
        config.all_bands,
        grid,
        resampling=config.resampling,
        chunks=config.chunks,
        groupby=config.groupby,
        href_policy=catalog.href_policy,
    )
    if config.mask is not None:
        cube = mask_cube(cube, config.mask)
    if config.gapfill is not None:
        cube = gapfill(cube, config.gapfill, max_gap=config.max_gap)
    cube = cube.assign_coords(n_missing=("time", count_missing(cube).data))
    ds = cube_dataset(
        cube,
        attrs={
            "geochip_geometry_id": gid,
            "geochip_geometry": json.dumps(dict(geometry)),
            "geochip_items": [item.id for item in items],
            "geochip_config": redact(json.dumps(asdict(config), default=str)),
            "geochip_version": __version__,
        },
    ).load()
    total = int(np.prod([ds.sizes[d] for d in ("y", "x")])) * len(config.bands)
    if int(ds["n_missing"].min()) == total:
        return "empty", f"all {ds.sizes['time']} time steps are fully masked or nodata", 0
    _write(ds, path, config)
    return "done", "", int(ds.sizes["time"])


def _write_summary(out: str | Path, summary: TimeseriesSummary) -> None:
    text = json.dumps(summary.to_dict(), indent=2, sort_keys=True)
    write_text(join(out, "summary.json"), text)


def run_timeseries(
    geometries: str | Path | gpd.GeoDataFrame,
    config: TimeseriesConfig,
    out: str | Path,
    *,
    id_column: str | None = None,
    client: Any = None,
    workers: int = 1,
    on_done: Callable[[int], None] | None = None,
) -> TimeseriesSummary:
    """Build every geometry's time series into ``out``; return (and save) the summary.

    With a ``distributed.Client``, each geometry is one Dask task on the cluster (the
    cluster's workers read and write; ``out`` must be reachable from them). Without one,
    geometries run on ``workers`` threads. Each task computes its own cube with the
    synchronous scheduler, so tasks never wait on each other. ``on_done(n)`` reports
    progress. Failures do not stop the others: they are results with a reason.
    """
    if not is_url(out):
        out = local_path(out)
    # refused before the output folder is made: no geometry, an unset header variable, a
    # destination that cannot be written
    gdf = read_geometries(geometries, id_column)
    headers_from_env(config.headers_env, option="headers_env")
    check_writable(out)
    if isinstance(out, Path):
        out.mkdir(parents=True, exist_ok=True)
    jobs = [
        (str(gid), geom.__geo_interface__)
        for gid, geom in zip(gdf["id"], gdf.geometry, strict=True)
    ]
    summary = TimeseriesSummary()

    written = {gid for gid, _ in jobs if _written(_output_path(out, gid, config), config)}
    catalog: Catalog | None = None
    try:  # once, before any geometry: an unreachable API costs its retries once, not N times
        if len(written) < len(jobs):
            catalog = open_timeseries_catalog(config)
    except CatalogError as err:
        reason = redact(f"{type(err).__name__}: {err}")
        summary.results = [
            GeometryResult(gid, "skipped", _output_path(out, gid, config), "already written")
            if gid in written
            else GeometryResult(gid, "failed", None, reason)
            for gid, _ in jobs
        ]
        if on_done is not None:
            on_done(len(jobs))
        _write_summary(out, summary)
        return summary
    if client is not None:
        summary.results = _run_on_cluster(client, jobs, config, out, on_done)
    else:
        results: list[GeometryResult | None] = [None] * len(jobs)
        for i, result in run_tasks(
            lambda job: process_geometry(job[0], job[1], config, out, catalog=catalog),
            jobs,
            workers=workers,
            on_done=on_done,
        ):
            results[i] = result
        summary.results = [r for r in results if r is not None]
    _write_summary(out, summary)
    return summary


def _run_on_cluster(
    client: Any,
    jobs: Iterable[tuple[str, Mapping[str, Any]]],
    config: TimeseriesConfig,
    out: str | Path,
    on_done: Callable[[int], None] | None,
) -> list[GeometryResult]:
    from distributed import as_completed  # lazy: ~0.9 s, only on a cluster

    futures = {
        client.submit(process_geometry, gid, geom, config, str(out), pure=False): gid
        for gid, geom in jobs
    }
    order = [gid for _, gid in futures.items()]
    by_id: dict[str, GeometryResult] = {}
    for n, future in enumerate(as_completed(list(futures)), start=1):  # type: ignore[no-untyped-call]
        gid = futures[future]
        try:
            by_id[gid] = future.result()
        except Exception as err:  # a worker died: the task's own errors are results
            by_id[gid] = GeometryResult(gid, "failed", None, redact(f"{type(err).__name__}: {err}"))
        if on_done:
            on_done(n)
    return [by_id[gid] for gid in order]
