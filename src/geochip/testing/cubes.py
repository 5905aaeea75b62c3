"""Sentinel-2-like scenes for cube and time-series tests and benchmarks (seeded).

:func:`make_s2_scene` writes one scene: four 10 m reflectance bands (``blue``, ``green``,
``red``, ``nir``: uint16, nodata 0, ``raster:scale`` 1e-4, ``raster:offset`` -0.1 like
processing baseline 04.00), a 20 m ``swir16`` band and a 20 m ``scl`` scene
classification (uint8, nodata 0, role ``cloud``) whose clouds (8, 9), shadows (3) and
cirrus (10) are seeded rectangles on vegetation (4), bare soil (5) and water (6).
:func:`make_s2_series` writes several dates of a tile.

Example:
    >>> import tempfile, pathlib
    >>> items = make_s2_series(pathlib.Path(tempfile.mkdtemp()), ["2024-05-01", "2024-05-11"],
    ...                        size=64, bands=("red", "scl"))
    >>> [i.id for i in items], items[0].assets["scl"].extra_fields["proj:shape"]
    (['s2-2024-05-01-EPSG32633-0-0', 's2-2024-05-11-EPSG32633-0-0'], [32, 32])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pystac
from affine import Affine
from odc.geo.geobox import GeoBox

from . import make_cog, make_item, texture

__all__ = [
    "S2_BANDS",
    "make_s2_scene",
    "make_s2_series",
    "scl_pattern",
]

#: Band -> native resolution (m) of the generated scenes.
S2_BANDS: dict[str, int] = {
    "blue": 10,
    "green": 10,
    "red": 10,
    "nir": 10,
    "swir16": 20,
    "scl": 20,
}

_COMMON = {"blue": "blue", "green": "green", "red": "red", "nir": "nir", "swir16": "swir16"}


def scl_pattern(shape: tuple[int, int], seed: int) -> npt.NDArray[np.uint8]:
    """A seeded SCL raster: land classes with cloud, shadow and cirrus rectangles."""
    rng = np.random.default_rng(seed)
    height, width = shape
    base = texture(shape, seed=seed + 7)
    out = np.where(base < 0.35, 6, np.where(base < 0.6, 5, 4)).astype(np.uint8)
    for cls in (9, 8, 3, 10):
        for _ in range(int(rng.integers(1, 3))):
            h = int(rng.integers(1, max(2, height // 3)))
            w = int(rng.integers(1, max(2, width // 3)))
            r = int(rng.integers(0, max(1, height - h)))
            c = int(rng.integers(0, max(1, width - w)))
            out[r : r + h, c : c + w] = cls
    return out


def make_s2_scene(
    root: Path,
    date: str,
    *,
    crs: str = "EPSG:32633",
    origin: tuple[float, float] = (500_000.0, 5_000_000.0),
    size: int = 256,
    seed: int = 0,
    bands: Sequence[str] = tuple(S2_BANDS),
    tile: int = 256,
    orbit: int | None = None,
    item_id: str | None = None,
    compress: str = "deflate",
) -> pystac.Item:
    """One scene: ``size`` x ``size`` 10 m pixels with its top-left corner at ``origin``."""
    x0, y0 = origin
    item_id = item_id or f"s2-{date}-{crs.replace(':', '')}-{int(x0)}-{int(y0)}".replace(
        "-500000-5000000", "-0-0"
    )
    folder = root / item_id
    assets: dict[str, Path] = {}
    day_seed = seed * 1000 + int(date.replace("-", "")[-4:])
    for k, band in enumerate(bands):
        res = S2_BANDS[band]
        n = size * 10 // res
        gbox = GeoBox((n, n), Affine(res, 0, x0, 0, -res, y0), crs)
        if band == "scl":
            data: Any = scl_pattern((n, n), day_seed)
            assets[band] = make_cog(
                folder / f"{band}.tif", gbox, data=data, nodata=0, tile=tile, compress=compress
            )
            continue
        values = (texture((n, n), seed=day_seed * 10 + k) * 9000 + 500).astype("uint16")
        assets[band] = make_cog(
            folder / f"{band}.tif", gbox, data=values, nodata=0, tile=tile, compress=compress
        )
    props: dict[str, Any] = {"platform": "sentinel-2a", "constellation": "sentinel-2"}
    if orbit is not None:
        props["sat:relative_orbit"] = orbit
    item = make_item(
        item_id,
        assets,
        datetime=f"{date}T10:30:00Z",
        cloud_cover=float(seed % 7) * 5,
        properties=props,
        roles={"scl": ["cloud", "data-mask"]},
        common_names={b: _COMMON[b] for b in bands if b in _COMMON},
    )
    for band in bands:
        if band != "scl":
            entry = item.assets[band].extra_fields["bands"][0]
            entry["raster:scale"] = 0.0001
            entry["raster:offset"] = -0.1
    return item


def make_s2_series(
    root: Path,
    dates: Sequence[str],
    *,
    crs: str = "EPSG:32633",
    origin: tuple[float, float] = (500_000.0, 5_000_000.0),
    size: int = 256,
    seed: int = 0,
    bands: Sequence[str] = tuple(S2_BANDS),
    tile: int = 256,
) -> list[pystac.Item]:
    """One scene per date of the same tile (see :func:`make_s2_scene`)."""
    return [
        make_s2_scene(root, d, crs=crs, origin=origin, size=size, seed=seed, bands=bands, tile=tile)
        for d in dates
    ]
