"""The reader odc-stac loads cubes through: odc-loader's rasterio reader, with every read
checked and retried the way streamed reads are.

odc-loader reads a chunk with rasterio and trusts what comes back. GDAL can signal an
error and still return data: an HTTP body cut short while GDAL loads a COG's tile index
leaves tiles without an offset, and GDAL reads them as empty tiles, i.e. zeros, without
raising. :class:`CheckedRioDriver` runs each read of one source under
:func:`geochip.core.retry.call_with_retries` (the GDAL error tap, geochip's one transient
policy, GDAL's curl cache cleared before a retry); a read that still fails raises
:class:`~geochip.errors.RasterReadError` naming the (redacted) href, never zeros.

The driver applies :class:`~geochip.core.env.GdalEnv`'s options around each read, with
the GDAL options active where the load was called (a build task's) on top. It is plain
data, so it travels in Dask graphs.

Example:
    >>> import pathlib, tempfile
    >>> from odc.geo.geobox import GeoBox
    >>> from geochip.read.load import load_cube
    >>> from geochip.testing import make_cog, make_item
    >>> grid = GeoBox.from_bbox((500_000, 0, 502_560, 2_560), "EPSG:32633", resolution=10)
    >>> path = make_cog(pathlib.Path(tempfile.mkdtemp()) / "a.tif", grid, pattern="random")
    >>> item = make_item("a", {"red": path})
    >>> _ = path.write_bytes(path.read_bytes()[:60_000])   # half the pixels cut away
    >>> load_cube([item], ["red"], grid, chunks=None)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    geochip.errors.RasterReadError: /.../a.tif: reading band 1 onto a 256x256 grid failed: ...
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from odc.geo.geobox import GeoBox
from odc.loader._rio import GDAL_CLOUD_DEFAULTS, RioDriver, RioReader, rio_read
from odc.loader.types import RasterLoadParams, RasterSource, ReaderSubsetSelection

from ..core.env import GdalEnv
from ..core.retry import call_with_retries
from ..core.security import redact
from ..errors import RasterReadError
from .scene import _causes, gdal_path

__all__ = [
    "CheckedRioDriver",
    "CheckedRioReader",
]


class _NoUnredactedFailures(logging.Filter):
    """Drops odc-loader's "Failed to load <href>" record: it prints the href unredacted (a
    signed URL's token) and fires on attempts a retry then repairs; the read's final failure
    is raised as a RasterReadError naming the redacted href."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to load")


_FILTER = _NoUnredactedFailures()

logging.getLogger("odc.loader._rio").addFilter(_FILTER)


class CheckedRioReader(RioReader):
    """Reads one source for odc-loader (its ``ReaderDriver.open`` result), checked and
    retried (see the module doc)."""

    def __init__(self, src: RasterSource, ctx: Any, env: GdalEnv) -> None:
        super().__init__(src, ctx)
        self._env = env

    def read(
        self,
        cfg: RasterLoadParams,
        dst_geobox: GeoBox,
        *,
        dst: np.ndarray | None = None,
        selection: ReaderSubsetSelection | None = None,
    ) -> tuple[tuple[slice, slice], np.ndarray]:
        """odc-loader's rasterio read of the part of ``dst_geobox`` this source covers;
        raises :class:`~geochip.errors.RasterReadError` when it fails after retries."""
        src = self._src
        path = gdal_path(src.uri)

        def attempt() -> tuple[tuple[slice, slice], np.ndarray]:
            return rio_read(src, cfg, dst_geobox, dst=dst, selection=selection)

        try:
            # known_raster: the item describes the asset as a raster, so a remote file GDAL
            # "does not recognise" is a truncated header, retried like any transient failure
            return call_with_retries(attempt, path, self._env, known_raster=True)
        except Exception as err:
            raise RasterReadError(
                f"{redact(src.uri)}: reading band {src.band} onto a {dst_geobox.shape.y}x"
                f"{dst_geobox.shape.x} grid failed: {_causes(err)}"
            ) from err


class CheckedRioDriver(RioDriver):
    """odc-loader's rasterio driver whose reads are checked and retried (module doc).

    ``env`` holds the retry policy and the GDAL options of every read (GDAL options active
    where the load is called win over them).
    """

    def __init__(self, env: GdalEnv | None = None) -> None:
        super().__init__()
        self.env = env or GdalEnv.default()

    def capture_env(self) -> dict[str, Any]:
        """The GDAL options the reads run under (taken where the load is called)."""
        captured: dict[str, Any] = super().capture_env()
        if captured == GDAL_CLOUD_DEFAULTS:  # odc-loader's defaults: nothing was set
            captured = {}
        return {**self.env.options, **captured}

    def open(self, src: RasterSource, ctx: Any) -> CheckedRioReader:
        """The reader of one source."""
        return CheckedRioReader(src, ctx, self.env)
