"""Opening scenes: rasters read by their headers, ready to be cut into chips.

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
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pystac
import rasterio
from odc.geo.geobox import GeoBox

from ..core.bands import asset_band_fields, resolve_bands
from ..core.env import GdalEnv, is_remote
from ..core.gdal import clear_curl_cache
from ..core.grid import YX
from ..core.retry import call_with_retries, http_status
from ..core.security import redact
from ..core.stacjson import scene_sources
from ..core.storage import RASTER_SUFFIXES, filesystem, is_object_url, raster_files
from ..errors import (
    BandNotFoundError,
    GridMismatchError,
    InputError,
    MissingExtraError,
    MissingGeoreferenceError,
    OverviewNotFoundError,
    RasterReadError,
)
from .scene import Scene, ScenePart, SceneSource, gdal_path

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = [
    "open_scene",
    "open_scenes",
    "scene_from_spec",
    "scenes_of",
]


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


def _band_names_from_file(ds: Any) -> list[str]:
    return [d or f"b{i + 1}" for i, d in enumerate(ds.descriptions)]


def _open_error(href: str, err: Exception, env: GdalEnv) -> Exception:
    text = str(err)
    label = redact(href)
    if is_object_url(href):
        return _object_error(href, text)
    if is_remote(href):
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


def _object_error(href: str, text: str) -> Exception:
    """Why an object-store raster did not open: missing, refused, or not a raster (asked
    through its fsspec file system, with the environment's credentials)."""
    label = redact(href)
    try:
        fs, path = filesystem(href)
        exists = fs.exists(path)
    except MissingExtraError:
        raise
    except Exception as err:  # no answer: credentials, endpoint, network
        return RasterReadError(
            f"{label} could not be reached ({type(err).__name__}: {redact(str(err))}); check "
            "the URL, the credentials in the environment and the endpoint (AWS_ENDPOINT_URL)"
        )
    if not exists:
        return RasterReadError(f"{label} does not exist; check the URL ({text})")
    if "not recognized as" in text or "not a supported" in text:
        return InputError(f"{label} is not a raster GDAL can read ({text}); check the URL")
    return RasterReadError(f"{label} could not be opened: {text}")


def _header(href: str, overview_level: int | None, env: GdalEnv) -> dict[str, Any]:
    """Everything geochip needs from one file's header, at one overview level."""
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
        raise InputError(f"{redact(href)} has no raster bands")
    if info["crs"] is None or (info["transform"].is_identity and not info["gcps"]):
        raise MissingGeoreferenceError(
            f"{redact(href)}: the raster has no CRS or no geotransform, so chips cannot be "
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
                f"{redact(href)}: no overview level {overview_level}; it has {have}. "
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


def _select_bands(
    label: str,
    names: list[str],
    bands: Sequence[str | int] | None,
    aliases: Sequence[str | None] | None = None,
) -> list[int]:
    """0-based positions of ``bands`` (names or 1-based ints) among ``names`` (or, for a
    name that is none of them, among ``aliases``: the STAC or file names of item bands)."""
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
        elif aliases is not None and band in aliases:
            out.append(list(aliases).index(band))
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
    band_names: Sequence[str | None] | None,
    overview_level: int | None,
    nodata: float | int | None,
    nodata_given: bool,
    env: GdalEnv,
    attrs_extra: Mapping[str, Any],
    part_keys: Sequence[str] | None = None,
    part_names: Sequence[Sequence[str] | None] | None = None,
    bands: Sequence[str | int] | None = None,
) -> Scene:
    infos = [_header(h, overview_level, env) for h in hrefs]
    first = infos[0]
    for href, info in zip(hrefs[1:], infos[1:], strict=True):
        if (
            info["shape"] != first["shape"]
            or info["transform"] != first["transform"]
            or info["crs"] != first["crs"]
        ):
            raise GridMismatchError(
                f"{redact(href)} is on grid {info['shape']} {tuple(info['transform'])[:6]} "
                f"{info['crs']}, {redact(hrefs[0])} on {first['shape']} "
                f"{tuple(first['transform'])[:6]} {first['crs']}; a scene stacks assets on "
                "one grid: choose assets of the same resolution"
            )
    # every (part, 1-based band, name) the files offer, in asset order; the bands of an
    # item's asset are named as a build names them: the asset key (one band) or
    # <key>.<n>; their STAC or file names (aliases) select them too
    flat: list[tuple[int, int, str]] = []
    aliases: list[str | None] = []
    for p, (href, info) in enumerate(zip(hrefs, infos, strict=True)):
        count = info["count"]
        key = part_keys[p] if part_keys else None
        stac = part_names[p] if part_names else None
        other = list(stac) if stac and len(stac) == count else list(info["names"])
        if key is None:
            names = other
        elif count == 1:
            names = [key]
        else:
            names = [f"{key}.{n}" for n in range(1, count + 1)]
        chosen = band_indexes[p]
        indexes = list(chosen) if chosen is not None else list(range(1, count + 1))
        for i in indexes:
            if not 1 <= i <= count:
                raise BandNotFoundError(redact(href), str(i), names)
            flat.append((p, i, names[i - 1]))
            aliases.append(other[i - 1])
    if band_names is not None and len(band_names) == len(flat):
        flat = [
            (p, i, o if n is None else n) for (p, i, o), n in zip(flat, band_names, strict=True)
        ]
    label = redact(hrefs[0]) if len(hrefs) == 1 else f"item {scene_id}"
    names = [n for _, _, n in flat]
    keep = _select_bands(label, names, bands, aliases if part_keys else None)
    # a band asked for by name keeps that name (as in a build)
    asked = [b if isinstance(b, str) else None for b in bands] if bands is not None else []
    flat = [
        (flat[k][0], flat[k][1], a if a is not None else flat[k][2])
        for k, a in zip(keep, asked or [None] * len(keep), strict=True)
    ]
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


def _asset_band_names(item: pystac.Item, key: str) -> list[str] | None:
    bands, _ = asset_band_fields(item, key)
    if not bands:
        return None
    names = [b.get("name") for b in bands]
    return [str(n) for n in names] if all(names) else None


@dataclass(frozen=True)
class _ItemParts:
    keys: list[str]
    hrefs: list[str]
    indexes: list[tuple[int, ...] | None]
    names: list[list[str] | None]
    channels: list[str | None] | None
    nodata: float | int | None


def _item_parts(item: pystac.Item, assets: str | Sequence[str] | None) -> _ItemParts:
    """The files, bands and names of ``assets`` of ``item``, resolved by
    :func:`geochip.core.bands.resolve_bands` (no I/O): consecutive bands of one asset
    are one part."""
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
        names = candidates
    else:
        names = [assets] if isinstance(assets, str) else list(assets)
    found = resolve_bands(item, names, headers=False)
    out = _ItemParts([], [], [], [], [], None)
    known = all(b.count is not None for b in found)
    for n, band in enumerate(found):
        whole = band.count is None
        if n and out.keys[-1] == band.asset and not whole and out.indexes[-1] is not None:
            out.indexes[-1] = (*out.indexes[-1], band.index)
        else:
            out.keys.append(band.asset)
            out.hrefs.append(band.href)
            out.indexes.append(None if whole else (band.index,))
            out.names.append(_asset_band_names(item, band.asset))
        assert out.channels is not None
        out.channels.append(band.name if band.name == band.asked else None)
    nodatas = {repr(b.nodata) for b in found}
    if len(nodatas) == 1 and found[0].nodata is not None:
        out = replace(out, nodata=found[0].nodata)
    return out if known else replace(out, channels=None)


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

    ``source``: a path, an ``http(s)://`` URL, a STAC Item JSON (path or URL), or a
    ``pystac.Item`` (``asset`` names the
    asset, or several single-band assets on one grid that become the bands). ``bands``
    selects bands by name (file descriptions, STAC band names, or the asset key of a
    single-band asset) or by 1-based number. ``overview_level`` picks a COG overview
    (0 = the first, like GDAL's ``OVERVIEW_LEVEL``). ``nodata`` overrides the file's.
    """
    env = env or GdalEnv.default()
    if isinstance(bands, str | int):
        bands = [bands]
    if isinstance(source, str | os.PathLike):
        resolved = scene_sources([source])
        if len(resolved) != 1:
            raise InputError(
                f"{source}: give one scene (one item); it holds {len(resolved)}; "
                "open_scenes opens them all"
            )
        source = resolved[0]
    if isinstance(source, pystac.Item):
        parts = _item_parts(source, asset)
        if nodata is None:
            nodata = parts.nodata  # the item's metadata; else the file's header
        return _open_parts(
            scene_id=scene_id or source.id,
            hrefs=parts.hrefs,
            band_indexes=parts.indexes,
            band_names=parts.channels,
            overview_level=overview_level,
            nodata=nodata,
            nodata_given=nodata is not None,
            env=env,
            attrs_extra={"item_id": source.id},
            part_keys=parts.keys,
            part_names=parts.names,
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
    """Open many scenes (paths, URLs, items, STAC Item/ItemCollection JSON paths or URLs, or
    an ``ItemCollection``), as ``geochip chips`` does; headers are read on ``workers``
    threads. Scene ids are made unique (``-2``, ``-3``... on repeats).

    A folder among them (a local one, or an object-store prefix such as
    ``"s3://bucket/scenes/"``, listed through fsspec) stands for the rasters in it
    (``.tif``/``.tiff``/``.jp2``, recursively, sorted); ``sources`` may be one such folder.
    """
    if isinstance(sources, str | os.PathLike):
        sources = [sources]
    items = [scene for src in scene_sources(sources) for scene in _expand_folder(src)]
    if not items:
        raise InputError("no scenes given")

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

    for scene in scenes:
        n = seen.get(scene.id, 0) + 1
        seen[scene.id] = n
        out.append(scene if n == 1 else replace(scene, id=f"{scene.id}-{n}"))
    return out


def _is_folder(source: str) -> bool:
    if is_object_url(source):
        if source.endswith("/") or any(ch in source for ch in "*?["):
            return True
        if source.lower().endswith(RASTER_SUFFIXES):
            return False
        fs, path = filesystem(source)  # a name without a raster suffix: a file, or a prefix
        try:
            return not fs.isfile(path)
        except Exception:  # no answer here: opening it says why
            return False
    return "://" not in source and not source.startswith("/vsi") and Path(source).is_dir()


def _expand_folder(source: SceneSource) -> list[SceneSource]:
    """The rasters of a folder ``source``; any other source as it is."""
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str) or not _is_folder(source):
        return [source]
    files = raster_files(source)
    if not files:
        raise InputError(
            f"no raster ({', '.join(RASTER_SUFFIXES)}) in the folder {redact(source)}; check "
            "the path (an object-store folder is a prefix ending in /)"
        )
    return list(files)


def scenes_of(
    plan: gpd.GeoDataFrame,
    scenes: Sequence[Scene] | Mapping[str, Scene] | None = None,
    env: GdalEnv | None = None,
) -> dict[str, Scene]:
    """The scenes a plan's chips come from, by id: those given, or reopened (headers only)
    from the plan's ``scene`` column."""
    given: dict[str, Scene] = {}
    if isinstance(scenes, Mapping):
        given = dict(scenes)
    elif scenes is not None:
        given = {s.id: s for s in scenes}
    out: dict[str, Scene] = {}
    for grid_id in dict.fromkeys(plan["grid_id"]):
        if grid_id in given:
            out[grid_id] = given[grid_id]
            continue
        if "scene" not in plan.columns:
            raise InputError(
                f"the plan has chips of grid {grid_id!r} and no 'scene' column; pass scenes="
            )
        spec = plan.loc[plan["grid_id"] == grid_id, "scene"].iloc[0]
        out[grid_id] = scene_from_spec(spec, env)
    return out
