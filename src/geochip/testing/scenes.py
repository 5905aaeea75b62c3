"""Scenes for tests, docs and benchmarks: Sentinel-1-like COG pairs, cached on disk.

:func:`make_s1_like` writes two single-band ``uint16`` COGs shaped so that **overview
level 3** is 1044 x 1569 pixels, the size of the Sentinel-1 GRD scenes of zen3geo's chipping
tutorial at that level: 6 chips of 512 x 512 per scene, 15 with an overlap of 256. The
full-resolution raster is kept small (5220 x 7845) by using the decimation factors
2, 3, 4, 5 rather than 2, 4, 8, 16; pixel values encode their position (see
:func:`geochip.testing.pixel_pattern`), 0 is nodata.

Files are written once per folder (atomically: a temporary name, then ``os.replace``) and
reused.

Example:
    >>> import tempfile, rasterio
    >>> paths = make_s1_like(tempfile.mkdtemp(), size=(261, 392))  # a small twin
    >>> with rasterio.open(paths[0], overview_level=3) as ds:
    ...     ds.shape, ds.nodata, ds.block_shapes
    ((53, 79), 0.0, [(512, 512)])
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
from odc.geo.geobox import GeoBox

from . import make_cog, pixel_pattern

__all__ = [
    "S1_FACTORS",
    "S1_SHAPE",
    "make_s1_like",
]

#: Full-resolution (height, width) of :func:`make_s1_like` scenes; level 3 is 1044 x 1569.
S1_SHAPE = (5220, 7845)

#: Overview decimation factors of :func:`make_s1_like` scenes (level 3 = factor 5).
S1_FACTORS = (2, 3, 4, 5)

# (name, CRS, left, top): UTM zones of Osaka and Tokyo, as in the tutorial
_PLACES = (
    ("osaka", "EPSG:32653", 480_000.0, 3_900_000.0),
    ("tokyo", "EPSG:32654", 300_000.0, 4_000_000.0),
)


def make_s1_like(
    folder: str | Path, *, size: tuple[int, int] = S1_SHAPE, tile: int = 512
) -> list[Path]:
    """Two Sentinel-1-like COGs (``osaka.tif``, ``tokyo.tif``) in ``folder``; see the module
    docstring. ``size`` changes the full-resolution shape (for quick examples)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    height, width = size
    paths = []
    for k, (name, crs, left, top) in enumerate(_PLACES):
        path = folder / f"{name}-{height}x{width}.tif"
        if not path.exists():
            gbox = GeoBox.from_bbox(
                (left, top - height * 10, left + width * 10, top), crs, resolution=10
            )
            data = pixel_pattern((height, width), k, "uint16")
            data = np.maximum(data, 1)[None]  # 0 is nodata
            tmp = folder / f".{name}-{uuid.uuid4().hex}.tif"
            make_cog(
                tmp,
                gbox,
                data=data,
                nodata=0,
                tile=tile,
                overviews=S1_FACTORS,
                descriptions=["vv"],
            )
            os.replace(tmp, path)
        paths.append(path)
    return paths
