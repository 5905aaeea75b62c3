"""What predict reads: a scene on the streaming path, or a cube on a grid (odc-stac).

:func:`resolve_sources` turns what the user gave (a path or URL, a ``pystac.Item`` with
bands, a :class:`~geochip.read.scene.Scene`, a registry dataset from
:func:`~geochip.registry.samples.load_inference_data` or one of its samples, or items plus
a ``grid``) into :class:`WindowSource` objects: a grid, band names, dtype, nodata, the
inputs (item ids and unsigned hrefs) and :meth:`WindowSource.read`, which yields the
pixels of planned windows in order.

Scenes read through :class:`~geochip.read.stream.ChipStream` (read-ahead threads, each COG
tile decoded once and shared by overlapping windows). A window that cannot be read after
the reader's retries is yielded as its error, and reading carries on from the next one:
the caller records it as failed.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pystac
from affine import Affine
from odc.geo.geobox import GeoBox
from rasterio.errors import NotGeoreferencedWarning

from ..core.env import GdalEnv
from ..core.grid import Window, same_grid
from ..errors import InputError, RasterReadError
from ..plan.chips import plan_chips
from ..read.load import load_cube
from ..read.open import open_scene
from ..read.scene import Scene
from ..read.stream import ChipStream
from ..registry.samples import RegistryData, Sample

__all__ = ["CubeSource", "SceneSource", "WindowSource", "resolve_sources"]

Read = tuple[int, "npt.NDArray[Any] | RasterReadError"]


@dataclass(frozen=True)
class WindowSource:
    """Something predict reads window by window (see the module docstring)."""

    id: str
    geobox: GeoBox
    band_names: tuple[str, ...]
    dtype: str
    nodata: float | int | None
    inputs: tuple[dict[str, Any], ...]
    datetime: dt.datetime | None

    def read(self, windows: Sequence[Window], threads: int | None) -> Iterator[Read]:
        """Yield ``(position, pixels or error)`` for every window, in order."""
        raise NotImplementedError


@dataclass(frozen=True)
class SceneSource(WindowSource):
    """A scene read on the streaming path (shared tile decoding, read-ahead)."""

    scene: Scene | None = None

    def read(self, windows: Sequence[Window], threads: int | None) -> Iterator[Read]:
        """Yield ``(position, pixels or error)`` for every window, in order."""
        scene = self.scene
        assert scene is not None
        start = 0
        while start < len(windows):
            rest = list(windows[start:])
            plan = plan_chips(
                scene.geobox, {"y": rest[0].height, "x": rest[0].width}, grid_id=scene.id,
                windows=rest,
            )  # fmt: skip
            stream = ChipStream(plan, [scene], threads=threads)
            done = start
            try:
                for chip in stream:
                    yield done, chip.image
                    done += 1
                return
            except RasterReadError:
                # the stream stops at the window it could not read: try it alone once
                # more (the reader already retried transient failures), then go on
                window = windows[done]
                try:
                    pixels = scene.read(window)
                except RasterReadError as err:
                    yield done, err
                else:
                    yield done, pixels
                start = done + 1


@dataclass(frozen=True)
class CubeSource(WindowSource):
    """Items loaded onto a grid with odc-stac, window by window; several items are fused
    first-valid-wins in (time, id) order (a mosaic)."""

    items: tuple[pystac.Item, ...] = ()

    def read(self, windows: Sequence[Window], threads: int | None) -> Iterator[Read]:
        """Yield ``(position, pixels or error)`` for every window, in order."""
        bands = list(self.band_names)
        fill = self.nodata if self.nodata is not None else 0
        for i, window in enumerate(windows):
            affine = self.geobox.affine * Affine.translation(window.col, window.row)
            box = GeoBox((window.height, window.width), affine, self.geobox.crs)
            try:
                cube = load_cube(list(self.items), bands, box, chunks=None, groupby="id")
            except Exception as err:  # odc-stac wraps GDAL errors in several types
                yield i, RasterReadError(f"window {window} of {self.id}: {err}")
                continue
            data = np.stack([cube[b].values for b in bands], axis=1)  # (time, band, y, x)
            out = np.full(data.shape[1:], fill, dtype=data.dtype)
            empty = np.ones(data.shape[2:], dtype=bool)
            for step in data:
                missing = _missing(step, self.nodata).any(axis=0)
                take = empty & ~missing
                out[:, take] = step[:, take]
                empty &= missing
            yield i, out


def _missing(pixels: npt.NDArray[Any], nodata: float | int | None) -> npt.NDArray[np.bool_]:
    bad = np.zeros(pixels.shape, dtype=bool)
    if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
        bad |= pixels == nodata
    if pixels.dtype.kind == "f":
        bad |= np.isnan(pixels)
    return bad


def _scene_source(scene: Scene, item: pystac.Item | None = None) -> SceneSource:
    item_id = scene.attrs.get("item_id")
    inputs: dict[str, Any] = {"hrefs": [p.href for p in scene.parts]}
    if item_id:
        inputs = {"item": str(item_id), **inputs}
    return SceneSource(
        id=scene.id,
        geobox=scene.geobox,
        band_names=scene.band_names,
        dtype=scene.dtype,
        nodata=scene.nodata,
        inputs=(inputs,),
        datetime=item.datetime if item is not None else None,
        scene=scene,
    )


def _open_item(
    item: pystac.Item, bands: Sequence[str | int] | None, nodata: float | None, env: GdalEnv
) -> Scene:
    """An item as a scene: bands that are asset keys become the assets; ``asset.N`` names
    band N of one asset; other names are looked up among the assets' bands."""
    names = [b for b in bands or [] if isinstance(b, str)]
    if bands and len(names) == len(bands) and all(b in item.assets for b in names):
        return open_scene(item, asset=names, nodata=nodata, env=env)
    if bands and len(names) == len(bands):
        heads = {b.rpartition(".")[0] for b in names}
        numbers = [b.rpartition(".")[2] for b in names]
        if (
            len(heads) == 1
            and all(n.isdigit() for n in numbers)
            and next(iter(heads)) in (item.assets)
        ):
            return open_scene(
                item, asset=next(iter(heads)), bands=[int(n) for n in numbers], nodata=nodata,
                env=env,
            )  # fmt: skip
    return open_scene(item, bands=list(bands) if bands else None, nodata=nodata, env=env)


def _sample_source(sample: Sample, nodata: float | None, env: GdalEnv) -> WindowSource:
    scene = _open_item(sample.item, sample.bands, nodata, env)
    if same_grid(scene.geobox, sample.geobox):
        return _scene_source(scene, sample.item)
    # the dataset's resolution differs from the files': load onto its grid
    return _cube_source([sample.item], list(scene.band_names), sample.geobox, scene.nodata)


def _cube_source(
    items: Sequence[pystac.Item], bands: Sequence[str], grid: GeoBox, nodata: float | int | None
) -> CubeSource:
    probe = load_cube(list(items[:1]), list(bands), grid[0:1, 0:1], chunks=None)
    dtype = str(probe[bands[0]].dtype)
    if nodata is None:
        nodata = probe[bands[0]].attrs.get("nodata")
    inputs = tuple(
        {"item": item.id, "hrefs": [item.assets[k].href for k in item.assets]} for item in items
    )
    return CubeSource(
        id=items[0].id if len(items) == 1 else f"mosaic-{items[0].id}",
        geobox=grid,
        band_names=tuple(bands),
        dtype=dtype,
        nodata=nodata,
        inputs=inputs,
        datetime=items[0].datetime,
        items=tuple(items),
    )


def resolve_sources(
    source: Any,
    *,
    bands: Sequence[str | int] | None = None,
    grid: GeoBox | None = None,
    nodata: float | None = None,
    env: GdalEnv | None = None,
) -> list[WindowSource]:
    """What predict reads for ``source`` (see the module docstring); one entry per output."""
    env = env or GdalEnv.default()
    with warnings.catch_warnings():
        # a raster without georeferencing is refused with a named error, not a warning
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return _resolve(source, bands, grid, nodata, env)


def _resolve(
    source: Any,
    bands: Sequence[str | int] | None,
    grid: GeoBox | None,
    nodata: float | None,
    env: GdalEnv,
) -> list[WindowSource]:
    if isinstance(source, RegistryData):
        return [_sample_source(s, nodata, env) for s in source]
    if isinstance(source, Sample):
        return [_sample_source(source, nodata, env)]
    if isinstance(source, Scene):
        return [_scene_source(source)]
    if grid is not None:
        items = list(source.items if isinstance(source, pystac.ItemCollection) else source)
        if isinstance(source, pystac.Item):
            items = [source]
        if not items or not all(isinstance(i, pystac.Item) for i in items):
            raise InputError("grid= goes with STAC items (a list or an ItemCollection)")
        if not bands:
            raise InputError("items on a grid need bands=[...] (asset keys or band names)")
        return [_cube_source(items, [str(b) for b in bands], grid, nodata)]
    if isinstance(source, pystac.Item):
        return [_scene_source(_open_item(source, bands, nodata, env), source)]
    if isinstance(source, list | tuple | pystac.ItemCollection):
        raise InputError(
            "several items make one output only on a common grid: pass grid=GeoBox(...) "
            "(a mosaic), or call predict once per item"
        )
    scene = open_scene(source, bands=list(bands) if bands else None, nodata=nodata, env=env)
    return [_scene_source(scene)]
