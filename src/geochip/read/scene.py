"""A :class:`Scene`: a raster opened by its headers (plain, picklable data: it holds no file
handle), read window by window (:func:`read_window`, with retries; past the grid's edges
filled with nodata), as a lazy array (:class:`SceneArray`) or as ``xarray.DataArray``
chips with coordinates and CRS (:func:`chip_dataarray`). Scenes are opened by
:mod:`geochip.read.open`.

xarray (~0.6 s to import) is imported only where DataArrays are made: streaming numpy
chips does not need it.

Example:
    >>> import tempfile, pathlib
    >>> from odc.geo.geobox import GeoBox
    >>> from geochip.read.open import open_scene
    >>> from geochip.testing import make_cog
    >>> gbox = GeoBox.from_bbox((500_000, 0, 502_560, 2_560), "EPSG:32633", resolution=10)
    >>> scene = open_scene(make_cog(pathlib.Path(tempfile.mkdtemp()) / "a.tif", gbox))
    >>> part = scene.read(Window(250, 250, 10, 10))       # rows 250..259: 6 past the edge
    >>> part.shape, int(part[0, 9, 9])                     # nodata fill (0: none set)
    ((1, 10, 10), 0)
    >>> chip_dataarray(scene, part, 250, 250).dims
    ('band', 'y', 'x')
"""

from __future__ import annotations

import json
import math
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from odc.geo.geobox import GeoBox
from rasterio.windows import Window as RioWindow

from ..core.env import GdalEnv
from ..core.grid import YX, Window
from ..core.handles import drop_handle, get_handle
from ..core.retry import call_with_retries
from ..core.security import redact
from ..core.storage import gdal_path as storage_gdal_path
from ..errors import RasterReadError

if TYPE_CHECKING:
    import xarray as xr  # lazy: see the module doc

__all__ = [
    "Scene",
    "SceneArray",
    "ScenePart",
    "SceneSource",
    "chip_dataarray",
    "gdal_path",
    "read_part",
    "read_window",
]

SceneSource = Any  # str | Path | pystac.Item


def gdal_path(href: str) -> str:
    """What GDAL opens for ``href``: ``/vsicurl/`` in front of http(s) URLs, GDAL's network
    file systems for object-store URLs (:func:`geochip.core.storage.gdal_path`).

    >>> gdal_path("https://example.com/a.tif"), gdal_path("/data/a.tif")
    ('/vsicurl/https://example.com/a.tif', '/data/a.tif')
    >>> gdal_path("s3://bucket/scenes/a.tif")
    '/vsis3/bucket/scenes/a.tif'
    """
    if href.startswith(("http://", "https://")):
        return f"/vsicurl/{href}"
    return storage_gdal_path(href)


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
        hrefs = ", ".join(redact(p.href) for p in self.parts)
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
        import xarray as xr  # lazy: see the module doc
        from xarray.core import indexing  # lazy

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
    p = scene.parts[part]
    path = p.path
    level = scene.overview_level
    window = RioWindow(col, row, width, height)
    indexes = list(p.bands)

    def attempt() -> npt.NDArray[Any]:
        ds = get_handle(path, level, env)
        return ds.read(indexes, window=window, out=out)  # type: ignore[no-any-return]

    def reset(_: int, __: BaseException) -> None:
        drop_handle(path, level)

    try:
        return call_with_retries(attempt, path, env, on_retry=reset, known_raster=True)
    except Exception as err:
        drop_handle(path, level)
        raise RasterReadError(
            f"{redact(p.href)}: reading rows {row}:{row + height}, cols {col}:{col + width}"
            f"{'' if level is None else f' of overview level {level}'} failed: {_causes(err)}"
        ) from err


def _causes(err: BaseException) -> str:
    """The messages of ``err`` and its causes (rasterio chains GDAL's real reason)."""
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
        from xarray.backends import BackendArray  # lazy
        from xarray.core import indexing  # lazy

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


_SPATIAL_REF: dict[str, Any] = {}

_SPATIAL_REF_LOCK = threading.Lock()


def _spatial_ref(scene: Scene) -> Any:
    import xarray as xr  # lazy: see the module doc

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
        import pandas as pd  # lazy
        import xarray as xr  # lazy: see the module doc
        from xarray.core.indexes import PandasIndex  # lazy

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
            import pandas as pd  # lazy
            import xarray as xr  # lazy: see the module doc
            from xarray.core.indexes import PandasIndex  # lazy

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
        import xarray as xr  # lazy: see the module doc

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
