"""The task side of a build: the pixels and labels of a batch's chips, read on their grid.

:func:`read_chips` loads the chips' rows once with odc-stac (hrefs signed just before the
read), masks clouds, and for time stacks composites, gap-fills and scales per pixel on the
rows (a ``best`` composite chip by chip, so a chip's bytes never depend on how chips were
batched); :func:`read_label_rows` reads a grid's label raster window (reprojected with
nearest when it is on another grid and the config allows it). :class:`ReadOptions` is what
every task needs to know besides its grids.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pystac
import rasterio
import xarray as xr
from odc.geo.geobox import GeoBox
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window as RioWindow

from ..core.env import GdalEnv
from ..core.grid import Window, array_window
from ..core.hrefs import HrefPolicy
from ..core.imports import load_object
from ..core.masks import (
    MaskSpec,
    landsat_qa_fill,
    landsat_qa_mask,
    probability_mask,
    scl_mask,
)
from ..core.security import sign_href
from ..errors import InputError
from ..read.cube import composite, gapfill, mask_cube, missing, scale_cube
from ..read.labels import align_label
from ..read.load import load_cube, load_stack
from ..sources.catalog import is_url
from ..store.stats import nodata_pixels
from .config.model import BuildConfig
from .grids import GridSpec
from .steps import StepSpec

__all__ = [
    "ReadOptions",
    "output_dtype",
    "read_chips",
    "read_label_rows",
    "read_options",
]


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
    retries: int = 3
    retry_delay: float = 0.5
    href_policy: HrefPolicy | None = None

    @property
    def cube_path(self) -> bool:
        """Whether reads go through the datacube functions (time steps or scaling)."""
        return self.stacked or self.scale is not None


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


def _channel_scale(config: BuildConfig, asked: Mapping[str, str]) -> dict[str, Any] | None:
    if config.scale is None:
        return None
    scale = config.scale.model_dump(mode="json")
    for key in ("scale", "offset"):
        value = scale.get(key)
        if isinstance(value, dict) and asked:
            scale[key] = {
                ch: value[ch] if ch in value else value[name]
                for ch, name in asked.items()
                if ch in value or name in value
            }
    return scale


def read_options(
    config: BuildConfig,
    out_dtype: str,
    out_nodata: float | int,
    asked: Mapping[str, str] | None = None,
) -> ReadOptions:
    """What every task of the build needs to know besides its grids. ``asked`` (channel ->
    the band name it comes from) carries per-band scales to the channels of an asset of
    several bands."""
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
        scale=_channel_scale(config, asked or {}),
        out_dtype=out_dtype,
        out_nodata=out_nodata,
        sign=getattr(config.sources, "sign", None),
        label_classes=classes,
        retries=config.engine.retries,
        retry_delay=config.engine.retry_delay,
        href_policy=_source_policy(config),
    )


def _source_policy(config: BuildConfig) -> HrefPolicy | None:
    """The href policy whose address checks every read repeats: a catalog from the
    network's (as :func:`geochip.open_catalog` gives it), else the trusted default."""
    path = getattr(config.sources, "path", None)
    if config.sources.kind == "catalog" and isinstance(path, str) and is_url(path):
        return HrefPolicy.for_remote(path)
    return None


def _read_env(opts: ReadOptions) -> GdalEnv:
    """The retry policy of a task's cube reads (engine.retries, engine.retry_delay); the GDAL
    options are the task's own (active around the read)."""
    return GdalEnv.default().with_retries(
        opts.retries, backoff=opts.retry_delay, max_backoff=max(opts.retry_delay * 8, 0.0)
    )


def _patch_url(sign: str | None) -> Callable[[str], str] | None:
    if sign is None:
        return None

    signer = load_object(sign, "sources.sign")

    def patch(href: str) -> str:
        return sign_href(href, signer)

    return patch


def _mask_pixels(kind: str, qa: npt.NDArray[Any], conf: Mapping[str, Any]) -> npt.NDArray[np.bool_]:
    if kind == "landsat_qa":
        out = landsat_qa_mask(qa, conf["layout"], conf["flags"])
        return np.asarray(out | landsat_qa_fill(qa, conf["layout"]))
    if kind == "scl":
        return np.asarray(scl_mask(qa, conf["classes"]))
    return np.asarray(probability_mask(qa, conf["threshold"]))


def _mask_spec(conf: Mapping[str, Any]) -> Any:
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
    _quiet_spurious_rasterize_warning()
    r0, r1, c0, c1 = bounds
    geobox = spec.geobox()[r0:r1, c0:c1]
    patch = _patch_url(opts.sign)
    if opts.cube_path:
        return _read_cube(spec, geobox, windows, opts, patch)

    item = pystac.Item.from_dict(spec.item)
    bands = list(spec.bands) + ([spec.mask_band] if spec.mask_band else [])
    cube = load_cube(
        [item],
        bands,
        geobox,
        resampling=spec.resampling,
        chunks=None,
        patch_url=patch,
        env=_read_env(opts),
        href_policy=opts.href_policy,
    )
    image = np.stack([cube[b].values[0] for b in spec.bands])
    miss = nodata_pixels(image, spec.nodata)
    if spec.mask_band and opts.mask is not None:
        cloud = _mask_pixels(opts.mask["kind"], cube[spec.mask_band].values[0], opts.mask)
        image[..., cloud] = spec.nodata
        miss = miss | cloud
    image = image.astype(opts.out_dtype, copy=False)
    return [(array_window(image, w, opts.out_nodata), array_window(miss, w, True)) for w in windows]


def _quiet_spurious_rasterize_warning() -> None:
    """rasterio's NotGeoreferencedWarning from ``rasterio.features`` is a false alarm here:
    labels are burned into a numpy array with the grid's transform given explicitly (with
    several reader threads, GDAL's warning about the warper's numpy destination can also
    surface there; see geochip.read.load._quiet_spurious_warp_warning)."""
    warnings.filterwarnings(
        "ignore",
        message="Dataset has no geotransform",
        category=NotGeoreferencedWarning,
        module="rasterio.features",
    )


def _to_float(step: xr.DataArray, dtype: np.dtype[Any]) -> npt.NDArray[Any]:
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
            [item],
            load_bands,
            geobox,
            resampling=spec.resampling,
            chunks=None,
            patch_url=patch,
            env=_read_env(opts),
            href_policy=opts.href_policy,
        )
        nodata = np.asarray(cube["nodata"].values, dtype="float64").copy()
        nodata[: len(bands)] = float(spec.nodata)  # the image's nodata, as planned
        observations[data["id"]] = cube.assign_coords(nodata=("band", nodata))
    height, width = geobox.shape.yx
    if opts.composite != "best" or not opts.stacked:
        # every step is per pixel: build the stack once for the rows, then cut the chips
        image, miss = _stack_chip(spec, steps, observations, opts)
        return [
            (array_window(image, w, opts.out_nodata), array_window(miss, w, True)) for w in windows
        ]
    out = []
    for win in windows:
        y0, x0 = max(win.row, 0), max(win.col, 0)
        y1, x1 = min(win.row + win.height, height), min(win.col + win.width, width)
        part = {k: v.isel(y=slice(y0, y1), x=slice(x0, x1)) for k, v in observations.items()}
        image, miss = _stack_chip(spec, steps, part, opts)
        if (y1 - y0, x1 - x0) != (win.height, win.width):  # past the grid's edge: pad
            placed = Window(win.row - y0, win.col - x0, win.height, win.width)
            image = array_window(image, placed, opts.out_nodata)
            miss = array_window(miss, placed, True)
        out.append((image, miss))
    return out


def _stack_chip(
    spec: GridSpec,
    steps: Sequence[StepSpec],
    observations: Mapping[str, xr.DataArray],
    opts: ReadOptions,
) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]:
    """One chip's time stack from its scenes: mask, composite per step, gap-fill, scale."""
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
    assert spec.label_href is not None
    href = spec.label_href
    if opts.sign is not None:
        href = sign_href(href, load_object(opts.sign, "sources.sign"))
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
