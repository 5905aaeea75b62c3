"""Small generated STAC catalogs and build configs for tests, benchmarks and examples.

Scenes are COGs whose pixels encode their own position (``pattern="rowcol"``, see
:mod:`geochip.testing`), so a test can check where every pixel of a chip came from.

Example:
    >>> import tempfile, pathlib
    >>> cat = make_scene_catalog(pathlib.Path(tempfile.mkdtemp()), scenes=2, size=64)
    >>> cfg = scene_config(cat, "out", size=32)
    >>> cfg["sources"]["kind"], cfg["bands"]
    ('catalog', ['b1', 'b2'])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from odc.geo.geobox import GeoBox

from ..sources.static import make_catalog
from . import make_cog, make_item, pixel_pattern
from .cubes import make_s2_scene

__all__ = [
    "make_scene_catalog",
    "make_time_catalog",
    "scene_config",
    "scene_grid",
]


def scene_grid(scene: int, size: int, *, resolution: float = 10.0) -> GeoBox:
    """The grid of scene ``scene``: ``size`` x ``size`` pixels in UTM 33N, scenes side by
    side from x = 500 000 m."""
    x0 = 500_000 + scene * size * resolution
    return GeoBox.from_bbox(
        (x0, 4_000_000, x0 + size * resolution, 4_000_000 + size * resolution),
        "EPSG:32633",
        resolution=resolution,
    )


def make_scene_catalog(
    root: Path,
    *,
    scenes: int = 1,
    size: int = 128,
    bands: int = 2,
    dtype: str = "uint32",
    pattern: str = "rowcol",
    nodata: int | None = 0,
    tile: int = 128,
) -> Path:
    """Write one single-band COG per band and scene, and a static catalog over them; return
    the path of catalog.json. Band ``b`` (asset ``b{b+1}``) holds pattern band ``b``."""
    items = []
    for s in range(scenes):
        grid = scene_grid(s, size)
        assets = {
            f"b{b + 1}": make_cog(
                root / f"scene-{s}" / f"b{b + 1}.tif",
                grid,
                nodata=nodata,
                tile=tile,
                # band b's values say which band they are: (b + 1) * 1e7 + row * 1e4 + col
                data=pixel_pattern((size, size), b, dtype, pattern, seed=s),  # type: ignore[arg-type]
            )
            for b in range(bands)
        }
        items.append(make_item(f"scene-{s}", assets, datetime=f"2024-05-0{s % 9 + 1}"))
    return make_catalog(root / "catalog", items, collection="scenes")


def scene_config(
    catalog: Path, out: str | Path, *, size: int = 32, **sections: Any
) -> dict[str, Any]:
    """A build config over a :func:`make_scene_catalog` catalog; ``sections`` replace or
    add whole sections."""
    config: dict[str, Any] = {
        "sources": {"kind": "catalog", "path": str(catalog)},
        "bands": ["b1", "b2"],
        "chips": {"size": size},
        "split": {"block_size": 2},
        "output": {"path": str(out)},
        "engine": {"threads": 2, "batch_size": 4},
    }
    config.update(sections)
    return config


def make_time_catalog(
    root: Path,
    dates: Sequence[str],
    *,
    covers: Sequence[float | None] | None = None,
    size: int = 64,
    bands: Sequence[str] = ("red", "nir", "scl"),
    origins: Sequence[tuple[float, float]] = ((500_000.0, 5_000_000.0),),
    seed: int = 0,
) -> Path:
    """Write Sentinel-2-like scenes (:func:`geochip.testing.cubes.make_s2_scene`: 10 m
    reflectance with ``raster:scale`` 1e-4 / ``offset`` -0.1, a 20 m SCL band with seeded
    clouds) of every date at every origin (tile), and a static catalog over them; return the
    path of catalog.json. ``covers[i]`` is the ``eo:cloud_cover`` of date ``i`` (None: no
    such property). Item ids: ``s2-<date>-EPSG32633-<x>-<y>`` (``-0-0`` for the first
    origin)."""
    items = []
    for x, y in origins:
        for n, date in enumerate(dates):
            item = make_s2_scene(
                root / "scenes", date, origin=(x, y), size=size, seed=seed, bands=bands, tile=size
            )
            cover = covers[n] if covers is not None else None
            if cover is None:
                item.properties.pop("eo:cloud_cover", None)
            else:
                item.properties["eo:cloud_cover"] = float(cover)
            items.append(item)
    return make_catalog(root / "catalog", items, collection="s2")
