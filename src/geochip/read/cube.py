"""Datacube operations: cloud masks (:func:`mask_cube`), gap-filling, composites, scaling.

A cube is a (time, band, y, x) :class:`xarray.DataArray` as :func:`geochip.read.load.load_stack`
makes it: lazy (dask), in the source dtype, with per-band coordinates ``nodata``, ``scale``
and ``offset``. A value is *missing* when it is NaN or equals its band's ``nodata``.

The numbers stay honest:

* **Missing stays missing.** A value that cannot be filled (a gap longer than ``max_gap``,
  or before the first / after the last valid observation) stays NaN (float cubes) or the
  band's nodata (integer cubes), never zero; how many were filled and how many stay missing
  is recorded per time step (coordinates ``gap_filled`` and ``gap_unfilled``).
* **Dtypes are stated.** Linear interpolation and median composites make fractions, so they
  return float32 with NaN for missing values; nearest-neighbour filling and best-pixel
  composites pick real observations and keep the source dtype and nodata. Scaling
  (:func:`scale_cube`) returns float32 by default.
* **NaN handling of scaling.** nodata becomes NaN *before* scale/offset; ``clip`` bounds
  valid values only (``np.clip`` keeps NaN: clipping never turns a missing value into a
  number); NaN is replaced only when ``fill`` is given, and then counted (``nan_filled``).

Memory: filling and compositing need the whole time axis of a pixel at once, so the cube
is rechunked to one chunk along time; a task holds (time x band x chunk) values, bounded by
the spatial chunk size, not by the cube's extent.

Example:
    >>> import numpy as np, pandas as pd, xarray as xr
    >>> t = pd.date_range("2024-01-01", periods=5, freq="10D")
    >>> data = np.array([1.0, np.nan, np.nan, 4.0, np.nan]).reshape(5, 1, 1, 1)
    >>> cube = xr.DataArray(data, dims=("time", "band", "y", "x"),
    ...     coords={"time": t, "band": ["nir"], "nodata": ("band", [np.nan])})
    >>> out = gapfill(cube, "linear")
    >>> out.values.ravel().tolist()
    [1.0, 2.0, 3.0, 4.0, nan]
    >>> out.gap_filled.values.tolist(), out.gap_unfilled.values.tolist()
    ([0, 1, 1, 0, 0], [0, 0, 0, 0, 1])
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import xarray as xr

from ..core.masks import MaskSpec, parse_mask
from ..errors import BandNotFoundError, InputError

__all__ = [
    "COMPOSITE_METHODS",
    "GAPFILL_METHODS",
    "apply_mask",
    "check_max_gap",
    "composite",
    "count_missing",
    "gapfill",
    "mask_cube",
    "missing",
    "scale_cube",
]

GAPFILL_METHODS: tuple[str, ...] = ("linear", "nearest")

COMPOSITE_METHODS: tuple[str, ...] = ("median", "best")


def _check_cube(cube: Any, what: str) -> None:
    if tuple(cube.dims) != ("time", "band", "y", "x"):
        raise InputError(
            f"{what} needs a (time, band, y, x) cube, got dims {tuple(cube.dims)}; make one "
            "with geochip.read.load.load_stack"
        )


def _nodata(cube: Any) -> Any:
    if "nodata" in cube.coords:
        return cube["nodata"]
    return xr.DataArray(np.full(cube.sizes["band"], np.nan), dims=("band",))


def missing(cube: xr.DataArray) -> xr.DataArray:
    """Boolean cube: True where a value is NaN or equals its band's ``nodata``."""
    _check_cube(cube, "missing")
    nodata = _nodata(cube)
    out = cube == nodata.astype(cube.dtype) if cube.dtype.kind != "f" else cube == nodata
    if cube.dtype.kind == "f":
        out = out | cube.isnull()
    elif bool(np.isnan(nodata.values).any()):
        # an integer band without nodata has no missing values
        out = out & ~np.isnan(nodata)
    result: xr.DataArray = out.drop_vars(
        [c for c in out.coords if c not in cube.dims], errors="ignore"
    )
    return result


def count_missing(cube: xr.DataArray) -> xr.DataArray:
    """Missing values per time step (over bands and pixels), lazily."""
    return missing(cube).sum(dim=("band", "y", "x")).astype("int64")


def _times(cube: Any) -> npt.NDArray[np.float64]:
    """Time coordinate as float days (any origin), for interpolation weights."""
    values = np.asarray(cube["time"].values)
    if np.issubdtype(values.dtype, np.datetime64):
        days: npt.NDArray[np.float64] = values.astype("datetime64[ns]").astype("int64") / 86_400e9
        return days
    return values.astype("float64")


def _gap_kernel(
    values: npt.NDArray[Any],
    miss: npt.NDArray[np.bool_],
    times: npt.NDArray[np.float64],
    method: str,
    max_steps: int | None,
    max_days: float | None,
    out_dtype: np.dtype[Any],
) -> npt.NDArray[Any]:
    """Fill along the last axis. Interior gaps only; a gap too long is left whole."""
    n = values.shape[-1]
    idx = np.arange(n)
    prev = np.maximum.accumulate(np.where(miss, -1, idx), axis=-1)
    nxt = np.minimum.accumulate(np.where(miss, n, idx)[..., ::-1], axis=-1)[..., ::-1]
    ok = miss & (prev >= 0) & (nxt < n)
    if max_steps is not None:
        ok &= (nxt - prev - 1) <= max_steps
    pc = np.clip(prev, 0, n - 1)
    nc = np.clip(nxt, 0, n - 1)
    tp, tn = times[pc], times[nc]
    if max_days is not None:
        ok &= (tn - tp) <= max_days
    vp = np.take_along_axis(values, pc, axis=-1)
    vn = np.take_along_axis(values, nc, axis=-1)
    if method == "linear":
        with np.errstate(invalid="ignore", divide="ignore"):
            weight = (times - tp) / np.where(tn > tp, tn - tp, 1.0)
            filled = vp.astype("float64") + (vn.astype("float64") - vp) * weight
        base = values.astype(out_dtype)
        base[miss] = np.nan
    else:
        filled = np.where((times - tp) <= (tn - times), vp, vn)
        base = values.astype(out_dtype, copy=True)
    base[ok] = filled[ok].astype(out_dtype)
    return base


def check_max_gap(max_gap: int | str | dt.timedelta | None) -> None:
    """Refuse a ``max_gap`` that :func:`gapfill` would refuse (before any work starts)."""
    _max_gap(max_gap)


def _max_gap(max_gap: int | str | dt.timedelta | None) -> tuple[int | None, float | None]:
    if max_gap is None:
        return None, None
    if isinstance(max_gap, bool):
        raise InputError(f"max_gap must be a number of steps or a duration, got {max_gap!r}")
    if isinstance(max_gap, int):
        if max_gap < 0:
            raise InputError(f"max_gap must be >= 0 steps, got {max_gap}")
        return max_gap, None

    try:
        delta = pd.Timedelta(max_gap)
    except (ValueError, TypeError) as err:
        raise InputError(
            f"max_gap {max_gap!r} is neither a number of time steps nor a duration ('30D')"
        ) from err
    return None, delta.total_seconds() / 86_400


def gapfill(
    cube: xr.DataArray,
    method: Literal["linear", "nearest"] | str = "linear",
    *,
    max_gap: int | str | dt.timedelta | None = None,
) -> xr.DataArray:
    """Fill missing values along time, pixel by pixel and band by band.

    ``method``: ``"linear"`` interpolates in time between the previous and the next valid
    observation (weights from the real dates, so uneven revisits are handled) and returns
    float32 with NaN where a value stays missing; ``"nearest"`` copies the observation
    nearest in time (the earlier one on a tie) and keeps the dtype and nodata.

    ``max_gap`` bounds what is filled: an int is the longest run of missing steps that is
    filled (a longer run stays missing as a whole); a duration (``"30D"``,
    ``timedelta``) is the longest time between the two valid neighbours (xarray's
    ``interpolate_na`` meaning). Values before the first or after the last valid
    observation are never filled (no extrapolation). Coordinates ``gap_filled`` and
    ``gap_unfilled`` (time) count values filled and values still missing.
    """
    _check_cube(cube, "gapfill")
    if method not in GAPFILL_METHODS:
        raise InputError(
            f"gapfill method must be one of {', '.join(GAPFILL_METHODS)}, got {method!r}"
        )
    max_steps, max_days = _max_gap(max_gap)
    out_dtype = np.dtype("float32") if method == "linear" else np.dtype(cube.dtype)
    miss = missing(cube)
    data, miss_t = cube, miss
    if cube.chunks is not None:
        data = cube.chunk({"time": -1})
        miss_t = miss.chunk({"time": -1})
    times = _times(cube)
    filled = xr.apply_ufunc(
        _gap_kernel,
        data,
        miss_t,
        input_core_dims=[["time"], ["time"]],
        output_core_dims=[["time"]],
        kwargs={
            "times": times,
            "method": method,
            "max_steps": max_steps,
            "max_days": max_days,
            "out_dtype": out_dtype,
        },
        dask="parallelized",
        output_dtypes=[out_dtype],
        keep_attrs=True,
    ).transpose(*cube.dims)
    if method == "linear":
        filled = filled.assign_coords(nodata=("band", np.full(cube.sizes["band"], np.nan)))
    still = count_missing(filled)
    before = miss.sum(dim=("band", "y", "x")).astype("int64")
    result: xr.DataArray = filled.assign_coords(
        gap_filled=("time", (before - still).data), gap_unfilled=("time", still.data)
    )
    return result


def _period_labels(cube: Any, period: str) -> Any:
    index = pd.DatetimeIndex(cube["time"].values)
    try:
        return index.to_period(period).start_time
    except (ValueError, TypeError) as err:
        raise InputError(
            f"period {period!r} is not a pandas period alias; use e.g. 'M' (month), "
            "'Q' (quarter), 'W' (week), 'Y' (year)"
        ) from err


def _median_kernel(values: npt.NDArray[Any], miss: npt.NDArray[np.bool_]) -> npt.NDArray[Any]:
    work = values.astype("float32")
    work[miss] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN, on purpose
        return np.nanmedian(work, axis=-1).astype("float32")  # type: ignore[no-any-return]


def _best_kernel(
    values: npt.NDArray[Any],
    miss_any: npt.NDArray[np.bool_],
    score: npt.NDArray[Any],
    fill: npt.NDArray[Any],
) -> npt.NDArray[Any]:
    """Per pixel, the observation with the lowest score among those with no band missing.

    values (..., band, time); miss_any and score (..., time); fill (band,) -> (..., band)."""
    work = np.where(miss_any, np.inf, score.astype("float64"))
    pick = np.argmin(work, axis=-1)  # the first minimum: the earliest on a tie
    index = np.broadcast_to(pick[..., None, None], (*values.shape[:-1], 1))
    out = np.take_along_axis(values, index, axis=-1)[..., 0]
    none = np.all(miss_any, axis=-1)
    best: npt.NDArray[Any] = np.where(none[..., None], fill, out).astype(values.dtype)
    return best


def composite(
    cube: xr.DataArray,
    period: str = "M",
    method: Literal["median", "best"] | str = "median",
    *,
    score: xr.DataArray | None = None,
) -> xr.DataArray:
    """One image per ``period`` (a pandas period alias: ``"M"``, ``"Q"``, ``"W"``, ``"Y"``).

    ``"median"``: the per-pixel, per-band median of the valid observations of the period
    (float32; NaN where the period has none). ``"best"``: per pixel, the observation with
    the lowest cloud ``score`` among those valid in every band (dtype and nodata kept;
    nodata where none is valid). ``score`` is a (time) or (time, y, x) array such as a cloud
    probability; by default the cube's ``masked_fraction`` (time), set by
    :func:`geochip.read.cube.mask_cube`: the least cloudy scene wins, pixel by pixel.
    The ``time`` of a composite is the start of its period; ``n_obs`` counts the time steps
    in it and ``gap_unfilled`` the values that stay missing.
    """
    _check_cube(cube, "composite")
    if method not in COMPOSITE_METHODS:
        raise InputError(
            f"composite method must be one of {', '.join(COMPOSITE_METHODS)}, got {method!r}"
        )
    labels = _period_labels(cube, period)
    miss = missing(cube)
    if method == "best":
        if score is None:
            if "masked_fraction" not in cube.coords:
                raise InputError(
                    "a best-pixel composite needs a cloud score: mask the cube first "
                    "(geochip.read.cube.mask_cube records masked_fraction) or pass score="
                )
            score = cube["masked_fraction"]
        score = score.broadcast_like(cube.isel(band=0, drop=True)).drop_vars(
            [c for c in score.coords if c not in ("time", "y", "x")], errors="ignore"
        )
    fill = (
        _nodata(cube).values.astype(cube.dtype)
        if cube.dtype.kind != "f"
        else np.where(np.isnan(_nodata(cube).values), np.nan, _nodata(cube).values).astype(
            cube.dtype
        )
    )
    pieces = []
    starts = []
    counts = []
    for start in pd.unique(labels):
        sel = np.flatnonzero(labels == start)
        part = cube.isel(time=sel)
        part_miss = miss.isel(time=sel)
        if part.chunks is not None:
            part = part.chunk({"time": -1})
            part_miss = part_miss.chunk({"time": -1})
        if method == "median":
            out = xr.apply_ufunc(
                _median_kernel,
                part,
                part_miss,
                input_core_dims=[["time"], ["time"]],
                dask="parallelized",
                output_dtypes=[np.float32],
            )
        else:
            assert score is not None
            part_score = score.isel(time=sel)
            miss_any = part_miss.any("band")
            if part.chunks is not None:
                part_score = part_score.chunk(
                    {"time": -1, "y": part.chunks[2], "x": part.chunks[3]}
                )
                miss_any = miss_any.chunk({"time": -1})
                part = part.chunk({"band": -1})
            out = xr.apply_ufunc(
                _best_kernel,
                part,
                miss_any,
                part_score,
                input_core_dims=[["band", "time"], ["time"], ["time"]],
                output_core_dims=[["band"]],
                kwargs={"fill": fill},
                dask="parallelized",
                output_dtypes=[cube.dtype],
            ).transpose("band", "y", "x")
        pieces.append(
            out.drop_vars([c for c in out.coords if c in ("masked_fraction",)], errors="ignore")
        )
        starts.append(start)
        counts.append(len(sel))
    result = xr.concat(pieces, dim=xr.Variable("time", pd.DatetimeIndex(starts)), coords="minimal")
    result = result.transpose("time", "band", "y", "x")
    for name in ("nodata", "scale", "offset"):
        if name in cube.coords:
            result = result.assign_coords({name: cube[name]})
    if method == "median":
        result = result.assign_coords(nodata=("band", np.full(cube.sizes["band"], np.nan)))
    result = result.assign_coords(
        n_obs=("time", np.array(counts, dtype="int64")),
        gap_unfilled=("time", count_missing(result).data),
    )
    result.name = cube.name
    final: xr.DataArray = result
    return final


def _per_band(value: float | Mapping[str, float] | None, bands: list[str], name: str) -> Any:
    if value is None or isinstance(value, int | float):
        return value
    unknown = sorted(set(value) - set(bands))
    if unknown:
        raise InputError(f"{name} names bands {unknown} that the cube does not have ({bands})")
    return {b: float(value[b]) for b in value}


def scale_cube(
    cube: xr.DataArray,
    *,
    scale: float | Mapping[str, float] | None = None,
    offset: float | Mapping[str, float] | None = None,
    clip: tuple[float | None, float | None] | None = None,
    dtype: npt.DTypeLike = "float32",
    fill: float | None = None,
) -> xr.DataArray:
    """Physical values: ``value * scale + offset``, clipped, as float32 by default.

    ``scale``/``offset`` (one number, or per band) override the cube's ``scale``/``offset``
    coordinates, which :func:`geochip.read.load.load_stack` takes from the ``raster``
    extension; a band with neither raises (pass ``scale=1`` to keep raw values on purpose).
    NaN handling, stated: nodata and NaN inputs become NaN before scaling; ``clip=(lo, hi)``
    bounds valid values and leaves NaN as NaN; only ``fill`` replaces NaN, and the number
    of values it replaced per time step is recorded (``nan_filled``). The result's
    ``nodata`` is NaN (or ``fill``), ``scale`` 1 and ``offset`` 0 (already applied).

    Example:
        >>> import numpy as np, xarray as xr
        >>> cube = xr.DataArray(np.array([0, 5000, 12000], "uint16").reshape(1, 1, 1, 3),
        ...     dims=("time", "band", "y", "x"), coords={"band": ["red"],
        ...     "nodata": ("band", [0.0]), "scale": ("band", [1e-4]), "offset": ("band", [0.0])})
        >>> scale_cube(cube, clip=(0, 1)).values.ravel().tolist()
        [nan, 0.5, 1.0]
    """
    _check_cube(cube, "scale_cube")
    bands = [str(b) for b in cube.band.values]
    out_dtype = np.dtype(dtype)
    if out_dtype.kind != "f":
        raise InputError(
            f"scaled cubes are floating point (NaN marks missing); got dtype {out_dtype}"
        )
    scale = _per_band(scale, bands, "scale")
    offset = _per_band(offset, bands, "offset")

    def resolve(value: Any, coord: str, default: float) -> npt.NDArray[np.float64]:
        known = (
            cube[coord].values.astype("float64")
            if coord in cube.coords
            else np.full(len(bands), np.nan)
        )
        if isinstance(value, int | float):
            return np.full(len(bands), float(value))
        if isinstance(value, dict):
            known = np.array([value.get(b, k) for b, k in zip(bands, known, strict=True)])
        return known

    scales = resolve(scale, "scale", 1.0)
    offsets = resolve(offset, "offset", 0.0)
    unknown = [
        b for b, s, o in zip(bands, scales, offsets, strict=True) if np.isnan(s) and np.isnan(o)
    ]
    if unknown:
        raise InputError(
            f"bands {unknown} have no raster:scale/offset in their items; pass scale= and "
            "offset= (scale=1 keeps the raw values)"
        )
    scales = np.where(np.isnan(scales), 1.0, scales)
    offsets = np.where(np.isnan(offsets), 0.0, offsets)
    miss = missing(cube)
    values = cube.astype(out_dtype).where(~miss)
    values = values * xr.DataArray(scales.astype(out_dtype), dims="band") + xr.DataArray(
        offsets.astype(out_dtype), dims="band"
    )
    if clip is not None:
        lo, hi = clip
        values = values.clip(min=lo, max=hi)  # NaN stays NaN
    values = values.astype(out_dtype)
    coords: dict[str, Any] = {
        "scale": ("band", np.ones(len(bands))),
        "offset": ("band", np.zeros(len(bands))),
        "nodata": ("band", np.full(len(bands), np.nan if fill is None else float(fill))),
    }
    if fill is not None:
        nan = values.isnull()
        values = values.fillna(fill).astype(out_dtype)
        coords["nan_filled"] = ("time", nan.sum(dim=("band", "y", "x")).astype("int64").data)
    return values.assign_coords(coords)


def _fill_value(cube: Any, band_nodata: Any) -> Any:
    """Per-band value that masked pixels take: the band's nodata, NaN for float cubes."""
    dtype = np.dtype(cube.dtype)
    nodata = np.asarray(band_nodata, dtype="float64")
    if dtype.kind == "f":
        return np.where(np.isnan(nodata), np.nan, nodata).astype(dtype)
    if np.isnan(nodata).any():
        bands = [str(b) for b, v in zip(cube.band.values, nodata, strict=True) if np.isnan(v)]
        raise InputError(
            f"bands {bands} have no nodata value, so masked pixels of this {dtype} cube have "
            "nowhere to go; pass nodata= to load_stack, or convert the cube to float first"
        )
    return nodata.astype(dtype)


def apply_mask(cube: Any, mask: Any) -> Any:
    """Set pixels of a (time, band, y, x) cube to nodata where ``mask`` (time, y, x) is True.

    Integer cubes take each band's ``nodata`` coordinate; float cubes take NaN (or the
    band's nodata when it is a number). The coordinate ``masked_fraction`` (time) records,
    per time step, the share of the grid's pixels that ``mask`` removed. Lazy in, lazy out.
    """
    if "nodata" not in cube.coords:
        raise InputError(
            "the cube has no per-band 'nodata' coordinate; make it with "
            "geochip.read.load.load_stack"
        )
    fill = xr.DataArray(_fill_value(cube, cube["nodata"].values), dims=("band",))
    out = cube.where(~mask, fill)
    out = out.astype(cube.dtype, copy=False)
    fraction = mask.mean(dim=("y", "x")).astype("float64")
    return out.assign_coords(masked_fraction=("time", fraction.data))


def mask_cube(cube: Any, spec: MaskSpec | str, *, drop: bool = True) -> Any:
    """Mask clouds of a (time, band, y, x) cube with its quality band (see :class:`MaskSpec`).

    Masked pixels become the band's nodata (integer cubes) or NaN (float cubes); the
    quality band itself is dropped unless ``drop=False`` (then it is left untouched).
    ``masked_fraction`` (time) records the share of pixels masked per time step.

    Example:
        >>> import numpy as np, xarray as xr
        >>> data = np.array([[[[100, 200]], [[8, 4]]]], dtype="uint16")    # red, scl
        >>> cube = xr.DataArray(data, dims=("time", "band", "y", "x"),
        ...     coords={"band": ["red", "scl"], "nodata": ("band", [0.0, 0.0])})
        >>> out = mask_cube(cube, "scl:8,9")
        >>> out.sel(band="red").values.tolist(), out.masked_fraction.values.tolist()
        ([[[0, 200]]], [0.5])
    """
    if isinstance(spec, str):
        spec = parse_mask(spec)
    bands = [str(b) for b in cube.band.values]
    if spec.band not in bands:
        raise BandNotFoundError(f"cube (mask {spec.describe()})", spec.band, bands)
    quality = cube.sel(band=spec.band, drop=True)
    nodata = float(cube["nodata"].sel(band=spec.band)) if "nodata" in cube.coords else np.nan
    if spec.kind != "prob" or np.isnan(nodata):
        mask = spec.mask(quality)
    else:  # a probability band's own nodata is not a cloud
        mask = spec.mask(quality) & (quality != nodata)
    data = cube.drop_sel(band=spec.band) if drop else cube
    if drop:
        return apply_mask(data, mask)
    masked = apply_mask(data.drop_sel(band=spec.band), mask)
    return xr.concat(
        [masked, cube.sel(band=[spec.band]).assign_coords(masked_fraction=masked.masked_fraction)],
        dim="band",
    ).sel(band=bands)
