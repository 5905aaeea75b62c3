"""A small seeded image/mask dataset on disk, for registry tests, docs and demos.

:func:`write_tiles_dataset` writes, under a folder, two neighbouring 3-band uint16 tiles in
UTM 33N at 10 m — one Cloud-Optimized GeoTIFF and one real JPEG 2000 file (lossless,
OpenJPEG) — their uint8 class masks, and vector labels (GeoJSON, EPSG:4326) with a
``class`` column:

.. code-block:: text

    images/tile-a.tif   images/tile-b.jp2
    masks/tile-a.tif    masks/tile-b.tif
    labels.geojson      (classes water, field, forest)

Its signature fits a registry ``download`` function (``fn(folder)``), so a registry entry
with ``download: geochip.testing.datasets:write_tiles_dataset`` "downloads" it without a
network.

Example:
    >>> import tempfile, pathlib, rasterio
    >>> files = write_tiles_dataset(pathlib.Path(tempfile.mkdtemp()))
    >>> [p.name for p in files["images"]]
    ['tile-a.tif', 'tile-b.jp2']
    >>> with rasterio.open(files["images"][1]) as ds:
    ...     ds.driver, ds.count, ds.crs.to_epsg(), ds.res
    ('JP2OpenJPEG', 3, 32633, (10.0, 10.0))
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox
from shapely.geometry import Polygon, box

from . import make_cog, texture

__all__ = [
    "TILES_CLASSES",
    "tiles_geoboxes",
    "write_tiles_dataset",
]

#: Class map of the tiles' masks and labels.
TILES_CLASSES: dict[str, int] = {"water": 1, "field": 2, "forest": 3}


def tiles_geoboxes(size: int = 64) -> dict[str, GeoBox]:
    """The two tiles' grids: ``size`` x ``size`` px at 10 m, side by side in UTM 33N."""
    width = size * 10
    return {
        name: GeoBox((size, size), Affine(10, 0, 500_000 + i * width, 0, -10, 5_000_000), 32633)
        for i, name in enumerate(("tile-a", "tile-b"))
    }


def _classes(shape: tuple[int, int], seed: int) -> npt.NDArray[np.uint8]:
    t = texture(shape, seed=seed)
    return np.where(t < 0.3, 1, np.where(t < 0.65, 2, 3)).astype(np.uint8)


def _write_jp2(path: Path, geobox: GeoBox, data: npt.NDArray[np.uint16]) -> Path:
    with rasterio.open(
        path,
        "w",
        driver="JP2OpenJPEG",
        width=geobox.width,
        height=geobox.height,
        count=data.shape[0],
        dtype=data.dtype,
        crs=geobox.crs.to_wkt() if geobox.crs is not None else None,
        transform=geobox.affine,
        QUALITY=100,
        REVERSIBLE="YES",  # lossless
    ) as ds:
        ds.write(data)
    return path


def _labels(geoboxes: dict[str, GeoBox], seed: int) -> gpd.GeoDataFrame:
    rng = np.random.default_rng(seed)
    names = sorted(TILES_CLASSES)
    shapes, classes = [], []
    for gbox in geoboxes.values():
        left, bottom, right, top = gbox.extent.boundingbox
        span = right - left
        for _ in range(6):
            x0, y0 = rng.uniform(left, right - span / 4), rng.uniform(bottom, top - span / 4)
            w, h = rng.uniform(span / 10, span / 3, size=2)
            shapes.append(box(x0, y0, x0 + w, y0 + h))
            classes.append(names[int(rng.integers(len(names)))])
        shapes.append(
            Polygon([(left, bottom), (left + span / 3, bottom), (left, bottom + span / 3)])
        )
        classes.append("water")
    return gpd.GeoDataFrame({"class": classes}, geometry=shapes, crs=32633).to_crs(4326)


def write_tiles_dataset(
    folder: str | Path, *, size: int = 64, seed: int = 0
) -> dict[str, list[Path]]:
    """Write the tiles dataset under ``folder``; return its files by kind
    (``images``, ``masks``, ``labels``)."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    geoboxes = tiles_geoboxes(size)
    images, masks = [], []
    for n, (name, gbox) in enumerate(geoboxes.items()):
        data = np.stack(
            [(texture(gbox.shape.yx, seed=seed * 100 + n * 10 + b) * 9000 + 500) for b in range(3)]
        ).astype(np.uint16)
        if n == 0:
            images.append(make_cog(folder / "images" / f"{name}.tif", gbox, data=data, tile=256))
        else:
            images.append(_write_jp2(folder / "images" / f"{name}.jp2", gbox, data))
        masks.append(
            make_cog(
                folder / "masks" / f"{name}.tif",
                gbox,
                data=_classes(gbox.shape.yx, seed * 100 + n),
                tile=256,
            )
        )
    labels = folder / "labels.geojson"
    _labels(geoboxes, seed).to_file(labels, driver="GeoJSON")
    return {"images": images, "masks": masks, "labels": [labels]}
