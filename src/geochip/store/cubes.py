"""Datacubes on disk: NetCDF-4 or Zarr, CF metadata, written atomically.

:func:`cube_dataset` turns a (time, band, y, x) cube into an :class:`xarray.Dataset` with
one variable per band, (time, y, x), and the CF grid mapping that rioxarray, odc-geo and
GDAL read: a ``spatial_ref`` coordinate holding the CRS (``crs_wkt``, ``spatial_ref`` and
the CF projection parameters) and the ``GeoTransform``, every band's ``grid_mapping``
pointing at it, and ``x``/``y`` coordinates at pixel centres with CF standard names. The
source dtype is kept; a band's nodata is its ``_FillValue``. Scale and offset are stored
as ``geochip_scale`` / ``geochip_offset`` attributes, not as CF ``scale_factor`` /
``add_offset``, so that opening the file never converts the raw values behind your back.

:func:`write_cube` writes to a hidden temporary name beside the target and renames it into
place, so a file or Zarr folder with the final name is always complete.

Example:
    >>> import tempfile, pathlib, numpy as np, pandas as pd, xarray as xr
    >>> from odc.geo.geobox import GeoBox
    >>> from odc.geo.xr import xr_coords
    >>> gbox = GeoBox.from_bbox((500_000, 0, 500_040, 30), "EPSG:32633", resolution=10)
    >>> cube = xr.DataArray(np.ones((2, 1, 3, 4), "uint16"), dims=("time", "band", "y", "x"),
    ...     coords={**xr_coords(gbox), "time": pd.date_range("2024-01-01", periods=2),
    ...             "band": ["red"], "nodata": ("band", [0.0])})
    >>> path = write_cube(cube, pathlib.Path(tempfile.mkdtemp()) / "a.nc")
    >>> ds = open_cube(path)
    >>> ds.red.dtype.name, ds.odc.geobox == gbox
    ('uint16', True)
"""

from __future__ import annotations

import itertools
import os
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import netCDF4
import numpy as np
import pyproj
import xarray as xr
import zarr

from .._version import __version__
from ..core.engine import run_tasks, synchronous_dask
from ..errors import InputError

__all__ = [
    "CUBE_FORMATS",
    "NETCDF_LOCK",
    "cube_dataset",
    "open_cube",
    "write_cube",
]

CUBE_FORMATS: tuple[str, ...] = ("nc", "zarr")

_BAND_COORDS = ("nodata", "scale", "offset")


def _crs_attrs(gbox: Any) -> dict[str, Any]:
    crs = pyproj.CRS.from_wkt(gbox.crs.to_wkt())
    try:
        attrs: dict[str, Any] = dict(crs.to_cf())
    except Exception:  # a CRS without a CF mapping still gets its WKT
        attrs = {}
    wkt = crs.to_wkt()
    attrs["crs_wkt"] = wkt
    attrs["spatial_ref"] = wkt
    attrs["GeoTransform"] = " ".join(str(float(v)) for v in gbox.affine.to_gdal())
    return attrs


def cube_dataset(cube: xr.DataArray, *, attrs: Mapping[str, Any] | None = None) -> xr.Dataset:
    """A (time, band, y, x) cube as a CF Dataset: one (time, y, x) variable per band."""
    if tuple(cube.dims) != ("time", "band", "y", "x"):
        raise InputError(f"write_cube needs a (time, band, y, x) cube, got {tuple(cube.dims)}")
    gbox = cube.odc.geobox
    if gbox is None or gbox.crs is None:
        raise InputError("the cube has no CRS/grid; load it with geochip.read.load.load_stack")
    bands = [str(b) for b in cube.band.values]
    variables = {}
    for band in bands:
        var = cube.sel(band=band, drop=True)
        var = var.drop_vars([c for c in var.coords if c in _BAND_COORDS], errors="ignore")
        var_attrs: dict[str, Any] = {"grid_mapping": "spatial_ref", "long_name": band}
        for coord, key in (("scale", "geochip_scale"), ("offset", "geochip_offset")):
            if coord in cube.coords:
                value = float(cube[coord].sel(band=band))
                if not np.isnan(value):
                    var_attrs[key] = value
        if "nodata" in cube.coords:
            nodata = float(cube["nodata"].sel(band=band))
            var_attrs["nodata"] = nodata
        var.attrs = var_attrs
        variables[band] = var
    ds = xr.Dataset(variables)
    ds = ds.drop_vars("spatial_ref", errors="ignore").assign_coords(
        spatial_ref=xr.Variable((), np.int32(0), _crs_attrs(gbox))
    )
    projected = not gbox.crs.geographic
    ds["x"].attrs = {
        "standard_name": "projection_x_coordinate" if projected else "longitude",
        "long_name": "x coordinate of pixel centre",
        "units": "m" if projected else "degrees_east",
        "axis": "X",
    }
    ds["y"].attrs = {
        "standard_name": "projection_y_coordinate" if projected else "latitude",
        "long_name": "y coordinate of pixel centre",
        "units": "m" if projected else "degrees_north",
        "axis": "Y",
    }
    ds["time"].attrs = {"standard_name": "time", "axis": "T"}
    ds.attrs = {
        "Conventions": "CF-1.8",
        "source": f"geochip {__version__}",
        "bands": bands,
        **{k: _attr_value(v) for k, v in (attrs or {}).items()},
    }
    return ds


def _attr_value(value: Any) -> Any:
    """netCDF attributes take numbers, strings and lists of them; the rest becomes text."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float | str):
        return value
    if isinstance(value, list | tuple) and all(isinstance(v, int | float | str) for v in value):
        return list(value) if value else ""
    return str(value)


def _encoding(ds: xr.Dataset, fmt: str, block: tuple[int, int] | None) -> dict[str, dict[str, Any]]:
    encoding: dict[str, dict[str, Any]] = {}
    for name, var in ds.data_vars.items():
        enc: dict[str, Any] = {}
        nodata = var.attrs.pop("nodata", None)
        if nodata is not None and not (np.isnan(nodata) and var.dtype.kind != "f"):
            enc["_FillValue"] = var.dtype.type(nodata)
        elif var.dtype.kind != "f":
            enc["_FillValue"] = None
        if var.dims == _SPATIAL:
            by, bx = block if block is not None else var.shape[1:]
            chunks = (1, min(by, var.shape[1]), min(bx, var.shape[2]))
            if fmt == "nc":
                enc.update(zlib=True, complevel=4, shuffle=True, chunksizes=chunks)
            else:
                enc["chunks"] = chunks
        encoding[str(name)] = enc
    return encoding


_SPATIAL = ("time", "y", "x")


class _ProcessLock:
    """A re-entrant lock, one per process, that pickles to the receiving process's own lock
    (so a lazily opened cube can travel to a Dask worker)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        if self._lock.acquire(blocking=False):
            self._lock.release()
            return False
        return True

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_netcdf_lock, ())


def _netcdf_lock() -> _ProcessLock:
    return NETCDF_LOCK


#: The netCDF-C/HDF5 libraries are not thread-safe and netCDF4-python releases the GIL in its
#: calls, so two threads writing two different files at once crash the process (and
#: xarray's own netCDF4 backend locks only file opening and chunk reads, not writes). Every
#: NetCDF write of this module, every :func:`open_cube` of a NetCDF file and every read of
#: its lazy arrays holds this lock (one per process: Dask worker processes each have their
#: own library).
NETCDF_LOCK = _ProcessLock()


def _blocks(ds: xr.Dataset) -> tuple[tuple[int, int] | None, list[tuple[slice, slice]]]:
    """The (y, x) blocks of the lazy spatial variables: their dask chunks."""
    lazy = [v for v in ds.data_vars.values() if v.dims == _SPATIAL and v.chunks is not None]
    if not lazy:
        return None, []
    chunks: Any = lazy[0].chunks
    ychunks, xchunks = chunks[1], chunks[2]
    ys = np.cumsum((0, *ychunks))
    xs = np.cumsum((0, *xchunks))
    blocks = [
        (slice(int(y0), int(y1)), slice(int(x0), int(x1)))
        for y0, y1 in itertools.pairwise(ys)
        for x0, x1 in itertools.pairwise(xs)
    ]
    return (int(max(ychunks)), int(max(xchunks))), blocks


def write_cube(
    cube: xr.DataArray | xr.Dataset,
    path: str | Path,
    *,
    format: Literal["nc", "zarr"] | str | None = None,
    attrs: Mapping[str, Any] | None = None,
    overwrite: bool = True,
    workers: int = 2,
) -> Path:
    """Write a cube as NetCDF-4 (``.nc``) or Zarr (``.zarr``), atomically; return the path.

    ``format`` defaults to the suffix of ``path``. A lazy cube is written block by block:
    each (y, x) block of its dask chunks is computed on its own (all times and bands of that
    block, with the synchronous scheduler) and written, ``workers`` blocks at a time. Peak
    memory is therefore ``workers`` blocks, whatever the cube's size and whatever order a
    scheduler would have chosen. The file is first written under a hidden
    ``.<name>.partial`` name in the same folder, then renamed: an interrupted write never
    leaves a file with the final name.
    """
    path = Path(path)
    fmt = format or path.suffix.lstrip(".")
    if fmt not in CUBE_FORMATS:
        raise InputError(f"cube format must be one of {', '.join(CUBE_FORMATS)}, got {fmt!r}")

    ds = cube if isinstance(cube, xr.Dataset) else cube_dataset(cube, attrs=attrs)
    if path.exists() and not overwrite:
        raise InputError(f"{path} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    _remove(tmp)
    block, blocks = _blocks(ds)
    ds = ds.copy()
    encoding = _encoding(ds, fmt, block)
    try:
        if not blocks:
            _write_whole(ds, tmp, fmt, encoding)
        elif fmt == "nc":
            _write_nc_blocks(ds, tmp, encoding, blocks, workers)
        else:
            _write_zarr_blocks(ds, tmp, encoding, blocks, workers)
        if path.exists():
            _remove(path)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    return path


def _write_whole(ds: xr.Dataset, tmp: Path, fmt: str, encoding: dict[str, Any]) -> None:
    if fmt == "nc":
        ds = ds.compute()  # dask-backed small variables: computed before taking the lock
        with NETCDF_LOCK:
            ds.to_netcdf(tmp, engine="netcdf4", format="NETCDF4", encoding=encoding)
    else:
        # Zarr format 2 with consolidated metadata: what GDAL, rioxarray and older xarray read
        ds.to_zarr(tmp, mode="w", encoding=encoding, consolidated=True, zarr_format=2)


def _split(ds: xr.Dataset) -> tuple[list[str], xr.Dataset]:
    """Lazy (time, y, x) variables, and everything else computed (small: per time step)."""
    spatial = [str(n) for n, v in ds.data_vars.items() if v.dims == _SPATIAL]
    rest = ds.drop_vars(spatial).compute()
    return spatial, rest


def _block_values(ds: xr.Dataset, names: list[str], ys: slice, xs: slice) -> dict[str, Any]:
    with synchronous_dask():
        return {n: np.asarray(ds[n].isel(y=ys, x=xs).values) for n in names}


def _write_nc_blocks(
    ds: xr.Dataset,
    tmp: Path,
    encoding: dict[str, Any],
    blocks: list[tuple[slice, slice]],
    workers: int,
) -> None:
    spatial, rest = _split(ds)
    with NETCDF_LOCK:
        rest.to_netcdf(
            tmp,
            engine="netcdf4",
            format="NETCDF4",
            encoding={k: v for k, v in encoding.items() if k not in spatial},
        )
    others = [str(c) for c in rest.coords if c not in rest.dims and c != "spatial_ref"]
    with NETCDF_LOCK:
        nc = netCDF4.Dataset(tmp, "a")
    try:
        _fill_nc_blocks(nc, ds, encoding, spatial, others, blocks, workers)
    finally:
        with NETCDF_LOCK:
            nc.close()


def _fill_nc_blocks(
    nc: netCDF4.Dataset,
    ds: xr.Dataset,
    encoding: dict[str, Any],
    spatial: list[str],
    others: list[str],
    blocks: list[tuple[slice, slice]],
    workers: int,
) -> None:
    with NETCDF_LOCK:
        for name in spatial:
            var, enc = ds[name], encoding[name]
            fill = enc.get("_FillValue")
            v = nc.createVariable(  # type: ignore[call-overload]
                name,
                var.dtype,
                var.dims,
                zlib=True,
                complevel=4,
                shuffle=True,
                chunksizes=enc["chunksizes"],
                fill_value=fill if fill is not None else False,
            )
            v.set_auto_maskandscale(False)
            v.setncatts({k: _attr_value(a) for k, a in var.attrs.items()})
            if others:
                v.setncattr("coordinates", " ".join(others))

    def task(block: tuple[slice, slice]) -> None:
        ys, xs = block
        values = _block_values(ds, spatial, ys, xs)
        with NETCDF_LOCK:
            for name in spatial:
                nc[name][:, ys, xs] = values[name]

    for _ in run_tasks(task, blocks, workers=workers):
        pass


def _write_zarr_blocks(
    ds: xr.Dataset,
    tmp: Path,
    encoding: dict[str, Any],
    blocks: list[tuple[slice, slice]],
    workers: int,
) -> None:
    spatial, rest = _split(ds)
    skeleton = rest.assign({n: ds[n] for n in spatial})
    # metadata and the small variables now; the lazy ones, block by block, below
    skeleton.to_zarr(
        tmp, mode="w", encoding=encoding, compute=False, consolidated=False, zarr_format=2
    )
    group = zarr.open_group(tmp, mode="r+", zarr_format=2)
    arrays: dict[str, Any] = {name: group[name] for name in spatial}

    def task(block: tuple[slice, slice]) -> None:
        ys, xs = block
        values = _block_values(ds, spatial, ys, xs)
        for name in spatial:
            arrays[name][:, ys, xs] = values[name]  # whole chunks: one writer per key

    for _ in run_tasks(task, blocks, workers=workers):
        pass
    zarr.consolidate_metadata(tmp, zarr_format=2)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def open_cube(path: str | Path) -> xr.Dataset:
    """Open a cube written by :func:`write_cube` (lazily), with its CRS decoded.

    Values keep their stored dtype (``mask_and_scale=False``): nodata stays the nodata
    value (``_FillValue``) rather than turning integers into float NaN. Plain
    ``xr.open_dataset`` applies CF masking instead, which is also correct.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"no cube at {path}")
    if path.suffix == ".zarr" or path.is_dir():
        opened: xr.Dataset = xr.open_zarr(path, decode_coords="all", mask_and_scale=False)
    else:
        with NETCDF_LOCK:  # the reads of the lazy arrays take it too (lock=)
            opened = xr.open_dataset(
                path,
                engine="netcdf4",
                decode_coords="all",
                mask_and_scale=False,
                lock=NETCDF_LOCK,
            )
    return opened
