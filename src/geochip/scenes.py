"""Scenes: rasters opened by their headers, ready to be cut into chips.

:func:`open_scene` takes a local path, an ``http(s)://`` URL (read with range requests
through GDAL's ``/vsicurl/``), a ``pystac.Item`` (by asset key; several single-band assets
become the bands of one scene) or anything rasterio opens; :func:`open_scenes` takes a list
of those or a ``pystac.ItemCollection``. Opening reads headers only (for a COG over HTTP, the
first few kilobytes): the grid at the chosen overview level, the bands, dtype, nodata and
internal tile size. A :class:`Scene` is plain, picklable data: it holds no file handle, so it
crosses into DataLoader workers and Dask tasks; handles are opened lazily, per thread and per
process, by the code that reads pixels.

Example:
    >>> import tempfile, pathlib
    >>> from odc.geo.geobox import GeoBox
    >>> from geochip.testing import make_cog
    >>> gbox = GeoBox.from_bbox((500_000, 0, 520_480, 10_240), "EPSG:32633", resolution=10)
    >>> path = make_cog(pathlib.Path(tempfile.mkdtemp()) / "s1.tif", gbox, bands=2,
    ...                 tile=256, overviews=(2, 4), descriptions=["vv", "vh"])
    >>> scene = open_scene(path, overview_level=1, bands=["vh"])
    >>> scene.id, scene.shape, scene.band_names, scene.overviews, scene.block
    ('s1', (1, 256, 512), ('vh',), (2, 4), YX(y=256, x=256))
    >>> open_scene(path, overview_level=2)
    Traceback (most recent call last):
    ...
    geochip.errors.OverviewNotFoundError: ...s1.tif: no overview level 2; it has levels 0, 1 ...
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .env import GdalEnv, call_with_retries, clear_curl_cache, is_remote
from .errors import (
    BandNotFoundError,
    GridMismatchError,
    InputError,
    MissingGeoreferenceError,
    OverviewNotFoundError,
    RasterReadError,
)
from .grid import YX, Window

if TYPE_CHECKING:
    import pystac
    import xarray as xr
    from odc.geo.geobox import GeoBox

__all__ = [
    "Scene",
    "SceneArray",
    "ScenePart",
    "chip_dataarray",
    "gdal_path",
    "open_scene",
    "open_scenes",
    "read_window",
]

SceneSource = Any  # str | Path | pystac.Item


def gdal_path(href: str) -> str:
    """What GDAL opens for ``href``: ``/vsicurl/`` in front of http(s) URLs.

    >>> gdal_path("https://example.com/a.tif"), gdal_path("/data/a.tif")
    ('/vsicurl/https://example.com/a.tif', '/data/a.tif')
    """
    if href.startswith(("http://", "https://")):
        return f"/vsicurl/{href}"
    if href.startswith("file://"):
        return href[len("file://") :]
    return href


def _label(href: str) -> str:
    from .security import redact

    return redact(href)


@dataclass(frozen=True)
class ScenePart:
    """One file of a scene and which of its bands (1-based) the scene uses."""

    href: str
    bands: tuple[int, ...]
    block: YX

    @property
    def path(self) -> str:
        """The path GDAL opens."""
        return gdal_path(self.href)


@dataclass(frozen=True)
class Scene:
    """A raster ready to be chipped: its grid at one overview level, bands, dtype, nodata.

    ``geobox`` is the grid at ``overview_level`` (None = full resolution). ``overviews`` are
    the decimation factors the file has (level ``i`` is ``overviews[i]``). ``parts`` are the
    files (one for a path or URL, one per asset for a multi-asset item) whose bands are
    stacked in order. ``attrs`` holds ``scale_factor``/``add_offset`` and similar metadata.
    """

    id: str
    parts: tuple[ScenePart, ...]
    geobox: GeoBox
    dtype: str
    nodata: float | int | None
    band_names: tuple[str, ...]
    overview_level: int | None = None
    overviews: tuple[int, ...] = ()
    attrs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def count(self) -> int:
        """Number of bands."""
        return len(self.band_names)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(bands, height, width) at the scene's overview level."""
        height, width = self.geobox.shape.yx
        return (self.count, int(height), int(width))

    @property
    def block(self) -> YX:
        """The internal tile size of the first file (at the overview level)."""
        return self.parts[0].block

    @property
    def label(self) -> str:
        """How errors name the scene (hrefs with secrets redacted)."""
        hrefs = ", ".join(_label(p.href) for p in self.parts)
        return hrefs if len(self.parts) == 1 else f"{self.id} ({hrefs})"

    def __repr__(self) -> str:
        count, height, width = self.shape
        level = "" if self.overview_level is None else f", overview_level={self.overview_level}"
        return (
            f"Scene({self.id!r}, {self.label!r}, {count}x{height}x{width} {self.dtype}"
            f"{level}, bands={list(self.band_names)})"
        )

    def to_spec(self) -> str:
        """The scene as compact JSON: enough to reopen it (hrefs stay unsigned)."""
        spec = {
            "id": self.id,
            "parts": [{"href": p.href, "bands": list(p.bands)} for p in self.parts],
            "band_names": list(self.band_names),
            "overview_level": self.overview_level,
            "nodata": _json_nodata(self.nodata),
        }
        return json.dumps(spec, separators=(",", ":"))

    def array(self, env: GdalEnv | None = None) -> SceneArray:
        """A lazy (band, y, x) array: slicing it reads only that window."""
        return SceneArray(self, env)

    def to_dataarray(self, env: GdalEnv | None = None) -> xr.DataArray:
        """The whole scene as a lazy ``xarray.DataArray`` (band, y, x) with x/y coordinates,
        CRS (rioxarray and odc-geo read it) and the source's nodata and attributes."""
        import xarray as xr
        from xarray.core import indexing

        lazy = indexing.LazilyIndexedArray(_backend_array(self.array(env)))
        data = xr.Variable(("band", "y", "x"), lazy)
        return _wrap(self, data, 0, 0)

    def read(self, window: Window | None = None, env: GdalEnv | None = None) -> npt.NDArray[Any]:
        """Read a window (all of the scene when None) as (band, y, x) numpy."""
        _, height, width = self.shape
        win = window or Window(0, 0, height, width)
        out = np.empty((self.count, win.height, win.width), dtype=self.dtype)
        read_window(self, win, out, env)
        return out


def _json_nodata(value: float | int | None) -> float | int | str | None:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def scene_from_spec(spec: str | Mapping[str, Any], env: GdalEnv | None = None) -> Scene:
    """Reopen a scene from :meth:`Scene.to_spec` (reads headers again)."""
    data = json.loads(spec) if isinstance(spec, str) else dict(spec)
    nodata = data.get("nodata")
    parts = data["parts"]
    return _open_parts(
        scene_id=data["id"],
        hrefs=[p["href"] for p in parts],
        band_indexes=[tuple(p["bands"]) for p in parts],
        band_names=list(data["band_names"]),
        overview_level=data.get("overview_level"),
        nodata=float("nan") if nodata == "nan" else nodata,
        nodata_given=True,
        env=env or GdalEnv.default(),
        attrs_extra={},
    )


# --- file handles: lazily opened per thread and per process --------------------------------


class _Handles(threading.local):
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.open: dict[tuple[str, int | None], _Handle] = {}


@dataclass
class _Handle:
    ds: Any
    signature: tuple[int, ...] | None  # the local file's identity when it was opened
    generation: int  # the read generation it was last checked in


_HANDLES = _Handles()
_FORKED: list[Any] = []  # handles inherited through fork: never used, never closed
_GENERATION = [0]


def _forget_handles_after_fork() -> None:
    # A forked child must not use (or close) the parent's GDAL handles: they share file
    # offsets with the parent (xbatcher's ZIPDecode errors under DataLoader fork).
    _FORKED.append(_HANDLES.open)
    _HANDLES.open = {}
    _HANDLES.pid = os.getpid()


os.register_at_fork(after_in_child=_forget_handles_after_fork)

_MAX_HANDLES = 64


def refresh_handles() -> None:
    """Start a new read generation: handles kept open from earlier reads (geochip's reader
    threads live as long as the process) check, at their next use, that their local file
    was not replaced or rewritten meanwhile, and reopen it if it was."""
    _GENERATION[0] += 1


def _signature(path: str) -> tuple[int, ...] | None:
    if is_remote(path) or path.startswith("/vsi"):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return (-1,)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _handle(path: str, overview_level: int | None, env: GdalEnv) -> Any:
    import rasterio

    handles = _HANDLES
    if handles.pid != os.getpid():  # pragma: no cover - covered by the fork hook
        _forget_handles_after_fork()
    key = (path, overview_level)
    generation = _GENERATION[0]
    entry = handles.open.get(key)
    if entry is not None and entry.generation != generation:
        if _signature(path) == entry.signature:
            entry.generation = generation
        else:  # the file changed since it was opened
            handles.open.pop(key).ds.close()
            entry = None
    if entry is None:
        if len(handles.open) >= _MAX_HANDLES:
            oldest = next(iter(handles.open))
            handles.open.pop(oldest).ds.close()
        signature = _signature(path)
        with env.activate():
            kwargs = {} if overview_level is None else {"overview_level": overview_level}
            ds = rasterio.open(path, **kwargs)
        entry = _Handle(ds, signature, generation)
        handles.open[key] = entry
    return entry.ds


def _drop_handle(path: str, overview_level: int | None) -> None:
    entry = _HANDLES.open.pop((path, overview_level), None)
    if entry is not None:
        entry.ds.close()


def close_handles() -> None:
    """Close the calling thread's open file handles."""
    for entry in _HANDLES.open.values():
        entry.ds.close()
    _HANDLES.open.clear()


# --- opening ---------------------------------------------------------------------------------


def _band_names_from_file(ds: Any) -> list[str]:
    return [d or f"b{i + 1}" for i, d in enumerate(ds.descriptions)]


def _open_error(href: str, err: Exception, env: GdalEnv) -> Exception:
    text = str(err)
    label = _label(href)
    if is_remote(href):
        from .env import http_status

        status = http_status(gdal_path(href), env)
        if status in (404, 410):
            return RasterReadError(f"{label} does not exist (HTTP {status}); check the URL")
        if status in (401, 403):
            return RasterReadError(
                f"{label}: access refused (HTTP {status}); check the credentials or signing"
            )
        if status is None:
            return RasterReadError(
                f"{label} could not be reached ({text}); check the URL and the network"
            )
        if "not recognized as" in text and status < 300:
            return InputError(f"{label} is not a raster GDAL can read ({text}); check the URL")
        return RasterReadError(
            f"{label} could not be opened (HTTP {status}; {text}); geochip retried "
            "transient failures"
        )
    if "not recognized as" in text or "not a supported" in text:
        return InputError(f"{label} is not a raster GDAL can read ({text}); check the path")
    if "No such file" in text or "does not exist" in text:
        return RasterReadError(f"{label} does not exist ({text}); check the path")
    return RasterReadError(f"{label} could not be opened: {text}")


def _header(href: str, overview_level: int | None, env: GdalEnv) -> dict[str, Any]:
    """Everything geochip needs from one file's header, at one overview level."""
    import rasterio

    path = gdal_path(href)

    def probe() -> dict[str, Any]:
        with env.activate(), rasterio.open(path) as ds:
            info: dict[str, Any] = {
                "overviews": tuple(int(f) for f in ds.overviews(1)) if ds.count else (),
                "count": ds.count,
                "dtypes": tuple(ds.dtypes),
                "nodata": ds.nodata,
                "names": _band_names_from_file(ds),
                "scales": tuple(ds.scales),
                "offsets": tuple(ds.offsets),
                "crs": ds.crs,
                "transform": ds.transform,
                "gcps": bool(ds.gcps[0]),
                "shape": (ds.height, ds.width),
                "block": ds.block_shapes[0] if ds.count else (1, 1),
                "units": tuple(ds.units),
            }
            return info

    if is_remote(path):
        clear_curl_cache(path)  # a fresh open: no failure GDAL cached earlier in the process
    try:
        info = call_with_retries(probe, path, env)
    except Exception as err:
        raise _open_error(href, err, env) from err
    if info["count"] == 0:
        raise InputError(f"{_label(href)} has no raster bands")
    if info["crs"] is None or (info["transform"].is_identity and not info["gcps"]):
        raise MissingGeoreferenceError(
            f"{_label(href)}: the raster has no CRS or no geotransform, so chips cannot be "
            "georeferenced; fix the file (gdal_edit.py -a_srs EPSG:xxxx -a_ullr ...) "
            "or pass assume_crs= where supported"
        )
    if overview_level is not None:
        levels = info["overviews"]
        if not isinstance(overview_level, int) or isinstance(overview_level, bool):
            raise InputError(f"overview_level must be an int or None, got {overview_level!r}")
        if overview_level < 0 or overview_level >= len(levels):
            have = (
                f"levels {', '.join(map(str, range(len(levels))))} "
                f"(decimation {', '.join(map(str, levels))})"
                if levels
                else "no overviews"
            )
            raise OverviewNotFoundError(
                f"{_label(href)}: no overview level {overview_level}; it has {have}. "
                "Use one of those, or None for full resolution"
            )

        def probe_level() -> tuple[Any, tuple[int, int], tuple[int, int]]:
            with env.activate(), rasterio.open(path, overview_level=overview_level) as ds:
                return ds.transform, (ds.height, ds.width), ds.block_shapes[0]

        try:
            transform, shape, block = call_with_retries(probe_level, path, env)
        except Exception as err:
            raise _open_error(href, err, env) from err
        info.update(transform=transform, shape=shape, block=block)
    return info


def _select_bands(label: str, names: list[str], bands: Sequence[str | int] | None) -> list[int]:
    """0-based positions of ``bands`` (names or 1-based ints) among ``names``."""
    if bands is None:
        return list(range(len(names)))
    if isinstance(bands, str | int):
        bands = [bands]
    out: list[int] = []
    missing: list[str] = []
    for band in bands:
        if isinstance(band, bool):
            missing.append(repr(band))
        elif isinstance(band, int | np.integer):
            if 1 <= int(band) <= len(names):
                out.append(int(band) - 1)
            else:
                missing.append(str(band))
        elif band in names:
            out.append(names.index(band))
        else:
            missing.append(str(band))
    if missing:
        available = [f"{i + 1}:{n}" for i, n in enumerate(names)]
        raise BandNotFoundError(label, missing, available)
    if not out:
        raise InputError(f"{label}: select at least one band")
    return out


def _open_parts(
    *,
    scene_id: str,
    hrefs: Sequence[str],
    band_indexes: Sequence[tuple[int, ...] | None],
    band_names: Sequence[str] | None,
    overview_level: int | None,
    nodata: float | int | None,
    nodata_given: bool,
    env: GdalEnv,
    attrs_extra: Mapping[str, Any],
    part_keys: Sequence[str] | None = None,
    part_names: Sequence[Sequence[str] | None] | None = None,
    bands: Sequence[str | int] | None = None,
) -> Scene:
    from odc.geo.geobox import GeoBox

    infos = [_header(h, overview_level, env) for h in hrefs]
    first = infos[0]
    for href, info in zip(hrefs[1:], infos[1:], strict=True):
        if (
            info["shape"] != first["shape"]
            or info["transform"] != first["transform"]
            or info["crs"] != first["crs"]
        ):
            raise GridMismatchError(
                f"{_label(href)} is on grid {info['shape']} {tuple(info['transform'])[:6]} "
                f"{info['crs']}, {_label(hrefs[0])} on {first['shape']} "
                f"{tuple(first['transform'])[:6]} {first['crs']}; a scene stacks assets on "
                "one grid: choose assets of the same resolution"
            )
    # every (part, 1-based band, name) the files offer, in asset order
    flat: list[tuple[int, int, str]] = []
    for p, (href, info) in enumerate(zip(hrefs, infos, strict=True)):
        count = info["count"]
        key = part_keys[p] if part_keys else None
        stac = part_names[p] if part_names else None
        if stac and len(stac) == count:
            names = list(stac)
        elif key is not None and count == 1:
            names = [key]
        elif key is not None and len(hrefs) > 1:
            names = [f"{key}.{n}" for n in info["names"]]
        else:
            names = list(info["names"])
        chosen = band_indexes[p]
        indexes = list(chosen) if chosen is not None else list(range(1, count + 1))
        for i in indexes:
            if not 1 <= i <= count:
                raise BandNotFoundError(_label(href), str(i), names)
            flat.append((p, i, names[i - 1]))
    if band_names is not None and len(band_names) == len(flat):
        flat = [(p, i, n) for (p, i, _), n in zip(flat, band_names, strict=True)]
    label = _label(hrefs[0]) if len(hrefs) == 1 else f"item {scene_id}"
    keep = _select_bands(label, [n for _, _, n in flat], bands)
    flat = [flat[k] for k in keep]
    dtypes = {infos[p]["dtypes"][i - 1] for p, i, _ in flat}
    if len(dtypes) > 1:
        raise InputError(
            f"{label}: the selected bands have different dtypes {sorted(dtypes)}; select "
            "bands of one dtype"
        )
    # runs of consecutive bands of one file become the parts, in the selected order
    parts: list[ScenePart] = []
    run: list[int] = []
    for n, (p, i, _) in enumerate(flat):
        run.append(i)
        if n + 1 == len(flat) or flat[n + 1][0] != p:
            block = infos[p]["block"]
            parts.append(ScenePart(hrefs[p], tuple(run), YX(int(block[0]), int(block[1]))))
            run = []
    if not nodata_given:
        nodata = first["nodata"]
    attrs: dict[str, Any] = dict(attrs_extra)
    scales = [infos[p]["scales"][i - 1] for p, i, _ in flat]
    offsets = [infos[p]["offsets"][i - 1] for p, i, _ in flat]
    if any(s != 1.0 for s in scales) or any(o != 0.0 for o in offsets):
        attrs["scale_factor"] = scales[0] if len(set(scales)) == 1 else tuple(scales)
        attrs["add_offset"] = offsets[0] if len(set(offsets)) == 1 else tuple(offsets)
    units = [infos[p]["units"][i - 1] for p, i, _ in flat]
    if any(units):
        attrs["units"] = units[0] if len(set(units)) == 1 else tuple(units)
    height, width = first["shape"]
    geobox = GeoBox((int(height), int(width)), first["transform"], first["crs"])
    return Scene(
        id=scene_id,
        parts=tuple(parts),
        geobox=geobox,
        dtype=str(np.dtype(next(iter(dtypes)))),
        nodata=nodata,
        band_names=tuple(n for _, _, n in flat),
        overview_level=overview_level,
        overviews=tuple(first["overviews"]),
        attrs=attrs,
    )


def _stem(href: str) -> str:
    name = href.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    stem = name.split(".", 1)[0] if "." in name else name
    return stem or "scene"


def _asset_band_names(asset: Any) -> list[str] | None:
    bands = asset.extra_fields.get("bands") or asset.extra_fields.get("eo:bands")
    if not bands:
        return None
    names = [b.get("name") for b in bands]
    return names if all(names) else None


def _item_hrefs(
    item: pystac.Item, assets: str | Sequence[str] | None
) -> tuple[list[str], list[str], list[list[str] | None]]:
    if assets is None:
        data = [k for k, a in item.assets.items() if "data" in (a.roles or [])]
        rasters = [
            k for k, a in item.assets.items() if a.media_type and "tiff" in a.media_type.lower()
        ]
        candidates = data or rasters
        if len(candidates) != 1:
            raise InputError(
                f"item {item.id}: say which asset to read (asset=...); it has "
                f"{', '.join(map(repr, sorted(item.assets)))}"
            )
        keys = candidates
    else:
        keys = [assets] if isinstance(assets, str) else list(assets)
    missing = [k for k in keys if k not in item.assets]
    if missing:
        raise BandNotFoundError(f"item {item.id}", missing, sorted(item.assets))
    hrefs = [item.assets[k].get_absolute_href() or item.assets[k].href for k in keys]
    return keys, hrefs, [_asset_band_names(item.assets[k]) for k in keys]


def open_scene(
    source: SceneSource,
    *,
    asset: str | Sequence[str] | None = None,
    bands: Sequence[str | int] | str | int | None = None,
    overview_level: int | None = None,
    nodata: float | int | None = None,
    scene_id: str | None = None,
    env: GdalEnv | None = None,
) -> Scene:
    """Open one scene by its header(s); no pixel is read.

    ``source``: a path, an ``http(s)://`` URL, or a ``pystac.Item`` (``asset`` names the
    asset, or several single-band assets on one grid that become the bands). ``bands``
    selects bands by name (file descriptions, STAC band names, or the asset key of a
    single-band asset) or by 1-based number. ``overview_level`` picks a COG overview
    (0 = the first, like GDAL's ``OVERVIEW_LEVEL``). ``nodata`` overrides the file's.
    """
    env = env or GdalEnv.default()
    if isinstance(bands, str | int):
        bands = [bands]
    try:
        import pystac
    except ImportError:  # pragma: no cover - pystac is a dependency
        pystac = None  # type: ignore[assignment]
    if pystac is not None and isinstance(source, pystac.Item):
        keys, hrefs, part_names = _item_hrefs(source, asset)
        return _open_parts(
            scene_id=scene_id or source.id,
            hrefs=hrefs,
            band_indexes=[None] * len(hrefs),
            band_names=None,
            overview_level=overview_level,
            nodata=nodata,
            nodata_given=nodata is not None,
            env=env,
            attrs_extra={"item_id": source.id},
            part_keys=keys,
            part_names=part_names,
            bands=bands,
        )
    if asset is not None:
        raise InputError(f"asset={asset!r} applies to STAC items; {source!r} is not one")
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str):
        raise InputError(
            f"cannot open {type(source).__name__} as a scene; give a path, an http(s) URL or "
            "a pystac.Item"
        )
    href = source
    if not is_remote(href) and not href.startswith("/vsi") and "://" not in href:
        if not Path(href).exists():
            raise RasterReadError(f"{href} does not exist; check the path")
        href = os.path.abspath(href)
    return _open_parts(
        scene_id=scene_id or _stem(href),
        hrefs=[href],
        band_indexes=[None],
        band_names=None,
        overview_level=overview_level,
        nodata=nodata,
        nodata_given=nodata is not None,
        env=env,
        attrs_extra={},
        bands=bands,
    )


def open_scenes(
    sources: Iterable[SceneSource],
    *,
    asset: str | Sequence[str] | None = None,
    bands: Sequence[str | int] | str | int | None = None,
    overview_level: int | None = None,
    nodata: float | int | None = None,
    env: GdalEnv | None = None,
    workers: int = 4,
) -> list[Scene]:
    """Open many scenes (paths, URLs, items, or an ``ItemCollection``); headers are read on
    ``workers`` threads. Scene ids are made unique (``-2``, ``-3``... on repeats)."""
    items = list(sources)
    if not items:
        raise InputError("no scenes given")

    import pystac

    def one(src: SceneSource) -> Scene:
        # asset= names assets of STAC items; paths and URLs among them ignore it
        return open_scene(
            src,
            asset=asset if isinstance(src, pystac.Item) else None,
            bands=bands,
            overview_level=overview_level,
            nodata=nodata,
            env=env,
        )

    if workers > 1 and len(items) > 1:
        with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
            scenes = list(pool.map(one, items))
    else:
        scenes = [one(src) for src in items]
    seen: dict[str, int] = {}
    out = []
    from dataclasses import replace

    for scene in scenes:
        n = seen.get(scene.id, 0) + 1
        seen[scene.id] = n
        out.append(scene if n == 1 else replace(scene, id=f"{scene.id}-{n}"))
    return out


# --- reading -------------------------------------------------------------------------------


def read_part(
    scene: Scene,
    part: int,
    row: int,
    col: int,
    height: int,
    width: int,
    out: npt.NDArray[Any] | None,
    env: GdalEnv,
) -> npt.NDArray[Any]:
    """Read rows/cols of one part (inside the grid) into ``out`` (or a new array), with
    retries on transient failures; errors name the file and the window."""
    from rasterio.windows import Window as RioWindow

    p = scene.parts[part]
    path = p.path
    level = scene.overview_level
    window = RioWindow(col, row, width, height)
    indexes = list(p.bands)

    def attempt() -> npt.NDArray[Any]:
        ds = _handle(path, level, env)
        return ds.read(indexes, window=window, out=out)  # type: ignore[no-any-return]

    def reset(_: int, __: BaseException) -> None:
        _drop_handle(path, level)

    try:
        return call_with_retries(attempt, path, env, on_retry=reset, known_raster=True)
    except Exception as err:
        _drop_handle(path, level)
        raise RasterReadError(
            f"{_label(p.href)}: reading rows {row}:{row + height}, cols {col}:{col + width}"
            f"{'' if level is None else f' of overview level {level}'} failed: {_causes(err)}"
        ) from err


def _causes(err: BaseException) -> str:
    """The messages of ``err`` and its causes (rasterio chains GDAL's real reason)."""
    from .security import redact

    seen: list[str] = []
    current: BaseException | None = err
    while current is not None and len(seen) < 5:
        text = str(current)
        if text and text not in seen and not text.startswith("Read failed. See previous"):
            seen.append(text)
        current = current.__cause__ or current.__context__
    return redact("; ".join(seen) or repr(err))


def read_window(
    scene: Scene,
    window: Window,
    out: npt.NDArray[Any],
    env: GdalEnv | None = None,
) -> npt.NDArray[Any]:
    """Read ``window`` of ``scene`` into ``out`` (band, height, width); the part of the
    window past the grid's edges is filled with the scene's nodata (0 when it has none)."""
    env = env or GdalEnv.default()
    _, height, width = scene.shape
    r0, c0 = max(window.row, 0), max(window.col, 0)
    r1 = min(window.row + window.height, height)
    c1 = min(window.col + window.width, width)
    inside = (r0, c0, r1, c1) == (
        window.row,
        window.col,
        window.row + window.height,
        window.col + window.width,
    )
    if not inside:
        out.fill(_fill_value(scene))
    if r1 <= r0 or c1 <= c0:
        return out
    band = 0
    for p, part in enumerate(scene.parts):
        n = len(part.bands)
        dest = out[
            band : band + n,
            r0 - window.row : r1 - window.row,
            c0 - window.col : c1 - window.col,
        ]
        read_part(scene, p, r0, c0, r1 - r0, c1 - c0, dest, env)
        band += n
    return out


def _fill_value(scene: Scene) -> float | int:
    if scene.nodata is None:
        return 0
    return scene.nodata


class SceneArray:
    """A lazy (band, y, x) array over a scene: ``array[b, r0:r1, c0:c1]`` reads that window.

    Thread-safe (every thread reads with its own file handle); only basic slicing with
    step 1 is supported, which is what chip windows need.
    """

    def __init__(self, scene: Scene, env: GdalEnv | None = None) -> None:
        self.scene = scene
        self.env = env or GdalEnv.default()
        self.shape = scene.shape
        self.dtype = np.dtype(scene.dtype)
        self.ndim = 3

    def __repr__(self) -> str:
        return f"SceneArray({self.scene.id!r}, shape={self.shape}, dtype={self.dtype})"

    def __len__(self) -> int:
        return self.shape[0]

    def _slices(self, key: Any) -> tuple[slice | int, slice, slice]:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = next(i for i, k in enumerate(key) if k is Ellipsis)
            key = key[:i] + (slice(None),) * (3 - len(key) + 1) + key[i + 1 :]
        key = key + (slice(None),) * (3 - len(key))
        if len(key) != 3:
            raise IndexError(f"too many indices for a 3-d array: {key}")
        return (key[0], key[1], key[2])

    def __getitem__(self, key: Any) -> npt.NDArray[Any]:
        band_key, rows, cols = self._slices(key)
        out_spatial: list[slice] = []
        for given, n in ((rows, self.shape[1]), (cols, self.shape[2])):
            s = slice(int(given), int(given) + 1) if isinstance(given, int | np.integer) else given
            if not isinstance(s, slice):
                raise IndexError("SceneArray supports slices on y and x")
            start, stop, step = s.indices(n)
            if step != 1:
                raise IndexError("SceneArray supports slices with step 1 on y and x")
            out_spatial.append(slice(start, max(start, stop)))
        r, c = out_spatial
        win = Window(r.start, c.start, r.stop - r.start, c.stop - c.start)
        data = np.empty((self.shape[0], win.height, win.width), dtype=self.dtype)
        if win.height and win.width:
            read_window(self.scene, win, data, self.env)
        result = data[band_key]
        squeeze = [i for i, s in ((1, rows), (2, cols)) if isinstance(s, int | np.integer)]
        if squeeze:
            offset = 1 if isinstance(band_key, int | np.integer) else 0
            result = result.squeeze(axis=tuple(i - offset for i in squeeze))
        return np.asarray(result)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> npt.NDArray[Any]:
        data = self[:, :, :]
        return data if dtype is None else data.astype(dtype)


_BACKEND: list[type] = []


def _backend_array(array: SceneArray) -> Any:
    """xarray's lazy-indexing adapter over a :class:`SceneArray` (class made on first use,
    so importing this module does not import xarray)."""
    if not _BACKEND:
        from xarray.backends import BackendArray
        from xarray.core import indexing

        class _SceneBackendArray(BackendArray):
            def __init__(self, array: SceneArray) -> None:
                self.array = array
                self.shape = array.shape
                self.dtype = array.dtype

            def __getitem__(self, key: Any) -> Any:
                return indexing.explicit_indexing_adapter(
                    key, self.shape, indexing.IndexingSupport.BASIC, self._raw
                )

            def _raw(self, key: tuple[Any, ...]) -> npt.NDArray[Any]:
                return self.array[key]

        _BACKEND.append(_SceneBackendArray)
    return _BACKEND[0](array)


# --- chips as DataArrays -------------------------------------------------------------------

_SPATIAL_REF: dict[str, Any] = {}
_SPATIAL_REF_LOCK = threading.Lock()


def _spatial_ref(scene: Scene) -> Any:
    import xarray as xr

    crs = scene.geobox.crs
    wkt = crs.to_wkt() if crs is not None else ""
    with _SPATIAL_REF_LOCK:
        var = _SPATIAL_REF.get(wkt)
        if var is None:
            var = xr.Variable((), np.int64(0), attrs={"crs_wkt": wkt, "spatial_ref": wkt})
            if len(_SPATIAL_REF) > 64:
                _SPATIAL_REF.clear()
            _SPATIAL_REF[wkt] = var
    return var


def _attrs(scene: Scene) -> dict[str, Any]:
    attrs: dict[str, Any] = {"AREA_OR_POINT": "Area"}
    if scene.nodata is not None:
        attrs["_FillValue"] = scene.nodata
    attrs.update({k: v for k, v in scene.attrs.items() if k != "item_id"})
    attrs.setdefault("scale_factor", 1.0)
    attrs.setdefault("add_offset", 0.0)
    attrs["long_name"] = tuple(scene.band_names) if scene.count > 1 else scene.band_names[0]
    attrs["scene_id"] = scene.id
    return attrs


class _Coords:
    """A scene's DataArray parts, made once: the band coordinate, CRS variable and
    attributes, and the y/x coordinates of every chip row and column seen so far (chips
    of a sliding window share a few dozen of them). xarray never changes an index in
    place, so DataArrays share these objects safely."""

    _MAX = 4096  # coordinates kept per axis

    def __init__(self, scene: Scene) -> None:
        import pandas as pd
        import xarray as xr
        from xarray.core.indexes import PandasIndex

        self.affine = scene.geobox.affine
        band_values = np.array(
            [b for part in scene.parts for b in part.bands]
            if len(scene.parts) == 1
            else list(range(1, scene.count + 1)),
            dtype=np.int64,
        )
        self.band = (
            xr.IndexVariable(("band",), band_values),  # type: ignore[no-untyped-call]
            PandasIndex(pd.Index(band_values), "band"),
        )
        self.spatial_ref = _spatial_ref(scene)
        self.attrs = _attrs(scene)
        self.y: dict[tuple[int, int], tuple[Any, Any]] = {}
        self.x: dict[tuple[int, int], tuple[Any, Any]] = {}

    @staticmethod
    def _axis(
        cache: dict[tuple[int, int], tuple[Any, Any]],
        name: str,
        start: int,
        size: int,
        origin: float,
        step: float,
    ) -> tuple[Any, Any]:
        entry = cache.get((start, size))
        if entry is None:
            import pandas as pd
            import xarray as xr
            from xarray.core.indexes import PandasIndex

            values = origin + (np.arange(start, start + size) + 0.5) * step
            entry = (
                xr.IndexVariable((name,), values),  # type: ignore[no-untyped-call]
                PandasIndex(pd.Index(values), name),
            )
            if len(cache) >= _Coords._MAX:
                cache.clear()
            cache[(start, size)] = entry
        return entry

    def wrap(self, data: Any, row: int, col: int) -> xr.DataArray:
        import xarray as xr

        aff = self.affine
        height, width = data.shape[-2:]
        y = self._axis(self.y, "y", row, height, aff.f, aff.e)
        x = self._axis(self.x, "x", col, width, aff.c, aff.a)
        coords = {
            "band": self.band[0],
            "y": y[0],
            "x": x[0],
            "spatial_ref": self.spatial_ref,
        }
        indexes: dict[Any, Any] = {"band": self.band[1], "y": y[1], "x": x[1]}
        if isinstance(data, xr.Variable):
            data.attrs.update(self.attrs)
        else:
            data = xr.Variable(("band", "y", "x"), data, dict(self.attrs), fastpath=True)
        return xr.DataArray(data, coords=coords, indexes=indexes, fastpath=True)


_COORDS: dict[int, tuple[Any, _Coords]] = {}  # id(scene) -> (weakref to it, its parts)


def _coords(scene: Scene) -> _Coords:
    import weakref

    entry = _COORDS.get(id(scene))
    if entry is not None and entry[0]() is scene:
        return entry[1]
    made = _Coords(scene)
    if len(_COORDS) >= 64:
        _COORDS.clear()
    _COORDS[id(scene)] = (weakref.ref(scene), made)
    return made


def _wrap(scene: Scene, data: Any, row: int, col: int) -> xr.DataArray:
    """A DataArray around (band, y, x) ``data`` at offset (row, col) of the scene's grid,
    built on xarray's fast path (coordinates are made here, so no validation is needed)."""
    return _coords(scene).wrap(data, row, col)


def chip_dataarray(scene: Scene, image: npt.NDArray[Any], row: int, col: int) -> xr.DataArray:
    """Wrap a chip's pixels (band, y, x), read at (row, col) of ``scene``'s grid, as an
    ``xarray.DataArray`` with x/y coordinates, a ``spatial_ref`` CRS coordinate (rioxarray
    and odc-geo read it), ``_FillValue`` = the source nodata and the source's attributes."""
    return _wrap(scene, image, row, col)
