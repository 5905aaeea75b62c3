"""Cutting huge rasters into Cloud-Optimized GeoTIFF tiles, as gim_cv does before training.

:func:`retile` cuts each raster into square tiles of ``tile`` pixels (a multiple of
``patch`` when one is given, so that every tile divides into whole patches), each a COG
named ``<stem>-r<row>-c<col>.tif`` (row/col: the tile's offset in source pixels), then
writes a static STAC catalog with one collection (``catalog.json``, written last) that
:func:`geochip.open_catalog` reads. Tiles at the right and bottom edges are cut short
(``edge="keep"``) or padded to the full size with nodata (``edge="pad"``). A tile that is
already there is kept (the run resumes); every file is written atomically.

Predict does not need this: it plans its windows from the raster's header.

Example:
    >>> import tempfile, pathlib
    >>> from odc.geo.geobox import GeoBox
    >>> from geochip.testing import make_cog
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> gbox = GeoBox.from_bbox((500_000, 0, 505_000, 3_000), "EPSG:32633", resolution=10)
    >>> src = make_cog(tmp / "big.tif", gbox, bands=2)
    >>> catalog = retile(src, 256, tmp / "tiles", patch=128)
    >>> import geochip
    >>> items = list(geochip.open_catalog(catalog).items())
    >>> len(items), items[0].id
    (4, 'big-r0-c0')
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import rasterio
import rasterio.shutil
from rasterio.io import MemoryFile
from rasterio.windows import Window as RioWindow

from ..core.env import gdal_env
from ..core.files import output_file, output_folder
from ..core.storage import (
    check_writable,
    exists,
    gdal_path,
    is_object_url,
    is_url,
    join,
    local_path,
)
from ..errors import InputError, MissingGeoreferenceError, OutputExistsError
from ..sources.files import item_from_rasters
from ..sources.static import make_catalog

__all__ = ["retile"]


def retile(
    sources: str | Path | Sequence[str | Path],
    tile: int,
    out: str | Path,
    *,
    patch: int | None = None,
    edge: Literal["keep", "pad"] = "keep",
    collection: str = "tiles",
    overwrite: bool = False,
    on_tile: Callable[[int, int], None] | None = None,
) -> Path | str:
    """Cut rasters into COG tiles under ``out`` and return the catalog's path (see the
    module docstring). ``sources`` and ``out`` may be object-store URLs
    (``s3://bucket/tiles``): each tile is made locally and uploaded in one ``put_file``,
    the catalog (relative hrefs, as on disk) after the tiles, ``catalog.json`` last; the
    catalog's URL is returned as a string. ``on_tile(done, total)`` is called after each
    tile (the total grows as each source is opened)."""
    given = [sources] if isinstance(sources, str | Path) else list(sources)
    paths = [s if isinstance(s, str) and is_object_url(s) else local_path(s) for s in given]
    if tile < 16 or tile % 16:
        raise InputError(f"tile must be a multiple of 16 pixels (COG blocks), got {tile}")
    if patch is not None and (patch < 1 or tile % patch):
        lower = (tile // patch) * patch if patch and patch > 0 else 0
        raise InputError(
            f"tile {tile} is not a multiple of the patch size {patch}; use "
            f"{lower or patch} or {lower + patch}"
        )
    if edge not in ("keep", "pad"):
        raise InputError(f"edge must be 'keep' or 'pad', got {edge!r}")
    if exists(join(out, "catalog.json")) and not overwrite:
        raise OutputExistsError(f"{out} holds a catalog already; pass overwrite=True to redo it")
    check_writable(out)  # before any tile
    items = []
    total = 0
    for path in paths:
        if not (exists(path) if is_url(path) else Path(path).is_file()):
            raise InputError(f"{path} does not exist; check the path")
        stem = posixpath.splitext(posixpath.basename(str(path)))[0]
        with gdal_env({}), rasterio.open(gdal_path(str(path))) as src:
            if src.crs is None:
                raise MissingGeoreferenceError(
                    f"{path}: the raster has no CRS, so its tiles could not be placed; fix "
                    "the file (gdal_edit.py -a_srs EPSG:xxxx)"
                )
            fill = src.nodata if src.nodata is not None else 0
            total += -(-src.height // tile) * -(-src.width // tile)
            for row in range(0, src.height, tile):
                for col in range(0, src.width, tile):
                    name = f"{stem}-r{row}-c{col}"
                    target = join(out, "tiles", f"{name}.tif")
                    if overwrite or not exists(target):
                        _write_tile(src, target, row, col, tile, edge, fill)
                    items.append(item_from_rasters(name, {"data": target}, collection=collection))
                    if on_tile is not None:
                        on_tile(len(items), total)

    def write_catalog(root: Path) -> Path:
        return make_catalog(root, items, catalog_id=f"{collection}-catalog",
                            collection=collection,
                            description=f"{len(items)} tiles of {tile} px")  # fmt: skip

    if not is_url(out):
        return write_catalog(local_path(out))
    # on an object store: the catalog is made locally as it would be on disk (tile hrefs
    # relative to it), then uploaded with catalog.json last
    with output_folder(out, last=("catalog.json",)) as tmp:
        for item in items:
            item.assets["data"].href = str(tmp.resolve() / "tiles" / f"{item.id}.tif")
        write_catalog(tmp)
    return join(out, "catalog.json")


def _write_tile(
    src: rasterio.DatasetReader, target: str, row: int, col: int, tile: int, edge: str,
    fill: float,
) -> None:  # fmt: skip
    if edge == "pad":
        height = width = tile
        data = src.read(window=RioWindow(col, row, tile, tile), boundless=True, fill_value=fill)
    else:
        height, width = min(tile, src.height - row), min(tile, src.width - col)
        data = src.read(window=RioWindow(col, row, width, height))
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": src.count,
        "dtype": src.dtypes[0],
        "crs": src.crs,
        "transform": src.window_transform(RioWindow(col, row, width, height)),
        "nodata": src.nodata if src.nodata is not None or edge != "pad" else fill,
    }
    with MemoryFile() as mem:
        with mem.open(**profile) as tmp:
            tmp.write(data)
            for b in range(1, src.count + 1):
                if src.descriptions[b - 1]:
                    tmp.set_band_description(b, src.descriptions[b - 1])
        with output_file(target) as part:
            rasterio.shutil.copy(
                mem.name, str(part), driver="COG", BLOCKSIZE=str(min(512, tile)),
                COMPRESS="DEFLATE", OVERVIEW_RESAMPLING="NEAREST",
            )  # fmt: skip
