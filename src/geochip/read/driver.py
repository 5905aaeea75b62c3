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
the GDAL options active where the load was called (a build task's) on top. Before each read
of an http(s) href it resolves the host and checks every address against the href policy
(:meth:`geochip.core.hrefs.HrefPolicy.resolve`; by default link-local and cloud-metadata
addresses are refused): GDAL resolves the name again itself and cannot be pinned to the
checked address, so this narrows DNS rebinding to the moment between the check and GDAL's
lookup; it does not close it (docs/design.md). It is plain data, so it travels in Dask
graphs.

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
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from odc.geo.geobox import GeoBox
from odc.loader._rio import GDAL_CLOUD_DEFAULTS, RioDriver, RioReader, rio_read
from odc.loader.types import RasterLoadParams, RasterSource, ReaderSubsetSelection

from ..core.env import GdalEnv
from ..core.hrefs import HrefPolicy
from ..core.retry import call_with_retries, retry
from ..core.security import redact
from ..core.storage import gdal_options
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

    def __init__(self, src: RasterSource, ctx: Any, env: GdalEnv, policy: HrefPolicy) -> None:
        super().__init__(src, ctx)
        self._env = env
        self._policy = policy

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
        env = self._env
        try:  # the addresses of the host, checked just before GDAL connects (module doc)
            retry(
                lambda: self._policy.resolve_href(src.uri),
                retries=env.retries,
                delay=env.backoff,
                transient=lambda e: isinstance(e, socket.gaierror),
            )
        except socket.gaierror as err:  # fail closed: a name not checked is not read
            raise RasterReadError(
                f"{redact(src.uri)}: its host does not resolve ({err}); check the href and the "
                "network"
            ) from None

        def attempt() -> tuple[tuple[slice, slice], np.ndarray]:
            return rio_read(src, cfg, dst_geobox, dst=dst, selection=selection)

        try:
            # known_raster: the item describes the asset as a raster, so a remote file GDAL
            # "does not recognise" is a truncated header, retried like any transient failure
            return call_with_retries(attempt, path, env, known_raster=True)
        except Exception as err:
            raise RasterReadError(
                f"{redact(src.uri)}: reading band {src.band} onto a {dst_geobox.shape.y}x"
                f"{dst_geobox.shape.x} grid failed: {_causes(err)}"
            ) from err


class CheckedRioDriver(RioDriver):
    """odc-loader's rasterio driver whose reads are checked and retried (module doc).

    ``env`` holds the retry policy and the GDAL options of every read (GDAL options active
    where the load is called win over them). ``policy`` is the href policy the addresses of
    a host are checked against before each read (default
    :meth:`~geochip.core.hrefs.HrefPolicy.trusted`: no link-local or metadata address).
    """

    def __init__(self, env: GdalEnv | None = None, policy: HrefPolicy | None = None) -> None:
        super().__init__()
        self.env = env or GdalEnv.default()
        self.policy = policy or HrefPolicy.trusted()

    def capture_env(self) -> dict[str, Any]:
        """The GDAL options the reads run under (taken where the load is called)."""
        captured: dict[str, Any] = super().capture_env()
        if captured == GDAL_CLOUD_DEFAULTS:  # odc-loader's defaults: nothing was set
            captured = {}
        return {**self.env.options, **captured}

    @contextmanager
    def restore_env(self, env: dict[str, Any], load_state: Any) -> Iterator[Any]:
        """The captured options around the reads, on top of the endpoint options of the
        reading process's environment (:func:`geochip.core.storage.gdal_options`)."""
        with super().restore_env({**gdal_options(), **env}, load_state) as ctx:
            yield ctx

    def open(self, src: RasterSource, ctx: Any) -> CheckedRioReader:
        """The reader of one source."""
        return CheckedRioReader(src, ctx, self.env, self.policy)
