"""``geochip.show_versions()``: the versions that matter in a bug report."""

from __future__ import annotations

import importlib
import platform
import sys

import pyproj
import rasterio
import shapely

from .._version import __version__

__all__ = [
    "show_versions",
    "versions",
]


def _module_version(name: str) -> str:
    try:
        module = importlib.import_module(name)
    except ImportError:
        return "not installed"
    return str(getattr(module, "__version__", "unknown"))


def versions() -> dict[str, str]:
    """geochip, Python, GDAL, PROJ, GEOS and the key Python packages, as strings.

    >>> sorted(versions())[:4]
    ['GDAL', 'GEOS', 'PROJ', 'dask']
    """
    out = {
        "geochip": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "GDAL": str(rasterio.__gdal_version__),
        "PROJ": str(pyproj.proj_version_str),
        "GEOS": str(shapely.geos_version_string),
    }
    for name in (
        "numpy",
        "xarray",
        "dask",
        "distributed",
        "rasterio",
        "odc.geo",
        "odc.stac",
        "pystac",
        "zarr",
        "geopandas",
        "torch",
    ):
        out[name] = _module_version(name)
    return out


def show_versions() -> None:
    """Print :func:`versions` one per line, for bug reports.

    >>> show_versions()  # doctest: +ELLIPSIS
    geochip ...
    """
    info = versions()
    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key:<{width}} {value}")
